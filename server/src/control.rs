//! The control plane: E2B's REST API for sandboxes (`X-API-Key`, JSON
//! bodies, errors as `{"code", "message"}`).
//!
//! Bodies and queries are parsed here, not by axum's extractors, so that
//! every rejection (bad JSON, unknown field, wrong type) is a 400 in the
//! SDK's shape.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine;
use http_body_util::{BodyExt, Limited};
use sandlot::{Metrics, SandboxOptions, State as LibState};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::envd::filesystem::Watchers;
use crate::envd::process::ProcessTable;
use crate::error::ApiError;
use crate::state::{new_token, sdk_state, AppState, SandboxRecord, CLIENT_ID, ENVD_VERSION};

/// Control-plane request bodies are small JSON objects.
pub const MAX_BODY: usize = 1 << 20;

/// `GET /v2/sandboxes` pages hold at most this many sandboxes.
const MAX_PAGE: usize = 100;

/// The v2 create's default lifetime (the reference's), and the legacy
/// `POST /sandboxes` one (its API spec's).
const DEFAULT_TIMEOUT_V2: u64 = 300;
const DEFAULT_TIMEOUT_V1: u64 = 15;

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
        .route("/sandboxes/{id}/network", put(network))
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
    Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                crate::error::Code::ResourceExhausted,
                format!("request body: {e} (at most {MAX_BODY} bytes)"),
            )
        })
}

fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
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

// ---- create ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewSandbox {
    #[serde(rename = "templateID")]
    template_id: String,
    timeout: Option<u64>,
    metadata: Option<BTreeMap<String, String>>,
    env_vars: Option<BTreeMap<String, String>>,
    auto_pause: Option<bool>,
    /// Meaningful only with autoPause, which is refused.
    #[allow(dead_code)]
    auto_pause_memory: Option<bool>,
    auto_resume: Option<AutoResume>,
    #[serde(rename = "allow_internet_access")]
    allow_internet_access: Option<bool>,
    /// Only the legacy create has it; v2 sandboxes are always secure.
    secure: Option<bool>,
    network: Option<serde_json::Map<String, Value>>,
    mcp: Option<Value>,
    iam: Option<Value>,
    volume_mounts: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AutoResume {
    enabled: bool,
}

impl NewSandbox {
    /// Options sandlot cannot honour yet are refused by name, never
    /// silently dropped.
    fn refuse_unsupported(&self) -> Result<(), ApiError> {
        if self.auto_pause == Some(true) {
            return Err(ApiError::not_yet(
                "autoPause (pause at timeout instead of kill)",
                "waiting on the persistence and lifecycle work, issue 14",
            ));
        }
        if self.auto_resume.as_ref().is_some_and(|a| a.enabled) {
            return Err(ApiError::not_yet(
                "autoResume",
                "waiting on the persistence and lifecycle work, issue 14",
            ));
        }
        if self.allow_internet_access == Some(true) {
            return Err(ApiError::not_yet(
                "internet access (sandboxes have loopback only)",
                "waiting on networking, issue 13; omit allow_internet_access or set it to false",
            ));
        }
        if self.network.as_ref().is_some_and(|n| !n.is_empty()) {
            return Err(ApiError::not_yet(
                "network rules",
                "waiting on networking, issue 13",
            ));
        }
        if self.mcp.as_ref().is_some_and(|m| !m.is_null()) {
            return Err(ApiError::not_yet("MCP servers", "not planned yet"));
        }
        if self.iam.as_ref().is_some_and(|m| !m.is_null()) {
            return Err(ApiError::not_yet(
                "workload identity (iam)",
                "not planned yet",
            ));
        }
        if self.volume_mounts.as_ref().is_some_and(|v| !v.is_empty()) {
            return Err(ApiError::not_yet("volume mounts", "not planned yet"));
        }
        Ok(())
    }
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
    }
    body
}

async fn create_v1(state: State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    create(state, headers, body, false).await
}

async fn create_v2(state: State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    create(state, headers, body, true).await
}

async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
    v2: bool,
) -> Response {
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let key = headers
        .get("idempotency-key")
        .map(|k| k.to_str().map(str::to_string));
    let result = match key {
        Some(Err(_)) => Err(ApiError::bad_request(
            "Idempotency-Key is not visible ASCII",
        )),
        Some(Ok(key)) if key.is_empty() || key.len() > 256 => Err(ApiError::bad_request(
            "Idempotency-Key must be 1 to 256 characters",
        )),
        Some(Ok(key)) => {
            let slot = state.idempotency_slot(&format!("{}:{key}", if v2 { 2 } else { 1 }));
            slot.get_or_init(|| create_sandbox(state.clone(), body, v2))
                .await
                .clone()
        }
        None => create_sandbox(state, body, v2).await,
    };
    match result {
        Ok(body) => (StatusCode::CREATED, Json(body)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn create_sandbox(state: Arc<AppState>, body: Bytes, v2: bool) -> Result<Value, ApiError> {
    let request: NewSandbox = parse_body(&body)?;
    request.refuse_unsupported()?;
    if request.template_id.is_empty() {
        return Err(ApiError::bad_request("templateID is empty"));
    }
    let timeout = request.timeout.unwrap_or(if v2 {
        DEFAULT_TIMEOUT_V2
    } else {
        DEFAULT_TIMEOUT_V1
    });
    let template = state
        .config
        .resolve_template(&request.template_id)
        .to_string();
    let mut options = SandboxOptions::template(&template)
        .timeout(Duration::from_secs(timeout))
        // A paused sandbox does not age: it waits for connect (the
        // reference keeps paused sandboxes until they are resumed).
        .pause_clock(true);
    for (k, v) in request.metadata.unwrap_or_default() {
        options = options.metadata(k, v);
    }
    for (k, v) in request.env_vars.unwrap_or_default() {
        options = options.env(k, v);
    }
    let secure = if v2 {
        true
    } else {
        request.secure.unwrap_or(false)
    };
    let token = new_token().map_err(|e| ApiError::internal(format!("random token: {e}")))?;
    let runtime = state.runtime.clone();
    let (sandbox, metrics) = blocking(move || {
        let sandbox = runtime.create(options)?;
        match sandbox.metrics() {
            Ok(metrics) => Ok((sandbox, metrics)),
            Err(e) => {
                let _ = sandbox.kill();
                Err(e.into())
            }
        }
    })
    .await?;
    let record = Arc::new(SandboxRecord {
        sandbox,
        template_id: request.template_id,
        template,
        envd_token: token,
        secure,
        started_at: SystemTime::now(),
        cpu_count: metrics.cpu_count.ceil().max(1.0) as u32,
        memory_mb: metrics.memory_limit >> 20,
        disk_mb: metrics.disk_total >> 20,
        processes: ProcessTable::default(),
        watchers: Watchers::default(),
    });
    state.insert(record.clone());
    tracing::info!(sandbox = record.id(), template = %record.template, "created");
    Ok(sandbox_json(&state, &record))
}

// ---- info and list ----

fn listed_json(state: &AppState, record: &SandboxRecord) -> Value {
    let info = record.sandbox.info();
    let mut body = json!({
        "templateID": record.template_id,
        "sandboxID": record.id(),
        "clientID": CLIENT_ID,
        "startedAt": rfc3339(record.started_at),
        "endAt": rfc3339(info.end_at),
        "cpuCount": record.cpu_count,
        "memoryMB": record.memory_mb,
        "diskSizeMB": record.disk_mb,
        "envdVersion": ENVD_VERSION,
        "metadata": info.metadata,
        "state": sdk_state(info.state),
    });
    if record.template != record.template_id {
        body["alias"] = json!(record.template_id);
    }
    let _ = state;
    body
}

async fn info(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = record(&state, &id)?;
    let mut body = listed_json(&state, &record);
    body["domain"] = json!(state.config.domain);
    body["allowInternetAccess"] = json!(false);
    if record.secure {
        body["envdAccessToken"] = json!(record.envd_token);
    }
    Ok(Json(body))
}

/// `metadata=k%3Dv%26k2%3Dv2`: the SDK url-encodes the pairs, each key and
/// value percent-encoded once more.
fn parse_metadata_filter(raw: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.as_bytes())
        .map(|(k, v)| {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(&k), decode(&v))
        })
        .collect()
}

fn page_token(record: &SandboxRecord) -> String {
    let nanos = record
        .started_at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{nanos}:{}", record.id()))
}

fn sort_key(record: &SandboxRecord) -> (SystemTime, String) {
    (record.started_at, record.id().to_string())
}

fn parse_page_token(token: &str) -> Result<(SystemTime, String), ApiError> {
    let bad = || ApiError::bad_request("nextToken is not a token this server issued");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (nanos, id) = text.split_once(':').ok_or_else(bad)?;
    let nanos: u64 = nanos.parse().map_err(|_| bad())?;
    Ok((UNIX_EPOCH + Duration::from_nanos(nanos), id.to_string()))
}

async fn list_v2(State(state): State<Arc<AppState>>, RawQuery(query): RawQuery) -> Response {
    match list_page(&state, query.as_deref()) {
        Ok((items, next)) => {
            let mut response = Json(Value::Array(items)).into_response();
            if let Some(next) = next.and_then(|n| HeaderValue::from_str(&n).ok()) {
                response.headers_mut().insert("x-next-token", next);
            }
            response
        }
        Err(e) => e.into_response(),
    }
}

fn list_page(
    state: &AppState,
    query: Option<&str>,
) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let query = parse_query(
        query,
        &[
            "metadata",
            "state",
            "limit",
            "nextToken",
            "order",
            "startedAfter",
            "template",
        ],
    )?;
    let metadata = query
        .get("metadata")
        .map(|m| parse_metadata_filter(m))
        .unwrap_or_default();
    let states: Vec<&str> = match query.get("state") {
        None => vec!["running", "paused"],
        Some(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect(),
    };
    if let Some(bad) = states.iter().find(|s| !matches!(**s, "running" | "paused")) {
        return Err(ApiError::bad_request(format!(
            "state {bad:?} is not running or paused"
        )));
    }
    let limit = match query.get("limit") {
        None => MAX_PAGE,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_PAGE).contains(l))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be 1 to {MAX_PAGE}")))?,
    };
    let descending = match query.get("order").map(String::as_str) {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "order {other:?} is not asc or desc"
            )))
        }
    };
    let started_after = match query.get("startedAfter") {
        None => None,
        Some(t) => Some(SystemTime::from(
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .map_err(|_| {
                    ApiError::bad_request(format!("startedAfter {t:?} is not an RFC 3339 time"))
                })?,
        )),
    };
    let after = query
        .get("nextToken")
        .map(|t| parse_page_token(t))
        .transpose()?;

    let mut records: Vec<Arc<SandboxRecord>> = state
        .records()
        .into_iter()
        .filter(|r| {
            let info = r.sandbox.info();
            states.contains(&sdk_state(info.state))
                && metadata
                    .iter()
                    .all(|(k, v)| info.metadata.get(k) == Some(v))
                && query
                    .get("template")
                    .is_none_or(|t| *t == r.template_id || *t == r.template)
                && started_after.is_none_or(|at| r.started_at > at)
        })
        .collect();
    records.sort_by_key(|r| sort_key(r));
    if descending {
        records.reverse();
    }
    if let Some(after) = after {
        records.retain(|r| {
            if descending {
                sort_key(r) < after
            } else {
                sort_key(r) > after
            }
        });
    }
    let more = records.len() > limit;
    records.truncate(limit);
    let next = more
        .then(|| records.last().map(|r| page_token(r)))
        .flatten();
    Ok((
        records.iter().map(|r| listed_json(state, r)).collect(),
        next,
    ))
}

/// The legacy list: running sandboxes, no paging.
async fn list_v1(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let query = parse_query(query.as_deref(), &["metadata"])?;
    let metadata = query
        .get("metadata")
        .map(|m| parse_metadata_filter(m))
        .unwrap_or_default();
    let mut records: Vec<Arc<SandboxRecord>> = state
        .records()
        .into_iter()
        .filter(|r| {
            let info = r.sandbox.info();
            info.state != LibState::Paused
                && metadata
                    .iter()
                    .all(|(k, v)| info.metadata.get(k) == Some(v))
        })
        .collect();
    records.sort_by_key(|r| sort_key(r));
    Ok(Json(Value::Array(
        records.iter().map(|r| listed_json(&state, r)).collect(),
    )))
}

// ---- lifecycle ----

async fn kill(
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

async fn set_timeout(
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
async fn refresh(
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

async fn pause(
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
async fn connect(
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
async fn resume(
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

// ---- metrics ----

fn metric_json(m: &Metrics) -> Value {
    json!({
        "timestamp": rfc3339(m.timestamp),
        "timestampUnix": unix_secs(m.timestamp),
        "cpuCount": m.cpu_count.ceil().max(1.0) as u64,
        "cpuUsedPct": (m.cpu_percent * 100.0).round() / 100.0,
        "memUsed": m.memory_used,
        "memTotal": m.memory_limit,
        "memCache": m.memory_cache,
        "diskUsed": m.disk_used,
        "diskTotal": m.disk_total,
    })
}

/// The sandbox's samples (every 5 s, the last 10 minutes) within `start`..`end`
/// (unix seconds, inclusive). A sandbox younger than its first sample
/// gets one taken now.
async fn metrics(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let query = parse_query(query.as_deref(), &["start", "end"])?;
    let bound = |name: &str| -> Result<Option<u64>, ApiError> {
        query
            .get(name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("{name} must be unix seconds")))
            })
            .transpose()
    };
    let (start, end) = (bound("start")?, bound("end")?);
    let record = record(&state, &id)?;
    let mut samples = state.monitor.history(&id);
    if samples.is_empty() {
        samples.push(record.sandbox.metrics()?);
    }
    let picked: Vec<Value> = samples
        .iter()
        .filter(|m| {
            let t = unix_secs(m.timestamp);
            start.is_none_or(|s| t >= s) && end.is_none_or(|e| t <= e)
        })
        .map(metric_json)
        .collect();
    Ok(Json(Value::Array(picked)))
}

/// The latest sample of each of several sandboxes.
async fn metrics_many(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let query = parse_query(query.as_deref(), &["sandbox_ids"])?;
    let ids = query
        .get("sandbox_ids")
        .ok_or_else(|| ApiError::bad_request("sandbox_ids is required"))?;
    let mut out = serde_json::Map::new();
    for id in ids
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .take(MAX_PAGE)
    {
        let Some(record) = state.record(id) else {
            continue;
        };
        // A sandbox that ended meanwhile is left out, like an unknown id.
        let Some(latest) = state
            .monitor
            .latest(id)
            .or_else(|| record.sandbox.metrics().ok())
        else {
            continue;
        };
        out.insert(id.to_string(), metric_json(&latest));
    }
    Ok(Json(json!({ "sandboxes": out })))
}

// ---- what the library does not have yet ----

async fn network(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> ApiError {
    if state.record(&id).is_none() {
        return ApiError::not_found(format!("sandbox \"{id}\" was not found"));
    }
    ApiError::not_yet(
        "changing a sandbox's network rules",
        "waiting on networking, issue 13",
    )
}

async fn snapshots(Path(_id): Path<String>) -> ApiError {
    ApiError::not_yet("snapshots", "waiting on persistence, issue 14")
}

async fn fork(Path(_id): Path<String>) -> ApiError {
    ApiError::not_yet("forking a sandbox", "not planned yet")
}

async fn logs(Path(_id): Path<String>) -> ApiError {
    ApiError::not_yet("sandbox logs", "not planned yet")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_bodies_are_strict() {
        let ok: NewSandbox = parse_body(
            br#"{"templateID":"base","timeout":30,"metadata":{"a":"b"},"envVars":{},"autoPause":false,"autoPauseMemory":true}"#,
        )
        .unwrap();
        assert_eq!(ok.timeout, Some(30));
        ok.refuse_unsupported().unwrap();
        for bad in [
            &br#"{"templateID":"base","bogus":1}"#[..],
            br#"{"templateID":"base","timeout":"30"}"#,
            br#"{"templateID":"base","timeout":-1}"#,
            br#"{"templateID":"base","metadata":{"a":1}}"#,
            br#"{"timeout":30}"#,
            br#"{"templateID":"#,
            br#"[]"#,
        ] {
            let e = parse_body::<NewSandbox>(bad).unwrap_err();
            assert_eq!(
                e.status,
                StatusCode::BAD_REQUEST,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let paused: NewSandbox = parse_body(br#"{"templateID":"base","autoPause":true}"#).unwrap();
        assert_eq!(
            paused.refuse_unsupported().unwrap_err().status,
            StatusCode::NOT_IMPLEMENTED
        );
    }

    #[test]
    fn metadata_filters_decode_as_the_sdk_encodes() {
        // Python: urlencode({quote(k): quote(v)}) of {"user id": "a/b"}.
        let pairs = parse_metadata_filter("user%2520id=a%252Fb&x=y");
        assert_eq!(
            pairs,
            vec![("user id".into(), "a/b".into()), ("x".into(), "y".into())]
        );
    }

    #[test]
    fn queries_refuse_unknown_and_repeated_parameters() {
        assert!(parse_query(Some("limit=1"), &["limit"]).is_ok());
        assert!(parse_query(Some("bogus=1"), &["limit"]).is_err());
        assert!(parse_query(Some("limit=1&limit=2"), &["limit"]).is_err());
    }

    #[test]
    fn page_tokens_round_trip_and_refuse_forgeries() {
        let at = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{}:abc", 1_700_000_000_123_456_789u64));
        assert_eq!(parse_page_token(&token).unwrap(), (at, "abc".to_string()));
        assert!(parse_page_token("!!!").is_err());
        assert!(parse_page_token("bm9jb2xvbg").is_err());
    }
}
