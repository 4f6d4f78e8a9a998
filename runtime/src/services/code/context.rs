//! One code context: a driver process, its state machine, and a cell's
//! run from request to end (timeouts, interrupts, caps, restarts).
//!
//! States: `Starting → Idle ⇄ Running → (Interrupting →) Idle`, and
//! `Dead` whenever the interpreter is gone (killed after an ignored
//! interrupt, exited, broke the protocol, removed). A dead context starts a
//! new interpreter at its next cell; the execution that ended the old one
//! says `state_lost`.

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nix::fcntl::OFlag;
use nix::unistd::pipe2;

use super::drivers::{self, RequestFd, MESSAGE_FD, REQUEST_FD};
use super::error::CodeError;
use super::io::{set_nonblocking, Event, Pipes};
use super::launcher::{DriverExit, DriverProcess, LaunchError, LaunchRequest, Launcher};
use super::output::CellOutput;
use super::protocol::{self, Decoded, Dialect, Message, PROTOCOL_VERSION};
use super::types::{
    CellOptions, CodeContextOptions, Execution, ExecutionError, Language, CONTEXT_EXITED,
    DEFAULT_CELL_OUTPUT_CAP, DEFAULT_CELL_TIMEOUT, EXIT_STATUS, PROTOCOL_ERROR, TIMEOUT_ERROR,
};
use crate::engine::sync::lock;

/// Start-up output kept to explain a driver that failed to start.
const STARTUP_LOG: usize = 8 << 10;

/// Where a context is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextState {
    Starting,
    Idle,
    Running,
    /// An interrupt was sent; the cell has its grace period to stop.
    Interrupting,
    /// No interpreter: the next cell starts one.
    Dead,
    Removed,
}

/// A running interpreter and its pipes.
struct Driver {
    process: Arc<dyn DriverProcess>,
    pipes: Pipes,
    dialect: Dialect,
    next_cell: u64,
    ipython: bool,
}

pub(crate) struct ContextCore {
    pub id: String,
    pub options: CodeContextOptions,
    /// The interpreter and its options, resolved at creation.
    interpreter: Vec<String>,
    launcher: Arc<dyn Launcher>,
    /// Held for a whole cell: cells of one context run one at a time.
    driver: Mutex<Option<Driver>>,
    state: Mutex<ContextState>,
    /// The live process, for `interrupt` and `remove` from other threads.
    live: Mutex<Option<Arc<dyn DriverProcess>>>,
    interrupt_requested: AtomicBool,
    removed: AtomicBool,
    waker_rx: File,
    waker_tx: File,
    execution_count: Mutex<u32>,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), CodeError> {
    pipe2(OFlag::O_CLOEXEC).map_err(|e| CodeError::io("pipe for a code context", e))
}

impl ContextCore {
    pub fn new(
        id: String,
        options: CodeContextOptions,
        interpreter: Vec<String>,
        launcher: Arc<dyn Launcher>,
    ) -> Result<ContextCore, CodeError> {
        let (rx, tx) = pipe()?;
        for fd in [&rx, &tx] {
            set_nonblocking(fd).map_err(|e| CodeError::io("waker pipe", e))?;
        }
        Ok(ContextCore {
            id,
            options,
            interpreter,
            launcher,
            driver: Mutex::new(None),
            state: Mutex::new(ContextState::Dead),
            live: Mutex::new(None),
            interrupt_requested: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            waker_rx: File::from(rx),
            waker_tx: File::from(tx),
            execution_count: Mutex::new(0),
        })
    }

    pub fn language(&self) -> Language {
        self.options.language
    }

    pub fn state(&self) -> ContextState {
        *lock(&self.state)
    }

    pub fn execution_count(&self) -> u32 {
        *lock(&self.execution_count)
    }

    pub fn pid(&self) -> Option<u32> {
        lock(&self.live).as_ref().map(|p| p.pid())
    }

    fn set_state(&self, state: ContextState) {
        let mut s = lock(&self.state);
        if *s != ContextState::Removed {
            *s = state;
        }
    }

    fn wake(&self) {
        let _ = (&self.waker_tx).write(&[1]);
    }

    /// Starts the interpreter now if it is not running.
    pub fn ensure_started(&self) -> Result<(), CodeError> {
        let mut slot = lock(&self.driver);
        self.check_removed()?;
        if slot.is_none() {
            *slot = Some(self.start()?);
        }
        Ok(())
    }

    fn check_removed(&self) -> Result<(), CodeError> {
        if self.removed.load(Ordering::SeqCst) {
            return Err(CodeError::ContextNotFound(self.id.clone()));
        }
        Ok(())
    }

    fn start(&self) -> Result<Driver, CodeError> {
        let language = self.language();
        self.set_state(ContextState::Starting);
        let spec = drivers::spec(language, &self.interpreter, self.options.ipython);
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (req_r, req_w) = pipe()?;
        let (msg_r, msg_w) = pipe()?;
        let (stdin, mut extra) = match spec.requests {
            RequestFd::Stdin => (Some(req_r), Vec::new()),
            RequestFd::Three => (None, vec![(req_r, REQUEST_FD)]),
        };
        extra.push((msg_w, MESSAGE_FD));
        let request = LaunchRequest {
            argv: spec.argv,
            env: self.options.env.clone(),
            cwd: self.options.cwd.clone(),
            user: self.options.user.clone(),
            stdin,
            stdout: out_w,
            stderr: err_w,
            extra,
        };
        let process: Arc<dyn DriverProcess> = match self.launcher.launch(request) {
            Ok(p) => Arc::from(p),
            Err(LaunchError::NotFound { program }) => {
                self.set_state(ContextState::Dead);
                return Err(CodeError::InterpreterNotFound { language, program });
            }
            Err(LaunchError::Sandbox(e)) => {
                self.set_state(ContextState::Dead);
                return Err(CodeError::Sandbox(Box::new(e)));
            }
            Err(e) => {
                self.set_state(ContextState::Dead);
                return Err(CodeError::StartFailed {
                    language,
                    reason: e.to_string(),
                });
            }
        };
        // From here on, any failure kills what was started.
        let pipes = Pipes::new(req_w, msg_r, out_r, err_r)
            .map_err(|e| CodeError::io("code context pipes", e));
        let mut driver = match pipes {
            Ok(pipes) => Driver {
                process,
                pipes,
                dialect: spec.dialect,
                next_cell: 1,
                ipython: false,
            },
            Err(e) => {
                let _ = process.kill();
                let _ = process.wait();
                self.set_state(ContextState::Dead);
                return Err(e);
            }
        };
        match self.wait_ready(&mut driver, spec.bootstrap.as_bytes()) {
            Ok(()) => {
                *lock(&self.live) = Some(driver.process.clone());
                *lock(&self.execution_count) = 0;
                self.set_state(ContextState::Idle);
                Ok(driver)
            }
            Err(e) => {
                let _ = driver.process.kill();
                let _ = driver.process.wait();
                self.set_state(ContextState::Dead);
                Err(e)
            }
        }
    }

    fn wait_ready(&self, driver: &mut Driver, bootstrap: &[u8]) -> Result<(), CodeError> {
        let language = self.language();
        let deadline = Instant::now() + self.options.start_timeout;
        let mut pending = bootstrap.to_vec();
        let mut log: Vec<u8> = Vec::new();
        let mut ready: Option<Result<bool, String>> = None;
        let mut closed = false;
        while ready.is_none() && !closed {
            if Instant::now() >= deadline {
                return Err(CodeError::StartTimedOut {
                    language,
                    after: self.options.start_timeout,
                });
            }
            let mut sink = |event: Event<'_>| match event {
                Event::Stdout(b) | Event::Stderr(b) => {
                    log.extend_from_slice(b);
                    if log.len() > STARTUP_LOG {
                        log.drain(..log.len() - STARTUP_LOG);
                    }
                }
                Event::Message(Decoded::Message(
                    Message::Ready {
                        protocol,
                        language: l,
                        ipython,
                        ..
                    },
                    _,
                )) => {
                    ready = Some(if protocol != PROTOCOL_VERSION {
                        Err(format!(
                            "driver speaks protocol {protocol}, not {PROTOCOL_VERSION}"
                        ))
                    } else if l != language.name() {
                        Err(format!("driver is for {l}"))
                    } else {
                        Ok(ipython)
                    });
                }
                Event::Message(other) => {
                    ready = Some(Err(format!("expected ready, got {other:?}")));
                }
                Event::MessagesClosed => closed = true,
                Event::Woken => {}
            };
            driver
                .pipes
                .step(&self.waker_rx, &mut pending, Some(deadline), &mut sink)
                .map_err(|e| CodeError::StartFailed {
                    language,
                    reason: e.to_string(),
                })?;
            if self.removed.load(Ordering::SeqCst) {
                return Err(CodeError::ContextNotFound(self.id.clone()));
            }
        }
        let output = || String::from_utf8_lossy(&log).trim().to_string();
        match ready {
            Some(Ok(ipython)) => {
                driver.ipython = ipython;
                Ok(())
            }
            Some(Err(reason)) => Err(CodeError::StartFailed { language, reason }),
            None => {
                let _ = driver.process.kill();
                let status = driver
                    .process
                    .wait()
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                Err(CodeError::StartFailed {
                    language,
                    reason: format!(
                        "the interpreter ended ({status}) before its driver was ready: {}",
                        output()
                    ),
                })
            }
        }
    }

    /// Whether the Python driver runs on IPython (after a start).
    pub fn uses_ipython(&self) -> bool {
        lock(&self.driver).as_ref().is_some_and(|d| d.ipython)
    }

    /// Runs one cell. Errors are for calls that could not run it at all;
    /// everything that happened to the cell is in the `Execution`.
    pub fn run(&self, code: &str, mut options: CellOptions) -> Result<Execution, CodeError> {
        protocol::validate_cell(code, &options.env)?;
        let timeout = options.timeout.unwrap_or(DEFAULT_CELL_TIMEOUT);
        let cap = options.max_output_bytes.unwrap_or(DEFAULT_CELL_OUTPUT_CAP);
        let mut slot = lock(&self.driver);
        self.check_removed()?;
        // Held until the cell has ended: a sandbox is Active meanwhile.
        let _cell = self.launcher.cell_started().map_err(|e| match e {
            LaunchError::Sandbox(e) => CodeError::Sandbox(Box::new(e)),
            other => CodeError::io("start a cell", std::io::Error::other(other.to_string())),
        })?;
        if slot.is_none() {
            *slot = Some(self.start()?);
        }
        let driver = slot.as_mut().expect("started above");
        // Output of background processes since the last cell is nobody's.
        driver.pipes.drain_output(&mut |_| {});
        self.interrupt_requested.store(false, Ordering::SeqCst);
        let cell = driver.next_cell;
        driver.next_cell += 1;
        let mut pending = protocol::encode_request(cell, &options.env, code, driver.dialect);
        self.set_state(ContextState::Running);

        let mut out = CellOutput::new(cap, &mut options);
        let started_at = Instant::now();
        let timeout_at = started_at.checked_add(timeout);
        let grace = self.options.interrupt_grace;
        let resend_after = (grace / 2).min(std::time::Duration::from_secs(1));
        let mut started = false;
        let mut done = false;
        let mut gone = false;
        let mut interrupted_at: Option<Instant> = None;
        let mut protocol_error: Option<String> = None;
        let mut killed = false;
        let mut signalled_at: Option<Instant> = None;
        let mut resignalled = false;

        while !done && !gone && protocol_error.is_none() {
            let now = Instant::now();
            let asked = self.interrupt_requested.swap(false, Ordering::SeqCst);
            let expired = timeout_at.is_some_and(|t| now >= t);
            if interrupted_at.is_none() && (asked || expired) {
                out.execution.timed_out |= expired;
                interrupted_at = Some(now);
                self.set_state(ContextState::Interrupting);
            }
            // SIGINT only once the driver said the cell started: earlier it
            // could land in the middle of reading the request. A second one
            // a moment later, in case the first fell in the driver's own
            // code around the cell, which drops it to keep its framing.
            if interrupted_at.is_some() && started {
                let again = signalled_at.is_some_and(|at| !resignalled && now >= at + resend_after);
                if signalled_at.is_none() || again {
                    resignalled = signalled_at.is_some();
                    signalled_at = Some(now);
                    let _ = driver.process.interrupt();
                }
            }
            if let Some(at) = interrupted_at {
                if now >= at + grace {
                    killed = true;
                    break;
                }
            }
            let until = match (interrupted_at, signalled_at) {
                (Some(at), Some(sent)) if !resignalled => {
                    Some((at + grace).min(sent + resend_after))
                }
                (Some(at), _) => Some(at + grace),
                (None, _) => timeout_at,
            };
            let result =
                driver.pipes.step(
                    &self.waker_rx,
                    &mut pending,
                    until,
                    &mut |event| match event {
                        Event::Stdout(b) => out.stdout(b),
                        Event::Stderr(b) => out.stderr(b),
                        Event::Message(Decoded::Oversized(_)) => {
                            out.execution.results_truncated = true
                        }
                        Event::Message(Decoded::Message(message, size)) => {
                            if let Err(reason) = handle_message(
                                message,
                                size,
                                cell,
                                &mut out,
                                &mut started,
                                &mut done,
                            ) {
                                protocol_error = Some(reason);
                            }
                        }
                        Event::MessagesClosed => gone = true,
                        Event::Woken => {}
                    },
                );
            if let Err(e) = result {
                protocol_error = Some(e.to_string());
            }
            if self.removed.load(Ordering::SeqCst) {
                killed = true;
                break;
            }
        }

        let mut execution = out.finish();
        if done {
            if let Some(status) = execution.exit_status.filter(|&s| s != 0) {
                if execution.error.is_none() {
                    execution.error = Some(if interrupted_at.is_some() {
                        ExecutionError {
                            name: "KeyboardInterrupt".into(),
                            value: format!("interrupted (exit status {status})"),
                            traceback: String::new(),
                        }
                    } else {
                        ExecutionError {
                            name: EXIT_STATUS.into(),
                            value: format!("exit status {status}"),
                            traceback: String::new(),
                        }
                    });
                }
            }
            *lock(&self.execution_count) = execution.execution_count;
            self.set_state(ContextState::Idle);
            return Ok(execution);
        }

        // The interpreter is gone or must go: kill its process group, reap
        // it, and leave the context dead until its next cell.
        let process = driver.process.clone();
        let _ = process.kill();
        let exit = process.wait().ok();
        *slot = None;
        *lock(&self.live) = None;
        self.set_state(ContextState::Dead);
        execution.state_lost = true;
        let language = self.language();
        let error = if let Some(reason) = protocol_error {
            ExecutionError {
                name: PROTOCOL_ERROR.into(),
                value: format!("the {language} driver broke the protocol ({reason}); the interpreter was killed, the next cell starts a new one (state lost)"),
                traceback: String::new(),
            }
        } else if killed && !self.removed.load(Ordering::SeqCst) {
            let why = if execution.timed_out {
                format!("the cell ran past its timeout of {timeout:?}")
            } else {
                "the cell was interrupted".to_string()
            };
            ExecutionError {
                name: if execution.timed_out { TIMEOUT_ERROR } else { "KeyboardInterrupt" }.into(),
                value: format!("{why} and did not stop within {grace:?} of SIGINT; the interpreter was killed, the next cell starts a new one (state lost)"),
                traceback: String::new(),
            }
        } else if killed {
            ExecutionError {
                name: CONTEXT_EXITED.into(),
                value: "the context was removed".into(),
                traceback: String::new(),
            }
        } else {
            let status = exit.map_or_else(
                || "unknown status".to_string(),
                |e: DriverExit| e.to_string(),
            );
            ExecutionError {
                name: CONTEXT_EXITED.into(),
                value: format!("the {language} interpreter ended during the cell ({status}); the next cell starts a new one (state lost)"),
                traceback: String::new(),
            }
        };
        if let Some(previous) = execution.error.take() {
            // Keep what the driver reported (a KeyboardInterrupt, say) in
            // the traceback of the error that ended the context.
            let mut error = error;
            error.traceback = previous.traceback;
            execution.error = Some(error);
        } else {
            execution.error = Some(error);
        }
        Ok(execution)
    }

    /// Interrupts the running cell, as its timeout would.
    pub fn interrupt(&self) {
        self.interrupt_requested.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Kills the interpreter (a running cell ends with `state_lost`) and
    /// starts a new one.
    pub fn restart(&self) -> Result<(), CodeError> {
        if let Some(process) = lock(&self.live).clone() {
            let _ = process.kill();
        }
        let mut slot = lock(&self.driver);
        self.check_removed()?;
        if let Some(old) = slot.take() {
            let _ = old.process.kill();
            let _ = old.process.wait();
        }
        *lock(&self.live) = None;
        self.set_state(ContextState::Dead);
        *slot = Some(self.start()?);
        Ok(())
    }

    /// Ends the context without waiting for a running cell: the place it
    /// ran in is gone (a destroyed sandbox took the interpreter with it).
    /// A running cell notices at once and cleans up after itself; an idle
    /// driver is let go here.
    pub fn abandon(&self) {
        self.removed.store(true, Ordering::SeqCst);
        self.wake();
        if let Ok(mut slot) = self.driver.try_lock() {
            if let Some(old) = slot.take() {
                let _ = old.process.kill();
                let _ = old.process.wait();
            }
            *lock(&self.live) = None;
        }
        *lock(&self.state) = ContextState::Removed;
    }

    /// Ends the context for good: kills the interpreter and reaps it.
    pub fn remove(&self) {
        self.removed.store(true, Ordering::SeqCst);
        if let Some(process) = lock(&self.live).clone() {
            let _ = process.kill();
        }
        self.wake();
        let mut slot = lock(&self.driver);
        if let Some(old) = slot.take() {
            let _ = old.process.kill();
            let _ = old.process.wait();
        }
        *lock(&self.live) = None;
        *lock(&self.state) = ContextState::Removed;
    }
}

impl Drop for ContextCore {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Applies one message of the running cell.
fn handle_message(
    message: Message,
    size: usize,
    cell: u64,
    out: &mut CellOutput<'_>,
    started: &mut bool,
    done: &mut bool,
) -> Result<(), String> {
    let check = |id: u64| {
        if id == cell {
            Ok(())
        } else {
            Err(format!("message for cell {id} during cell {cell}"))
        }
    };
    match message {
        Message::Start {
            id,
            execution_count,
        } => {
            check(id)?;
            *started = true;
            out.execution.execution_count = execution_count;
        }
        Message::Display { id, data, main } => {
            check(id)?;
            out.result(data, main, size);
        }
        Message::Error {
            id,
            name,
            value,
            traceback,
        } => {
            check(id)?;
            out.error(ExecutionError {
                name,
                value,
                traceback,
            });
        }
        Message::Done {
            id,
            execution_count,
            status,
        } => {
            check(id)?;
            if let Some(count) = execution_count {
                out.execution.execution_count = count;
            }
            out.execution.exit_status = status;
            *done = true;
        }
        Message::Ready { .. } => return Err("a second ready message".into()),
    }
    Ok(())
}

impl std::fmt::Debug for ContextCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextCore")
            .field("id", &self.id)
            .field("language", &self.language())
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}
