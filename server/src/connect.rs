//! The Connect protocol as the E2B SDKs speak it to envd: the JSON codec
//! only (the SDKs never ask for binary), no compression.
//!
//! - unary: `POST /pkg.Service/Method`, `Content-Type: application/json`,
//!   the message as JSON; the answer is 200 with the JSON message, or an
//!   HTTP error status with `{"code": "not_found", "message": …}`;
//! - server stream: `Content-Type: application/connect+json`, the request
//!   as one envelope (1 flag byte, 4-byte big-endian length, the JSON); the
//!   answer is 200 and a stream of envelopes ending with an end-of-stream
//!   envelope (flag 0x02) holding `{}` or `{"error": {...}}`;
//! - client stream: the request is a stream of envelopes, the answer one
//!   envelope and the end-of-stream envelope.
//!
//! `Connect-Timeout-Ms` is the call's deadline. Streams never buffer
//! without bound: a stream's frames go through a small bounded channel that
//! the HTTP body drains as the client reads.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::{ApiError, Code};

pub const UNARY_CONTENT_TYPE: &str = "application/json";
pub const STREAM_CONTENT_TYPE: &str = "application/connect+json";

/// The largest message accepted in either direction (SendInput carries
/// stdin chunks; nothing else comes close).
pub const MAX_MESSAGE: usize = 8 << 20;

/// Envelope flag bits.
const FLAG_COMPRESSED: u8 = 0x01;
const FLAG_END_STREAM: u8 = 0x02;

/// Frames buffered between a stream's producer and its HTTP body.
const STREAM_BUFFER: usize = 16;

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .unwrap_or("")
}

fn wrong_content_type(headers: &HeaderMap, want: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Code::InvalidArgument,
        format!(
            "content type {:?} is not supported here; this method speaks {want}",
            content_type(headers)
        ),
    )
}

/// `Connect-Timeout-Ms`, if the client set one.
pub fn timeout(headers: &HeaderMap) -> Result<Option<Duration>, ApiError> {
    let Some(value) = headers.get("connect-timeout-ms") else {
        return Ok(None);
    };
    let ms: u64 = value
        .to_str()
        .ok()
        .filter(|v| !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            ApiError::bad_request("Connect-Timeout-Ms is not a number of milliseconds")
        })?;
    Ok(Some(Duration::from_millis(ms)))
}

/// Seconds between keepalive messages on a stream, from the SDK's
/// `Keepalive-Ping-Interval` header (none when absent or nonsense).
pub fn keepalive_interval(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get("keepalive-ping-interval")?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    (1..=3600)
        .contains(&secs)
        .then(|| Duration::from_secs(secs))
}

fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid message: {e}")))
}

/// The request of a unary call.
pub fn decode_unary<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, ApiError> {
    if content_type(headers) != UNARY_CONTENT_TYPE {
        return Err(wrong_content_type(headers, UNARY_CONTENT_TYPE));
    }
    if body.is_empty() {
        return decode_json(b"{}");
    }
    decode_json(body)
}

/// The answer of a unary call.
pub fn unary_response<T: Serialize>(result: Result<T, ApiError>) -> Response {
    match result.and_then(|message| {
        serde_json::to_vec(&message).map_err(|e| ApiError::internal(format!("encode: {e}")))
    }) {
        Ok(json) => ([(header::CONTENT_TYPE, UNARY_CONTENT_TYPE)], json).into_response(),
        Err(e) => unary_error(&e),
    }
}

pub fn unary_error(e: &ApiError) -> Response {
    (
        e.code.http_status(),
        [(header::CONTENT_TYPE, UNARY_CONTENT_TYPE)],
        e.connect_body().to_string(),
    )
        .into_response()
}

/// Splits one envelope off the front of `buf`: `Ok(None)` when more bytes
/// are needed.
fn take_envelope(buf: &mut BytesMut) -> Result<Option<(u8, Bytes)>, ApiError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let flags = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_MESSAGE {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::ResourceExhausted,
            format!("message of {len} bytes exceeds the limit of {MAX_MESSAGE}"),
        ));
    }
    if flags & FLAG_COMPRESSED != 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            Code::Unimplemented,
            "compressed messages are not supported (no compression was negotiated)",
        ));
    }
    if buf.len() < 5 + len {
        return Ok(None);
    }
    let mut frame = buf.split_to(5 + len);
    let payload = frame.split_off(5).freeze();
    Ok(Some((flags, payload)))
}

/// The request of a server-streaming call: exactly one envelope.
pub fn decode_stream_request<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    if content_type(headers) != STREAM_CONTENT_TYPE {
        return Err(wrong_content_type(headers, STREAM_CONTENT_TYPE));
    }
    let mut buf = BytesMut::from(body);
    match take_envelope(&mut buf)? {
        Some((flags, payload)) if flags & FLAG_END_STREAM == 0 && buf.is_empty() => {
            decode_json(&payload)
        }
        Some(_) => Err(ApiError::bad_request(
            "a server-streaming request is exactly one message envelope",
        )),
        None => Err(ApiError::bad_request("truncated message envelope")),
    }
}

fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + payload.len());
    out.put_u8(flags);
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    out.freeze()
}

fn end_stream(error: Option<&ApiError>) -> Bytes {
    let body = match error {
        None => serde_json::json!({}),
        Some(e) => {
            serde_json::json!({ "error": { "code": e.code.as_str(), "message": e.message } })
        }
    };
    envelope(FLAG_END_STREAM, body.to_string().as_bytes())
}

/// The client went away: stop producing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// The producing end of a server stream.
pub struct StreamWriter {
    tx: mpsc::Sender<Bytes>,
    deadline: Option<Instant>,
}

impl StreamWriter {
    /// Sends one message, waiting while the client is slow.
    pub async fn send<T: Serialize>(&self, message: &T) -> Result<(), Closed> {
        let json = serde_json::to_vec(message).map_err(|_| Closed)?;
        self.tx.send(envelope(0, &json)).await.map_err(|_| Closed)
    }

    /// Ends the stream, with an error or without.
    pub async fn finish(self, error: Option<ApiError>) {
        let _ = self.tx.send(end_stream(error.as_ref())).await;
    }

    /// Resolves when the call's deadline passes (never without one).
    pub async fn deadline(&self) {
        match self.deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }

    pub fn deadline_error() -> ApiError {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            Code::DeadlineExceeded,
            "the call's deadline (Connect-Timeout-Ms) passed",
        )
    }

    /// Resolves when the client has gone away.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// A server stream: the response to return now, and its writer.
pub fn server_stream(timeout: Option<Duration>) -> (Response, StreamWriter) {
    let (tx, rx) = mpsc::channel::<Bytes>(STREAM_BUFFER);
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|frame| (Ok::<_, Infallible>(frame), rx))
    });
    let response = (
        [(header::CONTENT_TYPE, STREAM_CONTENT_TYPE)],
        Body::from_stream(body),
    )
        .into_response();
    let writer = StreamWriter {
        tx,
        deadline: timeout.map(|t| Instant::now() + t),
    };
    (response, writer)
}

/// A stream that fails before its first message (200 with only the
/// end-of-stream envelope, as Connect servers answer).
pub fn stream_error(e: &ApiError) -> Response {
    (
        [(header::CONTENT_TYPE, STREAM_CONTENT_TYPE)],
        end_stream(Some(e)),
    )
        .into_response()
}

/// The answer of a client-streaming call.
pub fn client_stream_response<T: Serialize>(result: Result<T, ApiError>) -> Response {
    let frames = match result {
        Ok(message) => match serde_json::to_vec(&message) {
            Ok(json) => [envelope(0, &json), end_stream(None)].concat(),
            Err(e) => end_stream(Some(&ApiError::internal(format!("encode: {e}")))).to_vec(),
        },
        Err(e) => end_stream(Some(&e)).to_vec(),
    };
    ([(header::CONTENT_TYPE, STREAM_CONTENT_TYPE)], frames).into_response()
}

/// Reads the envelopes of a client stream one at a time, holding at most
/// one message's bytes.
pub struct EnvelopeReader {
    body: Body,
    buf: BytesMut,
    done: bool,
}

impl EnvelopeReader {
    pub fn new(headers: &HeaderMap, body: Body) -> Result<EnvelopeReader, ApiError> {
        if content_type(headers) != STREAM_CONTENT_TYPE {
            return Err(wrong_content_type(headers, STREAM_CONTENT_TYPE));
        }
        Ok(EnvelopeReader {
            body,
            buf: BytesMut::new(),
            done: false,
        })
    }

    /// The next message; `None` at the end of the stream.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Option<Result<T, ApiError>> {
        loop {
            if self.done {
                return None;
            }
            match take_envelope(&mut self.buf) {
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Ok(Some((flags, payload))) => {
                    if flags & FLAG_END_STREAM != 0 {
                        self.done = true;
                        return None;
                    }
                    return Some(decode_json(&payload));
                }
                Ok(None) => {}
            }
            match self.body.frame().await {
                None => {
                    self.done = true;
                    if self.buf.is_empty() {
                        return None;
                    }
                    return Some(Err(ApiError::bad_request("truncated message envelope")));
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(ApiError::bad_request(format!(
                        "reading the request: {e}"
                    ))));
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_refuse_what_is_not_one() {
        let mut buf = BytesMut::from(&envelope(0, b"{\"a\":1}")[..]);
        buf.extend_from_slice(&end_stream(None));
        let (flags, payload) = take_envelope(&mut buf).unwrap().unwrap();
        assert_eq!((flags, &payload[..]), (0, &b"{\"a\":1}"[..]));
        let (flags, payload) = take_envelope(&mut buf).unwrap().unwrap();
        assert_eq!((flags, &payload[..]), (FLAG_END_STREAM, &b"{}"[..]));
        assert!(buf.is_empty());

        let mut short = BytesMut::from(&envelope(0, b"12345")[..7]);
        assert!(take_envelope(&mut short).unwrap().is_none());
        let mut huge = BytesMut::from(&[0u8, 0xff, 0xff, 0xff, 0xff][..]);
        assert_eq!(
            take_envelope(&mut huge).unwrap_err().code,
            Code::ResourceExhausted
        );
        let mut compressed = BytesMut::from(&envelope(FLAG_COMPRESSED, b"x")[..]);
        assert!(take_envelope(&mut compressed).is_err());
    }

    #[test]
    fn stream_request_must_be_one_envelope_of_the_right_type() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, STREAM_CONTENT_TYPE.parse().unwrap());
        let one = envelope(0, b"{}");
        let v: serde_json::Value = decode_stream_request(&headers, &one).unwrap();
        assert_eq!(v, serde_json::json!({}));
        let two = [one.clone(), one.clone()].concat();
        assert!(decode_stream_request::<serde_json::Value>(&headers, &two).is_err());
        assert!(decode_stream_request::<serde_json::Value>(&headers, &one[..3]).is_err());
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        let e = decode_stream_request::<serde_json::Value>(&headers, &one).unwrap_err();
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[test]
    fn timeouts_and_keepalives_parse_or_are_refused() {
        let mut headers = HeaderMap::new();
        assert_eq!(timeout(&headers).unwrap(), None);
        headers.insert("connect-timeout-ms", "1500".parse().unwrap());
        assert_eq!(
            timeout(&headers).unwrap(),
            Some(Duration::from_millis(1500))
        );
        headers.insert("connect-timeout-ms", "-1".parse().unwrap());
        assert!(timeout(&headers).is_err());
        headers.insert("keepalive-ping-interval", "50".parse().unwrap());
        assert_eq!(keepalive_interval(&headers), Some(Duration::from_secs(50)));
        headers.insert("keepalive-ping-interval", "0".parse().unwrap());
        assert_eq!(keepalive_interval(&headers), None);
    }
}
