//! sandlot templates: what a sandbox's root filesystem is made of.
//!
//! A [`Template`] is a stack of read-only lower directories (overlay order,
//! uppermost first), host directories bound read-only on top, and the
//! configuration a sandbox inherits (environment, command, working
//! directory, user, shell) plus sandlot's own [`Settings`] (default timeout
//! and limits, a start command, code interpreters). Files in lower layers
//! are stored with the ids they have *inside* the sandbox (root-owned files
//! are owned by host uid 0); the runtime maps them into each sandbox's id
//! range with an idmapped mount, so no layer is ever copied or chowned per
//! sandbox.
//!
//! Kinds ([`TemplateKind`]):
//! - the host-bind `base` template ([`base`]): the host's /usr plus a small
//!   synthesized /etc;
//! - a directory holding a root filesystem, used in place as the only layer;
//! - an OCI image (layout directory or `.tar` of one), imported into a
//!   content-addressed layer cache.
//!
//! [`Store`] is the named registry under a data dir; see its docs for the
//! on-disk layout.

#![deny(unsafe_code)]

mod base;
mod config;
mod dir;
mod error;
pub mod extract;
mod layers;
mod oci;
mod settings;
mod store;
mod sys;
#[cfg(test)]
mod tests;

pub use base::{base, base_from, BASE_NAME, USER_ID};
pub use error::{BlobProblem, EntryProblem, Error, SettingsOrigin};
pub use settings::{
    DefaultLimits, Interpreter, Readiness, Settings, SettingsError, SettingsProblem, StartCommand,
    MAX_ARGS, MAX_BYTES, MAX_CPUS, MAX_INTERPRETERS, MAX_PIDS, MAX_READY_TIMEOUT_SECS,
    MAX_SETTINGS_JSON, MAX_STRING, MAX_TIMEOUT_SECS, MIN_CPUS, MIN_DISK, MIN_MEMORY,
    SETTINGS_LABEL,
};
pub use store::{validate_name, Store, TemplateSummary};

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Path resolution a hostile tree cannot lead astray: the one `openat2`
/// wrapper of sandlot, used by [`extract`] and by the runtime's host-side
/// access to files inside sandboxes.
pub mod at {
    pub use crate::sys::{openat2, Resolve};
}

/// A host directory bound read-only into every sandbox of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBind {
    /// Absolute path on the host.
    pub source: PathBuf,
    /// Path inside the sandbox, relative to its root (e.g. `usr`).
    pub target: PathBuf,
}

/// What a sandbox inherits from its template. For OCI images this comes
/// from the image config (`Env`, `Cmd`, `Entrypoint`, `WorkingDir`, `User`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateConfig {
    /// `KEY=VALUE` entries every command starts with.
    pub env: Vec<(String, String)>,
    /// The image's default command (arguments to `entrypoint` if it has one).
    #[serde(default)]
    pub cmd: Vec<String>,
    /// The image's entrypoint; empty when it has none.
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// The working directory of commands that do not name one.
    pub working_dir: Option<String>,
    /// The user commands run as unless they name one: a name or a uid, with
    /// an optional `:group` (the OCI `User` syntax), resolved in the sandbox.
    pub user: String,
    /// The shell that runs command strings (`shell -c "…"`).
    pub shell: String,
}

/// Where a template's root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TemplateKind {
    /// The built-in `base`: host directories bound read-only.
    HostBind,
    /// An existing root filesystem directory, used in place.
    Dir(PathBuf),
    /// An imported OCI image, by the digest of its manifest.
    Oci { manifest: String, source: PathBuf },
}

impl TemplateKind {
    /// A one-word name of the kind, for listings.
    pub fn label(&self) -> &'static str {
        match self {
            TemplateKind::HostBind => "host",
            TemplateKind::Dir(_) => "dir",
            TemplateKind::Oci { .. } => "oci",
        }
    }
}

/// A root filesystem ready to be stacked into a sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub name: String,
    pub kind: TemplateKind,
    /// Lower directories, uppermost first: the order of overlayfs's
    /// `lowerdir=` (an OCI image's last layer comes first).
    pub layers: Vec<PathBuf>,
    pub binds: Vec<HostBind>,
    pub config: TemplateConfig,
    pub settings: Settings,
}
