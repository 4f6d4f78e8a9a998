//! Starting a process in a sandbox, whatever its stdio: pipes the io thread
//! reads (commands), a terminal made inside the sandbox (`spawn_pty`), or
//! descriptors the caller made and reads itself (a code context's
//! interpreter, with its control pipes at fixed numbers). One place
//! resolves who runs it and where, checks the request, registers the
//! execution, hands the descriptors to init and waits for its answer.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::fcntl::OFlag;
use sandlot_proto::{PtySize, Request, Spawn, StdioMask, MAX_MESSAGE};

use crate::engine::error::{Error, Result};
use crate::engine::exec::Execution;
pub(crate) use crate::engine::exec::Role;
use crate::engine::lifecycle::OutputStream;
use crate::engine::options::validate_env_name;
use crate::engine::output::{Output, ProcessEvents};
use crate::engine::sandbox::SandboxShared;
use crate::services::users::{self, User};

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
    /// A stdin pipe kept open for
    /// [`CommandHandle::write_stdin`](crate::CommandHandle::write_stdin).
    pub fn stdin_piped(mut self) -> Self {
        self.stdin = Stdin::Piped;
        self
    }
}

/// The process's standard streams (and more descriptors).
pub(crate) enum Stdio {
    /// Pipes the host makes: stdout and stderr read by the io thread into
    /// the process's event queue; stdin a pipe the caller writes when
    /// asked for, `/dev/null` otherwise.
    Pipes { stdin: bool },
    /// A terminal of this size, made by init inside the sandbox: its slave
    /// end is stdin, stdout, stderr and the controlling terminal; the io
    /// thread reads its master end into the event queue (as stdout).
    Terminal(PtySize),
    /// Descriptors the caller made (the child ends; the caller keeps and
    /// reads the other ends itself): stdin (`None`: /dev/null), stdout,
    /// stderr, and more, each placed at the given number.
    Given {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
        extra: Vec<(OwnedFd, i32)>,
    },
}

/// What to start.
pub(crate) struct Launch<'a> {
    pub argv: Vec<String>,
    /// cwd, env, user and timeout (stdin is `stdio`'s business).
    pub options: &'a RunOptions,
    pub stdio: Stdio,
    /// A command, a template's start command, or a helper (see [`Role`]).
    pub role: Role,
    /// Bytes per stream the io thread forwards (the rest is read and
    /// dropped); `None` is the sandbox's `max_output_bytes`.
    pub budget: Option<u64>,
}

/// A started process.
pub(crate) struct Launched {
    /// sandlot's id of the execution.
    pub id: u64,
    /// Its pid inside the sandbox.
    pub pid: i32,
    /// Output (for pipes and terminals) and then the exit, always.
    pub events: ProcessEvents,
    /// The write end of a stdin pipe (`Stdio::Pipes { stdin: true }`).
    pub stdin: Option<File>,
    /// A terminal's master end (`Stdio::Terminal`), for input and resizing.
    pub master: Option<OwnedFd>,
}

/// `TERM` of a terminal command unless the template, the sandbox or the
/// command sets one: what the reference's terminals and most emulators
/// announce.
pub const DEFAULT_TERM: &str = "xterm-256color";

/// The environment of a process: on a terminal `TERM` first, then the
/// template's, the user's identity, the sandbox's, the process's own
/// (later entries win); only `TERM` and the process's own with
/// `env_clear`.
fn process_env(
    sandbox: &SandboxShared,
    user: &User,
    options: &RunOptions,
    terminal: bool,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |key: &str, value: String| {
        env.retain(|(k, _)| k != key);
        env.push((key.to_string(), value));
    };
    if terminal {
        set("TERM", DEFAULT_TERM.into());
    }
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

pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::setup("create a pipe", e))
}

/// Gives a pipe to the user a process runs as (its host ids). A pipe
/// belongs to whoever made it: host root, an id the sandbox's user
/// namespace does not map. Reopening a pipe by name — `/dev/stderr`,
/// `/dev/stdin`, `/proc/self/fd/N`, which shell scripts, `tee` and node do
/// — checks that owner, so it failed with EACCES for every user inside,
/// root included. Owned by the process's user, with the 0600 mode pipe(2)
/// gives, it reopens like a pipe the process made itself, and no other
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

/// Who runs it, where, with what: the request for init (its id still 0).
fn request(
    sandbox: &SandboxShared,
    argv: &[String],
    options: &RunOptions,
    stdio: &Stdio,
    keep_output: bool,
) -> Result<(Spawn, User)> {
    let user = users::resolve(sandbox, options.user.as_deref())?;
    let cwd = options
        .cwd
        .clone()
        .or_else(|| sandbox.template.config.working_dir.clone())
        .unwrap_or_else(|| user.home.clone());
    let env = process_env(sandbox, &user, options, matches!(stdio, Stdio::Terminal(_)));
    let (mask, extra_fds, pty) = match stdio {
        Stdio::Pipes { stdin } => (
            StdioMask::STDOUT
                | StdioMask::STDERR
                | if *stdin { StdioMask::STDIN } else { 0 }
                | if keep_output {
                    StdioMask::KEEP_OUTPUT
                } else {
                    0
                },
            Vec::new(),
            None,
        ),
        Stdio::Terminal(size) => (0, Vec::new(), Some(*size)),
        Stdio::Given { stdin, extra, .. } => (
            StdioMask::STDOUT
                | StdioMask::STDERR
                | if stdin.is_some() { StdioMask::STDIN } else { 0 },
            extra.iter().map(|(_, target)| *target).collect(),
            None,
        ),
    };
    let request = Spawn {
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
        stdio: StdioMask(mask),
        extra_fds,
        pty,
    };
    if request.encoded_len() > MAX_MESSAGE {
        return Err(Error::invalid(
            "command",
            format!("argv, environment and cwd exceed {MAX_MESSAGE} bytes; pass large input on stdin or as a file"),
        ));
    }
    Ok((request, user))
}

/// The descriptors init gets with the request (child ends), and what the
/// host keeps: the read ends of output pipes and the write end of stdin.
struct Plumbing {
    to_send: Vec<OwnedFd>,
    outputs: Vec<(OwnedFd, OutputStream)>,
    stdin: Option<OwnedFd>,
}

fn plumb(stdio: Stdio, owner: (Option<u32>, Option<u32>), keep_output: bool) -> Result<Plumbing> {
    let mut plumbing = Plumbing {
        to_send: Vec::new(),
        outputs: Vec::new(),
        stdin: None,
    };
    match stdio {
        Stdio::Pipes { stdin } => {
            if stdin {
                let (read_end, write_end) = pipe()?;
                plumbing.to_send.push(read_end);
                plumbing.stdin = Some(write_end);
            }
            for stream in [OutputStream::Stdout, OutputStream::Stderr] {
                let (read_end, write_end) = pipe()?;
                set_nonblocking(&read_end)?;
                plumbing.to_send.push(write_end);
                plumbing.outputs.push((read_end, stream));
            }
        }
        Stdio::Terminal(_) => {}
        Stdio::Given {
            stdin,
            stdout,
            stderr,
            extra,
        } => {
            plumbing.to_send.extend(stdin);
            plumbing.to_send.push(stdout);
            plumbing.to_send.push(stderr);
            plumbing.to_send.extend(extra.into_iter().map(|(fd, _)| fd));
        }
    }
    for end in &plumbing.to_send {
        give_pipe(end, owner)?;
    }
    if keep_output {
        // Last: a read end of each output for init to keep.
        for (read_end, _) in &plumbing.outputs {
            let kept = read_end
                .try_clone()
                .map_err(|e| Error::io("duplicate an output pipe", e))?;
            plumbing.to_send.push(kept);
        }
    }
    Ok(plumbing)
}

/// Starts a process: resolve who and where, create the pipes, register
/// the execution, send the request with the child ends, wait for init's
/// answer.
pub(crate) fn launch(sandbox: &Arc<SandboxShared>, launch: Launch<'_>) -> Result<Launched> {
    let Launch {
        argv,
        options,
        stdio,
        role,
        budget,
    } = launch;
    sandbox.check_accepts_commands()?;
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
    // A command of a persistent sandbox may outlive this process: init
    // keeps a read end of its output for when nobody here reads it.
    // (A code context's interpreter is not kept: its context goes with the
    // process that made it.)
    let keep_output =
        role != Role::Helper && sandbox.files().is_some() && matches!(stdio, Stdio::Pipes { .. });
    let (mut request, user) = request(sandbox, &argv, options, &stdio, keep_output)?;
    let budget = budget.or(exec.max_output_bytes).unwrap_or(u64::MAX);
    let terminal = matches!(stdio, Stdio::Terminal(_)).then_some(budget);
    let owner = (
        sandbox.ctx.range.to_host(user.uid),
        sandbox.ctx.range.to_host(user.gid),
    );
    let plumbing = plumb(stdio, owner, keep_output)?;

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
        terminal,
        outputs: Vec::new(),
        timed_out: false,
        deadline: None,
        timer: None,
        truncated: truncated.clone(),
        oom_before: sandbox.oom_seen(),
        exited: None,
        role,
    })?;
    request.id = id;

    for ((fd, stream), truncated) in plumbing.outputs.into_iter().zip(truncated) {
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

    let fds: Vec<BorrowedFd<'_>> = plumbing.to_send.iter().map(|fd| fd.as_fd()).collect();
    if let Err(e) = sandbox.send_request_with_fds(&Request::Spawn(request), &fds) {
        sandbox.abandon_execution(id);
        return Err(e);
    }
    // The child ends belong to the process now.
    drop(fds);
    drop(plumbing.to_send);

    let program = argv[0].clone();
    let spawned = match sandbox.wait_spawned(id, &spawned_rx)? {
        Ok(spawned) => spawned,
        Err(nix::errno::Errno::ENOENT) => return Err(Error::CommandNotFound { program }),
        Err(errno) => return Err(Error::Spawn { program, errno }),
    };
    Ok(Launched {
        id,
        pid: spawned.pid,
        events: events_rx,
        stdin: plumbing.stdin.map(File::from),
        master: spawned.master,
    })
}
