//! `process.Process`: commands in the sandbox, as envd runs them.
//!
//! Each started command gets an entry in its sandbox's [`ProcessTable`]
//! (by pid inside the sandbox, and by tag) and a pump thread
//! (`sandlot-srv-proc`) that reads the library's event stream and hands
//! each event to every subscriber: the `Start` stream that launched it and
//! any `Connect` streams. A subscriber is a small bounded channel drained
//! by its HTTP response body; the pump waits when a client reads slowly
//! (back-pressure) and drops a subscriber whose client went away — the
//! command runs on, as envd's do, until it ends or is killed.
//!
//! A command's time limit is the `Start` call's `Connect-Timeout-Ms`, as
//! in envd: the library kills the command's process group when it passes
//! and the stream ends with `deadline_exceeded`.
//!
//! A `Start` with `pty` runs the command on a terminal allocated inside the
//! sandbox (the library's `spawn_pty`): its output is one stream, sent as
//! `data.pty`; its input comes as `input.pty` (`SendInput`, `StreamInput`)
//! and `Update` resizes it. Terminal input to a piped command, and stdin
//! to a terminal's, are refused by name, as envd does.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Path;
use axum::http::HeaderMap;
use axum::response::Response;
use http_body_util::{BodyExt, Limited};
use sandlot::{
    Cmd, CommandExit, CommandHandle, ExitReason, ProcessEvent as LibEvent, PtyHandle, PtySize,
    RunOptions,
};
use tokio::sync::mpsc;

use super::users::{self, Accounts};
use super::{blocking, unknown_method, Target};
use crate::connect::{self, StreamWriter};
use crate::error::{ApiError, Code};
use crate::proto::process as pb;
use crate::state::SandboxRecord;

/// Events queued per subscriber before the pump waits for its client.
const SUBSCRIBER_BUFFER: usize = 64;

/// What a subscriber receives: an event, or the error that ends its
/// stream.
enum Delivery {
    Event(pb::ProcessEvent),
    Fail(ApiError),
}

/// How a started command runs: on pipes, or on a terminal.
enum Running {
    Piped(CommandHandle),
    Terminal(PtyHandle),
}

impl Running {
    fn pid(&self) -> i32 {
        match self {
            Running::Piped(h) => h.pid(),
            Running::Terminal(h) => h.pid(),
        }
    }

    fn events(&self) -> &sandlot::ProcessEvents {
        match self {
            Running::Piped(h) => h.events(),
            Running::Terminal(h) => h.events(),
        }
    }

    fn kill(&self) -> sandlot::Result<()> {
        match self {
            Running::Piped(h) => h.kill(),
            Running::Terminal(h) => h.kill(),
        }
    }

    fn signal_group(&self, signal: sandlot::Signal) -> sandlot::Result<()> {
        match self {
            Running::Piped(h) => h.signal_group(signal),
            Running::Terminal(h) => h.signal_group(signal),
        }
    }
}

pub struct ProcessEntry {
    pid: u32,
    tag: Option<String>,
    config: pb::ProcessConfig,
    handle: Running,
    stdin: Mutex<Option<File>>,
    subscribers: Mutex<Vec<mpsc::Sender<Delivery>>>,
}

/// A sandbox's commands started through envd, by pid.
#[derive(Default)]
pub struct ProcessTable {
    entries: Mutex<HashMap<u32, Arc<ProcessEntry>>>,
}

impl ProcessTable {
    fn insert(&self, entry: Arc<ProcessEntry>) {
        self.entries.lock().unwrap().insert(entry.pid, entry);
    }

    fn remove(&self, pid: u32) {
        self.entries.lock().unwrap().remove(&pid);
    }

    fn find(&self, selector: Option<&pb::ProcessSelector>) -> Result<Arc<ProcessEntry>, ApiError> {
        use pb::process_selector::Selector;
        let entries = self.entries.lock().unwrap();
        let found = match selector.and_then(|s| s.selector.as_ref()) {
            Some(Selector::Pid(pid)) => entries.get(pid).cloned(),
            Some(Selector::Tag(tag)) => entries
                .values()
                .find(|e| e.tag.as_deref() == Some(tag.as_str()))
                .cloned(),
            None => {
                return Err(ApiError::bad_request(
                    "a process selector (pid or tag) is required",
                ))
            }
        };
        found.ok_or_else(|| match selector.and_then(|s| s.selector.as_ref()) {
            Some(Selector::Pid(pid)) => {
                ApiError::not_found(format!("process with pid {pid} not found"))
            }
            Some(Selector::Tag(tag)) => {
                ApiError::not_found(format!("process with tag {tag:?} not found"))
            }
            None => unreachable!(),
        })
    }

    fn list(&self) -> Vec<pb::ProcessInfo> {
        let mut list: Vec<pb::ProcessInfo> = self
            .entries
            .lock()
            .unwrap()
            .values()
            .map(|e| pb::ProcessInfo {
                config: Some(e.config.clone()),
                pid: e.pid,
                tag: e.tag.clone(),
            })
            .collect();
        list.sort_by_key(|p| p.pid);
        list
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn event(event: pb::process_event::Event) -> pb::ProcessEvent {
    pb::ProcessEvent { event: Some(event) }
}

fn start_event(pid: u32) -> pb::ProcessEvent {
    event(pb::process_event::Event::Start(
        pb::process_event::StartEvent { pid },
    ))
}

fn data_event(output: pb::process_event::data_event::Output) -> pb::ProcessEvent {
    event(pb::process_event::Event::Data(
        pb::process_event::DataEvent {
            output: Some(output),
        },
    ))
}

fn keepalive_event() -> pb::ProcessEvent {
    event(pb::process_event::Event::Keepalive(
        pb::process_event::KeepAlive {},
    ))
}

fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGHUP => "hangup".into(),
        libc::SIGINT => "interrupt".into(),
        libc::SIGQUIT => "quit".into(),
        libc::SIGABRT => "aborted".into(),
        libc::SIGKILL => "killed".into(),
        libc::SIGSEGV => "segmentation fault".into(),
        libc::SIGPIPE => "broken pipe".into(),
        libc::SIGALRM => "alarm clock".into(),
        libc::SIGTERM => "terminated".into(),
        other => format!("signal {other}"),
    }
}

/// The end of a command as envd reports it (Go's `ProcessState`: exit
/// code -1 and "signal: killed" for a signal), or the error that ends the
/// stream instead.
fn end_delivery(sandbox_id: &str, exit: &CommandExit) -> Delivery {
    use pb::process_event::{EndEvent, Event};
    match exit.reason {
        ExitReason::TimedOut => {
            return Delivery::Fail(ApiError::new(
                axum::http::StatusCode::GATEWAY_TIMEOUT,
                Code::DeadlineExceeded,
                "the command was killed at its timeout",
            ))
        }
        ExitReason::SandboxDestroyed => return Delivery::Fail(ApiError::sandbox_gone(sandbox_id)),
        _ => {}
    }
    let error = match exit.reason {
        ExitReason::OomKilled => Some("killed: out of memory".to_string()),
        ExitReason::OutputLimit => {
            Some("output beyond the sandbox's limit was discarded".to_string())
        }
        _ => None,
    };
    let end = match (exit.code, exit.signal) {
        (Some(code), _) => EndEvent {
            exit_code: code,
            exited: true,
            status: format!("exit status {code}"),
            error,
        },
        (None, signal) => EndEvent {
            exit_code: -1,
            exited: false,
            status: format!(
                "signal: {}",
                signal_name(signal.map_or(libc::SIGKILL, |s| s.as_raw()))
            ),
            error,
        },
    };
    Delivery::Event(event(Event::End(end)))
}

impl ProcessEntry {
    fn subscribe(&self) -> mpsc::Receiver<Delivery> {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        self.subscribers.lock().unwrap().push(tx);
        rx
    }

    /// Hands `delivery` to every subscriber, waiting for slow ones and
    /// dropping those whose client is gone. Runs on the pump thread.
    fn deliver(&self, delivery: impl Fn() -> Delivery) {
        let subscribers: Vec<mpsc::Sender<Delivery>> = self.subscribers.lock().unwrap().clone();
        let mut gone = Vec::new();
        for (i, tx) in subscribers.iter().enumerate() {
            if tx.blocking_send(delivery()).is_err() {
                gone.push(i);
            }
        }
        if !gone.is_empty() {
            self.subscribers
                .lock()
                .unwrap()
                .retain(|tx| !tx.is_closed());
        }
    }
}

/// The pump: library events → subscribers; the entry leaves the table
/// when the command ends.
fn pump(record: Arc<SandboxRecord>, entry: Arc<ProcessEntry>, events: sandlot::ProcessEvents) {
    use pb::process_event::data_event::Output;
    let mut ended = false;
    let terminal = matches!(entry.handle, Running::Terminal(_));
    for ev in events.iter() {
        match ev {
            // A terminal has one stream, which envd sends as `pty`.
            LibEvent::Stdout(bytes) if terminal => {
                entry.deliver(|| Delivery::Event(data_event(Output::Pty(bytes.clone()))))
            }
            LibEvent::Stdout(bytes) => {
                entry.deliver(|| Delivery::Event(data_event(Output::Stdout(bytes.clone()))))
            }
            LibEvent::Stderr(bytes) => {
                entry.deliver(|| Delivery::Event(data_event(Output::Stderr(bytes.clone()))))
            }
            LibEvent::Exit(exit) => {
                // Out of the table first: a client that reads the end and
                // at once lists or signals must not find it.
                record.processes.remove(entry.pid);
                let id = record.id().to_string();
                entry.deliver(|| end_delivery(&id, &exit));
                ended = true;
                break;
            }
        }
    }
    if !ended {
        let id = record.id().to_string();
        entry.deliver(|| Delivery::Fail(ApiError::sandbox_gone(&id)));
    }
    record.processes.remove(entry.pid);
    entry.subscribers.lock().unwrap().clear();
}

/// Streams one subscriber's deliveries to its client, with keepalives and
/// the call's deadline.
async fn forward(
    writer: StreamWriter,
    mut deliveries: mpsc::Receiver<Delivery>,
    pid: u32,
    keepalive: Option<Duration>,
    wrap: fn(pb::ProcessEvent) -> serde_json::Value,
) {
    if writer.send(&wrap(start_event(pid))).await.is_err() {
        return;
    }
    let mut ticker =
        keepalive.map(|every| tokio::time::interval_at(tokio::time::Instant::now() + every, every));
    loop {
        let tick = async {
            match ticker.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            delivery = deliveries.recv() => match delivery {
                Some(Delivery::Event(ev)) => {
                    let is_end = matches!(ev.event, Some(pb::process_event::Event::End(_)));
                    if writer.send(&wrap(ev)).await.is_err() {
                        return;
                    }
                    if is_end {
                        writer.finish(None).await;
                        return;
                    }
                }
                Some(Delivery::Fail(e)) => {
                    writer.finish(Some(e)).await;
                    return;
                }
                None => {
                    writer.finish(Some(ApiError::new(
                        axum::http::StatusCode::BAD_GATEWAY,
                        Code::Unavailable,
                        "the process's event stream ended without an end event",
                    ))).await;
                    return;
                }
            },
            _ = tick => {
                if writer.send(&wrap(keepalive_event())).await.is_err() {
                    return;
                }
            }
            _ = writer.deadline() => {
                writer.finish(Some(StreamWriter::deadline_error())).await;
                return;
            }
            _ = writer.closed() => return,
        }
    }
}

fn wrap_start(ev: pb::ProcessEvent) -> serde_json::Value {
    serde_json::to_value(pb::StartResponse { event: Some(ev) }).unwrap_or_default()
}

fn wrap_connect(ev: pb::ProcessEvent) -> serde_json::Value {
    serde_json::to_value(pb::ConnectResponse { event: Some(ev) }).unwrap_or_default()
}

async fn read_body(body: Body) -> Result<axum::body::Bytes, ApiError> {
    Limited::new(body, connect::MAX_MESSAGE)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| ApiError::bad_request(format!("reading the request: {e}")))
}

pub async fn call(
    Path(method): Path<String>,
    axum::Extension(record): Target,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match method.as_str() {
        "Start" => match read_body(body).await {
            Ok(bytes) => start(record, &headers, &bytes).await,
            Err(e) => connect::stream_error(&e),
        },
        "Connect" => match read_body(body).await {
            Ok(bytes) => connect_to(record, &headers, &bytes).await,
            Err(e) => connect::stream_error(&e),
        },
        "StreamInput" => stream_input(record, &headers, body).await,
        _ => {
            let bytes = match read_body(body).await {
                Ok(bytes) => bytes,
                Err(e) => return connect::unary_error(&e),
            };
            match method.as_str() {
                "List" => connect::unary_response(
                    connect::decode_unary::<pb::ListRequest>(&headers, &bytes).map(|_| {
                        pb::ListResponse {
                            processes: record.processes.list(),
                        }
                    }),
                ),
                "SendInput" => connect::unary_response(send_input(&record, &headers, &bytes).await),
                "SendSignal" => {
                    connect::unary_response(send_signal(&record, &headers, &bytes).await)
                }
                "CloseStdin" => connect::unary_response(close_stdin(&record, &headers, &bytes)),
                "Update" => connect::unary_response(update(&record, &headers, &bytes).await),
                other => connect::unary_error(&unknown_method("process.Process", other)),
            }
        }
    }
}

async fn start(record: Arc<SandboxRecord>, headers: &HeaderMap, bytes: &[u8]) -> Response {
    let prepared = async {
        let request: pb::StartRequest = connect::decode_stream_request(headers, bytes)?;
        let terminal = request.pty.map(|pty| pty_size(pty.size)).transpose()?;
        let config = request
            .process
            .clone()
            .ok_or_else(|| ApiError::bad_request("process is required"))?;
        if config.cmd.is_empty() {
            return Err(ApiError::bad_request("process.cmd is empty"));
        }
        let timeout = connect::timeout(headers)?.filter(|t| !t.is_zero());
        let user = users::from_basic_auth(headers)?;
        Ok((request, config, timeout, user, terminal))
    };
    let (request, config, timeout, user, terminal) = match prepared.await {
        Ok(v) => v,
        Err(e) => return connect::stream_error(&e),
    };
    let keepalive = connect::keepalive_interval(headers);
    let spawn_record = record.clone();
    let spawn_config = config.clone();
    // A terminal's input is the terminal: no stdin pipe beside it.
    let spawn_request_stdin = request.stdin == Some(true) && terminal.is_none();
    let spawned = blocking(move || {
        let sandbox = &spawn_record.sandbox;
        let accounts = Accounts::load(sandbox);
        let account = accounts.resolve(user.as_deref())?;
        let mut options = RunOptions::default();
        if spawn_request_stdin {
            options = options.stdin_piped();
        }
        if let Some(account) = &account {
            options = options.user(account.name.clone());
        }
        if let Some(cwd) = spawn_config.cwd.as_deref().filter(|c| !c.is_empty()) {
            options = options.cwd(users::absolute(cwd, account.as_ref(), "/"));
        }
        let mut envs: Vec<(&String, &String)> = spawn_config.envs.iter().collect();
        envs.sort();
        for (k, v) in envs {
            options = options.env(k.clone(), v.clone());
        }
        if let Some(timeout) = timeout {
            options = options.timeout(timeout);
        }
        let mut argv = vec![spawn_config.cmd.clone()];
        argv.extend(spawn_config.args.iter().cloned());
        if let Some(size) = terminal {
            let handle = sandbox
                .commands()
                .spawn_pty(Cmd::Argv(argv), size, options)?;
            return Ok((Running::Terminal(handle), None));
        }
        let mut handle = sandbox.commands().spawn(Cmd::Argv(argv), options)?;
        let stdin = handle.take_stdin();
        Ok((Running::Piped(handle), stdin))
    })
    .await;
    let (handle, stdin) = match spawned {
        Ok(v) => v,
        Err(e) => return connect::stream_error(&e),
    };
    let pid = handle.pid() as u32;
    // stdin: false (the default) gives the command the library's default
    // stdin, /dev/null: it reads end-of-file.
    let stdin = if spawn_request_stdin { stdin } else { None };
    let events = handle.events().clone();
    let entry = Arc::new(ProcessEntry {
        pid,
        tag: request.tag.clone(),
        config,
        handle,
        stdin: Mutex::new(stdin),
        subscribers: Mutex::new(Vec::new()),
    });
    let deliveries = entry.subscribe();
    record.processes.insert(entry.clone());
    let pump_record = record.clone();
    let pump_entry = entry.clone();
    if let Err(e) = std::thread::Builder::new()
        .name("sandlot-srv-proc".into())
        .spawn(move || pump(pump_record, pump_entry, events))
    {
        let _ = entry.handle.kill();
        record.processes.remove(pid);
        return connect::stream_error(&ApiError::internal(format!("start the process pump: {e}")));
    }
    tracing::debug!(sandbox = record.id(), pid, "process started");
    // The command's own timeout ends this stream; no separate deadline.
    let (response, writer) = connect::server_stream(None);
    tokio::spawn(forward(writer, deliveries, pid, keepalive, wrap_start));
    response
}

async fn connect_to(record: Arc<SandboxRecord>, headers: &HeaderMap, bytes: &[u8]) -> Response {
    let found = connect::decode_stream_request::<pb::ConnectRequest>(headers, bytes)
        .and_then(|request| record.processes.find(request.process.as_ref()))
        .and_then(|entry| Ok((entry, connect::timeout(headers)?)));
    let (entry, timeout) = match found {
        Ok(v) => v,
        Err(e) => return connect::stream_error(&e),
    };
    let deliveries = entry.subscribe();
    let (response, writer) = connect::server_stream(timeout.filter(|t| !t.is_zero()));
    tokio::spawn(forward(
        writer,
        deliveries,
        entry.pid,
        connect::keepalive_interval(headers),
        wrap_connect,
    ));
    response
}

/// A terminal's size from the request: rows and columns of at least 1 and
/// at most 65535; no size is the classic 24x80.
fn pty_size(size: Option<pb::pty::Size>) -> Result<PtySize, ApiError> {
    let Some(size) = size else {
        return Ok(PtySize::default());
    };
    let fit = |n: u32, what: &str| {
        u16::try_from(n).ok().filter(|&n| n > 0).ok_or_else(|| {
            ApiError::bad_request(format!(
                "pty size: {what} is {n}; it must be between 1 and 65535"
            ))
        })
    };
    Ok(PtySize::new(
        fit(size.rows, "rows")?,
        fit(size.cols, "cols")?,
    ))
}

fn precondition(message: String) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::BAD_REQUEST,
        Code::FailedPrecondition,
        message,
    )
}

/// Input for a command, by where it goes.
enum Input {
    Stdin(Vec<u8>),
    Pty(Vec<u8>),
}

/// Writes input off the async threads (a full pipe or terminal queue
/// blocks): stdin to a piped command, pty input to a terminal's.
async fn write_input(entry: Arc<ProcessEntry>, input: Input) -> Result<(), ApiError> {
    match input {
        Input::Stdin(data) => write_stdin(entry, data).await,
        Input::Pty(data) => {
            blocking(move || match &entry.handle {
                Running::Terminal(pty) => pty.write(&data).map_err(|e| {
                    precondition(format!(
                        "writing to the terminal of process {}: {e}",
                        entry.pid
                    ))
                }),
                Running::Piped(_) => Err(precondition(format!(
                    "process {} has no terminal (start it with pty): send its input as stdin",
                    entry.pid
                ))),
            })
            .await
        }
    }
}

async fn write_stdin(entry: Arc<ProcessEntry>, data: Vec<u8>) -> Result<(), ApiError> {
    blocking(move || {
        if matches!(entry.handle, Running::Terminal(_)) {
            return Err(precondition(format!(
                "process {} runs on a terminal: send its input as pty",
                entry.pid
            )));
        }
        let mut stdin = entry.stdin.lock().unwrap();
        let file = stdin.as_mut().ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                Code::FailedPrecondition,
                format!(
                    "process {} has no open stdin (start it with stdin=True, and do not close it)",
                    entry.pid
                ),
            )
        })?;
        file.write_all(&data).map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                Code::FailedPrecondition,
                format!("writing to the stdin of process {}: {e}", entry.pid),
            )
        })
    })
    .await
}

fn input_of(input: Option<pb::ProcessInput>) -> Result<Input, ApiError> {
    match input.and_then(|i| i.input) {
        Some(pb::process_input::Input::Stdin(data)) => Ok(Input::Stdin(data)),
        Some(pb::process_input::Input::Pty(data)) => Ok(Input::Pty(data)),
        None => Err(ApiError::bad_request("input is required")),
    }
}

/// `Update`: resizes a terminal (its foreground process group gets
/// SIGWINCH).
async fn update(
    record: &SandboxRecord,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<pb::UpdateResponse, ApiError> {
    let request: pb::UpdateRequest = connect::decode_unary(headers, bytes)?;
    let entry = record.processes.find(request.process.as_ref())?;
    let Some(pty) = request.pty else {
        return Ok(pb::UpdateResponse {});
    };
    let size = pty_size(Some(pty.size.ok_or_else(|| {
        ApiError::bad_request("pty.size is required to resize a terminal")
    })?))?;
    blocking(move || match &entry.handle {
        Running::Terminal(handle) => Ok(handle.resize(size)?),
        Running::Piped(_) => Err(precondition(format!(
            "process {} has no terminal to resize (start it with pty)",
            entry.pid
        ))),
    })
    .await?;
    Ok(pb::UpdateResponse {})
}

async fn send_input(
    record: &SandboxRecord,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<pb::SendInputResponse, ApiError> {
    let request: pb::SendInputRequest = connect::decode_unary(headers, bytes)?;
    let entry = record.processes.find(request.process.as_ref())?;
    write_input(entry, input_of(request.input)?).await?;
    Ok(pb::SendInputResponse {})
}

async fn stream_input(record: Arc<SandboxRecord>, headers: &HeaderMap, body: Body) -> Response {
    use pb::stream_input_request::Event;
    let result = async {
        let mut reader = connect::EnvelopeReader::new(headers, body)?;
        let mut entry = None;
        while let Some(message) = reader.next::<pb::StreamInputRequest>().await {
            match message?.event {
                Some(Event::Start(start)) => {
                    entry = Some(record.processes.find(start.process.as_ref())?);
                }
                Some(Event::Data(data)) => {
                    let target = entry
                        .clone()
                        .ok_or_else(|| ApiError::bad_request("data before the start event"))?;
                    write_input(target, input_of(data.input)?).await?;
                }
                Some(Event::Keepalive(_)) | None => {}
            }
        }
        Ok(pb::StreamInputResponse {})
    }
    .await;
    connect::client_stream_response(result)
}

async fn send_signal(
    record: &SandboxRecord,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<pb::SendSignalResponse, ApiError> {
    let request: pb::SendSignalRequest = connect::decode_unary(headers, bytes)?;
    let entry = record.processes.find(request.process.as_ref())?;
    let signal = match pb::Signal::try_from(request.signal) {
        Ok(pb::Signal::Sigkill) => sandlot::Signal::KILL,
        Ok(pb::Signal::Sigterm) => sandlot::Signal::TERM,
        _ => {
            return Err(ApiError::bad_request(format!(
                "signal {} is not SIGTERM or SIGKILL",
                request.signal
            )))
        }
    };
    // The whole process group: `bash -l -c` leaves the user's command as a
    // child of the shell, and a kill means the command.
    blocking(move || Ok(entry.handle.signal_group(signal)?)).await?;
    Ok(pb::SendSignalResponse {})
}

fn close_stdin(
    record: &SandboxRecord,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<pb::CloseStdinResponse, ApiError> {
    let request: pb::CloseStdinRequest = connect::decode_unary(headers, bytes)?;
    let entry = record.processes.find(request.process.as_ref())?;
    // Dropping the pipe's write end: the command reads end-of-file.
    entry.stdin.lock().unwrap().take();
    Ok(pb::CloseStdinResponse {})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: Option<i32>, signal: Option<i32>, reason: ExitReason) -> CommandExit {
        CommandExit {
            code,
            signal: signal.and_then(sandlot::Signal::new),
            reason,
            duration: Duration::ZERO,
            cpu_user: Duration::ZERO,
            cpu_system: Duration::ZERO,
            peak_rss_bytes: 0,
            stdout_truncated: false,
            stderr_truncated: false,
        }
    }

    fn end(delivery: Delivery) -> pb::process_event::EndEvent {
        match delivery {
            Delivery::Event(pb::ProcessEvent {
                event: Some(pb::process_event::Event::End(end)),
            }) => end,
            _ => panic!("not an end event"),
        }
    }

    #[test]
    fn ends_are_reported_as_envd_does() {
        let e = end(end_delivery("s", &exit(Some(3), None, ExitReason::Exited)));
        assert_eq!(
            (e.exit_code, e.exited, e.status.as_str()),
            (3, true, "exit status 3")
        );
        let e = end(end_delivery(
            "s",
            &exit(None, Some(libc::SIGKILL), ExitReason::Signaled),
        ));
        assert_eq!(
            (e.exit_code, e.exited, e.status.as_str()),
            (-1, false, "signal: killed")
        );
        assert!(matches!(
            end_delivery("s", &exit(None, Some(9), ExitReason::TimedOut)),
            Delivery::Fail(ApiError {
                code: Code::DeadlineExceeded,
                ..
            })
        ));
        match end_delivery("s", &exit(None, Some(9), ExitReason::SandboxDestroyed)) {
            Delivery::Fail(e) => assert!(e.message.contains("was not found")),
            _ => panic!("a destroyed sandbox must end the stream with an error"),
        }
    }

    #[test]
    fn start_responses_use_the_proto_json_mapping() {
        use pb::process_event::data_event::Output;
        let json = wrap_start(data_event(Output::Stdout(b"hi\n".to_vec())));
        assert_eq!(
            json,
            serde_json::json!({"event": {"data": {"stdout": "aGkK"}}})
        );
        let json = wrap_start(start_event(42));
        assert_eq!(json, serde_json::json!({"event": {"start": {"pid": 42}}}));
    }
}
