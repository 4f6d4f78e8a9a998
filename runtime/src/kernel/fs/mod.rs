//! File operations resolved inside a sandbox's root, from the host: the
//! two rules that keep every path inside (`at`), sandbox paths (`path`),
//! the streaming tar export and import (`tar`) and their typed errors.
//! The public API over them is `services::files`.

pub(crate) mod at;
pub mod error;
pub(crate) mod path;
pub mod tar;

pub use error::FilesError;
