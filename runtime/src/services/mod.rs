//! Layer 3, services: what users do with a running sandbox — commands,
//! files and watches, metrics, monitors, health, pause, what a template
//! means at create, users, quotas. Each works on the engine's shared state
//! of a sandbox and never on another service's internals.

pub mod code;
pub mod commands;
pub mod files;
pub mod health;
pub(crate) mod launch;
pub mod metrics;
pub mod monitor;
// Also driven by its own integration tests and benchmarks (the `testing`
// feature), which reach parts the runtime does not use.
#[cfg_attr(not(feature = "testing"), allow(dead_code, unused_imports))]
pub mod net;
pub(crate) mod pause;
pub mod pty;
pub(crate) mod quota;
pub(crate) mod stop;
pub(crate) mod template;
pub(crate) mod users;
pub mod watch;
