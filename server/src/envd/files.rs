//! envd's `/files`: download (`GET`) and upload (`POST`, multipart or
//! octet-stream, gzip) of sandbox files.
//!
//! Bodies stream both ways through a bounded channel between the HTTP
//! body and a blocking thread that does the library's file I/O, so
//! neither a large upload nor a large download is held in memory. The
//! library bounds each file (`Files::max_file_size`, 1 GiB), which also
//! bounds what a gzip body may inflate to.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{self, Read, Write};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::RawQuery;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::users::Accounts;
use super::{blocking, Target};
use crate::error::ApiError;
use crate::state::SandboxRecord;

const CHUNK: usize = 64 << 10;
const CHANNEL_CHUNKS: usize = 4;

/// A multipart upload may carry several files; the whole stream is
/// bounded (each file is bounded by the library).
const MAX_MULTIPART: u64 = 8 << 30;

fn query(raw: Option<&str>) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if !matches!(
            k.as_ref(),
            "path" | "username" | "signature" | "signature_expiration"
        ) {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter {k:?}"
            )));
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(ApiError::bad_request(format!(
                "query parameter {k:?} given twice"
            )));
        }
    }
    Ok(out)
}

/// The SDK's v1 file-URL signature: `v1_` + unpadded base64 of
/// `sha256("path:operation:user:token[:expiration]")`.
pub fn signature(
    path: &str,
    operation: &str,
    user: &str,
    token: &str,
    expiration: Option<&str>,
) -> String {
    use base64::Engine;
    let raw = match expiration {
        Some(exp) => format!("{path}:{operation}:{user}:{token}:{exp}"),
        None => format!("{path}:{operation}:{user}:{token}"),
    };
    let digest = Sha256::digest(raw.as_bytes());
    format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// Whether a `/files` request carries a valid signature for `record`
/// (checked in constant time, expiry honoured).
pub fn signature_ok(
    record: &SandboxRecord,
    method: &axum::http::Method,
    raw_query: Option<&str>,
) -> bool {
    use subtle::ConstantTimeEq;
    let Ok(q) = query(raw_query) else {
        return false;
    };
    let Some(given) = q.get("signature") else {
        return false;
    };
    let operation = match *method {
        axum::http::Method::GET => "read",
        axum::http::Method::POST => "write",
        _ => return false,
    };
    let expiration = q.get("signature_expiration").map(String::as_str);
    if let Some(exp) = expiration {
        let Ok(exp) = exp.parse::<u64>() else {
            return false;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(u64::MAX);
        if exp < now {
            return false;
        }
    }
    let expected = signature(
        q.get("path").map(String::as_str).unwrap_or(""),
        operation,
        q.get("username").map(String::as_str).unwrap_or(""),
        &record.envd_token,
        expiration,
    );
    bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

fn files_for<'a>(
    record: &'a SandboxRecord,
    user: Option<&str>,
) -> Result<sandlot::Files<'a>, ApiError> {
    let accounts = Accounts::load(&record.sandbox);
    Ok(match accounts.resolve(user)? {
        Some(account) => record.sandbox.files().user(account.name),
        None => record.sandbox.files(),
    })
}

/// A `Write` that hands chunks to the response body (blocking while the
/// client is slow; failing once it is gone).
struct ChunkWriter(mpsc::Sender<Bytes>);

impl Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client gone"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A `Read` over chunks the request body hands in. A failure of the body
/// itself (or of the gzip decoding over it) is remembered in `failed`, so
/// that it is reported as the client's error, not the sandbox's.
struct ChunkReader {
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
    current: Bytes,
}

struct Tracked<R> {
    inner: R,
    failed: Arc<std::sync::Mutex<Option<String>>>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            *self.failed.lock().unwrap() = Some(e.to_string());
        })
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

fn wants_gzip(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|e| e.split(';').next().unwrap_or("").trim() == "gzip")
        })
}

pub async fn download(
    axum::Extension(record): Target,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = query(raw.as_deref())?;
    let path = q
        .get("path")
        .filter(|p| !p.is_empty())
        .cloned()
        .ok_or_else(|| ApiError::bad_request("path is required"))?;
    let user = q.get("username").cloned();
    let gzip = wants_gzip(&headers);
    let open_record = record.clone();
    let (reader, name) = blocking(move || {
        let files = files_for(&open_record, user.as_deref())?;
        let entry = files.stat(&path)?;
        let reader = files.open(&path)?;
        Ok((reader, entry.name))
    })
    .await?;
    let length = reader.len();
    let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
    tokio::task::spawn_blocking(move || {
        let mut reader = reader;
        let mut out: Box<dyn Write> = if gzip {
            Box::new(flate2::write::GzEncoder::new(
                ChunkWriter(tx),
                flate2::Compression::fast(),
            ))
        } else {
            Box::new(ChunkWriter(tx))
        };
        let mut buf = vec![0u8; CHUNK];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if out.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                // A read failing midway (the file grew past the limit, the
                // sandbox went away) cuts the body short: the client sees
                // a truncated transfer, not a silent success.
                Err(_) => return,
            }
        }
        let _ = out.flush();
        drop(out);
    });
    let body = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|c| c.map(Ok::<_, Infallible>))
    });
    let mime = mime_guess::from_path(&name).first_or_octet_stream();
    let mut response = Body::from_stream(body).into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(mime.essence_str()) {
        h.insert(header::CONTENT_TYPE, v);
    }
    let disposition = format!(
        "attachment; filename*=UTF-8''{}",
        percent_encoding::utf8_percent_encode(&name, percent_encoding::NON_ALPHANUMERIC)
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    } else {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    Ok(response)
}

fn write_info(entry: &sandlot::EntryInfo) -> serde_json::Value {
    json!({ "name": entry.name, "type": "file", "path": entry.path })
}

type ChunkSender = mpsc::Sender<Result<Bytes, io::Error>>;
type WriteTask = tokio::task::JoinHandle<Result<sandlot::EntryInfo, ApiError>>;

/// Writes one file from a chunk channel on a blocking thread.
fn spawn_writer(
    record: Arc<SandboxRecord>,
    user: Option<String>,
    path: String,
    gzip: bool,
) -> (ChunkSender, WriteTask) {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let task = tokio::task::spawn_blocking(move || {
        let files = files_for(&record, user.as_deref())?;
        let chunks = ChunkReader {
            rx,
            current: Bytes::new(),
        };
        let failed = Arc::new(std::sync::Mutex::new(None));
        let result = if gzip {
            let inner = flate2::read::GzDecoder::new(chunks);
            files.write_from(
                &path,
                Tracked {
                    inner,
                    failed: failed.clone(),
                },
            )
        } else {
            files.write_from(
                &path,
                Tracked {
                    inner: chunks,
                    failed: failed.clone(),
                },
            )
        };
        let source_failed = failed.lock().unwrap().take();
        match (result, source_failed) {
            (Ok(entry), _) => Ok(entry),
            (Err(_), Some(reason)) => Err(ApiError::bad_request(format!(
                "the upload body for {path} could not be read: {reason}"
            ))),
            (Err(e), None) => Err(e.into()),
        }
    });
    (tx, task)
}

/// What an upload asks for, checked before its body is read.
struct UploadPlan {
    user: Option<String>,
    gzip: bool,
    kind: UploadKind,
}

enum UploadKind {
    /// One file, at `path`.
    OctetStream { path: String },
    /// Parts named by their file names, or one part at `path`.
    Multipart {
        boundary: String,
        path: Option<String>,
    },
}

fn plan_upload(headers: &HeaderMap, raw: Option<&str>) -> Result<UploadPlan, ApiError> {
    let q = query(raw)?;
    if headers
        .keys()
        .any(|k| k.as_str().starts_with("x-metadata-"))
    {
        return Err(ApiError::not_yet(
            "file metadata (X-Metadata-*)",
            "envd 0.6.2 feature",
        ));
    }
    let user = q.get("username").cloned();
    let path = q.get("path").filter(|p| !p.is_empty()).cloned();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let gzip = match encoding.as_deref() {
        None | Some("identity") => false,
        Some("gzip") => true,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                crate::error::Code::InvalidArgument,
                format!("Content-Encoding {other:?} is not supported (gzip is)"),
            ))
        }
    };
    let kind = match content_type.split(';').next().unwrap_or("").trim() {
        "application/octet-stream" => UploadKind::OctetStream {
            path: path.ok_or_else(|| {
                ApiError::bad_request("path is required for an octet-stream upload")
            })?,
        },
        "multipart/form-data" if gzip => {
            return Err(ApiError::bad_request(
                "gzip applies to octet-stream uploads only",
            ))
        }
        "multipart/form-data" => UploadKind::Multipart {
            boundary: multer::parse_boundary(content_type)
                .map_err(|e| ApiError::bad_request(format!("multipart: {e}")))?,
            path,
        },
        _ => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                crate::error::Code::InvalidArgument,
                format!(
                    "Content-Type {content_type:?}: upload multipart/form-data or application/octet-stream"
                ),
            ))
        }
    };
    Ok(UploadPlan { user, gzip, kind })
}

pub async fn upload(
    axum::Extension(record): Target,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    let plan = match plan_upload(&headers, raw.as_deref()) {
        Ok(plan) => plan,
        Err(e) => {
            crate::http::drain(body).await;
            return Err(e);
        }
    };
    let UploadPlan { user, gzip, kind } = plan;
    let written = match kind {
        UploadKind::OctetStream { path } => {
            let (tx, task) = spawn_writer(record.clone(), user, path, gzip);
            let mut stream = body.into_data_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| io::Error::other(e.to_string()));
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    break;
                }
            }
            drop(tx);
            vec![task.await??]
        }
        UploadKind::Multipart { boundary, path } => {
            let constraints = multer::Constraints::new()
                .size_limit(multer::SizeLimit::new().whole_stream(MAX_MULTIPART));
            let mut multipart =
                multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
            let mut written = Vec::new();
            while let Some(mut field) = multipart
                .next_field()
                .await
                .map_err(|e| ApiError::bad_request(format!("multipart: {e}")))?
            {
                let destination =
                    match (&path, field.file_name()) {
                        (Some(path), _) if written.is_empty() => path.clone(),
                        (Some(_), _) => return Err(ApiError::bad_request(
                            "path names one file; several parts need a file name each and no path",
                        )),
                        (None, Some(name)) if !name.is_empty() => name.to_string(),
                        (None, _) => {
                            return Err(ApiError::bad_request(
                                "a part has no file name and no path was given",
                            ))
                        }
                    };
                let (tx, task) = spawn_writer(record.clone(), user.clone(), destination, false);
                loop {
                    match field.chunk().await {
                        Ok(Some(chunk)) => {
                            if tx.send(Ok(chunk)).await.is_err() {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
                            break;
                        }
                    }
                }
                drop(tx);
                written.push(task.await??);
            }
            if written.is_empty() {
                return Err(ApiError::bad_request("the multipart body holds no file"));
            }
            written
        }
    };
    Ok(Json(serde_json::Value::Array(
        written.iter().map(write_info).collect(),
    ))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_sdk() {
        // Computed with the pinned SDK: e2b.sandbox.signature.get_signature(
        //   "/home/user/a.txt", "read", "user", "tok")["signature"]
        assert_eq!(
            signature("/home/user/a.txt", "read", "user", "tok", None),
            "v1_p0WqJQYCLtO6YX+e4h7VbpybRsdJbMbIw7clYpulIJk"
        );
    }

    #[test]
    fn queries_refuse_strangers() {
        assert!(query(Some("path=/a&username=user")).is_ok());
        assert!(query(Some("path=/a&path=/b")).is_err());
        assert!(query(Some("evil=1")).is_err());
    }
}
