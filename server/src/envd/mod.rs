//! envd, the agent the SDK talks to inside each sandbox, answered by the
//! server: the Connect services `process.Process` and
//! `filesystem.Filesystem`, `/files` and `/health`. Every handler here gets
//! the sandbox's record from the dispatcher (which found it by the
//! `E2b-Sandbox-Id` header or the Host, and checked its access token).

pub mod files;
pub mod filesystem;
pub mod process;
pub mod users;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;

use crate::error::ApiError;
use crate::state::SandboxRecord;

/// The sandbox a request is for, put in its extensions by the dispatcher.
pub type Target = axum::Extension<Arc<SandboxRecord>>;

pub fn router() -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/files", get(files::download).post(files::upload))
        .route("/process.Process/{method}", post(process::call))
        .route("/filesystem.Filesystem/{method}", post(filesystem::call))
        .fallback(no_route)
}

/// envd answers 204 while it is up; a sandbox that is gone never gets
/// here (the dispatcher answers 502 "was not found").
async fn health() -> StatusCode {
    StatusCode::NO_CONTENT
}

async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no envd route {method} {}", uri.path()))
}

fn unknown_method(service: &str, method: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        crate::error::Code::Unimplemented,
        format!("{service}/{method} is not a method of this service"),
    )
}

/// Runs blocking library work off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await?
}
