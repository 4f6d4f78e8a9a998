//! The error of the kernel-facing layer: a setup step that failed (with
//! its path and errno), an I/O error with its context, an option the
//! kernel-facing code refuses, a feature this kernel lacks. The engine's
//! public [`Error`](crate::Error) keeps each as the variant of the same
//! name, so callers see one error type.

use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

pub type KernelResult<T, E = KernelError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("invalid option {option}: {reason}")]
    InvalidOptions {
        option: &'static str,
        reason: String,
    },

    #[error("{feature} is unavailable: {reason}")]
    Unsupported {
        feature: &'static str,
        reason: String,
    },

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

    /// The spawner thread is gone (the runtime is shutting down).
    #[error("the runtime is shut down")]
    RuntimeShutDown,
}

impl KernelError {
    pub(crate) fn setup(step: &'static str, errno: Errno) -> KernelError {
        KernelError::Setup {
            step,
            path: None,
            errno,
        }
    }

    pub(crate) fn setup_at(
        step: &'static str,
        path: impl Into<PathBuf>,
        errno: Errno,
    ) -> KernelError {
        KernelError::Setup {
            step,
            path: Some(path.into()),
            errno,
        }
    }

    /// A setup step at `path` that failed with an `io::Error` (std's file
    /// calls): reported, like every setup step, with its errno.
    pub(crate) fn setup_io(
        step: &'static str,
        path: impl Into<PathBuf>,
        e: &io::Error,
    ) -> KernelError {
        KernelError::setup_at(
            step,
            path,
            Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        )
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> KernelError {
        KernelError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn invalid(option: &'static str, reason: impl Into<String>) -> KernelError {
        KernelError::InvalidOptions {
            option,
            reason: reason.into(),
        }
    }
}
