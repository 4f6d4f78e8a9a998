//! The one service every connection gets: it finds which API surface a
//! request is for, checks its credentials, hands it to that surface's
//! router, and logs one line per request.
//!
//! - a request naming a sandbox — the SDK's `E2b-Sandbox-Id` and
//!   `E2b-Sandbox-Port` headers, or with `--domain D` a Host of
//!   `PORT-ID.D` — goes to that sandbox's envd (port 49983) or code
//!   interpreter (49999); it needs the sandbox's access token
//!   (`X-Access-Token`, or a valid signature on `/files`) when the sandbox
//!   is secure, and one sandbox's token never opens another;
//! - anything else is the control plane and needs `X-API-Key`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceExt;

use crate::error::ApiError;
use crate::state::AppState;

/// envd's port inside a sandbox, and the code interpreter's.
pub const ENVD_PORT: u16 = 49983;
pub const CODE_PORT: u16 = 49999;

#[derive(Clone)]
pub struct Routers {
    state: Arc<AppState>,
    control: Router,
    envd: Router,
    code: Router,
}

impl Routers {
    pub fn new(state: Arc<AppState>) -> Routers {
        Routers {
            control: crate::control::router(state.clone()),
            envd: crate::envd::router(),
            code: crate::code::router(),
            state,
        }
    }

    pub async fn handle(self, request: Request<Body>) -> Response {
        let started = Instant::now();
        let method = request.method().clone();
        let version = request.version();
        let path = request.uri().path().to_string();
        let (surface, sandbox, response) = self.route(request).await;
        tracing::info!(
            target: "sandlot_server::request",
            %method,
            path,
            ?version,
            surface,
            sandbox = sandbox.as_deref().unwrap_or("-"),
            status = response.status().as_u16(),
            micros = started.elapsed().as_micros() as u64,
        );
        response
    }

    async fn route(self, mut request: Request<Body>) -> (&'static str, Option<String>, Response) {
        let target = match sandbox_target(request.headers(), self.state.config.domain.as_deref()) {
            Ok(target) => target,
            Err(e) => return ("-", None, e.into_response()),
        };
        let target = match target {
            Some(target) => Some(target),
            // A signed file URL (`download_url`/`upload_url`) carries no
            // header: with E2B_SANDBOX_URL it reaches us as a bare /files
            // request, and its signature names the sandbox whose token
            // made it.
            None if request.uri().path() == "/files" => match self.signed_files_sandbox(&request) {
                Some(id) => Some((id, ENVD_PORT)),
                None => {
                    return (
                        "envd",
                        None,
                        ApiError::unauthorized(
                            "a /files request needs E2b-Sandbox-Id or a valid signature",
                        )
                        .into_response(),
                    )
                }
            },
            None => None,
        };
        let Some((id, port)) = target else {
            let key = request.headers().get("x-api-key").map(|v| v.as_bytes());
            if !self.state.api_key_ok(key) {
                return (
                    "control",
                    None,
                    ApiError::unauthorized("invalid or missing X-API-Key").into_response(),
                );
            }
            let sandbox = control_sandbox(request.uri().path());
            return ("control", sandbox, call(self.control, request).await);
        };
        let Some(record) = self.state.record(&id) else {
            return (
                "envd",
                Some(id.clone()),
                ApiError::sandbox_gone(&id).into_response(),
            );
        };
        if record.secure {
            let token_ok = request
                .headers()
                .get("x-access-token")
                .is_some_and(|t| record.token_matches(t.as_bytes()));
            let signed = request.uri().path() == "/files"
                && crate::envd::files::signature_ok(
                    &record,
                    request.method(),
                    request.uri().query(),
                );
            if !token_ok && !signed {
                return (
                    "envd",
                    Some(id),
                    ApiError::unauthorized(
                        "this sandbox is secure: send its envd access token in X-Access-Token",
                    )
                    .into_response(),
                );
            }
        }
        request.extensions_mut().insert(record);
        match port {
            ENVD_PORT => ("envd", Some(id), call(self.envd, request).await),
            CODE_PORT => ("code", Some(id), call(self.code, request).await),
            other => (
                "port",
                Some(id.clone()),
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    crate::error::Code::Unavailable,
                    format!(
                        "The sandbox {id} is running but port {other} is not open \
                         (exposing a sandbox's ports waits on networking, issue 13)"
                    ),
                )
                .into_response(),
            ),
        }
    }
}

impl Routers {
    /// The sandbox whose access token signed this `/files` request.
    fn signed_files_sandbox(&self, request: &Request<Body>) -> Option<String> {
        let query = request.uri().query()?;
        if !query.contains("signature=") {
            return None;
        }
        self.state
            .records()
            .into_iter()
            .find(|r| {
                r.secure && crate::envd::files::signature_ok(r, request.method(), Some(query))
            })
            .map(|r| r.id().to_string())
    }
}

async fn call(router: Router, request: Request<Body>) -> Response {
    match router.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// The sandbox a control-plane path is about (`/sandboxes/ID/...`,
/// `/v2/sandboxes/ID/...`), for the request log.
fn control_sandbox(path: &str) -> Option<String> {
    let mut segments = path.trim_start_matches('/').split('/');
    let mut first = segments.next()?;
    if first == "v2" {
        first = segments.next()?;
    }
    let id = segments.next()?;
    (first == "sandboxes" && valid_id(id)).then(|| id.to_string())
}

/// The sandbox and port a request is addressed to, if any.
pub fn sandbox_target(
    headers: &HeaderMap,
    domain: Option<&str>,
) -> Result<Option<(String, u16)>, ApiError> {
    if let Some(id) = headers.get("e2b-sandbox-id") {
        let id = id
            .to_str()
            .ok()
            .filter(|id| valid_id(id))
            .ok_or_else(|| ApiError::bad_request("E2b-Sandbox-Id is not a sandbox id"))?;
        let port = match headers.get("e2b-sandbox-port") {
            None => ENVD_PORT,
            Some(p) => p
                .to_str()
                .ok()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| ApiError::bad_request("E2b-Sandbox-Port is not a port number"))?,
        };
        return Ok(Some((id.to_string(), port)));
    }
    let Some(domain) = domain else {
        return Ok(None);
    };
    let Some(host) = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
    else {
        return Ok(None);
    };
    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let Some(label) = host
        .strip_suffix(domain)
        .and_then(|rest| rest.strip_suffix('.'))
    else {
        return Ok(None);
    };
    if label == "api" {
        return Ok(None);
    }
    let (port, id) = label.split_once('-').ok_or_else(|| {
        ApiError::bad_request(format!("host {host:?} is not PORT-SANDBOXID.{domain}"))
    })?;
    let port: u16 = port.parse().map_err(|_| {
        ApiError::bad_request(format!("host {host:?} is not PORT-SANDBOXID.{domain}"))
    })?;
    if !valid_id(id) {
        return Err(ApiError::bad_request(format!(
            "host {host:?} names no sandbox id"
        )));
    }
    Ok(Some((id.to_string(), port)))
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn sandbox_headers_select_the_sandbox() {
        let h = headers(&[("e2b-sandbox-id", "ab12"), ("e2b-sandbox-port", "49999")]);
        assert_eq!(
            sandbox_target(&h, None).unwrap(),
            Some(("ab12".into(), 49999))
        );
        let h = headers(&[("e2b-sandbox-id", "ab12")]);
        assert_eq!(
            sandbox_target(&h, None).unwrap(),
            Some(("ab12".into(), ENVD_PORT))
        );
        let h = headers(&[("e2b-sandbox-id", "../x")]);
        assert!(sandbox_target(&h, None).is_err());
        assert_eq!(sandbox_target(&HeaderMap::new(), None).unwrap(), None);
    }

    #[test]
    fn hosts_under_the_domain_select_the_sandbox() {
        let d = Some("sb.test");
        let h = headers(&[("host", "49983-ab12.sb.test:443")]);
        assert_eq!(sandbox_target(&h, d).unwrap(), Some(("ab12".into(), 49983)));
        let h = headers(&[("host", "api.sb.test")]);
        assert_eq!(sandbox_target(&h, d).unwrap(), None);
        let h = headers(&[("host", "other.example")]);
        assert_eq!(sandbox_target(&h, d).unwrap(), None);
        let h = headers(&[("host", "x-ab12.sb.test")]);
        assert!(sandbox_target(&h, d).is_err());
    }
}
