//! The control socket to the host: one request per datagram in, one event
//! per datagram out. Anything malformed is dropped here, with every
//! descriptor that came with it, so the loop only sees requests it can serve.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use sandlot_proto::{Request, Spawn, MAX_MESSAGE};

use crate::sys;

/// What one read of the control socket produced.
pub enum Incoming {
    /// A well-formed request. For a spawn, `fds` are its stdio descriptors
    /// (as many as its mask says, in order stdin, stdout, stderr), then its
    /// extra ones in the order of `extra_fds`; for anything else it is
    /// empty.
    Request(Request, Vec<OwnedFd>),
    /// A spawn that cannot be served as sent (truncated, undecodable, wrong
    /// descriptors): answer `SpawnFailed { id, errno: EINVAL }`.
    BadSpawn(u64),
    /// Not a valid request, and no spawn id to answer to: dropped.
    Malformed,
    /// Nothing was queued after all.
    Nothing,
    /// The host closed its end, or the socket failed: nobody to serve.
    HostGone,
}

pub struct Control {
    sock: OwnedFd,
    /// One datagram at a time. Allocated once; pages the kernel never
    /// writes stay untouched and cost no memory.
    buf: Vec<u8>,
}

impl Control {
    pub fn new(sock: OwnedFd) -> Control {
        Control {
            sock,
            buf: vec![0; MAX_MESSAGE],
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Reads one datagram without blocking. Descriptors that are not handed
    /// on in `Incoming::Request` are closed before this returns.
    pub fn receive(&mut self) -> Incoming {
        let got = match sys::recv_with_fds(self.sock.as_fd(), &mut self.buf) {
            Ok(Some(got)) => got,
            Ok(None) => return Incoming::Nothing,
            Err(_) => return Incoming::HostGone,
        };
        // A SEQPACKET read of 0 bytes is either end of file or an empty
        // datagram; only the socket's state tells them apart.
        if got.len == 0 && sys::peer_gone(self.sock.as_fd()) {
            return Incoming::HostGone;
        }
        let bytes = &self.buf[..got.len.min(self.buf.len())];
        if got.truncated {
            return reject(bytes);
        }
        match Request::decode(bytes) {
            Ok(Request::Spawn(spawn)) if !stdio_matches(&spawn, got.fds.len()) => {
                Incoming::BadSpawn(spawn.id)
            }
            Ok(request @ Request::Spawn(_)) => Incoming::Request(request, got.fds),
            // The listening socket a persistent sandbox accepts on.
            Ok(Request::Persist) if got.fds.len() == 1 => {
                Incoming::Request(Request::Persist, got.fds)
            }
            Ok(request) if got.fds.is_empty() => Incoming::Request(request, Vec::new()),
            Ok(_) => Incoming::Malformed,
            Err(_) => reject(bytes),
        }
    }

    /// Sends one encoded event, with a descriptor when given (a terminal's
    /// master end with [`sandlot_proto::Event::SpawnedPty`]), blocking until the kernel
    /// takes it. An error means the host is gone.
    pub fn send(&self, encoded: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        sys::send(self.sock.as_fd(), encoded, fd, true).map(drop)
    }

    /// [`Control::send`] if the kernel takes it now (`Ok(false)`: the
    /// socket is full).
    pub fn try_send(&self, encoded: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<bool> {
        sys::send(self.sock.as_fd(), encoded, fd, false)
    }
}

/// A spawn must carry exactly the descriptors its mask and its extras
/// declare (the decoder already refused a mask with unknown bits).
fn stdio_matches(spawn: &Spawn, fds: usize) -> bool {
    spawn.fd_count() == fds
}

/// A datagram that did not decode: if it starts like a spawn, its id is
/// known and the host is told; anything else is dropped.
fn reject(bytes: &[u8]) -> Incoming {
    match sandlot_proto::spawn_id(bytes) {
        Some(id) => Incoming::BadSpawn(id),
        None => Incoming::Malformed,
    }
}
