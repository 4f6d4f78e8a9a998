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

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd, AsRawFd, OwnedFd};

    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

    use super::*;

    fn open(path: &std::ffi::CStr, flags: nix::fcntl::OFlag) -> OwnedFd {
        let flags = flags | nix::fcntl::OFlag::O_CLOEXEC;
        nix::fcntl::open(path, flags, nix::sys::stat::Mode::empty()).expect("open")
    }

    /// Descriptors of this process open on `path`.
    fn open_on(path: &std::path::Path) -> usize {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter(|entry| std::fs::read_link(entry.path()).is_ok_and(|target| target == path))
            .count()
    }

    #[test]
    fn only_a_pty_master_with_spawned_pty_is_kept() {
        let spawned_pty = Event::SpawnedPty { id: 1, pid: 2 };
        let master = open(
            c"/dev/ptmx",
            nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY,
        );
        let null = open(c"/dev/null", nix::fcntl::OFlag::O_RDONLY);
        let root = open(c"/", nix::fcntl::OFlag::O_RDONLY);
        assert!(accept_descriptor(&spawned_pty, Some(master.try_clone().unwrap())).is_some());
        assert!(accept_descriptor(&spawned_pty, Some(null)).is_none());
        assert!(accept_descriptor(&spawned_pty, Some(root)).is_none());
        assert!(accept_descriptor(&spawned_pty, None).is_none());
        // A master with any other event is closed.
        let spawned = Event::Spawned { id: 1, pid: 2 };
        assert!(accept_descriptor(&spawned, Some(master)).is_none());
    }

    #[test]
    fn an_event_carrying_descriptors_installs_at_most_one() {
        let (host, init) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let event = Event::Spawned { id: 7, pid: 9 }.encode();
        // A file nothing else in this process opens (tests run in parallel).
        let path = std::env::temp_dir().join(format!("sandlot-control-{}", std::process::id()));
        std::fs::write(&path, b"").unwrap();
        let file = |_| std::fs::File::open(&path).map(OwnedFd::from).unwrap();
        let [a, b, c]: [OwnedFd; 3] = [0, 1, 2].map(file);
        let fds = [a.as_fd(), b.as_fd(), c.as_fd()];
        fd::send_with_fds(init.as_fd(), &event, &fds, false).unwrap();
        drop((a, b, c));
        let mut buf = [0u8; 64];
        let received = recv(host.as_fd(), &mut buf, false);
        let left = open_on(&path);
        std::fs::remove_file(&path).unwrap();
        match received.unwrap() {
            Incoming::Event(Event::Spawned { id: 7, pid: 9 }, None) => {}
            _ => panic!("expected Spawned without a descriptor"),
        }
        // The one descriptor room was made for arrived and was closed; the
        // two others were never installed.
        assert_eq!(left, 0, "a descriptor from init stayed open");
        assert!(host.as_raw_fd() >= 0);
    }
}
