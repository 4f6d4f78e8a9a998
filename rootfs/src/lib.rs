//! sandlot templates: what a sandbox's root filesystem is made of.
//!
//! A [`Template`] is a stack of read-only lower directories (overlay order,
//! uppermost first), host directories bound read-only on top, and the
//! configuration a sandbox inherits (environment, working directory, user,
//! shell). Files in lower layers are stored with the ids they have *inside*
//! the sandbox (root-owned files are owned by host uid 0); the runtime maps
//! them into each sandbox's id range with an idmapped mount, so no layer is
//! ever copied or chowned per sandbox.
//!
//! Kinds today: the host-bind `base` template ([`base`]), built from the
//! host's /usr plus a small synthesized /etc.

mod base;
mod error;

pub use base::{base, base_from, BASE_NAME, USER_ID};
pub use error::Error;

use std::path::PathBuf;

/// A host directory bound read-only into every sandbox of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBind {
    /// Absolute path on the host.
    pub source: PathBuf,
    /// Path inside the sandbox, relative to its root (e.g. `usr`).
    pub target: PathBuf,
}

/// What a sandbox inherits from its template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateConfig {
    /// `KEY=VALUE` entries every command starts with.
    pub env: Vec<(String, String)>,
    /// The working directory of commands that do not name one.
    pub working_dir: Option<String>,
    /// The user commands run as unless they name one.
    pub user: String,
    /// The shell that runs command strings (`shell -c "…"`).
    pub shell: String,
}

/// A root filesystem ready to be stacked into a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub name: String,
    /// Lower directories, uppermost first.
    pub layers: Vec<PathBuf>,
    pub binds: Vec<HostBind>,
    pub config: TemplateConfig,
}
