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
//! The crate is built in layers, each importing only from the layers below
//! it (`scripts/check-layers.py` keeps it so; ARCHITECTURE.md draws them):
//!
//! | layer | folder | what |
//! |---|---|---|
//! | 0 | `sys/` | the only unsafe code: thin syscall wrappers |
//! | 1 | `kernel/` | cgroups, seccomp, capabilities, id maps, mounts, the clone sequence, file operations inside a root |
//! | 2 | `engine/` | the public error, lifecycle states and events, the sandbox table and shared state, the io thread, the control channel, the reaper |
//! | 3 | `services/` | commands, files, watches, metrics, monitors, health, pause, templates, users, quotas |
//! | 4 | `api/` | `Runtime`, the create sequence, the `Sandbox` handle, `Pool` |
//! | 5 | `tools/` | `doctor` |
//!
//! See ARCHITECTURE.md for the module map and the setup sequence, and
//! SECURITY.md for what the isolation does and does not promise.

#![deny(unsafe_code)]

// README's Rust samples compile as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeSamples;

mod api;
mod engine;
mod kernel;
mod services;
#[allow(unsafe_code)]
mod sys;
mod tools;

pub use api::pool::{Acquire, Pool, PoolConfig, PoolStats, MIN_REMAINING, POOL_METADATA_KEY};
pub use api::retry::RetryPolicy;
pub use api::runtime::{CleanupReport, ListFilter, Runtime, RuntimeBuilder};
pub use api::sandbox::Sandbox;
pub use api::session::{
    SessionPool, SessionPoolConfig, SESSION_METADATA_KEY, SESSION_POOL_METADATA_KEY,
};
pub use engine::error::{Attempt, Error, Result};
pub use engine::lifecycle::{
    AlertKind, CommandExit, DeniedBy, Destination, ExitReason, LifecycleEvent, NetworkDenied,
    OomEvent, OutputStream, ProcessEvent, Reason, ResourceAlert, ResourceEvent, ResourceKind,
    Signal, State, Subscription, SUBSCRIPTION_CAPACITY,
};
pub use engine::network::{parse_rate, Network, Rule, RuleError, Target, MAX_RULES};
pub use engine::options::{Explicit, SandboxOptions, TimeoutAction, DEFAULT_TIMEOUT, MAX_TIMEOUT};
pub use engine::output::ProcessEvents;
pub use engine::sandbox::SandboxInfo;
pub use kernel::cgroups::CgroupConfig;
pub use kernel::init_binary::INIT_BINARY;
pub use kernel::limits::{
    ExecLimits, Limits, LimitsError, MAX_EXEC_TIME, MIN_CPUS, MIN_DISK, MIN_MEMORY, MIN_OPEN_FILES,
};
pub use kernel::seccomp::SeccompProfile;
pub use kernel::userns::IdRange;
pub use sandlot_rootfs::{DefaultLimits, Interpreter, Readiness, Settings, StartCommand};
/// Code contexts: long-lived interpreters (Python, JavaScript, Bash) that
/// keep state between cells.
pub use services::code;
pub use services::commands::{
    Cmd, Command, CommandHandle, CommandResult, Commands, ProcessInfo, RunOptions, Stdin,
    DEFAULT_OUTPUT_CAP,
};
pub use services::files::{
    EntryInfo, FileKind, FileReader, Files, FilesError, TarExport, TarImport, DEFAULT_MAX_FILE_SIZE,
};
pub use services::health::{
    Health, HealthCheck, HealthStatus, RESOURCE_LIMIT_FRACTION, RESPONSIVE_TIMEOUT,
};
pub use services::metrics::Metrics;
pub use services::monitor::{MonitorTarget, ResourceMonitor, Thresholds};
pub use services::net::{NetworkConfig, NetworkCounters};
pub use services::pty::{PtyHandle, PtySize, DEFAULT_TERM};
pub use services::watch::{FsEvent, Watch};

/// Errors of the pieces a sandbox is built from, kept whole inside
/// [`Error`].
pub mod errors {
    pub use crate::kernel::caps::CapsError;
    pub use crate::kernel::cgroups::CgroupError;
    pub use crate::kernel::seccomp::SeccompError;
}

/// `sandlot doctor`: can this machine run sandboxes?
pub mod doctor {
    pub use crate::tools::doctor::*;
}

/// Internals the integration tests drive directly; not public API.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing {
    pub use crate::kernel::caps::{set_no_new_privs, CapPlan, SANDBOX_CAPS};
    pub use crate::kernel::cgroups;
    /// The network's kernel side and services, driven directly by the
    /// mechanism-level network tests and benchmarks.
    pub use crate::kernel::net as kernel_net;
    pub use crate::kernel::seccomp::CompiledSeccomp;
    pub use crate::services::net;

    /// Fault injection: the proxy loop serving `sandbox` panics while it
    /// handles the sandbox's next connection.
    pub fn panic_on_next_connection(sandbox: &crate::Sandbox) {
        crate::services::net::service::panic_on_next_connection(&sandbox.shared);
    }
}

// The handles users share between threads stay shareable.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<Runtime>();
    shareable::<Sandbox>();
    shareable::<CommandHandle>();
    shareable::<PtyHandle>();
    shareable::<Pool>();
    shareable::<SessionPool>();
    shareable::<Command>();
    shareable::<ProcessEvents>();
    shareable::<ResourceMonitor>();
};
