//! sandlot: isolated sandboxes for untrusted code, in-process, on one
//! Linux machine — what a cloud code-sandbox service gives over an API,
//! without a VM or a server.
//!
//! ```no_run
//! use sandlot::{Runtime, SandboxOptions, RunOptions};
//! let rt = Runtime::new()?;
//! let sandbox = rt.create(SandboxOptions::default().metadata("user", "u1"))?;
//! let out = sandbox.commands().run("echo hello from $(hostname)", RunOptions::default())?;
//! assert!(out.success());
//! sandbox.kill()?;
//! # Ok::<(), sandlot::Error>(())
//! ```
//!
//! See ARCHITECTURE.md for the module map and the setup sequence, and
//! SECURITY.md for what the isolation does and does not promise.

#![deny(unsafe_code)]

pub mod caps;
pub mod cgroups;
mod commands;
mod control;
pub mod doctor;
mod error;
mod files;
mod health;
mod init_binary;
/// Kernel-facing pieces (target layout of the layering, issue 10). Public
/// for the root integration tests of the network until it is wired into
/// `Sandbox` (phase 2 of issue 13).
#[doc(hidden)]
pub mod kernel {
    pub mod net;
}
pub mod lifecycle;
pub mod limits;
mod metrics;
mod monitor;
mod mounts;
mod oom;
mod options;
mod pause;
mod pool;
mod quota;
mod reactor;
mod resources;
mod runtime;
mod sandbox;
/// Services over the kernel pieces (target layout, issue 10): the
/// network's rules, resolver, proxy and port exposure.
pub mod services {
    pub mod net;
}
pub mod seccomp;
mod spawn;
#[allow(unsafe_code)]
mod sys;
mod template;
mod userns;
mod users;
pub mod watch;

pub use commands::{
    Cmd, CommandExit, CommandHandle, CommandResult, Commands, ExitReason, OutputStream,
    ProcessEvent, ProcessInfo, RunOptions,
};
pub use error::{Error, Result};
pub use files::{
    EntryInfo, FileKind, FileReader, Files, FilesError, TarExport, TarImport, DEFAULT_MAX_FILE_SIZE,
};
pub use health::{Health, HealthCheck, HealthStatus, RESOURCE_LIMIT_FRACTION, RESPONSIVE_TIMEOUT};
pub use init_binary::INIT_BINARY;
pub use lifecycle::{LifecycleEvent, Reason, State};
pub use limits::{ExecLimits, Limits, LimitsError};
pub use metrics::Metrics;
pub use monitor::{
    AlertKind, MonitorTarget, ResourceAlert, ResourceKind, ResourceMonitor, Thresholds,
};
pub use oom::{OomEvent, ResourceEvent};
pub use options::{Explicit, SandboxOptions, DEFAULT_TIMEOUT, MAX_TIMEOUT};
pub use pool::{Acquire, Pool, PoolConfig, PoolStats, MIN_REMAINING, POOL_METADATA_KEY};
pub use runtime::{ListFilter, Runtime, RuntimeBuilder};
pub use sandbox::{Sandbox, SandboxInfo};
pub use sandlot_rootfs::{DefaultLimits, Interpreter, Readiness, Settings, StartCommand};
pub use userns::IdRange;
pub use watch::{FsEvent, Watch};
