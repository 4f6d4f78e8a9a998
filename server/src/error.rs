//! The server's errors: [`ServerError`] for what stops `serve`, and
//! [`ApiError`] for one request — the single place where a library error
//! becomes the SDK's error shape: `{"code": <http status>, "message": …}`
//! on the REST and `/files` routes, `{"code": "<connect code>", "message":
//! …}` on Connect routes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sandlot::{FilesError, State};

/// Why `serve` could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("{0}")]
    Config(String),
    #[error("sandlot runtime: {0}")]
    Runtime(#[from] sandlot::Error),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl ServerError {
    pub(crate) fn config(message: impl Into<String>) -> ServerError {
        ServerError::Config(message.into())
    }
}

/// The Connect protocol's error codes (the ones the SDKs map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Unimplemented,
    Internal,
    Unavailable,
    Unauthenticated,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// The HTTP status of a unary Connect error with this code (the
    /// protocol's table).
    pub fn http_status(self) -> StatusCode {
        match self {
            Code::Canceled => StatusCode::from_u16(499).unwrap(),
            Code::Unknown | Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::InvalidArgument | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        }
    }
}

/// One request's failure, renderable in both shapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The status of the REST / `/files` answer.
    pub status: StatusCode,
    /// The code of the Connect answer.
    pub code: Code,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, Code::InvalidArgument, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, Code::Unauthenticated, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, Code::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, Code::FailedPrecondition, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Code::Internal, message)
    }

    /// A capability sandlot's library does not have yet: named, never
    /// faked.
    pub fn not_yet(what: &str, waiting_on: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            Code::Unimplemented,
            format!("{what} is not available in sandlot yet ({waiting_on})"),
        )
    }

    /// What the SDK reads as "the sandbox is gone" on a sandbox's routes
    /// (a 502 whose message contains "was not found"), so that
    /// `is_running()` is false and commands raise `SandboxNotRunning`.
    pub fn sandbox_gone(id: &str) -> ApiError {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            Code::Unavailable,
            format!("The sandbox {id} was not found"),
        )
    }

    /// The REST shape.
    pub fn rest_body(&self) -> serde_json::Value {
        serde_json::json!({ "code": self.status.as_u16(), "message": self.message })
    }

    /// The Connect shape.
    pub fn connect_body(&self) -> serde_json::Value {
        serde_json::json!({ "code": self.code.as_str(), "message": self.message })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code.as_str(),
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.rest_body())).into_response()
    }
}

fn files_error(e: &FilesError) -> (StatusCode, Code) {
    match e {
        FilesError::NotFound { .. } => (StatusCode::NOT_FOUND, Code::NotFound),
        FilesError::AlreadyExists { .. } => (StatusCode::CONFLICT, Code::AlreadyExists),
        FilesError::NoSpace { .. } => (StatusCode::INSUFFICIENT_STORAGE, Code::ResourceExhausted),
        FilesError::FileTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, Code::ResourceExhausted),
        FilesError::PathEscape { .. } | FilesError::SpecialFilesystem { .. } => {
            (StatusCode::FORBIDDEN, Code::PermissionDenied)
        }
        FilesError::Os { .. } => (StatusCode::INTERNAL_SERVER_ERROR, Code::Internal),
        _ => (StatusCode::BAD_REQUEST, Code::InvalidArgument),
    }
}

impl From<sandlot::Error> for ApiError {
    fn from(e: sandlot::Error) -> ApiError {
        use sandlot::Error as E;
        let (status, code) = match &e {
            E::InvalidOptions { .. } | E::EmptyCommand | E::Limits(_) => {
                (StatusCode::BAD_REQUEST, Code::InvalidArgument)
            }
            E::CommandNotFound { .. } | E::Spawn { .. } => {
                (StatusCode::BAD_REQUEST, Code::InvalidArgument)
            }
            E::TemplateNotFound(_) => (StatusCode::NOT_FOUND, Code::NotFound),
            E::SandboxNotFound(_) => (StatusCode::NOT_FOUND, Code::NotFound),
            E::SandboxNotRunning { state, .. } if *state == State::Paused => {
                (StatusCode::CONFLICT, Code::FailedPrecondition)
            }
            E::SandboxNotRunning { .. } => (StatusCode::BAD_GATEWAY, Code::Unavailable),
            E::QuotaExceeded { .. } => (StatusCode::TOO_MANY_REQUESTS, Code::ResourceExhausted),
            E::ResourceUnavailable(_) | E::RuntimeShutDown => {
                (StatusCode::SERVICE_UNAVAILABLE, Code::Unavailable)
            }
            E::TimedOut(_) => (StatusCode::GATEWAY_TIMEOUT, Code::DeadlineExceeded),
            E::Files(f) => files_error(f),
            // The template has no such interpreter: the request asked for
            // a language this sandbox cannot run.
            E::InterpreterNotFound { .. } => (StatusCode::BAD_REQUEST, Code::InvalidArgument),
            E::CodeContextNotFound(_) => (StatusCode::NOT_FOUND, Code::NotFound),
            E::NetworkRule(_) => (StatusCode::BAD_REQUEST, Code::InvalidArgument),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, Code::Internal),
        };
        let message = match &e {
            // The SDK recognises a gone sandbox by these words.
            E::SandboxNotRunning { id, state } if state.is_terminal() => {
                format!("The sandbox {id} was not found (it is {state})")
            }
            _ => e.to_string(),
        };
        ApiError::new(status, code, message)
    }
}

/// A blocking task that panicked or was cancelled.
impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> ApiError {
        ApiError::internal(format!("internal task failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_errors_map_to_the_sdk_codes() {
        let e: ApiError = sandlot::Error::SandboxNotFound("ab".into()).into();
        assert_eq!((e.status, e.code), (StatusCode::NOT_FOUND, Code::NotFound));
        let e: ApiError =
            sandlot::Error::Files(FilesError::AlreadyExists { path: "/x".into() }).into();
        assert_eq!(e.code, Code::AlreadyExists);
        assert!(e.message.contains("/x"));
        let e: ApiError = sandlot::Error::SandboxNotRunning {
            id: "ab".into(),
            state: State::Destroyed,
        }
        .into();
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert!(e.message.contains("was not found"));
        assert_eq!(e.rest_body()["code"], 502);
        assert_eq!(e.connect_body()["code"], "unavailable");
    }
}
