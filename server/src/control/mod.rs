//! The control plane: E2B's REST API for sandboxes (`X-API-Key`, JSON
//! bodies, errors as `{"code", "message"}`).
//!
//! Bodies and queries are parsed here, not by axum's extractors, so that
//! every rejection (bad JSON, unknown field, wrong type) is a 400 in the
//! SDK's shape.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::Router;
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::{AppState, SandboxRecord, CLIENT_ID, ENVD_VERSION};

/// Control-plane request bodies are small JSON objects.
pub const MAX_BODY: usize = 1 << 20;

/// `GET /v2/sandboxes` pages hold at most this many sandboxes.
const MAX_PAGE: usize = 100;

/// The v2 create's default lifetime (the reference's), and the legacy
/// `POST /sandboxes` one (its API spec's).
const DEFAULT_TIMEOUT_V2: u64 = 300;
const DEFAULT_TIMEOUT_V1: u64 = 15;

mod create;
mod lifecycle;
mod list;
mod metrics;
pub(crate) mod network;
mod pending;

use create::{create_v1, create_v2};
use lifecycle::{connect, kill, pause, refresh, resume, set_timeout};
use list::{info, list_v1, list_v2};
use metrics::{metrics, metrics_many};
use pending::{fork, logs, snapshots};

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/sandboxes", post(create_v1).get(list_v1))
        .route("/v2/sandboxes", post(create_v2).get(list_v2))
        .route("/sandboxes/metrics", get(metrics_many))
        .route("/sandboxes/{id}", get(info).delete(kill))
        .route("/sandboxes/{id}/timeout", post(set_timeout))
        .route("/sandboxes/{id}/refreshes", post(refresh))
        .route("/sandboxes/{id}/pause", post(pause))
        .route("/sandboxes/{id}/resume", post(resume))
        .route("/sandboxes/{id}/connect", post(connect))
        .route("/v2/sandboxes/{id}/connect", post(connect))
        .route("/sandboxes/{id}/metrics", get(metrics))
        .route("/sandboxes/{id}/network", put(network::update))
        .route("/sandboxes/{id}/snapshots", post(snapshots))
        .route("/sandboxes/{id}/fork", post(fork))
        .route("/sandboxes/{id}/logs", get(logs))
        .route("/v2/sandboxes/{id}/logs", get(logs))
        .fallback(no_route)
        .with_state(state)
}

async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no control-plane route {method} {}", uri.path()))
}

/// A request body, refused past [`MAX_BODY`] bytes.
async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    read_limited(body, MAX_BODY).await
}

/// A request body, refused past `limit` bytes (413 in the SDK's shape).
pub(crate) async fn read_limited(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    Limited::new(body, limit)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                crate::error::Code::ResourceExhausted,
                format!("request body: {e} (at most {limit} bytes)"),
            )
        })
}

fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    parse_json(body)
}

/// A JSON body, strictly: bad JSON, unknown fields and wrong types are a
/// 400 naming what was wrong; an empty body is `{}`.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

/// Query parameters, each at most once.
fn parse_query(raw: Option<&str>, allowed: &[&str]) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if !allowed.contains(&key.as_ref()) {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter {key:?}"
            )));
        }
        if out.insert(key.to_string(), value.to_string()).is_some() {
            return Err(ApiError::bad_request(format!(
                "query parameter {key:?} given twice"
            )));
        }
    }
    Ok(out)
}

pub fn rfc3339(at: SystemTime) -> String {
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await?
}

fn record(state: &AppState, id: &str) -> Result<Arc<SandboxRecord>, ApiError> {
    state
        .record(id)
        .ok_or_else(|| ApiError::not_found(format!("sandbox \"{id}\" was not found")))
}

/// The `Sandbox` object create and connect answer with.
fn sandbox_json(state: &AppState, record: &SandboxRecord) -> Value {
    let mut body = json!({
        "templateID": record.template_id,
        "sandboxID": record.id(),
        "clientID": CLIENT_ID,
        "envdVersion": ENVD_VERSION,
        "domain": state.config.domain,
    });
    if record.template != record.template_id {
        body["alias"] = json!(record.template_id);
    }
    if record.secure {
        body["envdAccessToken"] = json!(record.envd_token);
        body["trafficAccessToken"] = json!(record.traffic_token);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_refuse_unknown_and_repeated_parameters() {
        assert!(parse_query(Some("limit=1"), &["limit"]).is_ok());
        assert!(parse_query(Some("bogus=1"), &["limit"]).is_err());
        assert!(parse_query(Some("limit=1&limit=2"), &["limit"]).is_err());
    }
}
