//! `recur schedule`: preview the upcoming occurrences of a schedule, given on the command line or
//! as the `spec.schedule` of a `RecurringTask` manifest.
//!
//! Everything but reading the clock, the file and printing is in [`preview`], which returns the
//! output and the exit status, so it is tested without running the binary.
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use clap::{Args, ValueEnum};

use crate::schedule::{CompileContext, Frequency, Occurrence, PatternSpec, Schedule, ScheduleSpec};

/// Most occurrences `--count` may ask for.
pub const MAX_COUNT: usize = 10_000;

/// Exit status for every error (bad flags, bad schedule, unreadable file).
const EXIT_ERROR: u8 = 2;

/// Output format.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputFormat {
    /// One RFC 3339 instant per line.
    #[default]
    Text,
    /// A JSON array of `{"nominal": ..., "due": ...}`.
    Json,
}

const EXAMPLES: &str = "Examples:
  recur schedule --cron '30 2 * * *' --time-zone Europe/Berlin --after 2026-03-28T00:00:00Z --count 5
  recur schedule --pattern WEEKLY --by-day MO,WE --at 09:00,17:30 --time-zone America/New_York
  recur schedule --pattern MONTHLY --by-day -1FR --at 18:00
  recur schedule --rrule 'FREQ=MONTHLY;BYMONTHDAY=-1;BYHOUR=18;BYMINUTE=0;BYSECOND=0'
  recur schedule --every 90m --start-at 2026-01-01T00:00:00Z --output json
  recur schedule --file task.yaml --utc";

/// Preview the upcoming occurrences of a schedule.
#[derive(Args, Debug, Clone, Default, PartialEq)]
#[command(after_help = EXAMPLES)]
pub struct ScheduleArgs {
    /// A 5-field cron expression (minute hour day-of-month month day-of-week).
    #[arg(long, value_name = "EXPR")]
    pub cron: Option<String>,
    /// A calendar pattern of this frequency: DAILY, WEEKLY, MONTHLY or YEARLY.
    #[arg(long, value_name = "FREQUENCY", value_parser = parse_frequency)]
    pub pattern: Option<Frequency>,
    /// Pattern: every N periods.
    #[arg(long, value_name = "N")]
    pub interval: Option<u32>,
    /// Pattern: weekdays, comma-separated (MO,WE; 1MO or -1FR with MONTHLY/YEARLY).
    #[arg(
        long,
        value_name = "DAYS",
        value_delimiter = ',',
        allow_hyphen_values = true
    )]
    pub by_day: Vec<String>,
    /// Pattern: days of the month, comma-separated (1..31, -1 the last day).
    #[arg(
        long,
        value_name = "DAYS",
        value_delimiter = ',',
        allow_negative_numbers = true
    )]
    pub by_month_day: Vec<i32>,
    /// Pattern: months, comma-separated (1..12, YEARLY only).
    #[arg(long, value_name = "MONTHS", value_delimiter = ',')]
    pub by_month: Vec<u32>,
    /// Pattern: times of day, comma-separated HH:MM.
    #[arg(long, value_name = "TIMES", value_delimiter = ',')]
    pub at: Vec<String>,
    /// An RFC 5545 RRULE, optionally followed by newline-separated EXDATE lines.
    #[arg(long, value_name = "RULE", allow_hyphen_values = true)]
    pub rrule: Option<String>,
    /// A fixed interval: 90m, 1h30m, PT90M.
    #[arg(long, value_name = "DURATION")]
    pub every: Option<String>,
    /// Preview the spec.schedule of the first RecurringTask in this YAML file.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// IANA time zone (default UTC, or the file's).
    #[arg(long, value_name = "ZONE")]
    pub time_zone: Option<String>,
    /// No occurrence before this instant (RFC 3339). Default: --after, as if the task were
    /// created then.
    #[arg(long, value_name = "TIME", value_parser = parse_instant)]
    pub start_at: Option<DateTime<Utc>>,
    /// No occurrence after this instant (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_instant)]
    pub end_at: Option<DateTime<Utc>>,
    /// The schedule's own total number of occurrences (its `count`).
    #[arg(long, value_name = "N")]
    pub total: Option<u32>,
    /// Maximum random delay per occurrence (deterministic per --seed).
    #[arg(long, value_name = "DURATION")]
    pub jitter: Option<String>,
    /// The jitter seed: the task's UID (default: the file's metadata.uid, else empty).
    #[arg(long, value_name = "UID")]
    pub seed: Option<String>,
    /// List occurrences after this instant (RFC 3339). Default: now.
    #[arg(long, value_name = "TIME", value_parser = parse_instant)]
    pub after: Option<DateTime<Utc>>,
    /// How many occurrences to print (1 to 10000).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub count: usize,
    /// Print instants in UTC instead of the schedule's zone.
    #[arg(long)]
    pub utc: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

fn parse_frequency(s: &str) -> Result<Frequency, String> {
    s.parse()
}

/// Parses an RFC 3339 instant given on the command line (also `kubectl recur`'s flags).
pub fn parse_instant(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 instant such as 2026-03-28T00:00:00Z ({e})"))
}

/// What a run prints, and its exit status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Output {
    /// For standard output.
    pub stdout: String,
    /// For standard error (errors and notes).
    pub stderr: String,
    /// Exit status: 0, or 2 on any error.
    pub code: u8,
}

impl Output {
    fn error(message: impl std::fmt::Display) -> Output {
        Output {
            stdout: String::new(),
            stderr: format!("error: {message}\n"),
            code: EXIT_ERROR,
        }
    }
}

/// Runs `recur schedule`: reads the clock (for the default `--after`) and the file, prints.
pub fn run(args: ScheduleArgs) -> ExitCode {
    let out = preview(&args, Utc::now(), &|path| {
        std::fs::read_to_string(path).map_err(|e| e.to_string())
    });
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
    ExitCode::from(out.code)
}

/// The whole command, given the current time and a way to read files.
pub fn preview(
    args: &ScheduleArgs,
    now: DateTime<Utc>,
    read: &dyn Fn(&std::path::Path) -> Result<String, String>,
) -> Output {
    if !(1..=MAX_COUNT).contains(&args.count) {
        return Output::error(format!(
            "--count must be between 1 and {MAX_COUNT}, got {}",
            args.count
        ));
    }
    let after = args.after.unwrap_or(now);
    let source = match spec_from_args(args, read) {
        Ok(s) => s,
        Err(e) => return Output::error(e),
    };
    let seed = args.seed.clone().or(source.uid).unwrap_or_default();
    let anchor = source.created.unwrap_or(after);
    let schedule = match Schedule::compile(&source.spec, &CompileContext { anchor, seed }) {
        Ok(s) => s,
        Err(e) => return Output::error(e),
    };
    // What kubectl apply would refuse in a new spec; a stored task (it has a creation time)
    // keeps working with it, so its preview only notes it.
    let mut stderr = String::new();
    if let Err(e) = schedule.jitter_fits(source.spec.jitter.as_deref(), now) {
        if source.created.is_none() {
            return Output::error(e);
        }
        stderr = format!("note: {e} (kubectl apply refuses this in a new schedule)\n");
    }
    let occurrences: Vec<Occurrence> = schedule.iter_after(after).take(args.count).collect();
    let zone = if args.utc {
        Tz::UTC
    } else {
        schedule.time_zone()
    };
    let show_due = source.spec.jitter.is_some();
    let stdout = match args.output {
        OutputFormat::Text => format_text(&occurrences, zone, show_due),
        OutputFormat::Json => format_json(&occurrences, zone),
    };
    if occurrences.len() < args.count {
        let n = occurrences.len();
        stderr.push_str(&format!(
            "note: the schedule ends: {n} occurrence{} after {}\n",
            if n == 1 { "" } else { "s" },
            instant(after, zone)
        ));
    }
    Output {
        stdout,
        stderr,
        code: 0,
    }
}

/// The spec to preview, and what a manifest adds (UID for the seed, creation time for the anchor).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Source {
    /// The schedule.
    pub spec: ScheduleSpec,
    /// `metadata.uid` of the manifest, if any.
    pub uid: Option<String>,
    /// `metadata.creationTimestamp` of the manifest, if any.
    pub created: Option<DateTime<Utc>>,
}

/// Builds the spec from the flags, or from `--file` with the flags overriding the bounds,
/// zone and jitter.
pub fn spec_from_args(
    args: &ScheduleArgs,
    read: &dyn Fn(&std::path::Path) -> Result<String, String>,
) -> Result<Source, String> {
    let kinds = [
        ("--cron", args.cron.is_some()),
        ("--pattern", args.pattern.is_some()),
        ("--rrule", args.rrule.is_some()),
        ("--every", args.every.is_some()),
        ("--file", args.file.is_some()),
    ];
    let set: Vec<&str> = kinds
        .iter()
        .filter(|(_, on)| *on)
        .map(|(n, _)| *n)
        .collect();
    if set.len() != 1 {
        return Err(format!(
            "give exactly one of --cron, --pattern, --rrule, --every or --file{}",
            if set.is_empty() {
                String::new()
            } else {
                format!(" (got {})", set.join(", "))
            }
        ));
    }
    let pattern_flags = [
        ("--interval", args.interval.is_some()),
        ("--by-day", !args.by_day.is_empty()),
        ("--by-month-day", !args.by_month_day.is_empty()),
        ("--by-month", !args.by_month.is_empty()),
        ("--at", !args.at.is_empty()),
    ];
    if args.pattern.is_none()
        && let Some((flag, _)) = pattern_flags.iter().find(|(_, on)| *on)
    {
        return Err(format!("{flag} only applies to --pattern"));
    }
    let mut source = match &args.file {
        Some(path) => {
            let text = read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            source_from_manifest(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => Source {
            spec: ScheduleSpec {
                cron: args.cron.clone(),
                pattern: args.pattern.map(|frequency| {
                    Box::new(PatternSpec {
                        frequency,
                        interval: args.interval,
                        by_day: args.by_day.clone(),
                        by_month_day: args.by_month_day.clone(),
                        by_month: args.by_month.clone(),
                        at_times: args.at.clone(),
                    })
                }),
                // A shell argument with literal `\n` (no $'...') still separates lines.
                rrule: args.rrule.as_ref().map(|r| r.replace("\\n", "\n")),
                every: args.every.clone(),
                ..Default::default()
            },
            uid: None,
            created: None,
        },
    };
    let spec = &mut source.spec;
    if args.time_zone.is_some() {
        spec.time_zone = args.time_zone.clone();
    }
    if args.start_at.is_some() {
        spec.start_at = args.start_at;
    }
    if args.end_at.is_some() {
        spec.end_at = args.end_at;
    }
    if args.total.is_some() {
        spec.count = args.total;
    }
    if args.jitter.is_some() {
        spec.jitter = args.jitter.clone();
    }
    Ok(source)
}

/// The `spec.schedule` (and `metadata.uid`, `metadata.creationTimestamp`) of the first
/// `RecurringTask` in a YAML stream.
pub fn source_from_manifest(yaml: &str) -> Result<Source, String> {
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(yaml).map_err(|e| format!("not valid YAML: {e}"))?;
    let task = docs
        .iter()
        .find(|d| d.get("kind").and_then(|k| k.as_str()) == Some("RecurringTask"))
        .ok_or("no RecurringTask in the file")?;
    let schedule = task
        .pointer("/spec/schedule")
        .ok_or("the RecurringTask has no spec.schedule")?
        .clone();
    let spec: ScheduleSpec =
        serde_json::from_value(schedule).map_err(|e| format!("spec.schedule: {e}"))?;
    let uid = task
        .pointer("/metadata/uid")
        .and_then(|v| v.as_str())
        .map(String::from);
    let created = task
        .pointer("/metadata/creationTimestamp")
        .and_then(|v| v.as_str())
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc));
    Ok(Source { spec, uid, created })
}

/// `t` in RFC 3339 at `zone`'s offset, with fractional seconds only when it has them.
pub fn instant(t: DateTime<Utc>, zone: Tz) -> String {
    t.with_timezone(&zone)
        .to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// One nominal instant per line; with jitter, the due instant after it.
pub fn format_text(occurrences: &[Occurrence], zone: Tz, show_due: bool) -> String {
    let mut out = String::new();
    for o in occurrences {
        out.push_str(&instant(o.nominal, zone));
        if show_due {
            out.push_str("  due ");
            out.push_str(&instant(o.due, zone));
        }
        out.push('\n');
    }
    out
}

/// A JSON array of `{"nominal": ..., "due": ...}`.
pub fn format_json(occurrences: &[Occurrence], zone: Tz) -> String {
    #[derive(serde::Serialize)]
    struct Item {
        nominal: String,
        due: String,
    }
    let items: Vec<Item> = occurrences
        .iter()
        .map(|o| Item {
            nominal: instant(o.nominal, zone),
            due: instant(o.due, zone),
        })
        .collect();
    let mut s = serde_json::to_string_pretty(&items).unwrap_or_else(|_| "[]".into());
    s.push('\n');
    s
}

#[cfg(test)]
mod tests;
