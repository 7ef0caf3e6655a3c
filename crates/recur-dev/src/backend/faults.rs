//! The backend's fault injection: what `/_dev/faults` sets, and the seeded dice that apply it.
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long a "timeout" fault holds a request before dropping it, unless `hang_ms` says otherwise.
pub const DEFAULT_HANG: Duration = Duration::from_secs(60);
/// Longest `delay_ms` accepted: beyond any client's timeout already.
pub const MAX_DELAY_MS: u64 = 120_000;

/// Fault injection; a POST replaces all of it (absent fields are 0/false).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Share of requests answered 503.
    pub fail_rate: f64,
    /// Share of requests held for `hang_ms` and then dropped (RST) without an answer.
    pub timeout_rate: f64,
    /// Share of requests whose connection is reset (RST) without an answer.
    pub reset_rate: f64,
    /// The next N requests are answered 503 (before the rates are consulted).
    pub fail_next: u32,
    /// Every request's connection is reset: the backend is gone (`/_dev/` still works).
    pub down: bool,
    /// Every request is answered 400: the backend refuses them for good (a bad payload).
    pub reject: bool,
    /// How long a timeout fault holds a request (default 60 s, beyond any client timeout).
    pub hang_ms: Option<u64>,
    /// Every request is held this long before it is answered (a slow backend; faults too).
    pub delay_ms: Option<u64>,
    /// Only requests made for this tenant (`X-Recur-Namespace`) meet the faults: one backend
    /// stands in for one namespace's failing backend and another's healthy one.
    pub namespace: Option<String>,
}

impl Faults {
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("fail_rate", self.fail_rate),
            ("timeout_rate", self.timeout_rate),
            ("reset_rate", self.reset_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1 (got {rate})"));
            }
        }
        if self.fail_rate + self.timeout_rate + self.reset_rate > 1.0 + 1e-9 {
            return Err("fail_rate + timeout_rate + reset_rate must not exceed 1".into());
        }
        if let Some(delay) = self.delay_ms
            && delay > MAX_DELAY_MS
        {
            return Err(format!(
                "delay_ms must be at most {MAX_DELAY_MS} (got {delay})"
            ));
        }
        Ok(())
    }
}

/// What the dice chose for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Fail,
    Reject,
    Timeout,
    Reset,
    Down,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Fail => "fail",
            Fault::Reject => "reject",
            Fault::Timeout => "timeout",
            Fault::Reset => "reset",
            Fault::Down => "down",
        }
    }
}

/// The faults set and the dice that pick which requests they hit.
pub struct Injector {
    pub faults: Faults,
    dice: u64,
}

impl Injector {
    pub fn new(seed: u64) -> Injector {
        Injector {
            faults: Faults::default(),
            // xorshift never leaves 0.
            dice: seed | 1,
        }
    }

    /// xorshift64*: a uniform number in [0, 1).
    fn roll(&mut self) -> f64 {
        let mut x = self.dice;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.dice = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The fault for the next request, made for tenant `namespace`, if any.
    pub fn next(&mut self, namespace: Option<&str>) -> Option<Fault> {
        if let Some(only) = &self.faults.namespace
            && namespace != Some(only.as_str())
        {
            return None;
        }
        if self.faults.down {
            return Some(Fault::Down);
        }
        if self.faults.reject {
            return Some(Fault::Reject);
        }
        if self.faults.fail_next > 0 {
            self.faults.fail_next -= 1;
            return Some(Fault::Fail);
        }
        let f = &self.faults;
        if f.fail_rate + f.timeout_rate + f.reset_rate <= 0.0 {
            return None;
        }
        let (reset, timeout, fail) = (f.reset_rate, f.timeout_rate, f.fail_rate);
        let r = self.roll();
        if r < reset {
            Some(Fault::Reset)
        } else if r < reset + timeout {
            Some(Fault::Timeout)
        } else if r < reset + timeout + fail {
            Some(Fault::Fail)
        } else {
            None
        }
    }
}
