//! recur: a Kubernetes operator that runs recurring tasks and reminders through Dapr service
//! invocation, exactly once per occurrence.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
pub mod api;
pub mod app_channel;
pub mod cli;
pub mod clock;
pub mod controller;
pub mod dapr;
pub mod lease;
pub mod metrics;
pub mod operator;
pub mod plugin;
pub mod server;
pub mod tenancy;
#[cfg(test)]
mod test_env;
pub mod traces;
pub mod user_agent;
pub mod validate;
pub mod watch_cache;
pub mod webhook;

// The schedule engine lives in its own crate (no Kubernetes, no I/O); `crate::schedule::...` and
// `recur::schedule::...` keep naming it.
pub use recur_schedule as schedule;
