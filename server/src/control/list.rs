//! Reading sandboxes: info, and the lists with their filters and paging.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use sandlot::State as LibState;
use serde_json::{json, Value};

use super::{parse_query, record, rfc3339, MAX_PAGE};
use crate::error::ApiError;
use crate::state::{sdk_state, AppState, SandboxRecord, CLIENT_ID, ENVD_VERSION};

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

pub(super) async fn info(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = record(&state, &id)?;
    let mut body = listed_json(&state, &record);
    body["domain"] = json!(state.config.domain);
    let network = record.network.lock().unwrap().clone();
    body["allowInternetAccess"] = json!(network.allow_internet_access);
    body["network"] = network.wire();
    body["lifecycle"] = json!({
        "onTimeout": if record.auto_pause { "pause" } else { "kill" },
        "autoResume": record.auto_resume,
    });
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

pub(super) async fn list_v2(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Response {
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
pub(super) async fn list_v1(
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn page_tokens_round_trip_and_refuse_forgeries() {
        let at = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{}:abc", 1_700_000_000_123_456_789u64));
        assert_eq!(parse_page_token(&token).unwrap(), (at, "abc".to_string()));
        assert!(parse_page_token("!!!").is_err());
        assert!(parse_page_token("bm9jb2xvbg").is_err());
    }
}
