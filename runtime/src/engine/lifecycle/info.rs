//! What `info()`, `list()` and `inspect()` return about a sandbox.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::{Reason, State};
use crate::kernel::limits::Limits;

/// A snapshot of a sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxInfo {
    pub id: String,
    pub template: String,
    pub state: State,
    pub metadata: BTreeMap<String, String>,
    pub hostname: String,
    pub created_at: SystemTime,
    /// When the sandbox's timeout kills it.
    pub end_at: SystemTime,
    /// init's pid on the host, while it runs.
    pub init_pid: Option<i32>,
    pub commands_in_flight: usize,
    /// Why it ended, once it has.
    pub end_reason: Option<Reason>,
    pub limits: Limits,
    pub idle_timeout: Option<Duration>,
    /// When it ended, once it has.
    pub ended_at: Option<SystemTime>,
}
