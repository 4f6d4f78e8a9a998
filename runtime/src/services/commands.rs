//! Commands inside a sandbox: a [`Command`] builder shaped like
//! `std::process::Command` (`sandbox.command("ls").arg("-l").output()`),
//! and `sandbox.commands()` with `run` (collect everything), `spawn` (a
//! handle with a live, bounded event stream), `list` and `kill_all`.
//!
//! Output never passes through init: the host creates the pipes, hands the
//! child ends to init with SCM_RIGHTS, and the io thread reads the host
//! ends into a bounded queue per command (see `engine/output.rs`). What is
//! collected into memory (`run`, `output`, `wait`) stops at
//! [`DEFAULT_OUTPUT_CAP`] per stream unless `ExecLimits::max_output_bytes`
//! says otherwise; past it the result says truncated.

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use nix::fcntl::OFlag;
use sandlot_proto::{Request, Spawn, StdioMask, MAX_MESSAGE};

use crate::engine::error::{Error, Result};
use crate::engine::exec::Execution;
use crate::engine::lifecycle::{CommandExit, ExitReason, OutputStream, ProcessEvent, Signal};
use crate::engine::options::validate_env_name;
use crate::engine::output::{Output, ProcessEvents};
use crate::engine::sandbox::SandboxShared;
use crate::services::users::{self, User};

/// What `run`, `output` and `wait` collect per stream when
/// `ExecLimits::max_output_bytes` is not set: 16 MiB. Past it output is
/// read and discarded, and the result says truncated. Streaming through
/// `events()` is not capped (it is bounded in flight instead).
pub const DEFAULT_OUTPUT_CAP: u64 = 16 << 20;

/// What to run: a command line for the template's shell (`sh -c LINE`), or
/// an argument vector executed directly (no shell involved). A string
/// converts to `Shell`, an array or a `Vec` of strings to `Argv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    Shell(String),
    Argv(Vec<String>),
}

impl Cmd {
    /// `sh -c line` (the template's shell).
    pub fn shell(line: impl Into<String>) -> Cmd {
        Cmd::Shell(line.into())
    }
}

impl From<&str> for Cmd {
    fn from(line: &str) -> Cmd {
        Cmd::Shell(line.to_string())
    }
}

impl From<String> for Cmd {
    fn from(line: String) -> Cmd {
        Cmd::Shell(line)
    }
}

impl From<Vec<String>> for Cmd {
    fn from(argv: Vec<String>) -> Cmd {
        Cmd::Argv(argv)
    }
}

impl<const N: usize> From<[&str; N]> for Cmd {
    fn from(argv: [&str; N]) -> Cmd {
        Cmd::Argv(argv.iter().map(|s| s.to_string()).collect())
    }
}

impl From<&[&str]> for Cmd {
    fn from(argv: &[&str]) -> Cmd {
        Cmd::Argv(argv.iter().map(|s| s.to_string()).collect())
    }
}

/// A command's standard input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Stdin {
    /// `/dev/null`: reading gives end-of-file at once.
    #[default]
    Null,
    /// A pipe the caller writes through the handle (`write_stdin`,
    /// `take_stdin`; dropping it closes the command's stdin).
    Piped,
    /// These bytes, then end-of-file (written by a thread of its own, so a
    /// command that writes before it reads cannot deadlock with us).
    Bytes(Vec<u8>),
}

/// Per-command options. Everything unset falls back to the sandbox's and
/// then the template's defaults.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub cwd: Option<String>,
    pub env: Vec<(String, String)>,
    /// Start from an empty environment instead of the template's, the
    /// user's (`HOME`, `USER`, …) and the sandbox's: only `env` is set.
    pub env_clear: bool,
    /// A user name from the sandbox's /etc/passwd, or a numeric `uid[:gid]`.
    pub user: Option<String>,
    /// Killing the command's whole process group when it passes (the
    /// sandbox's `ExecLimits::max_time` applies if it is shorter).
    pub timeout: Option<Duration>,
    pub stdin: Stdin,
}

impl RunOptions {
    pub fn cwd(mut self, cwd: impl Into<String>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self
    }
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
    /// These bytes on stdin, then end-of-file.
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Stdin::Bytes(data.into());
        self
    }
    /// A stdin pipe kept open for [`CommandHandle::write_stdin`].
    pub fn stdin_piped(mut self) -> Self {
        self.stdin = Stdin::Piped;
        self
    }
}

/// Everything a finished command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandResult {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit: CommandExit,
}

impl CommandResult {
    pub fn success(&self) -> bool {
        self.exit.success()
    }
    pub fn exit_code(&self) -> Option<i32> {
        self.exit.code
    }
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    pub fn timed_out(&self) -> bool {
        self.exit.reason == ExitReason::TimedOut
    }
    /// Some output was discarded at the output limit.
    pub fn truncated(&self) -> bool {
        self.exit.stdout_truncated || self.exit.stderr_truncated
    }
}

/// A command as `list()` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// sandlot's id of the command (unique within the sandbox).
    pub id: u64,
    /// Its pid inside the sandbox, once started.
    pub pid: Option<i32>,
    pub argv: Vec<String>,
    pub user: String,
    pub started_at: SystemTime,
}

/// Output collected into memory, up to a cap per stream.
#[derive(Default)]
struct Collected {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    cap: u64,
    stdout_truncated: bool,
    stderr_truncated: bool,
    exit: Option<CommandExit>,
}

impl Collected {
    fn push(&mut self, event: ProcessEvent) {
        let cap = usize::try_from(self.cap).unwrap_or(usize::MAX);
        let (buf, truncated, chunk) = match event {
            ProcessEvent::Stdout(chunk) => (&mut self.stdout, &mut self.stdout_truncated, chunk),
            ProcessEvent::Stderr(chunk) => (&mut self.stderr, &mut self.stderr_truncated, chunk),
            ProcessEvent::Exit(exit) => {
                self.exit = Some(exit);
                return;
            }
        };
        let room = cap.saturating_sub(buf.len());
        if chunk.len() > room {
            *truncated = true;
        }
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    /// The exit as the caller sees it: collection truncation counts like
    /// the output limit (and takes its place in the precedence).
    fn exit(&self) -> Option<CommandExit> {
        let mut exit = self.exit.clone()?;
        exit.stdout_truncated |= self.stdout_truncated;
        exit.stderr_truncated |= self.stderr_truncated;
        let truncated = exit.stdout_truncated || exit.stderr_truncated;
        if truncated && matches!(exit.reason, ExitReason::Exited | ExitReason::Signaled) {
            exit.reason = ExitReason::OutputLimit;
        }
        Some(exit)
    }
}

/// A running command.
pub struct CommandHandle {
    sandbox: Arc<SandboxShared>,
    id: u64,
    pid: i32,
    stdin: Option<File>,
    events: ProcessEvents,
    collected: Collected,
}

impl fmt::Debug for CommandHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandHandle")
            .field("sandbox", &self.sandbox.id)
            .field("id", &self.id)
            .field("pid", &self.pid)
            .finish()
    }
}

impl CommandHandle {
    /// The command's pid inside the sandbox.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// sandlot's id of the command.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Writes to the command's stdin (blocks while its pipe is full). Only
    /// with [`Stdin::Piped`].
    pub fn write_stdin(&mut self, data: &[u8]) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or_else(|| {
            Error::invalid("stdin", "not a pipe (ask for Stdin::Piped) or closed")
        })?;
        stdin
            .write_all(data)
            .map_err(|e| Error::io("write to the command's stdin", e))
    }

    /// Takes the stdin pipe, e.g. to feed it from another thread. Dropping
    /// it closes the command's stdin.
    pub fn take_stdin(&mut self) -> Option<File> {
        self.stdin.take()
    }

    /// Closes stdin: the command reads end-of-file.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The live stream: stdout and stderr chunks as they arrive, then
    /// `Exit`. Bounded: while nobody reads it, the command's output pipes
    /// are not read either and a writer inside blocks.
    pub fn events(&self) -> &ProcessEvents {
        &self.events
    }

    /// Sends `signal` to the command's process.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        self.sandbox.send_signal(self.id, signal.as_raw(), false)
    }

    /// Sends `signal` to the command's whole process group.
    pub fn signal_group(&self, signal: Signal) -> Result<()> {
        self.sandbox.send_signal(self.id, signal.as_raw(), true)
    }

    /// Kills the command and everything in its process group.
    pub fn kill(&self) -> Result<()> {
        self.signal_group(Signal::KILL)
    }

    /// The exit, if the command has ended; never waits. Output that
    /// arrived meanwhile is kept for [`CommandHandle::wait`].
    pub fn try_wait(&mut self) -> Result<Option<CommandExit>> {
        while self.collected.exit.is_none() {
            match self.events.try_recv() {
                Ok(event) => self.collected.push(event),
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => return Err(self.no_exit()),
            }
        }
        Ok(self.collected.exit())
    }

    /// Waits at most `timeout` for the end; `None` if the command still
    /// runs. Output that arrived meanwhile is kept for `wait`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<CommandExit>> {
        let deadline = Instant::now() + timeout;
        while self.collected.exit.is_none() {
            match self.events.recv_deadline(deadline) {
                Ok(event) => self.collected.push(event),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => break,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Err(self.no_exit())
                }
            }
        }
        Ok(self.collected.exit())
    }

    /// Waits for the end; collects whatever output was not yet taken from
    /// [`CommandHandle::events`] (up to the collection cap per stream).
    pub fn wait(mut self) -> Result<CommandResult> {
        self.stdin = None;
        while self.collected.exit.is_none() {
            match self.events.recv() {
                Ok(event) => self.collected.push(event),
                Err(_) => return Err(self.no_exit()),
            }
        }
        let exit = self.collected.exit().expect("seen above");
        Ok(CommandResult {
            stdout: std::mem::take(&mut self.collected.stdout),
            stderr: std::mem::take(&mut self.collected.stderr),
            exit,
        })
    }

    fn no_exit(&self) -> Error {
        Error::Protocol {
            id: self.sandbox.id.clone(),
            reason: format!("command {} ended without an exit report", self.id),
        }
    }
}

/// A command to run in a sandbox, built like `std::process::Command`:
/// `sandbox.command("python3").args(["-c", "print(1)"]).env("K", "V")
/// .current_dir("/tmp").output()?`. Nothing goes through a shell unless it
/// was made with `sandbox.shell(line)`.
#[derive(Clone)]
pub struct Command {
    sandbox: Arc<SandboxShared>,
    cmd: Cmd,
    options: RunOptions,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field("sandbox", &self.sandbox.id)
            .field("cmd", &self.cmd)
            .field("options", &self.options)
            .finish()
    }
}

impl Command {
    pub(crate) fn new(sandbox: Arc<SandboxShared>, cmd: Cmd) -> Command {
        Command {
            sandbox,
            cmd,
            options: RunOptions::default(),
        }
    }

    /// Adds an argument (to a shell command line: a word quoted for the
    /// shell).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        let arg = arg.into();
        match &mut self.cmd {
            Cmd::Argv(argv) => argv.push(arg),
            Cmd::Shell(line) => {
                line.push(' ');
                line.push_str(&shell_quote(&arg));
            }
        }
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        for arg in args {
            self = self.arg(arg);
        }
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.env.push((key.into(), value.into()));
        self
    }

    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        for (k, v) in vars {
            self = self.env(k, v);
        }
        self
    }

    /// Only the variables set with `env`/`envs` (none of the template's,
    /// the user's or the sandbox's).
    pub fn env_clear(mut self) -> Self {
        self.options.env_clear = true;
        self.options.env.clear();
        self
    }

    pub fn current_dir(mut self, dir: impl Into<String>) -> Self {
        self.options.cwd = Some(dir.into());
        self
    }

    /// A user name from the sandbox's /etc/passwd, or `uid[:gid]`.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.options.user = Some(user.into());
        self
    }

    pub fn stdin(mut self, stdin: Stdin) -> Self {
        self.options.stdin = stdin;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// Runs it to the end and collects its output.
    pub fn output(self) -> Result<CommandResult> {
        run(&self.sandbox, self.cmd, self.options)
    }

    /// Runs it to the end; how it ended (its output is collected as by
    /// `output` and dropped).
    pub fn status(self) -> Result<CommandExit> {
        Ok(self.output()?.exit)
    }

    /// Starts it and returns at once.
    pub fn spawn(self) -> Result<CommandHandle> {
        spawn(&self.sandbox, self.cmd, self.options, Extra::default())
    }
}

/// `word` as one word for a POSIX shell.
fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The commands of one sandbox (`sandbox.commands()`).
pub struct Commands<'a> {
    pub(crate) sandbox: &'a Arc<SandboxShared>,
}

impl Commands<'_> {
    /// Runs a command to completion and collects its output (up to
    /// [`DEFAULT_OUTPUT_CAP`] per stream unless `ExecLimits` says
    /// otherwise).
    pub fn run(&self, cmd: impl Into<Cmd>, options: RunOptions) -> Result<CommandResult> {
        run(self.sandbox, cmd.into(), options)
    }

    /// Starts a command and returns at once with a handle to it. Its stdin
    /// is `/dev/null` unless `options.stdin` says otherwise.
    pub fn spawn(&self, cmd: impl Into<Cmd>, options: RunOptions) -> Result<CommandHandle> {
        spawn(self.sandbox, cmd.into(), options, Extra::default())
    }

    /// The commands in flight.
    pub fn list(&self) -> Vec<ProcessInfo> {
        let execs = crate::engine::sync::lock(&self.sandbox.execs);
        let mut list: Vec<ProcessInfo> = execs
            .running
            .iter()
            .map(|(id, e)| ProcessInfo {
                id: *id,
                pid: e.pid,
                argv: e.argv.clone(),
                user: e.user.clone(),
                started_at: e.started_at,
            })
            .collect();
        list.sort_by_key(|p| p.id);
        list
    }

    /// Kills every process in the sandbox except init.
    pub fn kill_all(&self) -> Result<()> {
        self.sandbox.send_request(&Request::SignalAll {
            signal: libc::SIGKILL,
        })
    }
}

/// The output cap for what is collected into memory.
fn collection_cap(sandbox: &SandboxShared) -> u64 {
    sandbox
        .exec_limits
        .max_output_bytes
        .unwrap_or(DEFAULT_OUTPUT_CAP)
}

pub(crate) fn run(
    sandbox: &Arc<SandboxShared>,
    cmd: Cmd,
    options: RunOptions,
) -> Result<CommandResult> {
    // Collected whole: what is past the cap need not even cross the queue.
    let cap = collection_cap(sandbox);
    spawn(
        sandbox,
        cmd,
        options,
        Extra {
            budget: Some(cap),
            ..Extra::default()
        },
    )?
    .wait()
}

/// The environment of a command: template, then the user's identity,
/// then the sandbox's, then the command's own (later entries win); only
/// the command's own with `env_clear`.
fn command_env(
    sandbox: &SandboxShared,
    user: &User,
    options: &RunOptions,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |key: &str, value: String| {
        env.retain(|(k, _)| k != key);
        env.push((key.to_string(), value));
    };
    if !options.env_clear {
        for (key, value) in &sandbox.template.config.env {
            set(key, value.clone());
        }
        set("HOME", user.home.clone());
        set("USER", user.name.clone());
        set("LOGNAME", user.name.clone());
        set(
            "SHELL",
            user.shell
                .clone()
                .unwrap_or_else(|| sandbox.template.config.shell.clone()),
        );
        set("HOSTNAME", sandbox.hostname.clone());
        set("SANDLOT_SANDBOX_ID", sandbox.id.clone());
        for (key, value) in &sandbox.env {
            set(key, value.clone());
        }
    }
    for (key, value) in &options.env {
        set(key, value.clone());
    }
    env
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::setup("create a pipe", e))
}

/// Gives a pipe to the user a command runs as (its host ids). A pipe
/// belongs to whoever made it: host root, an id the sandbox's user
/// namespace does not map. Reopening a pipe by name — `/dev/stderr`,
/// `/dev/stdin`, `/proc/self/fd/N`, which shell scripts and `tee` do —
/// checks that owner, so it failed with EACCES for every user inside,
/// root included. Owned by the command's user, with the 0600 mode pipe(2)
/// gives, it reopens like a pipe the command made itself, and no other
/// user inside can open it. Both ends are one inode: one fchown does it.
/// An id outside the range (the spawn fails anyway) leaves it as it is.
pub(crate) fn give_pipe(end: &OwnedFd, (uid, gid): (Option<u32>, Option<u32>)) -> Result<()> {
    if uid.is_none() && gid.is_none() {
        return Ok(());
    }
    nix::unistd::fchown(
        end,
        uid.map(nix::unistd::Uid::from_raw),
        gid.map(nix::unistd::Gid::from_raw),
    )
    .map_err(|e| Error::setup("chown a command's pipe", e))
}

/// The host's read end of an output pipe is non-blocking (the io thread
/// reads until EAGAIN). A fresh pipe end has no other status flag, so one
/// F_SETFL does it.
fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
        .map_err(|e| Error::setup("fcntl", e))?;
    Ok(())
}

fn check_text(option: &'static str, text: &str) -> Result<Vec<u8>> {
    if text.contains('\0') {
        return Err(Error::invalid(
            option,
            format!("{text:?} contains a NUL byte"),
        ));
    }
    Ok(text.as_bytes().to_vec())
}

/// What only the runtime's own commands ask of [`spawn`].
#[derive(Default)]
struct Extra<'a> {
    /// Bytes per stream the io thread forwards (the rest is read and
    /// dropped); `None` is the sandbox's `max_output_bytes`.
    budget: Option<u64>,
    /// stdout and stderr on one pipe (its events come as stdout), a second
    /// read end of it put here.
    merged: Option<&'a mut Option<OwnedFd>>,
    /// Not activity: the sandbox stays Running while it runs, and it does
    /// not count against `max_concurrent`.
    background: bool,
}

/// Starts a template's start command: in the background — a server that
/// runs for the sandbox's whole life is not activity (it would keep the
/// idle timeout from ever passing) — and, with `keep_output`, with stdout
/// and stderr on one pipe whose second read end is returned: once a
/// persistent sandbox's creator is gone, its monitor reads (and discards)
/// what the command writes, so it never blocks on a full pipe or dies of a
/// closed one.
pub(crate) fn spawn_start_command(
    sandbox: &Arc<SandboxShared>,
    cmd: Cmd,
    keep_output: bool,
) -> Result<(CommandHandle, Option<OwnedFd>)> {
    let mut reader = None;
    let extra = Extra {
        merged: keep_output.then_some(&mut reader),
        background: true,
        ..Extra::default()
    };
    let handle = spawn(sandbox, cmd, RunOptions::default(), extra)?;
    Ok((handle, reader))
}

/// Starts a command: resolve who and where, create the pipes, register
/// the execution, send the request with the child ends, wait for init's
/// answer (see [`Extra`] for what the runtime's own commands add).
fn spawn(
    sandbox: &Arc<SandboxShared>,
    cmd: Cmd,
    options: RunOptions,
    extra: Extra<'_>,
) -> Result<CommandHandle> {
    let Extra {
        budget,
        merged,
        background,
    } = extra;
    sandbox.check_accepts_commands()?;
    let argv = match cmd {
        Cmd::Shell(line) => vec![sandbox.template.config.shell.clone(), "-c".into(), line],
        Cmd::Argv(argv) => argv,
    };
    if argv.first().is_none_or(|program| program.is_empty()) {
        return Err(Error::EmptyCommand);
    }
    if let Some(timeout) = options.timeout {
        crate::engine::options::validate_command_timeout(timeout)?;
    }
    let exec = sandbox.exec_limits;
    let timeout = match (options.timeout, exec.max_time) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let user = users::resolve(sandbox, options.user.as_deref())?;
    let cwd = options
        .cwd
        .clone()
        .or_else(|| sandbox.template.config.working_dir.clone())
        .unwrap_or_else(|| user.home.clone());
    let env = command_env(sandbox, &user, &options);
    let with_stdin = !matches!(options.stdin, Stdin::Null);
    let mut request = Spawn {
        id: 0,
        argv: argv
            .iter()
            .map(|a| check_text("command", a))
            .collect::<Result<_>>()?,
        env: env
            .iter()
            .map(|(k, v)| {
                validate_env_name(k)?;
                check_text("env", &format!("{k}={v}"))
            })
            .collect::<Result<_>>()?,
        cwd: check_text("cwd", &cwd)?,
        uid: user.uid,
        gid: user.gid,
        groups: vec![user.gid],
        stdio: StdioMask(
            StdioMask::STDOUT | StdioMask::STDERR | if with_stdin { StdioMask::STDIN } else { 0 },
        ),
    };
    if request.encoded_len() > MAX_MESSAGE {
        return Err(Error::invalid(
            "command",
            format!("argv, environment and cwd exceed {MAX_MESSAGE} bytes; pass large input on stdin or as a file"),
        ));
    }

    let stdin = if with_stdin { Some(pipe()?) } else { None };
    let (stdout_r, stdout_w) = pipe()?;
    set_nonblocking(&stdout_r)?;
    let stderr = match merged {
        Some(keep) => {
            *keep = Some(
                stdout_r
                    .try_clone()
                    .map_err(|e| Error::io("duplicate an output pipe", e))?,
            );
            None
        }
        None => {
            let (stderr_r, stderr_w) = pipe()?;
            set_nonblocking(&stderr_r)?;
            Some((stderr_r, stderr_w))
        }
    };
    let stderr_w = match &stderr {
        Some((_, w)) => w,
        None => &stdout_w,
    };
    let owner = (
        sandbox.ctx.range.to_host(user.uid),
        sandbox.ctx.range.to_host(user.gid),
    );
    for end in stdin.iter().map(|(r, _)| r).chain([&stdout_w, stderr_w]) {
        give_pipe(end, owner)?;
    }

    let (events_tx, events_rx) = sandbox.ctx.reactor.event_queue();
    let (spawned_tx, spawned_rx) = crossbeam_channel::bounded(1);
    let started = Instant::now();
    let truncated = [
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    ];
    let id = sandbox.register_execution(Execution {
        argv: argv.clone(),
        user: user.name.clone(),
        pid: None,
        started,
        started_at: SystemTime::now(),
        events: events_tx.clone(),
        spawned: Some(spawned_tx),
        outputs: Vec::new(),
        timed_out: false,
        deadline: None,
        timer: None,
        truncated: truncated.clone(),
        oom_before: sandbox.oom_seen(),
        exited: None,
        background,
    })?;
    request.id = id;

    let budget = budget.or(exec.max_output_bytes).unwrap_or(u64::MAX);
    let [stdout_truncated, stderr_truncated] = truncated;
    let mut outputs = vec![(stdout_r, OutputStream::Stdout, stdout_truncated)];
    let stderr_w = match stderr {
        Some((stderr_r, stderr_w)) => {
            outputs.push((stderr_r, OutputStream::Stderr, stderr_truncated));
            Some(stderr_w)
        }
        None => None,
    };
    for (fd, stream, truncated) in outputs {
        let output = Output::new(id, stream, events_tx.clone(), fd, budget, truncated);
        if let Err(e) = sandbox.watch_output(id, output) {
            sandbox.abandon_execution(id);
            return Err(Error::setup("watch command output", e));
        }
    }
    drop(events_tx);
    if let Some(timeout) = timeout {
        sandbox.arm_exec_deadline(id, started + timeout);
    }

    let mut fds = Vec::with_capacity(3);
    if let Some((read_end, _)) = &stdin {
        fds.push(read_end.as_fd());
    }
    fds.push(stdout_w.as_fd());
    fds.push(stderr_w.as_ref().unwrap_or(&stdout_w).as_fd());
    if let Err(e) = sandbox.send_request_with_fds(&Request::Spawn(request), &fds) {
        sandbox.abandon_execution(id);
        return Err(e);
    }
    drop(fds);
    drop((stdout_w, stderr_w));
    let stdin = stdin.map(|(read_end, write_end)| {
        drop(read_end);
        File::from(write_end)
    });

    let program = argv[0].clone();
    let pid = match sandbox.wait_spawned(id, &spawned_rx)? {
        Ok(pid) => pid,
        Err(nix::errno::Errno::ENOENT) => return Err(Error::CommandNotFound { program }),
        Err(errno) => return Err(Error::Spawn { program, errno }),
    };
    let stdin = match (options.stdin, stdin) {
        (Stdin::Bytes(data), Some(mut pipe)) => {
            // A command that exits without reading its input is no error.
            let fed = thread::Builder::new()
                .name("sandlot-stdin".into())
                .spawn(move || {
                    let _ = pipe.write_all(&data);
                });
            if let Err(e) = fed {
                return Err(Error::io("start a thread to feed stdin", e));
            }
            None
        }
        (_, pipe) => pipe,
    };
    Ok(CommandHandle {
        sandbox: sandbox.clone(),
        id,
        pid,
        stdin,
        events: events_rx,
        collected: Collected {
            cap: collection_cap(sandbox),
            ..Collected::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("plain-word_1.txt"), "plain-word_1.txt");
        assert_eq!(shell_quote("two words"), "'two words'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
    }

    #[test]
    fn collection_stops_at_the_cap_and_says_so() {
        let mut c = Collected {
            cap: 4,
            ..Collected::default()
        };
        c.push(ProcessEvent::Stdout(b"abc".to_vec()));
        c.push(ProcessEvent::Stdout(b"def".to_vec()));
        c.push(ProcessEvent::Stderr(b"ok".to_vec()));
        assert_eq!(c.stdout, b"abcd");
        assert!(c.stdout_truncated);
        assert!(!c.stderr_truncated);
        assert!(c.exit().is_none());
    }
}
