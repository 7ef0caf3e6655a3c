//! Where a window's time and CPU went: kube-apiserver's and recur's own histograms (means of
//! the window's observations) and /proc (the machine's busy share, and each process's CPU per
//! status patch). The burst and the limit are read the same way, so their rows compare.
use std::collections::{BTreeMap, HashMap};

use crate::apiserver::{status_patch_ms, status_patches, window_mean};
use crate::error::Res;
use crate::procfs::{ProcessId, busy_between, cpu_between, cpu_by_process, machine_ticks};
use crate::prometheus::sample_sum;
use crate::results::WindowCost;

/// recur's series for RecurringTasks.
const TASKS: &[(&str, &str)] = &[("kind", "RecurringTask")];

/// /proc readings at a window's start.
pub struct ProcMeter {
    machine: (f64, f64),
    processes: HashMap<ProcessId, (String, f64)>,
}

/// What /proc says of a window.
#[derive(Clone, Debug, Default)]
pub struct ProcWindow {
    pub busy: Option<f64>,
    /// CPU seconds by command name over the window (see [`cpu_between`]).
    pub by_command: BTreeMap<String, f64>,
}

impl ProcMeter {
    pub fn start() -> Res<Self> {
        Ok(ProcMeter {
            machine: machine_ticks()?,
            processes: cpu_by_process(),
        })
    }

    pub fn stop(&self) -> Res<ProcWindow> {
        let busy = busy_between(self.machine, machine_ticks()?);
        let by_command = cpu_between(&self.processes, &cpu_by_process());
        Ok(ProcWindow { busy, by_command })
    }
}

/// A window's cost from the apiserver's `/metrics` before and after, /proc, and (for recur's
/// windows) the operator's `/metrics` before and after.
pub fn window_cost(
    api: (&str, &str),
    proc: ProcWindow,
    operator: Option<(&str, &str)>,
) -> WindowCost {
    let ms = |s: f64| s * 1000.0;
    let patches = status_patches(api.0, api.1);
    WindowCost {
        apiserver_patch_ms: status_patch_ms(api.0, api.1),
        etcd_update_ms: window_mean(
            api.0,
            api.1,
            "etcd_request_duration_seconds",
            &[("operation", "update"), ("resource", "recurringtasks")],
        )
        .map(ms),
        machine_busy: proc.busy,
        cpu_ms_per_patch_by_command: if patches > 0.0 {
            proc.by_command
                .iter()
                .map(|(command, s)| (command.clone(), ms(*s) / patches))
                .collect()
        } else {
            BTreeMap::new()
        },
        backend_call_ms: operator
            .and_then(|(b, a)| window_mean(b, a, "recur_backend_call_duration_seconds", &[]))
            .map(ms),
        reconcile_ms: operator
            .and_then(|(b, a)| window_mean(b, a, "recur_reconcile_duration_seconds", TASKS))
            .map(ms),
        // The burst says where its window began.
        from_instant: false,
        reconciles: operator.map(|(b, a)| {
            sample_sum(a, "recur_reconciles_total", TASKS)
                - sample_sum(b, "recur_reconciles_total", TASKS)
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_window_divides_cpu_by_its_patches_and_reads_recurs_means() {
        let api = |n: f64, secs: f64| {
            let s = r#"{verb="PATCH",resource="recurringtasks",subresource="status"}"#;
            let e = r#"{operation="update",resource="recurringtasks"}"#;
            format!(
                "apiserver_request_total{s} {n}\napiserver_request_duration_seconds_sum{s} {secs}\napiserver_request_duration_seconds_count{s} {n}\n\
                 etcd_request_duration_seconds_sum{e} {}\netcd_request_duration_seconds_count{e} {n}\n",
                secs / 2.0
            )
        };
        let op = |calls: f64, call_s: f64, reconciles: f64, reconcile_s: f64| {
            format!(
                "recur_backend_call_duration_seconds_sum{{namespace=\"a\",outcome=\"delivered\"}} {call_s}\n\
                 recur_backend_call_duration_seconds_count{{namespace=\"a\",outcome=\"delivered\"}} {calls}\n\
                 recur_reconciles_total{{kind=\"RecurringTask\"}} {reconciles}\n\
                 recur_reconciles_total{{kind=\"Reminder\"}} 7\n\
                 recur_reconcile_duration_seconds_sum{{kind=\"RecurringTask\"}} {reconcile_s}\n\
                 recur_reconcile_duration_seconds_count{{kind=\"RecurringTask\"}} {reconciles}\n"
            )
        };
        let (a0, a1) = (api(0.0, 0.0), api(1000.0, 50.0));
        let (o0, o1) = (op(0.0, 0.0, 10.0, 1.0), op(1000.0, 20.0, 2010.0, 101.0));
        let proc = ProcWindow {
            busy: Some(0.8),
            by_command: BTreeMap::from([
                ("daprd".to_owned(), 2.0),
                ("kube-apiserver".to_owned(), 5.0),
            ]),
        };
        let c = window_cost((&a0, &a1), proc.clone(), Some((&o0, &o1)));
        assert_eq!(c.apiserver_patch_ms, Some(50.0));
        assert_eq!(c.etcd_update_ms, Some(25.0));
        assert_eq!(
            c.cpu_ms_per_patch_by_command.get("kube-apiserver"),
            Some(&5.0)
        );
        assert_eq!(c.backend_call_ms, Some(20.0));
        assert_eq!(c.reconcile_ms, Some(50.0));
        assert_eq!(c.reconciles, Some(2000.0));
        assert_eq!(c.machine_busy, Some(0.8));
        assert_eq!(c.cpu_ms_per_patch_by_command.get("daprd"), Some(&2.0));
        // No patches in the window: no CPU per patch, whatever the CPU.
        let idle = window_cost((&a0, &a0), proc, None);
        assert_eq!(idle.backend_call_ms, None);
        assert!(idle.cpu_ms_per_patch_by_command.is_empty());
    }
}
