//! Command-line tools beside the operator itself.
pub mod schedule;
