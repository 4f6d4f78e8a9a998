//! Metrics: the library's 5-second samples, one sandbox or several.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use sandlot::Metrics;
use serde_json::{json, Value};

use super::{parse_query, record, rfc3339, unix_secs, MAX_PAGE};
use crate::error::ApiError;
use crate::state::AppState;

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
pub(super) async fn metrics(
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
pub(super) async fn metrics_many(
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
