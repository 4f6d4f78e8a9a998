//! The host end of the control protocol: requests out (with stdio
//! descriptors attached), events in, and the start-up handshake.
//!
//! init is not trusted with the host's descriptor table: an event comes in
//! with room for one descriptor only, and that descriptor is kept only if
//! the event is [`Event::SpawnedPty`] and it is a pseudo-terminal master
//! (a character device 5:2 answering `TIOCGPTN`). Anything else is closed
//! on arrival.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use sandlot_proto::{Event, Request, PROTOCOL_VERSION};

use crate::engine::error::{Error, Result};
use crate::kernel::spawn::Step;
use crate::sys::{fd, pty};

/// Sends one request. `nonblocking` is for the reactor thread, which must
/// never wait on a sandbox (a frozen init could otherwise stall every
/// sandbox).
pub fn send(
    sock: BorrowedFd<'_>,
    request: &Request,
    fds: &[BorrowedFd<'_>],
    nonblocking: bool,
) -> Result<(), Errno> {
    fd::send_with_fds(sock, &request.encode(), fds, nonblocking)
}

/// What came in on a control socket.
pub enum Incoming {
    /// An event, and for `SpawnedPty` the terminal's master end if one
    /// came with it and passed the check (`None` otherwise: the caller
    /// treats the spawn as broken).
    Event(Event, Option<OwnedFd>),
    /// The sandbox side closed the socket (init exited).
    Closed,
    /// Nothing to read right now (non-blocking).
    Empty,
}

/// Reads and decodes one event.
pub fn recv(sock: BorrowedFd<'_>, buf: &mut [u8], nonblocking: bool) -> Result<Incoming, String> {
    match fd::recv_datagram_with_fd(sock, buf, nonblocking) {
        Ok((0, _)) => Ok(Incoming::Closed),
        Ok((n, attached)) => {
            let event = Event::decode(&buf[..n]).map_err(|e| e.to_string())?;
            let master = accept_descriptor(&event, attached);
            Ok(Incoming::Event(event, master))
        }
        Err(Errno::EAGAIN) => Ok(Incoming::Empty),
        Err(Errno::ECONNRESET) => Ok(Incoming::Closed),
        Err(e) => Err(format!("recv: {e}")),
    }
}

/// The one descriptor the host takes from init: a terminal's master end,
/// with the event that announces it. Everything else closes here.
fn accept_descriptor(event: &Event, attached: Option<OwnedFd>) -> Option<OwnedFd> {
    match (event, attached) {
        (Event::SpawnedPty { .. }, Some(fd)) if pty::is_pty_master(fd.as_fd()) => Some(fd),
        _ => None,
    }
}

/// Waits until init says Ready, or the child reports which setup step
/// failed, or `timeout` passes.
pub fn wait_ready(id: &str, sock: BorrowedFd<'_>, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 64];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let millis = PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::ZERO);
        let mut fds = [PollFd::new(sock, PollFlags::POLLIN)];
        match poll(&mut fds, millis) {
            Ok(0) => return Err(Error::TimedOut(timeout)),
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::setup("wait for init", e)),
        }
        let protocol = |reason: String| Error::Protocol {
            id: id.to_string(),
            reason,
        };
        return match recv(sock, &mut buf, false).map_err(protocol)? {
            Incoming::Event(Event::Ready { version }, _) if version == PROTOCOL_VERSION => Ok(()),
            Incoming::Event(Event::Ready { version }, _) => Err(protocol(format!(
                "init speaks protocol {version}, the runtime {PROTOCOL_VERSION}"
            ))),
            Incoming::Event(Event::SetupFailed { step, errno }, _) => Err(Error::setup(
                Step::from_code(step).map_or("an unknown setup step", Step::describe),
                Errno::from_raw(errno),
            )),
            Incoming::Event(other, _) => {
                Err(protocol(format!("unexpected {other:?} before ready")))
            }
            Incoming::Closed => Err(protocol("the sandbox exited during setup".into())),
            Incoming::Empty => continue,
        };
    }
}
