//! A persistent sandbox's record (`record.json`): what any later process
//! needs to take the sandbox over — who it is, what it was made from and
//! with, which process is its init and where its cgroups are.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sandlot_rootfs::{Settings, TemplateConfig, TemplateKind};
use serde::{Deserialize, Serialize};

use crate::kernel::limits::{ExecLimits, Limits};
use crate::kernel::procs::ProcId;

/// The version of the record's shape; a record of another version is not
/// adopted (and, once its init is gone, is cleaned like any other).
pub const RECORD_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub version: u32,
    pub id: String,
    pub template: String,
    pub template_kind: TemplateKind,
    /// The template's image config and sandlot settings as they were at
    /// create (the template may change or go meanwhile; the sandbox keeps
    /// what it was made with).
    pub template_config: TemplateConfig,
    pub template_settings: Settings,
    pub hostname: String,
    pub env: Vec<(String, String)>,
    pub metadata: BTreeMap<String, String>,
    pub limits: Limits,
    pub exec_limits: ExecLimits,
    pub pause_clock: bool,
    /// The idle timeout, if any (the lifecycle file has it too, for the
    /// monitor).
    pub idle_timeout_ms: Option<u64>,
    pub created_at_ms: u64,
    /// The process that made it; while `init` is unset the sandbox is
    /// still being made and dies with this process.
    pub creator: ProcId,
    /// init, once the sandbox outlives its creator.
    pub init: Option<ProcId>,
    /// Its cgroup dirs, one per hierarchy (listed before they are made).
    pub cgroups: Vec<PathBuf>,
}

impl Record {
    /// The process whose life decides whether the record is live: init, or
    /// the creator while it is still being made.
    pub fn owner(&self) -> ProcId {
        self.init.unwrap_or(self.creator)
    }

    pub fn created_at(&self) -> SystemTime {
        from_ms(self.created_at_ms)
    }
}

pub(crate) fn to_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}
