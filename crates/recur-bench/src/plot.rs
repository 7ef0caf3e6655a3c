//! The lag plot: empirical CDFs (`lag-*.dat`) and the gnuplot script (`lag.plt`) that draws
//! `lag.png` from them.
use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Res, msg};
use crate::results::{CronResult, RecurResult};

/// Writes `lag-recur.dat`, one `lag-cronjob-<label>.dat` per CronJob run, and `lag.plt`.
pub fn write_lag_plot(dir: &Path, recur: &RecurResult, crons: &[CronResult]) -> Res<()> {
    let n = recur.burst.tasks;
    let env = &recur.environment;
    let mut plots = vec![];
    write_cdf(&dir.join("lag-recur.dat"), &recur.burst.lags_ms)?;
    plots.push((
        "lag-recur.dat".to_owned(),
        "recur: arrival at the backend".to_owned(),
    ));
    for c in crons {
        let file = format!("lag-cronjob-{}.dat", c.label);
        write_cdf(&dir.join(&file), &c.observed_lags_ms)?;
        // "at its default client QPS (...)" / "with --kube-api-qps=..." read shorter after "kcm".
        let how = c
            .kcm_flags
            .trim_start_matches("at its ")
            .trim_start_matches("with ");
        plots.push((file, format!("CronJob controller, kcm {how}: Job seen")));
    }
    let mut plt = String::new();
    let _ = writeln!(
        plt,
        "# Written by recur-bench report; run in its directory."
    );
    let _ = writeln!(plt, "set terminal pngcairo size 1000,660 font \",11\"");
    let _ = writeln!(plt, "set output 'lag.png'");
    let _ = writeln!(
        plt,
        "set title {}",
        gnuplot_string(&format!(
            "Firing lag of {n} occurrences due in the same minute ({})",
            env.date
        ))
    );
    let _ = writeln!(
        plt,
        "set xlabel \"lag after the scheduled time (seconds, log scale; 0 drawn at 1 ms)\""
    );
    let _ = writeln!(plt, "set ylabel \"fraction of occurrences\"");
    let _ = writeln!(
        plt,
        "set logscale x\nset xrange [0.001:*]\nset yrange [0:1.02]"
    );
    let _ = writeln!(plt, "set grid\nset key below Left reverse");
    let series: Vec<String> = plots
        .iter()
        .map(|(file, title)| {
            format!(
                "'{file}' using 1:2 with steps linewidth 2 title {}",
                gnuplot_string(title)
            )
        })
        .collect();
    let _ = writeln!(plt, "plot {}", series.join(", \\\n     "));
    std::fs::write(dir.join("lag.plt"), plt).map_err(|e| msg(format!("writing lag.plt: {e}")))?;
    Ok(())
}

/// Writes `lag` (milliseconds) as an empirical CDF: seconds (at least 1 ms, for a log axis) and
/// the fraction of occurrences at or below it.
pub fn write_cdf(path: &Path, lags_ms: &[i64]) -> Res<()> {
    let mut sorted = lags_ms.to_vec();
    sorted.sort_unstable();
    let n = sorted.len() as f64;
    let mut out = String::from("# lag_seconds fraction\n");
    for (i, ms) in sorted.iter().enumerate() {
        let _ = writeln!(
            out,
            "{:.3} {:.5}",
            (*ms).max(1) as f64 / 1000.0,
            (i + 1) as f64 / n
        );
    }
    std::fs::write(path, out).map_err(|e| msg(format!("writing {}: {e}", path.display())))
}

pub fn gnuplot_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
