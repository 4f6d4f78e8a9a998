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
mod error;
mod init_binary;
pub mod lifecycle;
pub mod limits;
mod mounts;
mod options;
mod pool;
mod reactor;
mod runtime;
mod sandbox;
pub mod seccomp;
mod spawn;
#[allow(unsafe_code)]
mod sys;
mod userns;
mod users;

pub use commands::{
    Cmd, CommandExit, CommandHandle, CommandResult, Commands, ExitReason, OutputStream,
    ProcessEvent, ProcessInfo, RunOptions,
};
pub use error::{Error, Result};
pub use init_binary::INIT_BINARY;
pub use lifecycle::{LifecycleEvent, Reason, State};
pub use limits::{Limits, LimitsError};
pub use options::{SandboxOptions, DEFAULT_TIMEOUT, MAX_TIMEOUT};
pub use pool::{Acquire, Pool, PoolConfig, PoolStats, MIN_REMAINING, POOL_METADATA_KEY};
pub use runtime::{ListFilter, Runtime, RuntimeBuilder};
pub use sandbox::{Sandbox, SandboxInfo};
pub use userns::IdRange;
