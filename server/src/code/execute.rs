//! `POST /execute`: runs one cell and streams what it produces as NDJSON.
//!
//! The cell runs on a blocking thread (the library's `run` calls its
//! callbacks there as output arrives); each callback hands its line to a
//! small bounded channel that the response body drains, so a client that
//! reads slowly holds the cell's output in its pipes, not in memory. The
//! SDKs bound an execution on their side and close the connection when
//! their timeout passes: a client that goes away interrupts the cell
//! (SIGINT; killed and restarted if it does not stop within the grace
//! period), as the reference does. A sandbox that ends during the cell
//! cuts the response off, which the SDKs report as "the sandbox was
//! killed".
//!
//! Output is coalesced by line on its way out: an interpreter that writes
//! unbuffered (`print` writes its text and its newline separately) would
//! otherwise produce `["hi", "\n"]` where the reference's kernels give
//! `["hi\n"]`. A piece without its newline waits at most
//! [`COALESCE_WAIT`] for the rest of its line, and never past the next
//! other event.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use sandlot::code::{CellOptions, Context};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use super::contexts::{default_context, find};
use super::ndjson;
use crate::envd::{blocking, Target};
use crate::error::ApiError;
use crate::state::SandboxRecord;

/// A cell's code and environment.
const MAX_BODY: usize = 16 << 20;
/// Lines buffered between the cell and the response body.
const LINE_BUFFER: usize = 64;
/// How long a piece of output waits for the rest of its line.
const COALESCE_WAIT: Duration = Duration::from_millis(50);
/// A pending piece longer than this goes out without waiting.
const COALESCE_MAX: usize = 64 << 10;
/// The SDKs bound an execution themselves (and a cell ends with its
/// sandbox); the server's own bound is only a backstop.
const CELL_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecuteRequest {
    code: String,
    language: Option<String>,
    context_id: Option<String>,
    env_vars: Option<BTreeMap<String, String>>,
}

type Line = Result<Bytes, io::Error>;

/// What the cell's thread hands to the response body.
enum Piece {
    Stdout(String),
    Stderr(String),
    /// A whole line (a result, an error, the end).
    Line(Bytes),
    /// The sandbox ended: cut the response off.
    Abort(io::Error),
}

pub(super) async fn execute(axum::Extension(record): Target, body: Body) -> Response {
    match start(record, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn start(record: Arc<SandboxRecord>, body: Body) -> Result<Response, ApiError> {
    let body = crate::control::read_limited(body, MAX_BODY).await?;
    let request: ExecuteRequest = crate::control::parse_json(&body)?;
    if request.language.is_some() && request.context_id.is_some() {
        return Err(ApiError::bad_request(
            "only one of context_id or language can be provided",
        ));
    }
    if record.sandbox.state() == sandlot::State::Paused {
        return Err(sandlot::Error::SandboxNotRunning {
            id: record.id().to_string(),
            state: sandlot::State::Paused,
        }
        .into());
    }
    let language = match &request.context_id {
        Some(_) => None,
        None => Some(super::language(request.language.as_deref())?),
    };
    let resolve_record = record.clone();
    let context_id = request.context_id.clone();
    let context = blocking(move || match (context_id, language) {
        (Some(id), _) => find(&resolve_record, &id),
        (None, Some(language)) => default_context(&resolve_record, language),
        (None, None) => unreachable!("a language is resolved when no context is named"),
    })
    .await?;

    let (tx, rx) = mpsc::channel::<Piece>(LINE_BUFFER);
    let (done_tx, done_rx) = oneshot::channel::<()>();
    tokio::spawn(interrupt_when_gone(
        record.clone(),
        context.clone(),
        tx.clone(),
        done_rx,
    ));
    let env = request.env_vars.unwrap_or_default();
    let code = request.code;
    tokio::task::spawn_blocking(move || {
        run_cell(&record, &context, &code, env, &tx);
        let _ = done_tx.send(());
    });
    let body = futures_util::stream::unfold(Coalescer::new(rx), |mut c| async move {
        c.next().await.map(|line| (line, c))
    });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response())
}

/// The client went away while the cell runs: interrupt it.
async fn interrupt_when_gone(
    record: Arc<SandboxRecord>,
    context: Context,
    tx: mpsc::Sender<Piece>,
    done: oneshot::Receiver<()>,
) {
    tokio::select! {
        biased;
        _ = done => {}
        _ = tx.closed() => {
            tracing::debug!(sandbox = record.id(), context = %context.id, "client gone: interrupting the cell");
            let _ = tokio::task::spawn_blocking(move || record.sandbox.code().interrupt(&context)).await;
        }
    }
}

/// Runs the cell, sending each line as it comes. Once the client is gone
/// the sends fail at once and the output is dropped while the interrupt
/// ends the cell.
fn run_cell(
    record: &SandboxRecord,
    context: &Context,
    code: &str,
    env: BTreeMap<String, String>,
    tx: &mpsc::Sender<Piece>,
) {
    let sender = |tx: &mpsc::Sender<Piece>| {
        let tx = tx.clone();
        move |piece: Piece| {
            let _ = tx.blocking_send(piece);
        }
    };
    let (out, err, res, fail) = (sender(tx), sender(tx), sender(tx), sender(tx));
    let error_sent = Arc::new(AtomicBool::new(false));
    let error_flag = error_sent.clone();
    let mut options = CellOptions::default()
        .timeout(CELL_TIMEOUT)
        .on_stdout(move |text| out(Piece::Stdout(text.to_string())))
        .on_stderr(move |text| err(Piece::Stderr(text.to_string())))
        .on_result(move |data| res(Piece::Line(ndjson::result(data))))
        .on_error(move |e| {
            error_flag.store(true, Ordering::SeqCst);
            fail(Piece::Line(ndjson::error(e)))
        });
    for (k, v) in env {
        options = options.env(k, v);
    }
    let send = |piece: Piece| {
        let _ = tx.blocking_send(piece);
    };
    match record.sandbox.code().run(context, code, options) {
        Ok(execution) => {
            if !record.sandbox.is_alive() {
                send(Piece::Abort(cut_off(record)));
                return;
            }
            // An error the cell's end added (a timeout, a lost
            // interpreter) or one the callback did not see.
            if let Some(error) = &execution.error {
                if execution.state_lost || !error_sent.load(Ordering::SeqCst) {
                    send(Piece::Line(ndjson::error(error)));
                }
            }
            send(Piece::Line(ndjson::number_of_executions(
                execution.execution_count,
            )));
            send(Piece::Line(ndjson::end_of_execution()));
        }
        Err(_) if !record.sandbox.is_alive() => send(Piece::Abort(cut_off(record))),
        Err(e) => {
            let e = ApiError::from(e);
            send(Piece::Line(ndjson::error(&sandlot::code::ExecutionError {
                name: "SandboxError".into(),
                value: e.message,
                traceback: String::new(),
            })));
            send(Piece::Line(ndjson::end_of_execution()));
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

/// Output of one stream waiting for the rest of its line.
struct Pending {
    stream: Stream,
    text: String,
    until: tokio::time::Instant,
}

impl Pending {
    fn line(self) -> Bytes {
        match self.stream {
            Stream::Stdout => ndjson::stdout(&self.text),
            Stream::Stderr => ndjson::stderr(&self.text),
        }
    }
}

/// Turns the cell's pieces into the response's lines, joining output
/// pieces into lines (see the module's doc).
struct Coalescer {
    rx: mpsc::Receiver<Piece>,
    pending: Option<Pending>,
    ready: std::collections::VecDeque<Line>,
    done: bool,
}

impl Coalescer {
    fn new(rx: mpsc::Receiver<Piece>) -> Coalescer {
        Coalescer {
            rx,
            pending: None,
            ready: Default::default(),
            done: false,
        }
    }

    fn flush(&mut self) {
        if let Some(pending) = self.pending.take() {
            self.ready.push_back(Ok(pending.line()));
        }
    }

    fn text(&mut self, stream: Stream, text: String) {
        if self.pending.as_ref().is_some_and(|p| p.stream != stream) {
            self.flush();
        }
        let pending = self.pending.get_or_insert_with(|| Pending {
            stream,
            text: String::new(),
            until: tokio::time::Instant::now() + COALESCE_WAIT,
        });
        pending.text.push_str(&text);
        if pending.text.ends_with('\n') || pending.text.len() >= COALESCE_MAX {
            self.flush();
        }
    }

    async fn next(&mut self) -> Option<Line> {
        loop {
            if let Some(line) = self.ready.pop_front() {
                return Some(line);
            }
            if self.done {
                return None;
            }
            let piece = match &self.pending {
                Some(pending) => {
                    match tokio::time::timeout_at(pending.until, self.rx.recv()).await {
                        Ok(piece) => piece,
                        Err(_) => {
                            self.flush();
                            continue;
                        }
                    }
                }
                None => self.rx.recv().await,
            };
            match piece {
                Some(Piece::Stdout(text)) => self.text(Stream::Stdout, text),
                Some(Piece::Stderr(text)) => self.text(Stream::Stderr, text),
                Some(Piece::Line(line)) => {
                    self.flush();
                    self.ready.push_back(Ok(line));
                }
                Some(Piece::Abort(e)) => {
                    self.flush();
                    self.ready.push_back(Err(e));
                    self.done = true;
                }
                None => {
                    self.flush();
                    self.done = true;
                }
            }
        }
    }
}

/// Ends the response without its last chunk: the SDKs then ask whether the
/// sandbox still runs and report it killed.
fn cut_off(record: &SandboxRecord) -> io::Error {
    io::Error::other(format!("the sandbox {} ended during the cell", record.id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(line: &Line) -> (String, String) {
        let v: serde_json::Value = serde_json::from_slice(line.as_ref().unwrap()).unwrap();
        (
            v["type"].as_str().unwrap().to_string(),
            v["text"].as_str().unwrap_or("").to_string(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn output_pieces_join_into_lines() {
        let (tx, rx) = mpsc::channel(16);
        let mut c = Coalescer::new(rx);
        for piece in [
            Piece::Stdout("hi".into()),
            Piece::Stdout("\n".into()),
            Piece::Stdout("a".into()),
            Piece::Stderr("e\n".into()),
            Piece::Line(ndjson::end_of_execution()),
        ] {
            tx.send(piece).await.unwrap();
        }
        drop(tx);
        let mut lines = Vec::new();
        while let Some(line) = c.next().await {
            lines.push(text_of(&line));
        }
        let expect = [
            ("stdout", "hi\n"),
            ("stdout", "a"),
            ("stderr", "e\n"),
            ("end_of_execution", ""),
        ];
        assert_eq!(
            lines,
            expect.map(|(t, x)| (t.to_string(), x.to_string())).to_vec()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_line_goes_out_after_the_wait() {
        let (tx, rx) = mpsc::channel(16);
        let mut c = Coalescer::new(rx);
        tx.send(Piece::Stdout("prompt> ".into())).await.unwrap();
        let started = tokio::time::Instant::now();
        let line = c.next().await.unwrap();
        assert_eq!(text_of(&line), ("stdout".into(), "prompt> ".into()));
        assert_eq!(started.elapsed(), COALESCE_WAIT);
        drop(tx);
        assert!(c.next().await.is_none());
    }
}
