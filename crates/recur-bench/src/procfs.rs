//! Readings from /proc: a process's CPU time and memory, and the machine's CPU and memory.
use std::collections::{BTreeMap, HashMap};

use chrono::{SecondsFormat, Utc};

use crate::error::{Res, msg};
use crate::results::Environment;

#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStat {
    pub cpu_s: f64,
    pub hwm_mib: f64,
    pub rss_mib: f64,
}

pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Indexes into [`split_stat`]'s fields of utime, stime and starttime (fields 14, 15 and 22 of
/// stat(5)).
const UTIME: usize = 11;
const STIME: usize = 12;
const STARTTIME: usize = 19;

/// A /proc/PID/stat text split into the command name and the fields after it, field 3 of
/// stat(5) first. The name may hold spaces and parentheses: it ends at the last ')'.
fn split_stat(stat: &str) -> Option<(&str, Vec<&str>)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let command = stat.get(open + 1..close)?;
    Some((command, stat[close + 1..].split_whitespace().collect()))
}

/// CPU seconds (utime + stime) and memory (VmHWM, VmRSS) of a process.
pub fn proc_stat(pid: u32) -> Res<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| msg(format!("reading /proc/{pid}/stat: {e}")))?;
    let (_, fields) = split_stat(&stat)
        .ok_or_else(|| msg(format!("/proc/{pid}/stat is not readable as stat")))?;
    let ticks = |i: usize| -> Res<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| msg(format!("/proc/{pid}/stat has no field {}", i + 3)))
    };
    let cpu_s = (ticks(UTIME)? + ticks(STIME)?) / clock_ticks();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| msg(format!("reading /proc/{pid}/status: {e}")))?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok(ProcStat {
        cpu_s,
        hwm_mib: kib("VmHWM:") / 1024.0,
        rss_mib: kib("VmRSS:") / 1024.0,
    })
}

/// A running process: its pid and start time (clock ticks after boot), which together name
/// it even if the pid is reused.
pub type ProcessId = (u32, u64);

/// CPU seconds (utime + stime) and command name (the `comm` of /proc/PID/stat: the first 15
/// bytes of the executable's name) of every process now running.
pub fn cpu_by_process() -> HashMap<ProcessId, (String, f64)> {
    let mut out = HashMap::new();
    let ticks = clock_ticks();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A process may exit between the listing and the read: skipped.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((command, fields)) = split_stat(&stat) else {
            continue;
        };
        let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
        if let (Some(utime), Some(stime), Some(start)) =
            (field(UTIME), field(STIME), field(STARTTIME))
        {
            let cpu = (utime + stime) as f64 / ticks;
            out.insert((pid, start), (command.to_owned(), cpu));
        }
    }
    out
}

/// CPU seconds by command name between two [`cpu_by_process`] readings: each process's own
/// difference, a process started in between counted from zero. One that ended in between is
/// not in the second reading, and its CPU is lost.
pub fn cpu_between(
    before: &HashMap<ProcessId, (String, f64)>,
    after: &HashMap<ProcessId, (String, f64)>,
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (id, (command, cpu)) in after {
        let spent = cpu - before.get(id).map_or(0.0, |(_, c)| *c);
        if spent > 0.0 {
            *out.entry(command.clone()).or_insert(0.0) += spent;
        }
    }
    out
}

/// The machine's CPU time so far, in clock ticks summed over its cores: (busy, all). Busy is
/// everything but idle and I/O wait (the first line of /proc/stat).
pub fn machine_ticks() -> Res<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat")
        .map_err(|e| msg(format!("reading /proc/stat: {e}")))?;
    let unreadable = || msg("/proc/stat has no `cpu` line of eight numbers");
    let line = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .ok_or_else(unreadable)?;
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let ticks = line
        .split_whitespace()
        .take(8)
        .map(|v| v.parse::<f64>().map_err(|_| unreadable()))
        .collect::<Res<Vec<f64>>>()?;
    if ticks.len() < 8 {
        return Err(unreadable());
    }
    let all: f64 = ticks[..8].iter().sum();
    Ok((all - ticks[3] - ticks[4], all))
}

/// The share of the machine's cores busy between two [`machine_ticks`] readings.
pub fn busy_between(before: (f64, f64), after: (f64, f64)) -> Option<f64> {
    let all = after.1 - before.1;
    (all > 0.0).then(|| (after.0 - before.0) / all)
}

pub fn environment(kubernetes: String, sidecar: String) -> Environment {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let memory_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    Environment {
        kubernetes,
        sidecar,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_gib,
        cpu,
        date: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
    }
}

/// Where and when a cost scenario ran, for its report: "on DATE: N cores (CPU); Kubernetes V".
pub fn made_on(env: &Environment) -> String {
    format!(
        "on {}: {} cores ({}); Kubernetes {}",
        env.date, env.cores, env.cpu, env.kubernetes
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_splits_after_the_last_parenthesis() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 10 0 0 0 7 3 0 0 20 0 1 0 555 0 0\n";
        let (command, fields) = split_stat(stat).unwrap();
        assert_eq!(command, "a) b (c)");
        assert_eq!(fields[0], "S");
        assert_eq!(
            (fields[UTIME], fields[STIME], fields[STARTTIME]),
            ("7", "3", "555")
        );
        assert!(split_stat("42 no name").is_none());
    }

    #[test]
    fn cpu_between_takes_each_process_own_difference() {
        let at = |entries: &[((u32, u64), &str, f64)]| -> HashMap<ProcessId, (String, f64)> {
            entries
                .iter()
                .map(|(id, c, cpu)| (*id, (c.to_string(), *cpu)))
                .collect()
        };
        let before = at(&[
            ((10, 1), "daprd", 5.0),
            ((11, 1), "daprd", 7.0),
            ((12, 1), "kubectl", 3.0),
            ((13, 1), "recur", 1.0),
        ]);
        let after = at(&[
            ((10, 1), "daprd", 6.0),
            ((11, 1), "daprd", 7.5),
            // 12 ended in between; 13's pid went to another process, started later.
            ((13, 9), "recur-dev", 0.25),
            ((14, 9), "kubectl", 0.5),
        ]);
        let spent = cpu_between(&before, &after);
        assert_eq!(spent.get("daprd"), Some(&1.5));
        assert_eq!(spent.get("recur-dev"), Some(&0.25));
        assert_eq!(spent.get("kubectl"), Some(&0.5));
        assert_eq!(spent.get("recur"), None);
        assert_eq!(spent.len(), 3);
    }
}
