//! Commands inside a sandbox: `run` (collect everything), `spawn` (a handle
//! with a live event stream), `list` and `kill_all`.
//!
//! Output never passes through init: the host creates the pipes, hands the
//! child ends to init with SCM_RIGHTS, and the reactor reads the host ends.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use sandlot_proto::{Request, Spawn, Status, StdioMask, Usage, MAX_MESSAGE};

use crate::error::{Error, Result};
use crate::reactor::{Output, Token};
use crate::sandbox::{Sandbox, SandboxShared};
use crate::users;

/// What to run: a command line for the template's shell (`sh -c`), or an
/// argument vector executed directly (no shell involved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    Shell(String),
    Argv(Vec<String>),
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

/// Per-command options. Everything unset falls back to the sandbox's and
/// then the template's defaults.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub cwd: Option<String>,
    pub env: Vec<(String, String)>,
    /// A user name from the sandbox's /etc/passwd, or a numeric `uid[:gid]`.
    pub user: Option<String>,
    /// Killing the command's whole process group when it passes (the
    /// sandbox's `ExecLimits::max_time` applies if it is shorter).
    pub timeout: Option<Duration>,
    /// Bytes written to the command's stdin, which is then closed (`run`).
    pub stdin: Option<Vec<u8>>,
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
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// Why a command ended. When several apply, the first in this order wins
/// (what sandlot knows for certain first, then limits that killed, then
/// limits that did not, then the program's own ending); `code` and
/// `signal` always tell how the process itself ended:
///
/// 1. `SandboxDestroyed` — the sandbox went away (`TimedOut` if the
///    command's own time limit had passed first);
/// 2. `TimedOut` — sandlot killed it at its time limit;
/// 3. `OomKilled` — it died of SIGKILL (or, run through a shell, exited
///    with 137 = 128 + SIGKILL) and the sandbox's cgroup counted an OOM
///    kill while it ran. The count is per sandbox, so a kill of another
///    process of the sandbox at the same moment is attributed too;
/// 4. `OutputLimit` — output past `ExecLimits::max_output_bytes` was
///    discarded (the command itself ran on to its end);
/// 5. `Signaled` — a signal ended it;
/// 6. `Exited` — it exited on its own (any code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    Exited,
    Signaled,
    TimedOut,
    OomKilled,
    OutputLimit,
    SandboxDestroyed,
}

impl ExitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Exited => "exited",
            ExitReason::Signaled => "signaled",
            ExitReason::TimedOut => "timed_out",
            ExitReason::OomKilled => "oom_killed",
            ExitReason::OutputLimit => "output_limit",
            ExitReason::SandboxDestroyed => "sandbox_destroyed",
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a command ended, and what it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandExit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: ExitReason,
    /// Wall time from spawn request to exit report.
    pub duration: Duration,
    pub cpu_user: Duration,
    pub cpu_system: Duration,
    /// Largest resident set of the command or a child it waited for.
    pub peak_rss_bytes: u64,
    /// Output past the sandbox's `max_output_bytes` was discarded.
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

impl CommandExit {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// User plus system CPU time.
    pub fn cpu_time(&self) -> Duration {
        self.cpu_user + self.cpu_system
    }

    /// The shell convention: the exit code, or 128 + the signal number.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128_i32.saturating_add(signal),
            (None, None) => 128 + libc::SIGKILL,
        }
    }
}

/// One thing that happened to a spawned command. `Exit` is always last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(CommandExit),
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

/// The host's record of one command in flight.
pub(crate) struct CommandEntry {
    pub argv: Vec<String>,
    pub user: String,
    pub pid: Option<i32>,
    pub started: Instant,
    pub started_at: SystemTime,
    pub events: Sender<ProcessEvent>,
    pub spawned: Option<Sender<Result<i32, Errno>>>,
    pub outputs: Vec<Token>,
    pub timed_out: bool,
    /// When its time limit passes (moved by a pause with the pause clock).
    pub deadline: Option<Instant>,
    /// Set by the reactor when stdout / stderr output was discarded.
    pub truncated: [Arc<AtomicBool>; 2],
    /// The sandbox's OOM kill count when the command started.
    pub oom_before: u64,
}

#[derive(Default)]
pub(crate) struct CommandTable {
    pub next_id: u64,
    pub running: HashMap<u64, CommandEntry>,
}

impl CommandEntry {
    fn truncated(&self) -> (bool, bool) {
        (
            self.truncated[0].load(Ordering::Relaxed),
            self.truncated[1].load(Ordering::Relaxed),
        )
    }

    /// The final event for an exit report from init. `oom_kills` reads the
    /// sandbox's OOM count now; it is only called for a SIGKILL death.
    pub fn exit_event(
        &self,
        status: Status,
        usage: Usage,
        oom_kills: impl FnOnce() -> u64,
    ) -> CommandExit {
        let (code, signal, ended) = match status {
            Status::Exited(code) => (Some(code), None, ExitReason::Exited),
            Status::Signaled { signal, .. } => (None, Some(signal), ExitReason::Signaled),
        };
        let (stdout_truncated, stderr_truncated) = self.truncated();
        let killed = signal == Some(libc::SIGKILL) || code == Some(128 + libc::SIGKILL);
        // The order is ExitReason's documented precedence.
        let reason = if self.timed_out {
            ExitReason::TimedOut
        } else if killed && oom_kills() > self.oom_before {
            ExitReason::OomKilled
        } else if stdout_truncated || stderr_truncated {
            ExitReason::OutputLimit
        } else {
            ended
        };
        CommandExit {
            code,
            signal,
            reason,
            duration: self.started.elapsed(),
            cpu_user: Duration::from_micros(usage.user_micros),
            cpu_system: Duration::from_micros(usage.system_micros),
            // init's numbers are not trusted to be small.
            peak_rss_bytes: usage.max_rss_kib.saturating_mul(1024),
            stdout_truncated,
            stderr_truncated,
        }
    }

    /// The final event when the sandbox went away underneath the command.
    pub fn destroyed_event(&self) -> CommandExit {
        let (stdout_truncated, stderr_truncated) = self.truncated();
        CommandExit {
            code: None,
            signal: Some(libc::SIGKILL),
            reason: if self.timed_out {
                ExitReason::TimedOut
            } else {
                ExitReason::SandboxDestroyed
            },
            duration: self.started.elapsed(),
            cpu_user: Duration::ZERO,
            cpu_system: Duration::ZERO,
            peak_rss_bytes: 0,
            stdout_truncated,
            stderr_truncated,
        }
    }
}

/// A running command.
pub struct CommandHandle {
    sandbox: Arc<SandboxShared>,
    id: u64,
    pid: i32,
    stdin: Option<File>,
    events: Receiver<ProcessEvent>,
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

    /// Writes to the command's stdin (blocks while its pipe is full).
    pub fn write_stdin(&mut self, data: &[u8]) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| Error::invalid("stdin", "already closed"))?;
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
    /// `Exit`.
    pub fn events(&self) -> &Receiver<ProcessEvent> {
        &self.events
    }

    /// Sends `signal` to the command's process.
    pub fn signal(&self, signal: i32) -> Result<()> {
        self.sandbox.send_signal(self.id, signal, false)
    }

    /// Sends `signal` to the command's whole process group.
    pub fn signal_group(&self, signal: i32) -> Result<()> {
        self.sandbox.send_signal(self.id, signal, true)
    }

    /// Kills the command and everything in its process group.
    pub fn kill(&self) -> Result<()> {
        self.signal_group(libc::SIGKILL)
    }

    /// Waits for the end; collects whatever output was not yet taken from
    /// [`CommandHandle::events`].
    pub fn wait(mut self) -> Result<CommandResult> {
        self.stdin = None;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        for event in self.events.iter() {
            match event {
                ProcessEvent::Stdout(chunk) => stdout.extend_from_slice(&chunk),
                ProcessEvent::Stderr(chunk) => stderr.extend_from_slice(&chunk),
                ProcessEvent::Exit(exit) => {
                    return Ok(CommandResult {
                        stdout,
                        stderr,
                        exit,
                    })
                }
            }
        }
        Err(Error::Protocol {
            id: self.sandbox.id.clone(),
            reason: format!("command {} ended without an exit report", self.id),
        })
    }
}

/// The commands of one sandbox (`sandbox.commands()`).
pub struct Commands<'a> {
    pub(crate) sandbox: &'a Sandbox,
}

impl Commands<'_> {
    /// Runs a command to completion and collects its output.
    pub fn run(&self, cmd: impl Into<Cmd>, options: RunOptions) -> Result<CommandResult> {
        let stdin = options.stdin.clone();
        let mut handle = spawn(self.sandbox.shared(), cmd.into(), &options, stdin.is_some())?;
        if let Some(data) = stdin {
            // A command that exits without reading its input is no error.
            let _ = handle.write_stdin(&data);
        }
        handle.wait()
    }

    /// Starts a command and returns at once with a handle to it.
    pub fn spawn(&self, cmd: impl Into<Cmd>, options: RunOptions) -> Result<CommandHandle> {
        let mut handle = spawn(self.sandbox.shared(), cmd.into(), &options, true)?;
        if let Some(data) = &options.stdin {
            handle.write_stdin(data)?;
        }
        Ok(handle)
    }

    /// The commands in flight.
    pub fn list(&self) -> Vec<ProcessInfo> {
        let table = self.sandbox.shared().commands.lock().unwrap();
        let mut list: Vec<ProcessInfo> = table
            .running
            .iter()
            .map(|(id, entry)| ProcessInfo {
                id: *id,
                pid: entry.pid,
                argv: entry.argv.clone(),
                user: entry.user.clone(),
                started_at: entry.started_at,
            })
            .collect();
        list.sort_by_key(|p| p.id);
        list
    }

    /// Kills every process in the sandbox except init.
    pub fn kill_all(&self) -> Result<()> {
        self.sandbox.shared().send_request(&Request::SignalAll {
            signal: libc::SIGKILL,
        })
    }
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
fn give_pipe(end: &OwnedFd, (uid, gid): (Option<u32>, Option<u32>)) -> Result<()> {
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

/// Starts a command: resolve who and where, create the pipes, register
/// the command, send the request with the child ends, wait for init's
/// answer.
fn spawn(
    sandbox: &Arc<SandboxShared>,
    cmd: Cmd,
    options: &RunOptions,
    with_stdin: bool,
) -> Result<CommandHandle> {
    sandbox.check_accepts_commands()?;
    let argv = match cmd {
        Cmd::Shell(line) => vec![sandbox.template.config.shell.clone(), "-c".into(), line],
        Cmd::Argv(argv) => argv,
    };
    if argv.first().is_none_or(|program| program.is_empty()) {
        return Err(Error::EmptyCommand);
    }
    if let Some(timeout) = options.timeout {
        if timeout.is_zero() {
            return Err(Error::invalid(
                "timeout",
                "a command timeout must be above zero",
            ));
        }
    }
    let exec = sandbox.resources.exec;
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
    let env = sandbox.command_env(&user, &options.env);
    let mut request = Spawn {
        id: 0,
        argv: argv
            .iter()
            .map(|a| check_text("command", a))
            .collect::<Result<_>>()?,
        env: env
            .iter()
            .map(|(k, v)| {
                crate::options::validate_env_name(k)?;
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
    let (stderr_r, stderr_w) = pipe()?;
    set_nonblocking(&stdout_r)?;
    set_nonblocking(&stderr_r)?;
    let owner = (
        sandbox.ctx.range.to_host(user.uid),
        sandbox.ctx.range.to_host(user.gid),
    );
    for end in stdin.iter().map(|(r, _)| r).chain([&stdout_w, &stderr_w]) {
        give_pipe(end, owner)?;
    }

    let (events_tx, events_rx) = crossbeam_channel::unbounded();
    let (spawned_tx, spawned_rx) = crossbeam_channel::bounded(1);
    let started = Instant::now();
    let truncated = [
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    ];
    let deadline = timeout.map(|t| started + t);
    let id = sandbox.register_command(CommandEntry {
        argv: argv.clone(),
        user: user.name.clone(),
        pid: None,
        started,
        started_at: SystemTime::now(),
        events: events_tx.clone(),
        spawned: Some(spawned_tx),
        outputs: Vec::new(),
        timed_out: false,
        deadline,
        truncated: truncated.clone(),
        oom_before: sandbox.oom_seen(),
    })?;
    request.id = id;

    let [stdout_truncated, stderr_truncated] = truncated;
    let outputs = [
        (stdout_r, OutputStream::Stdout, stdout_truncated),
        (stderr_r, OutputStream::Stderr, stderr_truncated),
    ];
    for (fd, stream, truncated) in outputs {
        let output = Output {
            sandbox: Arc::downgrade(sandbox),
            command: id,
            stream,
            events: events_tx.clone(),
            fd,
            budget: exec.max_output_bytes.unwrap_or(u64::MAX),
            truncated,
        };
        if let Err(e) = sandbox.watch_output(id, output) {
            sandbox.abandon_command(id);
            return Err(Error::setup("watch command output", e));
        }
    }
    drop(events_tx);
    if let Some(deadline) = deadline {
        sandbox.arm_command_timer(id, deadline);
    }

    let mut fds = Vec::with_capacity(3);
    if let Some((read_end, _)) = &stdin {
        fds.push(read_end.as_fd());
    }
    fds.push(stdout_w.as_fd());
    fds.push(stderr_w.as_fd());
    if let Err(e) = sandbox.send_request_with_fds(&Request::Spawn(request), &fds) {
        sandbox.abandon_command(id);
        return Err(e);
    }
    drop(fds);
    drop((stdout_w, stderr_w));
    let stdin = stdin.map(|(read_end, write_end)| {
        drop(read_end);
        File::from(write_end)
    });

    let program = argv[0].clone();
    match spawned_rx.recv() {
        Ok(Ok(pid)) => Ok(CommandHandle {
            sandbox: sandbox.clone(),
            id,
            pid,
            stdin,
            events: events_rx,
        }),
        Ok(Err(Errno::ENOENT)) => Err(Error::CommandNotFound { program }),
        Ok(Err(errno)) => Err(Error::Spawn { program, errno }),
        Err(_) => Err(sandbox.not_running()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whatever_init_reports_converts_without_overflow() {
        let (events, _) = crossbeam_channel::unbounded();
        let entry = CommandEntry {
            argv: Vec::new(),
            user: "root".into(),
            pid: None,
            started: Instant::now(),
            started_at: SystemTime::now(),
            events,
            spawned: None,
            outputs: Vec::new(),
            timed_out: false,
            deadline: None,
            truncated: Default::default(),
            oom_before: 0,
        };
        let most = Usage {
            user_micros: u64::MAX,
            system_micros: u64::MAX,
            max_rss_kib: u64::MAX,
        };
        let signal = Status::Signaled {
            signal: i32::MAX,
            core_dumped: false,
        };
        let exit = entry.exit_event(signal, most, || 0);
        assert_eq!(exit.peak_rss_bytes, u64::MAX);
        assert_eq!(exit.cpu_user, Duration::from_micros(u64::MAX));
        assert_eq!(exit.shell_code(), i32::MAX);
    }
}
