//! A sandbox's own servers: a request for any port but envd's and the code
//! interpreter's (`PORT-ID.D` with `--domain`, what the SDK's
//! `get_host(port)` names, or `E2b-Sandbox-Port`) is forwarded as HTTP/1.1
//! to that port inside the sandbox, upgrades (WebSocket) included.
//!
//! The way in is the library's `expose_port`: a host listener on
//! 127.0.0.1 whose connections are dialled from inside the sandbox's
//! network namespace to its loopback. One per port, opened on first use and
//! closed with the sandbox. Nothing listening inside shows as a connection
//! closed before any answer, reported as the SDK's "port is not open".

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::header::{self, HeaderValue};
use axum::http::{Request, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::{ApiError, Code};
use crate::state::SandboxRecord;

/// Ports one sandbox may have forwarded at once (each is a host listener).
pub const MAX_PORTS: usize = 64;

/// Headers that are the server's business, not the sandbox's: the
/// sandbox's tokens and the SDK's addressing never reach its servers.
const STRIPPED: &[&str] = &[
    "x-access-token",
    "e2b-traffic-access-token",
    "e2b-sandbox-id",
    "e2b-sandbox-port",
];

fn port_closed(record: &SandboxRecord, port: u16, why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        Code::Unavailable,
        // The SDK recognises "port is not open".
        format!(
            "The sandbox {} is running but port is not open: {port} ({why})",
            record.id()
        ),
    )
}

/// The host address that reaches `port` inside the sandbox.
async fn exposed(record: &Arc<SandboxRecord>, port: u16) -> Result<SocketAddr, ApiError> {
    if let Some(addr) = record.ports.lock().unwrap().get(&port) {
        return Ok(*addr);
    }
    let target = record.clone();
    crate::envd::blocking(move || {
        let mut ports = target.ports.lock().unwrap();
        if let Some(addr) = ports.get(&port) {
            return Ok(*addr);
        }
        if ports.len() >= MAX_PORTS {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                Code::ResourceExhausted,
                format!(
                    "sandbox {} already has {MAX_PORTS} ports forwarded",
                    target.id()
                ),
            ));
        }
        let addr = target.sandbox.expose_port(port)?;
        ports.insert(port, addr);
        Ok(addr)
    })
    .await
}

/// The Host the sandbox's server sees: the request's, or the sandbox's
/// `maskRequestHost` with `${PORT}` filled in.
fn host_for(
    record: &SandboxRecord,
    port: u16,
    original: Option<&HeaderValue>,
) -> Option<HeaderValue> {
    let mask = record.network.lock().unwrap().mask_request_host.clone();
    match mask {
        Some(mask) => HeaderValue::from_str(&mask.replace("${PORT}", &port.to_string())).ok(),
        None => original.cloned(),
    }
}

pub async fn forward(
    record: Arc<SandboxRecord>,
    port: u16,
    mut request: Request<Body>,
) -> Response {
    match forward_inner(&record, port, &mut request).await {
        Ok(response) => response,
        Err(e) => {
            crate::http::drain(request.into_body()).await;
            e.into_response()
        }
    }
}

async fn forward_inner(
    record: &Arc<SandboxRecord>,
    port: u16,
    request: &mut Request<Body>,
) -> Result<Response, ApiError> {
    let addr = exposed(record, port).await?;
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| port_closed(record, port, e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| port_closed(record, port, e))?;
    let sandbox_id = record.id().to_string();
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(sandbox = sandbox_id, port, "forwarded connection: {e}");
        }
    });

    // HTTP/2 and absolute-form requests become origin-form HTTP/1.1.
    let upgrade = request
        .headers()
        .contains_key(header::UPGRADE)
        .then(|| hyper::upgrade::on(&mut *request));
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let original_host = request.headers().get(header::HOST).cloned().or_else(|| {
        request
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let mut outgoing = Request::builder()
        .method(request.method().clone())
        .uri(
            path.parse::<Uri>()
                .map_err(|e| ApiError::bad_request(format!("request path: {e}")))?,
        )
        .version(Version::HTTP_11)
        .body(std::mem::take(request.body_mut()))
        .map_err(|e| ApiError::bad_request(format!("request: {e}")))?;
    for (name, value) in request.headers() {
        if !STRIPPED.contains(&name.as_str()) && name != header::HOST {
            outgoing.headers_mut().append(name.clone(), value.clone());
        }
    }
    let host = host_for(record, port, original_host.as_ref())
        .unwrap_or_else(|| HeaderValue::from_static("localhost"));
    outgoing.headers_mut().insert(header::HOST, host);

    let mut response = sender
        .send_request(outgoing)
        .await
        .map_err(|e| port_closed(record, port, e))?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_side) = upgrade {
            let sandbox_side = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                if let (Ok(client), Ok(sandbox)) = (client_side.await, sandbox_side.await) {
                    let _ = tokio::io::copy_bidirectional(
                        &mut TokioIo::new(client),
                        &mut TokioIo::new(sandbox),
                    )
                    .await;
                }
            });
        }
    }
    Ok(response.map(Body::new))
}
