//! `POST /v2/sandboxes` and the legacy `POST /sandboxes`: strict bodies,
//! options the library cannot honour yet refused by name, Idempotency-Key.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sandlot::{SandboxOptions, TimeoutAction};
use serde::Deserialize;
use serde_json::Value;

use super::{
    blocking, parse_body, read_body, sandbox_json, DEFAULT_TIMEOUT_V1, DEFAULT_TIMEOUT_V2,
};
use crate::envd::filesystem::Watchers;
use crate::envd::process::ProcessTable;
use crate::error::ApiError;
use crate::state::{new_token, AppState, SandboxRecord};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewSandbox {
    #[serde(rename = "templateID")]
    template_id: String,
    timeout: Option<u64>,
    metadata: Option<BTreeMap<String, String>>,
    env_vars: Option<BTreeMap<String, String>>,
    auto_pause: Option<bool>,
    /// Whether a pause keeps memory: sandlot's always does (the cgroup
    /// freezer keeps everything).
    #[allow(dead_code)]
    auto_pause_memory: Option<bool>,
    auto_resume: Option<AutoResume>,
    #[serde(rename = "allow_internet_access")]
    allow_internet_access: Option<bool>,
    /// Only the legacy create has it; v2 sandboxes are always secure.
    secure: Option<bool>,
    network: Option<super::network::CreateNetwork>,
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

pub(super) async fn create_v1(
    state: State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    create(state, headers, body, false).await
}

pub(super) async fn create_v2(
    state: State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
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
    let planned = super::network::plan(
        request.allow_internet_access,
        request.network,
        state.config.default_internet,
    )?;
    let auto_resume = request.auto_resume.as_ref().is_some_and(|a| a.enabled);
    let on_timeout = if request.auto_pause == Some(true) {
        TimeoutAction::Pause
    } else {
        TimeoutAction::Kill
    };
    let mut options = SandboxOptions::template(&template)
        .on_timeout(on_timeout)
        .network(planned.network)
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
    let traffic_token =
        new_token().map_err(|e| ApiError::internal(format!("random token: {e}")))?;
    let runtime = state.runtime.clone();
    let sandbox = blocking(move || Ok(runtime.create(options)?)).await?;
    // The sizes the SDK reports (cpuCount, memoryMB, diskSizeMB) are the
    // limits the sandbox got, template defaults filled in: no cgroup read.
    let limits = sandbox.limits();
    // The library's creation time: end_at - started_at is the timeout,
    // exactly.
    let started_at = sandbox.info().created_at;
    let record = Arc::new(SandboxRecord {
        sandbox,
        template_id: request.template_id,
        template,
        envd_token: token,
        traffic_token,
        secure,
        started_at,
        cpu_count: limits.cpus.ceil().max(1.0) as u32,
        memory_mb: limits.memory >> 20,
        disk_mb: limits.disk >> 20,
        processes: ProcessTable::default(),
        watchers: Watchers::default(),
        code_defaults: Default::default(),
        network: std::sync::Mutex::new(planned.settings),
        ports: Default::default(),
        auto_pause: request.auto_pause == Some(true),
        auto_resume,
    });
    if let Err(e) = state.save(&record) {
        // A sandbox the next server could not open is not handed out.
        let sandbox = record.sandbox.clone();
        let _ = blocking(move || Ok(sandbox.kill()?)).await;
        return Err(ApiError::internal(format!(
            "save the sandbox's record: {e}"
        )));
    }
    state.insert(record.clone());
    tracing::info!(sandbox = record.id(), template = %record.template, "created");
    Ok(sandbox_json(&state, &record))
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
        let paused: NewSandbox =
            parse_body(br#"{"templateID":"base","autoPause":true,"autoResume":{"enabled":true}}"#)
                .unwrap();
        paused.refuse_unsupported().unwrap();
        let mcp: NewSandbox = parse_body(br#"{"templateID":"base","mcp":{"x":{}}}"#).unwrap();
        assert_eq!(
            mcp.refuse_unsupported().unwrap_err().status,
            StatusCode::NOT_IMPLEMENTED
        );
    }
}
