//! Code contexts: stateful interpreters (Python, JavaScript, Bash) that run
//! cells and return structured results, like a notebook kernel.
//!
//! A context is one long-lived interpreter process running a small driver
//! that sandlot ships inside its binary (`drivers/`): Python's driver uses
//! IPython's `InteractiveShell` when it can import it and the standard
//! library otherwise; node's keeps top-level bindings across cells; bash's
//! is an interactive shell reading the host's requests. The host owns every
//! pipe (`protocol.rs` documents the framing): the cell's stdout and stderr
//! are the interpreter's real fds 1 and 2, read like a command's output,
//! and structured messages (results, errors, end of cell) travel on a pipe
//! pair of their own.
//!
//! The engine is independent of where the interpreter runs: a
//! [`Launcher`] starts it with the given descriptors and signals its
//! process group. [`HostLauncher`] runs it on the host; a sandbox runs it
//! inside, through init.
//!
//! ```no_run
//! use sandlot::code::{CellOptions, CodeContextOptions, CodeContexts, HostLauncher, Language};
//! let contexts = CodeContexts::new(HostLauncher);
//! let ctx = contexts.create_context(CodeContextOptions::new(Language::Python))?;
//! contexts.run(&ctx, "x = 41", CellOptions::default())?;
//! let execution = contexts.run(&ctx, "x + 1", CellOptions::default())?;
//! assert_eq!(execution.text(), Some("42"));
//! # Ok::<(), sandlot::code::CodeError>(())
//! ```

mod context;
mod contexts;
mod drivers;
mod error;
mod io;
mod launcher;
mod output;
pub mod protocol;
mod sandbox;
mod types;

pub use context::ContextState;
pub use contexts::{CodeContexts, Context, ContextInfo};
pub use drivers::{BASH_DRIVER, NODE_DRIVER, PYTHON_DRIVER};
pub use error::CodeError;
pub use launcher::{
    CellGuard, DriverExit, DriverProcess, HostLauncher, LaunchError, LaunchRequest, Launcher,
};
pub use protocol::CellInputError;
pub use sandbox::SandboxCode;
pub use types::{
    CellOptions, CodeContextOptions, DisplayData, ErrorCallback, Execution, ExecutionError,
    Language, ResultCallback, TextCallback, UnknownLanguage, CONTEXT_EXITED,
    DEFAULT_CELL_OUTPUT_CAP, DEFAULT_CELL_TIMEOUT, DEFAULT_INTERRUPT_GRACE, DEFAULT_START_TIMEOUT,
    EXIT_STATUS, PROTOCOL_ERROR, TIMEOUT_ERROR,
};
