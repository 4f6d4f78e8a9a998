use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::settings::SettingsError;

/// Why a template could not be built, found, imported or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("template {0:?} does not exist")]
    NotFound(String),
    #[error("invalid template name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// Settings that were refused; `error.field` names the field.
    #[error("invalid template settings{origin}: {error}")]
    InvalidSettings {
        origin: SettingsOrigin,
        /// Boxed: a rarely built error should not make every `Result`
        /// of this crate (and the runtime's) wider.
        error: Box<SettingsError>,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a usable root filesystem: {reason}")]
    NotARootfs { path: PathBuf, reason: String },
    #[error("{path} is not an OCI image layout: {reason}")]
    NotALayout { path: PathBuf, reason: String },
    #[error("parse {what} in {path}: {source}")]
    Json {
        what: String,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("image at {path} has no manifest for linux/{wanted} (it offers: {available})")]
    NoMatchingPlatform {
        path: PathBuf,
        wanted: &'static str,
        available: String,
    },
    #[error("blob {digest}: {problem}")]
    Blob {
        digest: String,
        problem: BlobProblem,
    },
    #[error("layer {layer}: {problem}")]
    Layer { layer: String, problem: String },
    #[error("layer {layer}: entry {entry:?}: {problem}")]
    Entry {
        layer: String,
        entry: String,
        problem: EntryProblem,
    },
    #[error("layer {layer}: entry {entry:?}: {action}: {source}")]
    EntryIo {
        layer: String,
        entry: String,
        action: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Where refused settings came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingsOrigin {
    /// Given by the caller (an import's or `set_settings`'s argument).
    Given,
    /// A template's `sandlot.json`.
    File(PathBuf),
    /// The image's [`crate::SETTINGS_LABEL`] label.
    Label,
}

impl fmt::Display for SettingsOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Given => Ok(()),
            Self::File(path) => write!(f, " in {}", path.display()),
            Self::Label => write!(f, " in image label {}", crate::SETTINGS_LABEL),
        }
    }
}

/// What is wrong with a blob of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobProblem {
    /// Only sha256 digests are accepted (the only algorithm images use).
    UnsupportedDigest,
    Missing,
    DigestMismatch {
        actual: String,
    },
    SizeMismatch {
        expected: u64,
        actual: u64,
    },
    /// More bytes than the descriptor's size (reading stopped there).
    TooLarge {
        expected: u64,
    },
    UnsupportedMediaType(String),
}

impl fmt::Display for BlobProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnsupportedDigest => write!(f, "unsupported digest (only sha256 is accepted)"),
            Self::Missing => write!(f, "missing from the image"),
            Self::DigestMismatch { actual } => write!(f, "digest mismatch: content is {actual}"),
            Self::SizeMismatch { expected, actual } => {
                write!(
                    f,
                    "size mismatch: expected {expected} bytes, found {actual}"
                )
            }
            Self::TooLarge { expected } => {
                write!(
                    f,
                    "size mismatch: longer than the expected {expected} bytes"
                )
            }
            Self::UnsupportedMediaType(media_type) => {
                write!(f, "unsupported media type {media_type}")
            }
        }
    }
}

/// Why a member of an archive was refused (an image layer's, or a tar
/// imported into a sandbox): broken, hostile, or against the extraction's
/// policy. Nothing of such an image layer is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryProblem {
    /// A `..` component anywhere in the path.
    DotDot,
    /// An absolute path (`/etc/passwd`).
    Absolute,
    /// A symlink whose target leaves the layer root when resolved from the
    /// link's directory (`../../etc/shadow`).
    SymlinkEscapes { target: String },
    /// A hard link whose target is not a path inside the layer.
    HardlinkEscapes { target: String },
    /// A hard link to something this layer does not hold (yet).
    HardlinkTargetMissing { target: String },
    /// The path goes through a symlink (`a -> /etc`, then `a/passwd`).
    ThroughSymlink,
    /// A parent on the path is not a directory.
    ParentNotDir,
    /// Device nodes and FIFOs: a template never carries them (whiteouts,
    /// which are stored as 0:0 character devices, come from `.wh.` names).
    Device { kind: &'static str },
    /// Any other entry type (volume labels, multi-volume continuations, …).
    Unsupported { kind: String },
    /// A name the filesystem cannot hold (empty, a NUL byte, a whiteout
    /// of nothing).
    BadName,
    /// A regular file larger than the extraction allows.
    TooLarge { size: u64, max: u64 },
    /// A non-directory member where a directory with contents is, and the
    /// extraction does not replace full directories.
    DirectoryNotEmpty,
}

impl fmt::Display for EntryProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DotDot => write!(f, "path contains \"..\""),
            Self::Absolute => write!(f, "path is absolute"),
            Self::SymlinkEscapes { target } => {
                write!(f, "symlink target {target:?} resolves outside the root")
            }
            Self::HardlinkEscapes { target } => {
                write!(f, "hard link target {target:?} is outside the root")
            }
            Self::HardlinkTargetMissing { target } => {
                write!(f, "hard link target {target:?} is not in this layer")
            }
            Self::ThroughSymlink => write!(f, "path goes through a symlink"),
            Self::ParentNotDir => write!(f, "a parent on the path is not a directory"),
            Self::Device { kind } => write!(f, "{kind} entries are not allowed"),
            Self::Unsupported { kind } => write!(f, "unsupported entry type {kind}"),
            Self::BadName => write!(f, "invalid name"),
            Self::TooLarge { size, max } => {
                write!(f, "{size} bytes, more than the maximum of {max}")
            }
            Self::DirectoryNotEmpty => {
                write!(f, "a directory that is not empty is in the way")
            }
        }
    }
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }

    /// Settings given by the caller were refused.
    pub(crate) fn settings(error: SettingsError) -> Error {
        Error::InvalidSettings {
            origin: SettingsOrigin::Given,
            error: Box::new(error),
        }
    }

    pub(crate) fn blob(digest: impl fmt::Display, problem: BlobProblem) -> Error {
        Error::Blob {
            digest: digest.to_string(),
            problem,
        }
    }
}
