//! Why a code-context call failed (as opposed to a cell that raised, which
//! is a successful call whose [`Execution`](super::Execution) has an error).

use std::io;
use std::time::Duration;

use super::protocol::CellInputError;
use super::types::Language;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodeError {
    /// The template has no interpreter for the language (the program is
    /// not installed where the context runs).
    #[error("no {language} interpreter: program {program:?} not found")]
    InterpreterNotFound { language: Language, program: String },

    /// The interpreter started but its driver never became ready.
    #[error("{language} context did not start: {reason}")]
    StartFailed { language: Language, reason: String },

    #[error("{language} context was not ready within {after:?}")]
    StartTimedOut { language: Language, after: Duration },

    /// The cell's code or variables cannot be sent.
    #[error("invalid cell: {0}")]
    InvalidCell(#[from] CellInputError),

    #[error("invalid option {option}: {reason}")]
    InvalidOptions {
        option: &'static str,
        reason: String,
    },

    #[error("code context {0} not found")]
    ContextNotFound(String),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl CodeError {
    pub(crate) fn io(context: impl Into<String>, source: impl Into<io::Error>) -> CodeError {
        CodeError::Io {
            context: context.into(),
            source: source.into(),
        }
    }
}
