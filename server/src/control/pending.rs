//! Routes of the reference's API that wait on library work: they answer
//! 501 naming what is missing.

use std::sync::Arc;

use axum::extract::{Path, State};

use crate::error::ApiError;
use crate::state::AppState;

pub(super) async fn network(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiError {
    if state.record(&id).is_none() {
        return ApiError::not_found(format!("sandbox \"{id}\" was not found"));
    }
    ApiError::not_yet(
        "changing a sandbox's network rules",
        "waiting on networking, issue 13",
    )
}

pub(super) async fn snapshots(Path(_id): Path<String>) -> ApiError {
    ApiError::not_yet("snapshots", "waiting on persistence, issue 14")
}

pub(super) async fn fork(Path(_id): Path<String>) -> ApiError {
    ApiError::not_yet("forking a sandbox", "not planned yet")
}

pub(super) async fn logs(Path(_id): Path<String>) -> ApiError {
    ApiError::not_yet("sandbox logs", "not planned yet")
}
