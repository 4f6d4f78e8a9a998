//! Kill, timeouts, pause, resume and connect.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use sandlot::State as LibState;
use serde::Deserialize;

use super::{blocking, parse_body, read_body, record, sandbox_json, DEFAULT_TIMEOUT_V2};
use crate::error::ApiError;
use crate::state::{AppState, SandboxRecord};

pub(super) async fn kill(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let record = record(&state, &id)?;
    let sandbox = record.sandbox.clone();
    blocking(move || Ok(sandbox.kill()?)).await?;
    state.remove(&id);
    tracing::info!(sandbox = %id, "killed");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeoutRequest {
    timeout: u64,
}

pub(super) async fn set_timeout(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let body = read_body(body).await?;
    let request: TimeoutRequest = parse_body(&body)?;
    let record = record(&state, &id)?;
    record
        .sandbox
        .set_timeout(Duration::from_secs(request.timeout))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshRequest {
    duration: Option<u64>,
}

/// Keeps a sandbox alive for `duration` more seconds (never shortens).
pub(super) async fn refresh(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let body = read_body(body).await?;
    let request: RefreshRequest = parse_body(&body)?;
    let record = record(&state, &id)?;
    extend(
        &record,
        Duration::from_secs(request.duration.unwrap_or(DEFAULT_TIMEOUT_V2)),
    )?;
    Ok(StatusCode::NO_CONTENT)
}

/// Moves the end to `timeout` from now when that is later than it is.
fn extend(record: &SandboxRecord, timeout: Duration) -> Result<(), ApiError> {
    let remaining = record
        .sandbox
        .end_at()
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    if timeout > remaining {
        record.sandbox.set_timeout(timeout)?;
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PauseRequest {
    /// Keep memory (the only kind of pause sandlot has: the cgroup freezer
    /// keeps everything); `false` asks for a filesystem-only snapshot,
    /// which a frozen sandbox also satisfies.
    #[allow(dead_code)]
    memory: Option<bool>,
    #[allow(dead_code)]
    require_healthy_guest: Option<bool>,
}

pub(super) async fn pause(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let body = read_body(body).await?;
    let _: PauseRequest = parse_body(&body)?;
    let record = record(&state, &id)?;
    if record.sandbox.state() == LibState::Paused {
        return Err(ApiError::conflict(format!(
            "sandbox \"{id}\" is already paused"
        )));
    }
    let sandbox = record.sandbox.clone();
    blocking(move || Ok(sandbox.pause()?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConnectRequest {
    timeout: Option<u64>,
    #[allow(dead_code)]
    memory: Option<bool>,
    /// The legacy resume's field.
    #[allow(dead_code)]
    auto_pause: Option<bool>,
}

/// Resumes a paused sandbox (201) or connects to a running one (200);
/// the timeout only ever extends the sandbox's life.
pub(super) async fn connect(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(body).await?;
    let request: ConnectRequest = parse_body(&body)?;
    let record = record(&state, &id)?;
    let resumed = resume_if_paused(&record).await?;
    if let Some(timeout) = request.timeout {
        extend(&record, Duration::from_secs(timeout))?;
    }
    let status = if resumed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(sandbox_json(&state, &record))).into_response())
}

/// The legacy resume: 409 unless paused.
pub(super) async fn resume(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(body).await?;
    let request: ConnectRequest = parse_body(&body)?;
    let record = record(&state, &id)?;
    if !resume_if_paused(&record).await? {
        return Err(ApiError::conflict(format!(
            "sandbox \"{id}\" is not paused"
        )));
    }
    if let Some(timeout) = request.timeout {
        extend(&record, Duration::from_secs(timeout))?;
    }
    Ok((StatusCode::CREATED, Json(sandbox_json(&state, &record))).into_response())
}

async fn resume_if_paused(record: &Arc<SandboxRecord>) -> Result<bool, ApiError> {
    if record.sandbox.state() != LibState::Paused {
        return Ok(false);
    }
    let sandbox = record.sandbox.clone();
    blocking(move || Ok(sandbox.resume()?)).await?;
    Ok(true)
}
