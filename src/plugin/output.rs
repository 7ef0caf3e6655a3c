//! How `kubectl recur` prints: aligned tables like kubectl's, instants in a zone and in UTC, and
//! pretty JSON with camelCase keys (`-o json`).
use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use clap::ValueEnum;
use serde::Serialize;

use super::Error;

/// `-o`: what a command prints on standard output.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Tables and sentences for people.
    #[default]
    Text,
    /// One JSON document (camelCase keys) for scripts.
    Json,
}

/// What a command prints: standard output, and warnings for standard error (never part of the
/// JSON, so `-o json` stays parseable).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// For standard output.
    pub stdout: String,
    /// For standard error, one `warning: ...` line each.
    pub warnings: Vec<String>,
    /// Set when the command did its work but the outcome is a failure (a manual run the backend
    /// refused, a failed backfill): printed as `error: ...` after the output, exit status 1.
    pub failure: Option<String>,
}

/// Columns left-aligned under their headers, three spaces apart (kubectl's layout).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let width = widths.get(i).copied().unwrap_or(0);
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = width.saturating_sub(cell.chars().count()) + 3;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `label   value` lines, values aligned.
pub fn fields(rows: &[(&str, String)]) -> String {
    let width = rows
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    rows.iter()
        .map(|(label, value)| format!("{label:<width$}   {value}\n"))
        .collect()
}

/// Pretty JSON and a final newline.
pub fn json<T: Serialize>(value: &T) -> Result<String, Error> {
    let mut s = serde_json::to_string_pretty(value).map_err(Error::Encode)?;
    s.push('\n');
    Ok(s)
}

/// RFC 3339 in UTC, as status and keys write instants: `2026-11-26T01:30:15.982Z`.
pub fn utc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// RFC 3339 at the zone's offset, for JSON: `2026-11-26T02:30:15.982+01:00`.
pub fn rfc3339_in(t: DateTime<Utc>, zone: Tz) -> String {
    crate::cli::schedule::instant(t, zone)
}

/// For people reading a table at night: weekday, wall-clock time and offset,
/// `Thu 2026-11-26 02:30:15.982 +01:00`.
pub fn local(t: DateTime<Utc>, zone: Tz) -> String {
    let t = t.with_timezone(&zone);
    if t.timestamp_subsec_millis() == 0 {
        t.format("%a %Y-%m-%d %H:%M:%S %:z").to_string()
    } else {
        t.format("%a %Y-%m-%d %H:%M:%S%.3f %:z").to_string()
    }
}

/// `1 occurrence`, `2 occurrences`.
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn tables_align_columns_three_spaces_apart_without_trailing_blanks() {
        let out = table(
            &["A", "LONGER"],
            &[
                vec!["wide cell".into(), "x".into()],
                vec!["y".into(), String::new()],
            ],
        );
        assert_eq!(out, "A           LONGER\nwide cell   x\ny\n");
        let out = fields(&[("token", "t".into()), ("key", "k".into())]);
        assert_eq!(out, "token   t\nkey     k\n");
    }

    #[test]
    fn instants_in_utc_and_in_a_zone() {
        let t: DateTime<Utc> = "2026-11-26T01:30:15.982Z".parse().unwrap();
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(utc(t), "2026-11-26T01:30:15.982Z");
        assert_eq!(rfc3339_in(t, berlin), "2026-11-26T02:30:15.982+01:00");
        assert_eq!(local(t, berlin), "Thu 2026-11-26 02:30:15.982 +01:00");
        let whole: DateTime<Utc> = "2026-03-29T01:30:00Z".parse().unwrap();
        assert_eq!(local(whole, berlin), "Sun 2026-03-29 03:30:00 +02:00");
        assert_eq!(plural(1, "occurrence"), "1 occurrence");
        assert_eq!(plural(0, "occurrence"), "0 occurrences");
    }
}
