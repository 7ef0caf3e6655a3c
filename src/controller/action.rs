//! What a reconcile asks for next. kube-runtime's `Action` says the same but keeps its delay to
//! itself; recur's own work queue (`dispatch`) has to read it to schedule the next run.
use std::time::Duration;

/// When to reconcile the object again if nothing about it changes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Again after `duration` (sooner if the object changes).
    pub const fn requeue(duration: Duration) -> Self {
        Action {
            requeue_after: Some(duration),
        }
    }

    /// Only when the object changes.
    pub const fn await_change() -> Self {
        Action {
            requeue_after: None,
        }
    }

    pub const fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }

    /// Again no later than `duration` as well: the sooner of the two wakes.
    pub fn no_later_than(self, duration: Option<Duration>) -> Self {
        match (self.requeue_after, duration) {
            (Some(a), Some(b)) => Action::requeue(a.min(b)),
            (a, b) => Action {
                requeue_after: a.or(b),
            },
        }
    }
}

impl From<Action> for kube::runtime::controller::Action {
    fn from(action: Action) -> Self {
        match action.requeue_after {
            Some(after) => kube::runtime::controller::Action::requeue(after),
            None => kube::runtime::controller::Action::await_change(),
        }
    }
}
