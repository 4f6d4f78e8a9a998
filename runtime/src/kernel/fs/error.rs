//! What a files operation can get wrong, always with the path inside the
//! sandbox it was about.

use std::io;

use nix::errno::Errno;

/// A files API failure. Every variant names the path (as the caller gave
/// it, made absolute), so a batch of operations says which one failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilesError {
    #[error("{path}: no such file or directory")]
    NotFound { path: String },

    /// A component that should be a directory is not one.
    #[error("{path}: not a directory")]
    NotADirectory { path: String },

    #[error("{path}: is a directory")]
    IsADirectory { path: String },

    #[error("{path}: already exists")]
    AlreadyExists { path: String },

    /// A tar entry or hard link would land outside the directory it is
    /// extracted into, or a path names a magic link (`/proc/<pid>/root`).
    #[error("{path}: leads outside {within}")]
    PathEscape { path: String, within: String },

    /// Above the files API's maximum (see `Files::max_file_size`).
    #[error("{path}: larger than the maximum of {max} bytes")]
    FileTooLarge { path: String, max: u64 },

    /// The sandbox's writable space (its disk limit) is full.
    #[error("{path}: no space left in the sandbox (disk limit)")]
    NoSpace { path: String },

    /// Content was asked of something that is not a regular file (a device,
    /// a FIFO, a socket).
    #[error("{path}: not a regular file ({kind})")]
    NotAFile { path: String, kind: &'static str },

    /// A path on a kernel pseudo filesystem (/proc and the like): the host
    /// reads and writes there with its own privileges, so the API refuses.
    #[error("{path}: on {filesystem}, which the files API does not read or change")]
    SpecialFilesystem {
        path: String,
        filesystem: &'static str,
    },

    #[error("{path}: {reason}")]
    InvalidPath { path: String, reason: &'static str },

    #[error("{path}: not valid UTF-8")]
    NotUtf8 { path: String },

    /// A directory tree deeper than the walks go (bounded so a hostile tree
    /// cannot exhaust the host's descriptors).
    #[error("{path}: deeper than {max} levels")]
    TooDeep { path: String, max: usize },

    /// A tar stream that cannot be read or holds an entry sandlot refuses.
    #[error("{path}: tar: {reason}")]
    Tar { path: String, reason: String },

    /// Any other failure of a system call, named.
    #[error("{op} {path}: {errno}")]
    Os {
        op: &'static str,
        path: String,
        errno: Errno,
    },
}

impl FilesError {
    /// The path inside the sandbox the error is about.
    pub fn path(&self) -> &str {
        match self {
            FilesError::NotFound { path }
            | FilesError::NotADirectory { path }
            | FilesError::IsADirectory { path }
            | FilesError::AlreadyExists { path }
            | FilesError::PathEscape { path, .. }
            | FilesError::FileTooLarge { path, .. }
            | FilesError::NoSpace { path }
            | FilesError::NotAFile { path, .. }
            | FilesError::SpecialFilesystem { path, .. }
            | FilesError::InvalidPath { path, .. }
            | FilesError::NotUtf8 { path }
            | FilesError::TooDeep { path, .. }
            | FilesError::Tar { path, .. }
            | FilesError::Os { path, .. } => path,
        }
    }

    /// Maps an errno to the typed variant it stands for; `op` names the
    /// call for the ones without a variant of their own.
    pub(crate) fn from_errno(op: &'static str, path: &str, errno: Errno) -> FilesError {
        let path = path.to_string();
        match errno {
            Errno::ENOENT => FilesError::NotFound { path },
            Errno::ENOTDIR => FilesError::NotADirectory { path },
            Errno::EISDIR => FilesError::IsADirectory { path },
            Errno::EEXIST => FilesError::AlreadyExists { path },
            Errno::ENOSPC | Errno::EDQUOT => FilesError::NoSpace { path },
            errno => FilesError::Os { op, path, errno },
        }
    }

    /// Kinds stable at the workspace's rust-version; the rest are `Other`
    /// (the typed error inside says what).
    fn io_kind(&self) -> io::ErrorKind {
        match self {
            FilesError::NotFound { .. } => io::ErrorKind::NotFound,
            FilesError::AlreadyExists { .. } => io::ErrorKind::AlreadyExists,
            FilesError::PathEscape { .. } | FilesError::SpecialFilesystem { .. } => {
                io::ErrorKind::PermissionDenied
            }
            FilesError::InvalidPath { .. } | FilesError::NotUtf8 { .. } => {
                io::ErrorKind::InvalidInput
            }
            FilesError::Tar { .. } => io::ErrorKind::InvalidData,
            _ => io::ErrorKind::Other,
        }
    }
}

/// Streaming readers report through `io::Error`; the typed error stays
/// inside (`get_ref().downcast_ref::<FilesError>()`).
impl From<FilesError> for io::Error {
    fn from(e: FilesError) -> io::Error {
        io::Error::new(e.io_kind(), e)
    }
}

/// Recovers a [`FilesError`] carried by an `io::Error`, or names the
/// failure with `op` and `path`.
pub(crate) fn from_io(op: &'static str, path: &str, e: io::Error) -> FilesError {
    if e.get_ref().is_some_and(|inner| inner.is::<FilesError>()) {
        return *e.into_inner().unwrap().downcast::<FilesError>().unwrap();
    }
    match e.raw_os_error() {
        Some(raw) => FilesError::from_errno(op, path, Errno::from_raw(raw)),
        None => FilesError::Os {
            op,
            path: path.to_string(),
            errno: Errno::EIO,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_become_typed_variants_with_the_path() {
        let e = FilesError::from_errno("open", "/a/b", Errno::ENOENT);
        assert_eq!(
            e,
            FilesError::NotFound {
                path: "/a/b".into()
            }
        );
        assert_eq!(e.to_string(), "/a/b: no such file or directory");
        assert!(matches!(
            FilesError::from_errno("write", "/x", Errno::ENOSPC),
            FilesError::NoSpace { .. }
        ));
        let other = FilesError::from_errno("rename", "/x", Errno::EXDEV);
        assert_eq!(other.to_string(), format!("rename /x: {}", Errno::EXDEV));
        assert_eq!(other.path(), "/x");
    }

    #[test]
    fn io_errors_carry_the_typed_error_through() {
        let e: io::Error = FilesError::FileTooLarge {
            path: "/big".into(),
            max: 10,
        }
        .into();
        assert_eq!(e.kind(), io::ErrorKind::Other);
        assert_eq!(
            from_io("read", "/other", e),
            FilesError::FileTooLarge {
                path: "/big".into(),
                max: 10
            }
        );
        let raw = io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(matches!(
            from_io("write", "/f", raw),
            FilesError::NoSpace { .. }
        ));
    }
}
