//! `sandlot run --tty`: the command runs on a terminal made inside the
//! sandbox, and this process's terminal becomes a window onto it: raw mode
//! (every key goes to the sandbox, Ctrl-C included), window-size changes
//! forwarded (SIGWINCH), and the terminal restored on every way out —
//! the command's end, an error, a panic, SIGTERM or SIGHUP.

use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;

use nix::sys::termios::{self, SetArg, Termios};
use sandlot::{CommandExit, Error, ProcessEvent, PtyHandle, PtySize, Result};
use signal_hook::consts::{SIGHUP, SIGTERM, SIGWINCH};
use signal_hook::iterator::Signals;

/// Whether `run` uses a terminal: `--tty` forces it, `--no-tty` refuses
/// it, otherwise it does when stdin and stdout both are terminals.
pub fn wanted(force: bool, refuse: bool) -> bool {
    if force {
        return true;
    }
    !refuse && io::stdin().is_terminal() && io::stdout().is_terminal()
}

/// The size of the terminal on `fd`, if it is one.
pub fn size_of(fd: BorrowedFd<'_>) -> Option<PtySize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize through the pointer, a live
    // local; on a descriptor that is not a terminal it fails (ENOTTY).
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_row > 0 && size.ws_col > 0).then(|| PtySize::new(size.ws_row, size.ws_col))
}

/// This process's terminal size: stdout's, else stdin's, else 24x80.
pub fn host_size() -> PtySize {
    size_of(io::stdout().as_fd())
        .or_else(|| size_of(io::stdin().as_fd()))
        .unwrap_or_default()
}

/// Raw mode on stdin while it lives; the saved settings come back when it
/// is dropped (also while unwinding from a panic).
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// `None` when stdin is not a terminal (nothing to change).
    pub fn enter() -> io::Result<Option<RawMode>> {
        let stdin = io::stdin();
        if !stdin.is_terminal() {
            return Ok(None);
        }
        let saved = termios::tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSADRAIN, &raw)?;
        Ok(Some(RawMode { saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(io::stdin().as_fd(), SetArg::TCSADRAIN, &self.saved);
    }
}

/// Runs the started command on its terminal until it ends: stdin to its
/// input (then Ctrl-D at end of input, for a stdin that is not a
/// terminal), its output to stdout, this terminal's size changes to it;
/// SIGTERM or SIGHUP kill it. The terminal is restored before this
/// returns.
pub fn attach(pty: PtyHandle) -> Result<CommandExit> {
    let pty = Arc::new(pty);
    let raw = RawMode::enter().map_err(|e| Error::Io {
        context: "put the terminal in raw mode".into(),
        source: e,
    })?;
    let mut signals = Signals::new([SIGWINCH, SIGTERM, SIGHUP]).map_err(|e| Error::Io {
        context: "watch SIGWINCH".into(),
        source: e,
    })?;
    let signal_handle = signals.handle();
    let watcher = {
        let pty = pty.clone();
        std::thread::Builder::new()
            .name("sandlot-winch".into())
            .spawn(move || {
                for signal in signals.forever() {
                    match signal {
                        SIGWINCH => {
                            let _ = pty.resize(host_size());
                        }
                        _ => {
                            let _ = pty.kill();
                        }
                    }
                }
            })
            .map_err(|e| Error::Io {
                context: "start the signal thread".into(),
                source: e,
            })?
    };
    // Detached: a read of a terminal that never sends anything cannot be
    // interrupted; it ends with the process.
    {
        let pty = pty.clone();
        let interactive = raw.is_some();
        let _ = std::thread::Builder::new()
            .name("sandlot-input".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                let mut input = io::stdin().lock();
                loop {
                    match input.read(&mut buf) {
                        Ok(0) => {
                            if !interactive {
                                // End of a piped input: end of file on the
                                // terminal, as Ctrl-D at a line's start.
                                let _ = pty.write(b"\x04");
                            }
                            return;
                        }
                        Ok(n) => {
                            if pty.write(&buf[..n]).is_err() {
                                return;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return,
                    }
                }
            });
    }
    let mut stdout = io::stdout().lock();
    let mut exit = None;
    for event in pty.events().iter() {
        match event {
            ProcessEvent::Stdout(chunk) | ProcessEvent::Stderr(chunk) => {
                let _ = stdout.write_all(&chunk).and_then(|()| stdout.flush());
            }
            ProcessEvent::Exit(e) => {
                exit = Some(e);
                break;
            }
        }
    }
    signal_handle.close();
    let _ = watcher.join();
    drop(raw);
    exit.ok_or_else(|| Error::Io {
        context: "the terminal's command".into(),
        source: io::Error::other("ended without an exit report"),
    })
}
