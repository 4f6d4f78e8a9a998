//! The one service every connection gets: it finds which API surface a
//! request is for, checks its credentials, hands it to that surface's
//! router, and logs one line per request.
//!
//! - a request naming a sandbox — the SDK's `E2b-Sandbox-Id` and
//!   `E2b-Sandbox-Port` headers, or with `--domain D` a Host of
//!   `PORT-ID.D` — goes to that sandbox's envd (port 49983), code
//!   interpreter (49999) or, for any other port, its own server there
//!   (`ports.rs`); `authorize` says which token each needs, and one
//!   sandbox's token never opens another;
//! - anything else is the control plane and needs `X-API-Key`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, Request};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceExt;

use crate::error::ApiError;
use crate::state::{AppState, SandboxRecord};

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

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    pub async fn handle(self, request: Request<Body>) -> Response {
        let started = Instant::now();
        let method = request.method().clone();
        let version = request.version();
        let path = request.uri().path().to_string();
        let (surface, sandbox, response) = match self.route(request) {
            Routed::Forward {
                surface,
                sandbox,
                router,
                request,
            } => {
                if let Some(record) = request.extensions().get::<Arc<SandboxRecord>>() {
                    auto_resume(record).await;
                }
                (surface, sandbox, call(router, request).await)
            }
            Routed::Port {
                record,
                port,
                request,
            } => {
                auto_resume(&record).await;
                (
                    "port",
                    Some(record.id().to_string()),
                    crate::ports::forward(record, port, request).await,
                )
            }
            Routed::Refuse {
                surface,
                sandbox,
                error,
                request,
            } => {
                // Read what the client sent (a little of it) before
                // answering, so that an HTTP/1.1 connection stays usable:
                // a response that leaves the request body unread closes it.
                drain(request.into_body()).await;
                (surface, sandbox, error.into_response())
            }
        };
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

    fn route(&self, mut request: Request<Body>) -> Routed {
        macro_rules! refuse {
            ($surface:expr, $sandbox:expr, $error:expr) => {
                return Routed::Refuse {
                    surface: $surface,
                    sandbox: $sandbox,
                    error: $error,
                    request,
                }
            };
        }
        let target = match sandbox_target(
            request.headers(),
            request.uri().authority().map(|a| a.as_str()),
            self.state.config.domain.as_deref(),
        ) {
            Ok(target) => target,
            Err(e) => refuse!("-", None, e),
        };
        let target = match target {
            Some(target) => Some(target),
            // A signed file URL (`download_url`/`upload_url`) carries no
            // header: with E2B_SANDBOX_URL it reaches us as a bare /files
            // request, and its signature names the sandbox whose token
            // made it.
            None if request.uri().path() == "/files" => match self.signed_files_sandbox(&request) {
                Some(id) => Some((id, ENVD_PORT)),
                None => refuse!(
                    "envd",
                    None,
                    ApiError::unauthorized(
                        "a /files request needs E2b-Sandbox-Id or a valid signature"
                    )
                ),
            },
            None => None,
        };
        let Some((id, port)) = target else {
            let key = request.headers().get("x-api-key").map(|v| v.as_bytes());
            if !self.state.api_key_ok(key) {
                refuse!(
                    "control",
                    None,
                    ApiError::unauthorized("invalid or missing X-API-Key")
                );
            }
            return Routed::Forward {
                surface: "control",
                sandbox: control_sandbox(request.uri().path()),
                router: self.control.clone(),
                request,
            };
        };
        let Some(record) = self.state.record(&id) else {
            let error = ApiError::sandbox_gone(&id);
            refuse!("envd", Some(id), error);
        };
        if let Err(error) = authorize(&record, port, &request) {
            refuse!(surface_of(port), Some(id), error);
        }
        let (surface, router) = match port {
            ENVD_PORT => ("envd", self.envd.clone()),
            CODE_PORT => ("code", self.code.clone()),
            port => {
                return Routed::Port {
                    record,
                    port,
                    request,
                }
            }
        };
        request.extensions_mut().insert(record);
        Routed::Forward {
            surface,
            sandbox: Some(id),
            router,
            request,
        }
    }
}

fn surface_of(port: u16) -> &'static str {
    match port {
        ENVD_PORT => "envd",
        CODE_PORT => "code",
        _ => "port",
    }
}

/// Whether a request may reach this port of the sandbox:
/// - envd (49983) of a secure sandbox takes its envd access token
///   (`X-Access-Token`), or a valid signature on `/files`;
/// - the code interpreter (49999) of a secure sandbox takes the envd token
///   or the traffic token (`E2B-Traffic-Access-Token`): the SDKs send the
///   envd token only with `/execute`, the traffic token on every call;
/// - any other port is public unless the sandbox was created with
///   `allowPublicTraffic: false`, then it takes the traffic token.
///
/// Tokens are compared in constant time; one sandbox's never opens another.
fn authorize(record: &SandboxRecord, port: u16, request: &Request<Body>) -> Result<(), ApiError> {
    let header_matches = |name: &str, token: &str| {
        request
            .headers()
            .get(name)
            .is_some_and(|t| crate::state::tokens_match(t.as_bytes(), token))
    };
    let envd_token = || header_matches("x-access-token", &record.envd_token);
    let traffic_token = || header_matches("e2b-traffic-access-token", &record.traffic_token);
    match port {
        ENVD_PORT if record.secure => {
            let signed = request.uri().path() == "/files"
                && crate::envd::files::signature_ok(
                    record,
                    request.method(),
                    request.uri().query(),
                );
            if envd_token() || signed {
                Ok(())
            } else {
                Err(ApiError::unauthorized(
                    "this sandbox is secure: send its envd access token in X-Access-Token",
                ))
            }
        }
        CODE_PORT if record.secure => {
            if envd_token() || traffic_token() {
                Ok(())
            } else {
                Err(ApiError::unauthorized(
                    "this sandbox is secure: send its traffic access token in \
                     E2B-Traffic-Access-Token (or its envd access token in X-Access-Token)",
                ))
            }
        }
        ENVD_PORT | CODE_PORT => Ok(()),
        _ if record.public_traffic() || traffic_token() => Ok(()),
        _ => Err(ApiError::unauthorized(
            "this sandbox's ports are not public (allowPublicTraffic is false): \
             send its traffic access token in E2B-Traffic-Access-Token",
        )),
    }
}

/// `autoResume`: a request to a paused sandbox created with it resumes
/// it first (as the reference's proxy does); a failed resume leaves the
/// request to meet the paused sandbox and say so.
async fn auto_resume(record: &Arc<SandboxRecord>) {
    if !record.auto_resume || record.sandbox.state() != sandlot::State::Paused {
        return;
    }
    let target = record.clone();
    let resumed = tokio::task::spawn_blocking(move || target.sandbox.resume()).await;
    match resumed {
        Ok(Ok(())) => tracing::info!(sandbox = record.id(), "resumed by a request (autoResume)"),
        Ok(Err(e)) => tracing::warn!(sandbox = record.id(), "autoResume: {e}"),
        Err(e) => tracing::warn!(sandbox = record.id(), "autoResume: {e}"),
    }
}

/// Where the dispatcher sends a request.
enum Routed {
    Forward {
        surface: &'static str,
        sandbox: Option<String>,
        router: Router,
        request: Request<Body>,
    },
    /// A server of the sandbox's own (any other port).
    Port {
        record: Arc<SandboxRecord>,
        port: u16,
        request: Request<Body>,
    },
    Refuse {
        surface: &'static str,
        sandbox: Option<String>,
        error: ApiError,
        request: Request<Body>,
    },
}

/// Request bytes read and dropped before a refusal; a larger body closes
/// the connection instead.
const DRAIN_LIMIT: usize = 256 << 10;

pub(crate) async fn drain(body: Body) {
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        http_body_util::BodyExt::collect(http_body_util::Limited::new(body, DRAIN_LIMIT)),
    )
    .await;
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

/// The sandbox and port a request is addressed to, if any. `authority` is
/// the request URI's (HTTP/2's `:authority`); HTTP/1.1 names the host in
/// the Host header.
pub fn sandbox_target(
    headers: &HeaderMap,
    authority: Option<&str>,
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
    let host = authority.or_else(|| {
        headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
    });
    let Some(host) = host else {
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
            sandbox_target(&h, None, None).unwrap(),
            Some(("ab12".into(), 49999))
        );
        let h = headers(&[("e2b-sandbox-id", "ab12")]);
        assert_eq!(
            sandbox_target(&h, None, None).unwrap(),
            Some(("ab12".into(), ENVD_PORT))
        );
        let h = headers(&[("e2b-sandbox-id", "../x")]);
        assert!(sandbox_target(&h, None, None).is_err());
        assert_eq!(sandbox_target(&HeaderMap::new(), None, None).unwrap(), None);
    }

    #[test]
    fn hosts_under_the_domain_select_the_sandbox() {
        let d = Some("sb.test");
        let h = headers(&[("host", "49983-ab12.sb.test:443")]);
        assert_eq!(
            sandbox_target(&h, None, d).unwrap(),
            Some(("ab12".into(), 49983))
        );
        let h = headers(&[("host", "api.sb.test")]);
        assert_eq!(sandbox_target(&h, None, d).unwrap(), None);
        let h = headers(&[("host", "other.example")]);
        assert_eq!(sandbox_target(&h, None, d).unwrap(), None);
        let h = headers(&[("host", "x-ab12.sb.test")]);
        assert!(sandbox_target(&h, None, d).is_err());
        // HTTP/2: the authority, not a Host header.
        let none = HeaderMap::new();
        assert_eq!(
            sandbox_target(&none, Some("49999-cd34.sb.test"), d).unwrap(),
            Some(("cd34".into(), 49999))
        );
    }
}
