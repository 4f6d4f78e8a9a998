//! The code interpreter's API (port 49999 of a sandbox): `POST /execute`
//! (NDJSON), `/contexts`. The library has no code contexts yet (issue 11),
//! so every route answers that, in the shape the code-interpreter SDK
//! reports (`SandboxException("501 Not Implemented: {…}")`); the routes
//! exist so that the handlers plug in here once it lands.

use axum::routing::{get, post};
use axum::Router;

use crate::error::ApiError;

pub fn router() -> Router {
    Router::new()
        .route("/execute", post(waiting))
        .route("/contexts", post(waiting).get(waiting))
        .route("/contexts/{id}", axum::routing::delete(waiting))
        .route("/contexts/{id}/restart", post(waiting))
        .route("/contexts/{id}/interrupt", post(waiting))
        .route("/health", get(waiting))
        .fallback(waiting)
}

async fn waiting() -> ApiError {
    ApiError::not_yet(
        "the code interpreter (run_code, code contexts)",
        "the library's code contexts are issue 11",
    )
}
