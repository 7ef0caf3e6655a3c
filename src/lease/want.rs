//! A lease held on demand: the shard balancer (`shards`) says which Leases each elector is to
//! hold, and a lease no longer wanted (or held with a skewed clock) is given back only once no
//! work started under it can still run.
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{info, warn};

use super::{LeaseElector, Observation};

/// What the shard balancer (`shards`) asks of one elector: to hold its lease or not, and how
/// it last saw the lease, so that an expiry it has already watched need not be watched again.
#[derive(Clone, Debug, Default)]
pub(crate) struct Want {
    pub(super) wanted: bool,
    pub(super) seen: Option<Observation>,
}

impl LeaseElector {
    /// A lease given back while running (not wanted any more, or this replica's clock is
    /// skewed) is released `wait` after we stopped acting under it: the longest a call and its
    /// status write started under it may take. Without it the release is immediate.
    pub fn handing_back_after(mut self, wait: Duration) -> LeaseElector {
        self.hand_back_after = wait;
        self
    }

    /// Campaigns only while `want` says so, and gives the lease back when it stops wanting it.
    pub(crate) fn wanted_by(mut self, want: watch::Receiver<Want>) -> LeaseElector {
        self.want = Some(want);
        self
    }

    /// `false` when the balancer does not want the lease now; takes its view of the lease.
    pub(super) fn wanted(&mut self) -> bool {
        let Some(want) = self.want.as_mut() else {
            return true;
        };
        let Want { wanted, seen } = want.borrow_and_update().clone();
        if let Some(seen) = seen {
            // An observation made earlier of the same state counts from its first sight.
            let earlier = match &self.observed {
                Some(o) => o.key == seen.key && seen.at < o.at,
                None => true,
            };
            if earlier {
                self.observed = Some(seen);
            }
        }
        wanted
    }

    /// Stops acting under the lease, waits until nothing started under it can still be running
    /// (`hand_back_after`, or our deadline if sooner), then releases it for another replica.
    pub(super) async fn give_back(&mut self) {
        let deadline = self.leadership.deadline();
        if self.announced() {
            info!(lease = %self.cfg.name, "handing the lease back");
            self.leadership.set_deadline(None);
        }
        let now = Instant::now();
        let until = deadline.map_or(now, |d| d.min(now + self.hand_back_after));
        tokio::time::sleep_until(until.into()).await;
        if let Err(e) = self.hand_over().await {
            warn!("{e}");
        }
    }
}

/// How long an elector that is not wanted sleeps when nothing wakes it sooner.
pub(super) const IDLE: Duration = Duration::from_secs(3600);

/// Completes when `want` changes; never when there is none (or its sender is gone).
pub(super) async fn want_changed(want: Option<&mut watch::Receiver<Want>>) {
    let changed = match want {
        Some(want) => want.changed().await.is_ok(),
        None => false,
    };
    if !changed {
        std::future::pending::<()>().await;
    }
}
