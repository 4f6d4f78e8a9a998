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
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use sandlot_proto::Request;

use crate::engine::error::{Error, Result};
use crate::engine::lifecycle::{CommandExit, ExitReason, ProcessEvent, Signal};
use crate::engine::output::ProcessEvents;
use crate::engine::sandbox::SandboxShared;
use crate::services::launch::{self, Launch, Role};
pub use crate::services::launch::{RunOptions, Stdin};

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

    /// The argv it runs in `sandbox` (a line through the template's shell).
    pub(crate) fn into_argv(self, sandbox: &SandboxShared) -> Vec<String> {
        match self {
            Cmd::Shell(line) => vec![sandbox.template.config.shell.clone(), "-c".into(), line],
            Cmd::Argv(argv) => argv,
        }
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
pub(crate) struct Collected {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    cap: u64,
    stdout_truncated: bool,
    stderr_truncated: bool,
    exit: Option<CommandExit>,
}

impl Collected {
    pub fn new(cap: u64) -> Collected {
        Collected {
            cap,
            ..Collected::default()
        }
    }

    pub fn push(&mut self, event: ProcessEvent) {
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
    pub fn exit(&self) -> Option<CommandExit> {
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
    /// The handle of a process just started (its stdin, if any, is the
    /// launcher's to hand on).
    pub(crate) fn launched(sandbox: &Arc<SandboxShared>, launched: launch::Launched) -> Self {
        CommandHandle {
            sandbox: sandbox.clone(),
            id: launched.id,
            pid: launched.pid,
            stdin: launched.stdin,
            events: launched.events,
            collected: Collected::new(collection_cap(sandbox)),
        }
    }

    /// The command's pid inside the sandbox.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether the host still tracks the command (its exit not yet
    /// reported, or its output not yet all read).
    pub(crate) fn running(&self) -> bool {
        crate::engine::sync::lock(&self.sandbox.execs)
            .running
            .contains_key(&self.id)
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
        spawn(&self.sandbox, self.cmd, self.options, None)
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
        spawn(self.sandbox, cmd.into(), options, None)
    }

    /// The commands in flight (terminals and a template's start command
    /// included; not the interpreters of code contexts, which are the
    /// contexts' business).
    pub fn list(&self) -> Vec<ProcessInfo> {
        let execs = crate::engine::sync::lock(&self.sandbox.execs);
        let mut list: Vec<ProcessInfo> = execs
            .running
            .iter()
            .filter(|(_, e)| e.role != Role::Helper)
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
pub(crate) fn collection_cap(sandbox: &SandboxShared) -> u64 {
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
    spawn(sandbox, cmd, options, Some(cap))?.wait()
}

/// Starts a template's start command: in the background — a server that
/// runs for the sandbox's whole life is not activity (it would keep the
/// idle timeout from ever passing). In a persistent sandbox its output is
/// kept by init like any command's, for when this process is gone.
pub(crate) fn spawn_start_command(sandbox: &Arc<SandboxShared>, cmd: Cmd) -> Result<CommandHandle> {
    let options = RunOptions::default();
    let launched = launch::launch(
        sandbox,
        Launch {
            argv: cmd.into_argv(sandbox),
            options: &options,
            stdio: launch::Stdio::Pipes { stdin: false },
            role: Role::Service,
            budget: None,
        },
    )?;
    Ok(CommandHandle::launched(sandbox, launched))
}

/// Starts a command: stdout and stderr through the io thread, stdin as
/// asked. `budget`: bytes per stream the io thread forwards (the rest is
/// read and dropped); `None` is the sandbox's `max_output_bytes`.
fn spawn(
    sandbox: &Arc<SandboxShared>,
    cmd: Cmd,
    options: RunOptions,
    budget: Option<u64>,
) -> Result<CommandHandle> {
    let mut launched = launch::launch(
        sandbox,
        Launch {
            argv: cmd.into_argv(sandbox),
            options: &options,
            stdio: launch::Stdio::Pipes {
                stdin: !matches!(options.stdin, Stdin::Null),
            },
            role: Role::Command,
            budget,
        },
    )?;
    let stdin = match (options.stdin, launched.stdin.take()) {
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
    let mut handle = CommandHandle::launched(sandbox, launched);
    handle.stdin = stdin;
    Ok(handle)
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
