//! Readings from /proc: a process's CPU time and memory, and the machine's CPU and memory.
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

/// CPU seconds (utime + stime) and memory (VmHWM, VmRSS) of a process.
pub fn proc_stat(pid: u32) -> Res<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| msg(format!("reading /proc/{pid}/stat: {e}")))?;
    // Fields after the command name (which may hold spaces and parentheses).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| msg(format!("/proc/{pid}/stat is not readable as stat")))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Res<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| msg(format!("/proc/{pid}/stat has no field {}", i + 3)))
    };
    // utime is field 14 and stime field 15 of stat(5); `rest` starts at field 3.
    let cpu_s = (ticks(11)? + ticks(12)?) / clock_ticks();
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
