//! The one error type of the cgroups module.
//!
//! Messages are lowercase, without a trailing period, and name the path and
//! the errno: `write 268435456 to /sys/fs/cgroup/memory/.../memory.limit_in_bytes: EINVAL`.

use std::path::PathBuf;
use std::time::Duration;

use nix::errno::Errno;
use thiserror::Error;

use crate::kernel::limits::LimitsError;

/// Why a cgroup operation failed.
#[derive(Debug, Error)]
pub enum CgroupError {
    /// Reading a cgroup or proc file failed.
    #[error("read {path}: {errno:?}")]
    Read { path: PathBuf, errno: Errno },
    /// Writing a value to a cgroup file failed (opening it included).
    #[error("write {value} to {path}: {errno:?}")]
    Write {
        path: PathBuf,
        value: String,
        errno: Errno,
    },
    /// Creating a cgroup directory failed.
    #[error("mkdir {path}: {errno:?}")]
    Mkdir { path: PathBuf, errno: Errno },
    /// Opening a cgroup directory failed.
    #[error("open {path}: {errno:?}")]
    Open { path: PathBuf, errno: Errno },
    /// Removing a cgroup directory failed.
    #[error("rmdir {path}: {errno:?}")]
    Rmdir { path: PathBuf, errno: Errno },
    /// A cgroup still held processes (or child cgroups) after the bounded
    /// wait for them to leave.
    #[error(
        "rmdir {path}: EBUSY: still in use after {waited:?} (processes left or child cgroups)"
    )]
    Busy { path: PathBuf, waited: Duration },
    /// A file did not have the expected format.
    #[error("parse {path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    /// The cgroup layout of this machine could not be worked out.
    #[error("detect cgroup layout: {0}")]
    Detect(String),
    /// A controller sandlot needs is not available where the sandboxes go.
    #[error("the {controller} controller is not available: {detail}")]
    ControllerUnavailable {
        controller: &'static str,
        detail: String,
    },
    /// The v2 parent holds processes that are not ours, so controllers
    /// cannot be enabled for its children.
    #[error(
        "cgroup {path} holds processes that are not sandlot's (pids {pids:?}): cgroup v2 lets a \
         non-root cgroup hold processes or enable controllers for its children, not both (the \
         no-internal-processes rule); run the host in a delegated cgroup of its own (e.g. \
         `systemd-run --scope -p Delegate=yes ...`) or set CgroupConfig::parent to an empty \
         delegated cgroup"
    )]
    InternalProcesses { path: PathBuf, pids: Vec<i32> },
    /// A name (runtime name or sandbox id) cannot be a cgroup directory.
    #[error("invalid cgroup name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// The limits did not validate.
    #[error(transparent)]
    Limits(#[from] LimitsError),
    /// Freezing or thawing did not finish in time.
    #[error("{action} {path}: not done after {waited:?}")]
    Timeout {
        action: &'static str,
        path: PathBuf,
        waited: Duration,
    },
    /// The operation needs a cgroup feature this machine lacks.
    #[error("{0} is not supported by this machine's cgroups")]
    Unsupported(&'static str),
}

impl CgroupError {
    /// The errno behind this error, if there is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            CgroupError::Read { errno, .. }
            | CgroupError::Write { errno, .. }
            | CgroupError::Mkdir { errno, .. }
            | CgroupError::Open { errno, .. }
            | CgroupError::Rmdir { errno, .. } => Some(*errno),
            CgroupError::Busy { .. } => Some(Errno::EBUSY),
            _ => None,
        }
    }
}

/// The errno of an `std::io::Error` (EIO when it carries none).
pub(crate) fn errno_of(e: &std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_path_and_errno() {
        let e = CgroupError::Write {
            path: "/sys/fs/cgroup/memory/x/memory.limit_in_bytes".into(),
            value: "268435456".into(),
            errno: Errno::EINVAL,
        };
        assert_eq!(
            e.to_string(),
            "write 268435456 to /sys/fs/cgroup/memory/x/memory.limit_in_bytes: EINVAL"
        );
        let e = CgroupError::Rmdir {
            path: "/a".into(),
            errno: Errno::ENOTEMPTY,
        };
        assert_eq!(e.to_string(), "rmdir /a: ENOTEMPTY");
        assert_eq!(e.errno(), Some(Errno::ENOTEMPTY));
        let e = CgroupError::InternalProcesses {
            path: "/sys/fs/cgroup/ci.slice/test".into(),
            pids: vec![12],
        };
        let m = e.to_string();
        assert!(m.contains("no-internal-processes"), "{m}");
        assert!(m.contains("Delegate=yes"), "{m}");
        assert!(!m.ends_with('.'), "{m}");
    }
}
