//! Commands on a terminal: `sandbox.commands().spawn_pty(cmd, size,
//! options)`. init allocates the pseudo-terminal inside the sandbox (its
//! own devpts), makes the slave the command's stdin, stdout, stderr and
//! controlling terminal in a new session, and hands the master end to the
//! host with its answer. The io thread reads the master into the command's
//! bounded event queue, as it reads a command's pipes (output arrives as
//! [`ProcessEvent::Stdout`](crate::ProcessEvent::Stdout): a terminal has
//! one stream); the handle writes input to it and resizes it.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::engine::error::{Error, Result};
use crate::engine::lifecycle::{CommandExit, Signal};
use crate::engine::output::ProcessEvents;
use crate::engine::sandbox::SandboxShared;
use crate::services::commands::{Cmd, CommandHandle, CommandResult, Commands};
use crate::services::launch::{self, Launch, Role, RunOptions, Stdin};
use crate::sys::pty;

pub use crate::services::launch::DEFAULT_TERM;

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PtySize {
    pub rows: u16,
    pub cols: u16,
}

impl PtySize {
    pub fn new(rows: u16, cols: u16) -> PtySize {
        PtySize { rows, cols }
    }

    fn validate(self) -> Result<PtySize> {
        if self.rows == 0 || self.cols == 0 {
            return Err(Error::invalid(
                "pty size",
                format!(
                    "{}x{} (rows x cols): both must be at least 1",
                    self.rows, self.cols
                ),
            ));
        }
        Ok(self)
    }
}

impl Default for PtySize {
    /// 24 rows of 80 columns, the classic terminal.
    fn default() -> PtySize {
        PtySize { rows: 24, cols: 80 }
    }
}

/// A command running on a terminal. Input goes in with [`PtyHandle::write`]
/// (bytes as typed: `\r` is Enter, `\x03` is Ctrl-C, `\x04` Ctrl-D), output
/// comes out of [`PtyHandle::events`] as `Stdout` chunks, then the `Exit`.
/// `&self` methods may be called from several threads (one reading events,
/// another writing input).
#[derive(Debug)]
pub struct PtyHandle {
    command: CommandHandle,
    /// The host's copy of the master end (non-blocking: its open file is
    /// shared with the io thread's copy).
    master: File,
}

impl PtyHandle {
    /// The command's pid inside the sandbox.
    pub fn pid(&self) -> i32 {
        self.command.pid()
    }

    /// sandlot's id of the command.
    pub fn id(&self) -> u64 {
        self.command.id()
    }

    /// Types `data` into the terminal. Blocks while the terminal's input
    /// queue is full (the command does not read); fails once the command
    /// has ended (`BrokenPipe`), or when nothing holds the terminal's other
    /// end any more.
    pub fn write(&self, mut data: &[u8]) -> Result<()> {
        let failed = |e: io::Error| Error::io("write to the terminal", e);
        let ended = || {
            failed(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the terminal's command has ended",
            ))
        };
        if !self.command.running() {
            return Err(ended());
        }
        while !data.is_empty() {
            match (&self.master).write(data) {
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut fds = [PollFd::new(self.master.as_fd(), PollFlags::POLLOUT)];
                    match poll(&mut fds, PollTimeout::NONE) {
                        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                        Err(e) => return Err(failed(e.into())),
                    }
                    // A hung-up terminal stays "ready" without room: the
                    // slave side is gone and nobody will ever read.
                    let hung_up = PollFlags::POLLHUP | PollFlags::POLLERR;
                    if fds[0].revents().is_some_and(|r| r.intersects(hung_up)) {
                        return Err(ended());
                    }
                }
                Err(e) => return Err(failed(e)),
            }
        }
        Ok(())
    }

    /// Changes the terminal's size; the command's foreground process group
    /// gets SIGWINCH.
    pub fn resize(&self, size: PtySize) -> Result<()> {
        let size = size.validate()?;
        pty::set_window_size(self.master.as_fd(), size.rows, size.cols)
            .map_err(|e| Error::io("resize the terminal", e.into()))
    }

    /// The terminal's size now.
    pub fn size(&self) -> Result<PtySize> {
        pty::window_size(self.master.as_fd())
            .map(|(rows, cols)| PtySize { rows, cols })
            .map_err(|e| Error::io("read the terminal's size", e.into()))
    }

    /// The live stream: output chunks as the terminal gives them (in the
    /// terminal's encoding, `\r\n` line ends, echo of the input), then the
    /// `Exit`. Bounded like a command's.
    pub fn events(&self) -> &ProcessEvents {
        self.command.events()
    }

    /// Sends `signal` to the command's process.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        self.command.signal(signal)
    }

    /// Sends `signal` to the command's whole process group.
    pub fn signal_group(&self, signal: Signal) -> Result<()> {
        self.command.signal_group(signal)
    }

    /// Kills the command and everything in its process group.
    pub fn kill(&self) -> Result<()> {
        self.command.kill()
    }

    /// The exit, if the command has ended; never waits.
    pub fn try_wait(&mut self) -> Result<Option<CommandExit>> {
        self.command.try_wait()
    }

    /// Waits at most `timeout` for the end; `None` if it still runs.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<CommandExit>> {
        self.command.wait_timeout(timeout)
    }

    /// Waits for the end; what the terminal printed and was not yet taken
    /// from [`PtyHandle::events`] is in `stdout` (up to the collection cap).
    pub fn wait(self) -> Result<CommandResult> {
        self.command.wait()
    }
}

impl Commands<'_> {
    /// Starts a command on a new terminal of `size` (allocated inside the
    /// sandbox; the command leads a new session with the terminal as its
    /// controlling terminal and its stdin, stdout and stderr). `TERM` is
    /// [`DEFAULT_TERM`](crate::DEFAULT_TERM) unless set. `options.stdin`
    /// must stay `Null`: input goes through [`PtyHandle::write`].
    pub fn spawn_pty(
        &self,
        cmd: impl Into<Cmd>,
        size: PtySize,
        options: RunOptions,
    ) -> Result<PtyHandle> {
        spawn_pty(self.sandbox, cmd.into(), size, options)
    }
}

/// Starts `cmd` on a new terminal of `size`.
fn spawn_pty(
    sandbox: &Arc<SandboxShared>,
    cmd: Cmd,
    size: PtySize,
    options: RunOptions,
) -> Result<PtyHandle> {
    let size = size.validate()?;
    if options.stdin != Stdin::Null {
        return Err(Error::invalid(
            "stdin",
            "a terminal's input is written with PtyHandle::write",
        ));
    }
    let mut launched = launch::launch(
        sandbox,
        Launch {
            argv: cmd.into_argv(sandbox),
            options: &options,
            stdio: launch::Stdio::Terminal(sandlot_proto::PtySize {
                rows: size.rows,
                cols: size.cols,
            }),
            role: Role::Command,
            budget: None,
        },
    )?;
    let master = launched
        .master
        .take()
        .map(File::from)
        .ok_or_else(|| Error::Protocol {
            id: sandbox.id.clone(),
            reason: format!("command {} started without its terminal", launched.id),
        })?;
    Ok(PtyHandle {
        command: CommandHandle::launched(sandbox, launched),
        master,
    })
}
