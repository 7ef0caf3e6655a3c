//! Property tests of the schedule engine (in `tests`), and their case count, which the
//! operator's property tests share (feature `test-support`).

/// Cases per property: `default`, or `PROPTEST_CASES` for a long run (the README's fuzzing
/// figures come from `PROPTEST_CASES=20000`).
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[cfg(test)]
mod tests;
