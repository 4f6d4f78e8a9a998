//! One public error type. Every variant keeps its cause and names what was
//! wrong: the option, the sandbox, the setup step and its errno.

use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

use crate::engine::lifecycle::State;
use crate::kernel::KernelError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A caller-supplied option is out of range or malformed.
    #[error("invalid option {option}: {reason}")]
    InvalidOptions {
        option: &'static str,
        reason: String,
    },

    #[error("command is empty")]
    EmptyCommand,

    #[error("template {0:?} does not exist")]
    TemplateNotFound(String),

    #[error("template {name:?}: {source}")]
    Template {
        name: String,
        #[source]
        source: sandlot_rootfs::Error,
    },

    #[error(transparent)]
    Limits(#[from] crate::kernel::limits::LimitsError),

    #[error(transparent)]
    Cgroup(#[from] crate::kernel::cgroups::CgroupError),

    #[error(transparent)]
    Seccomp(#[from] crate::kernel::seccomp::SeccompError),

    #[error(transparent)]
    Caps(#[from] crate::kernel::caps::CapsError),

    #[error("quota exceeded: {what} (limit {limit})")]
    QuotaExceeded { what: &'static str, limit: u64 },

    #[error("resource unavailable: {0}")]
    ResourceUnavailable(String),

    #[error("sandbox {0} not found")]
    SandboxNotFound(String),

    #[error("sandbox {id} is not running (state {state})")]
    SandboxNotRunning { id: String, state: State },

    /// The program of a command does not exist inside the sandbox.
    #[error("command not found in sandbox: {program}")]
    CommandNotFound { program: String },

    /// A command could not be started inside the sandbox.
    #[error("cannot start {program} in sandbox: {errno}")]
    Spawn { program: String, errno: Errno },

    /// sandlot needs root (it creates user namespaces with a mapped id range,
    /// cgroups and mounts).
    #[error("sandlot must run as root (euid {euid}); run it with sudo or as root")]
    NotRoot { euid: u32 },

    /// The kernel refuses a feature sandlot depends on.
    #[error("{feature} is unavailable: {reason}")]
    Unsupported {
        feature: &'static str,
        reason: String,
    },

    /// A step of building a sandbox failed; names the step, the path if
    /// there is one, and the errno.
    #[error("{step}{}: {errno}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Setup {
        step: &'static str,
        path: Option<PathBuf>,
        errno: Errno,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    /// init broke the control protocol or went away mid-conversation.
    #[error("control channel of sandbox {id}: {reason}")]
    Protocol { id: String, reason: String },

    #[error("timed out after {0:?}")]
    TimedOut(std::time::Duration),

    /// A files API operation failed; the error names the path.
    #[error(transparent)]
    Files(#[from] crate::kernel::fs::FilesError),

    /// The template's start command failed or was not ready in time; the
    /// sandbox was destroyed.
    #[error("start command of template {template:?}: {reason}")]
    StartFailed { template: String, reason: String },

    /// A code context's interpreter is not installed in the sandbox (its
    /// template has no such program).
    #[error("no {language} interpreter in the sandbox: program {program:?} not found")]
    InterpreterNotFound {
        language: &'static str,
        program: String,
    },

    /// A code context could not start, or its interpreter could not be used.
    #[error("{language} code context: {reason}")]
    CodeContext {
        language: &'static str,
        reason: String,
    },

    #[error("code context {0} not found")]
    CodeContextNotFound(String),

    /// A network rule or bandwidth that does not parse, or too many rules;
    /// the message names the rule as written.
    #[error(transparent)]
    NetworkRule(#[from] crate::engine::network::RuleError),

    /// Setting up or serving a sandbox's network failed: names the step,
    /// and the errno where the kernel refused.
    #[error("sandbox network: {step}: {detail}")]
    NetworkSetup {
        step: &'static str,
        errno: Option<Errno>,
        detail: String,
    },

    /// The runtime is shutting down or has shut down.
    #[error("the runtime is shut down")]
    RuntimeShutDown,

    /// A new sandbox did not pass the check `create_with_retry` makes (a
    /// trivial command and its output); it was destroyed.
    #[error("sandbox {id} did not pass its check: {reason}")]
    ValidationFailed { id: String, reason: String },

    /// `create_with_retry` gave up; every attempt's error, in order.
    #[error("every attempt to create a sandbox failed: {}", describe_attempts(.0))]
    AllAttemptsFailed(Vec<Attempt>),
}

/// One failed attempt of `create_with_retry`.
#[derive(Debug)]
pub struct Attempt {
    pub template: String,
    pub error: Error,
}

fn describe_attempts(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}. template {:?}: {}", i + 1, a.template, a.error))
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<KernelError> for Error {
    fn from(e: KernelError) -> Error {
        match e {
            KernelError::InvalidOptions { option, reason } => {
                Error::InvalidOptions { option, reason }
            }
            KernelError::Unsupported { feature, reason } => Error::Unsupported { feature, reason },
            KernelError::Setup { step, path, errno } => Error::Setup { step, path, errno },
            KernelError::Io { context, source } => Error::Io { context, source },
            KernelError::RuntimeShutDown => Error::RuntimeShutDown,
        }
    }
}

impl Error {
    /// A failure of the kernel side of a sandbox's network, as the
    /// network's own variant (a missing kernel feature stays
    /// `Unsupported`, a shutdown `RuntimeShutDown`).
    pub(crate) fn network(e: KernelError) -> Error {
        match e {
            KernelError::Setup { step, path, errno } => Error::NetworkSetup {
                step,
                errno: Some(errno),
                detail: match path {
                    Some(path) => format!("{}: {errno}", path.display()),
                    None => errno.to_string(),
                },
            },
            KernelError::Io { context, source } => Error::NetworkSetup {
                step: "network I/O",
                errno: source.raw_os_error().map(Errno::from_raw),
                detail: format!("{context}: {source}"),
            },
            other => Error::from(other),
        }
    }

    pub(crate) fn setup(step: &'static str, errno: Errno) -> Error {
        Error::Setup {
            step,
            path: None,
            errno,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn invalid(option: &'static str, reason: impl Into<String>) -> Error {
        Error::InvalidOptions {
            option,
            reason: reason.into(),
        }
    }
}
