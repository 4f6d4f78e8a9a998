//! Why a code-context call failed (as opposed to a cell that raised, which
//! is a successful call whose [`Execution`](super::Execution) has an error).

use std::io;
use std::time::Duration;

use super::protocol::CellInputError;
use super::types::Language;
use crate::engine::error::Error;

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

    /// The sandbox refused (not running, a quota, a bad user or cwd).
    #[error(transparent)]
    Sandbox(Box<Error>),
}

/// A code context's failure as the runtime's one error type.
impl From<CodeError> for Error {
    fn from(e: CodeError) -> Error {
        match e {
            CodeError::InterpreterNotFound { language, program } => Error::InterpreterNotFound {
                language: language.name(),
                program,
            },
            CodeError::StartFailed { language, reason } => Error::CodeContext {
                language: language.name(),
                reason: format!("did not start: {reason}"),
            },
            CodeError::StartTimedOut { language, after } => Error::CodeContext {
                language: language.name(),
                reason: format!("was not ready within {after:?}"),
            },
            CodeError::InvalidCell(e) => Error::InvalidOptions {
                option: "cell",
                reason: e.to_string(),
            },
            CodeError::InvalidOptions { option, reason } => {
                Error::InvalidOptions { option, reason }
            }
            CodeError::ContextNotFound(id) => Error::CodeContextNotFound(id),
            CodeError::Io { context, source } => Error::Io { context, source },
            CodeError::Sandbox(e) => *e,
        }
    }
}

impl CodeError {
    pub(crate) fn io(context: impl Into<String>, source: impl Into<io::Error>) -> CodeError {
        CodeError::Io {
            context: context.into(),
            source: source.into(),
        }
    }
}
