//! Routes of the reference's API that wait on library work: they answer
//! 501 naming what is missing.

use axum::extract::Path;

use crate::error::ApiError;

pub(super) async fn snapshots(Path(_id): Path<String>) -> ApiError {
    ApiError::not_yet("snapshots", "waiting on persistence, issue 14")
}

pub(super) async fn fork(Path(_id): Path<String>) -> ApiError {
    ApiError::not_yet("forking a sandbox", "not planned yet")
}

pub(super) async fn logs(Path(_id): Path<String>) -> ApiError {
    ApiError::not_yet("sandbox logs", "not planned yet")
}
