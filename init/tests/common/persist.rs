//! Persistent inits: a listening socket to hand over with
//! `Request::Persist`, and clients that connect to it the way another host
//! process does.

use std::ffi::c_int;
use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sandlot_proto::{Event, Request, Spawn, MAX_MESSAGE};

use super::{check, send_with_fds, wait_readable, Init, DEADLINE};

/// A listening SEQPACKET socket bound in a fresh directory (removed on
/// drop).
pub struct Listener {
    pub fd: OwnedFd,
    pub path: PathBuf,
    dir: PathBuf,
}

impl Listener {
    pub fn new(name: &str) -> Listener {
        let dir = std::env::temp_dir().join(format!("sandlot-init-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("make the socket's directory");
        let path = dir.join("control");
        let fd = socket();
        let addr = address(&path);
        // SAFETY: bind reads a sockaddr_un of the given size.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            )
        })
        .expect("bind");
        // SAFETY: listen on a socket we own.
        check(unsafe { libc::listen(fd.as_raw_fd(), 16) }).expect("listen");
        Listener { fd, path, dir }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn socket() -> OwnedFd {
    // SAFETY: socket() only creates a descriptor.
    let fd =
        check(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) })
            .expect("socket");
    // SAFETY: a fresh descriptor nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn address(path: &Path) -> libc::sockaddr_un {
    // SAFETY: sockaddr_un is plain data; all-zeroes is valid.
    let mut addr: libc::sockaddr_un = unsafe { mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_encoded_bytes();
    assert!(bytes.len() < addr.sun_path.len(), "socket path too long");
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    addr
}

impl Init {
    /// Makes this init persistent on `listener` and expects its answer.
    pub fn persist(&self, listener: &Listener) {
        self.send(&Request::Persist, &[listener.fd.as_fd()]);
        assert_eq!(self.event(), Event::Persisted { errno: 0 });
    }

    /// Kills init and what it runs, for a persistent init that no longer
    /// ends with its host: every command first (through `client`), then
    /// init.
    pub fn kill_persistent(&mut self, client: &Client) {
        client.send(
            &Request::SignalAll {
                signal: libc::SIGKILL,
            },
            &[],
        );
        std::thread::sleep(Duration::from_millis(50));
        self.kill();
    }
}

/// Another host process's connection to a persistent init.
pub struct Client {
    sock: OwnedFd,
}

impl Client {
    pub fn connect(path: &Path) -> Client {
        let sock = socket();
        let addr = address(path);
        // SAFETY: connect reads a sockaddr_un of the given size.
        check(unsafe {
            libc::connect(
                sock.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            )
        })
        .expect("connect to the persistent init");
        Client { sock }
    }

    pub fn sock(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    pub fn send(&self, request: &Request, fds: &[BorrowedFd<'_>]) {
        send_with_fds(self.sock(), &request.encode(), fds).expect("send to init");
    }

    pub fn event_within(&self, timeout: Duration) -> Option<Event> {
        if !wait_readable(self.sock(), timeout) {
            return None;
        }
        let mut buf = vec![0u8; MAX_MESSAGE];
        // SAFETY: recv writes at most buf.len() bytes into buf.
        let n = unsafe {
            libc::recv(
                self.sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        assert!(n >= 0, "control socket: {}", io::Error::last_os_error());
        if n == 0 {
            return None;
        }
        Some(Event::decode(&buf[..n as usize]).expect("init sent an undecodable event"))
    }

    pub fn event(&self) -> Event {
        self.event_within(DEADLINE)
            .expect("no event from init within the deadline")
    }

    pub fn expect_quiet(&self) {
        if let Some(event) = self.event_within(Duration::from_millis(200)) {
            panic!("unexpected event {event:?}");
        }
    }

    pub fn spawn(&self, spawn: Spawn, fds: &[BorrowedFd<'_>]) -> i32 {
        let id = spawn.id;
        self.send(&Request::Spawn(spawn), fds);
        match self.event() {
            Event::Spawned { id: got, pid } if got == id => pid,
            other => panic!("expected Spawned for {id}, got {other:?}"),
        }
    }
}

/// Whether the connection's peer (init) closed it.
pub fn closed_by_peer(sock: BorrowedFd<'_>) -> bool {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: poll reads and writes one pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, DEADLINE.as_millis() as c_int) };
    n > 0 && pfd.revents & (libc::POLLHUP | libc::POLLRDHUP) != 0
}
