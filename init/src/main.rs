//! `sandlot-init`: PID 1 of every sandlot sandbox.
//!
//! It starts commands when the host asks (over the control socket at fd 3,
//! with their stdio passed as descriptors), reports when they end, forwards
//! signals, and reaps every orphan. It never forwards user output: the host
//! reads the pipes it made (in a persistent sandbox, init reads and
//! discards the output of commands whose connection is gone). When the host
//! goes away it kills everything and exits, which ends the sandbox — unless
//! the host made the sandbox persistent (`Request::Persist`): then init
//! outlives it, accepts further control connections on a listening socket,
//! and serves each with command ids of its own.
//!
//! How the runtime starts it: executed from a sealed memfd as PID 1 of a new
//! pid namespace (inside user, mount, net, uts, ipc and cgroup namespaces),
//! with fd 3 the connected `SOCK_SEQPACKET` control socket, fds 0-2
//! `/dev/null` and nothing else open. Outside a pid namespace (tests) it
//! works the same, as a child subreaper. The protocol is `sandlot_proto`.

#![deny(unsafe_code)]

mod control;
mod monitor;
mod reaper;
mod spawn;
#[allow(unsafe_code)]
mod sys;

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::process::ExitCode;

use sandlot_proto::{Event, Request, CONTROL_FD, PROTOCOL_VERSION};

use control::{Control, Incoming};
use reaper::{Commands, ConnKey, Scope, PRIMARY};

fn main() -> ExitCode {
    // The same binary watches persistent sandboxes from outside.
    if monitor::invoked() {
        return monitor::main();
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err((step, e)) => {
            // stderr is /dev/null in a sandbox; this is for people running
            // init by hand.
            let _ = writeln!(io::stderr(), "sandlot-init: {step}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Startup, then the loop; returns when the host is gone and every process
/// has been collected.
fn run() -> Result<(), (&'static str, io::Error)> {
    // 1. The control socket is ours, blocking, and no command may inherit it
    //    (nor anything else we were given by mistake).
    let sock = sys::adopt_control_socket(CONTROL_FD).map_err(|e| ("control socket at fd 3", e))?;
    if sys::cloexec_from(CONTROL_FD as u32).is_err() {
        // close_range is not allowed here; fd 3 is the one that matters.
        sys::set_cloexec(sock.as_fd()).map_err(|e| ("FD_CLOEXEC on fd 3", e))?;
    }
    sys::set_blocking(sock.as_fd()).map_err(|e| ("clear O_NONBLOCK on fd 3", e))?;

    // 2. Nothing inside may ptrace us or read our memory and descriptors,
    //    nor open /proc/1/exe (the runc CVE-2019-5736 class; SECURITY.md
    //    S16); `ps` shows who we are.
    sys::set_not_dumpable().map_err(|e| ("PR_SET_DUMPABLE", e))?;
    let _ = sys::set_name(c"sandlot-init");

    // 3. Outside a pid namespace (tests), orphans must still come back to us.
    let scope = Scope::of_pid(sys::getpid());
    if let Scope::Descendants = scope {
        sys::set_child_subreaper().map_err(|e| ("PR_SET_CHILD_SUBREAPER", e))?;
    }

    // 4. SIGCHLD through a signalfd: blocked, so it is never lost between
    //    poll calls and never interrupts anything.
    let mut sigchld = sys::SigSet::empty();
    sigchld
        .add(libc::SIGCHLD)
        .map_err(|e| ("sigaddset SIGCHLD", e))?;
    sys::block_signals(&sigchld).map_err(|e| ("block SIGCHLD", e))?;
    let sigfd = sys::signalfd(&sigchld).map_err(|e| ("signalfd", e))?;
    // Recorded once: commands get these back to SIG_DFL before exec.
    let reset_signals = sys::non_default_dispositions();

    // 5. Ready.
    let mut init = Init {
        conns: vec![Conn::new(PRIMARY, Control::new(sock))],
        listener: None,
        draining: Vec::new(),
        next_key: PRIMARY + 1,
        sigfd,
        commands: Commands::default(),
        scope,
        reset_signals,
    };
    let ready = Event::Ready {
        version: PROTOCOL_VERSION,
    };
    if init.conns[0].control.send(&ready.encode(), None).is_ok() {
        // 6. Serve until the host is gone (a persistent sandbox: until it is
        //    killed).
        init.serve();
    }

    // 7. Nobody to report to: end every process, then ourselves.
    reaper::kill_all_and_reap(scope);
    Ok(())
}

/// Most control connections a persistent sandbox keeps at once; more are
/// closed as they are accepted.
const MAX_CONNECTIONS: usize = 64;

/// Events a persistent sandbox queues for a connection whose socket is
/// full; a connection that falls further behind is closed (its host stopped
/// reading).
const MAX_QUEUED_EVENTS: usize = 4096;

struct Init {
    /// The creator's connection first (until it closes), then those
    /// accepted on `listener`.
    conns: Vec<Conn>,
    /// Set by `Request::Persist`: the sandbox outlives its creator.
    listener: Option<OwnedFd>,
    /// Output pipes of commands whose connection is gone, read and
    /// discarded until their end.
    draining: Vec<OwnedFd>,
    next_key: ConnKey,
    sigfd: OwnedFd,
    commands: Commands,
    scope: Scope,
    reset_signals: u64,
}

/// One control connection.
struct Conn {
    key: ConnKey,
    control: Control,
    /// Events its socket had no room for, oldest first (persistent
    /// sandboxes only: a tied sandbox blocks on its one host instead).
    queued: VecDeque<Queued>,
}

/// An encoded event waiting for room, with the descriptor it carries.
struct Queued {
    encoded: Vec<u8>,
    fd: Option<OwnedFd>,
}

impl Conn {
    fn new(key: ConnKey, control: Control) -> Conn {
        Conn {
            key,
            control,
            queued: VecDeque::new(),
        }
    }

    /// Sends what is queued, in order, as far as the socket takes it.
    fn flush(&mut self) -> io::Result<()> {
        while let Some(event) = self.queued.front() {
            let fd = event.fd.as_ref().map(|fd| fd.as_fd());
            if !self.control.try_send(&event.encoded, fd)? {
                return Ok(());
            }
            self.queued.pop_front();
        }
        Ok(())
    }
}

/// The host is gone (end of file, or a send or receive failed).
struct HostGone;

impl Init {
    fn persistent(&self) -> bool {
        self.listener.is_some()
    }

    fn conn_mut(&mut self, key: ConnKey) -> Option<&mut Conn> {
        self.conns.iter_mut().find(|c| c.key == key)
    }

    /// Ends one connection. For a sandbox tied to its creator that is the
    /// end of everything (`HostGone`); a persistent one only forgets the
    /// connection (its commands run on, reaped silently).
    fn close(&mut self, key: ConnKey) -> Result<(), HostGone> {
        if !self.persistent() {
            return Err(HostGone);
        }
        self.conns.retain(|c| c.key != key);
        // Nobody reads its commands' output any more: we do, so that they
        // neither die of a closed pipe nor block on a full one.
        for fd in self.commands.take_kept(key) {
            if sys::set_nonblocking(fd.as_fd()).is_ok() {
                self.draining.push(fd);
            }
        }
        Ok(())
    }

    /// Reads and discards what is waiting in a drained pipe (a bounded
    /// amount per wake-up); `false` once it is at its end.
    fn drain(fd: BorrowedFd<'_>) -> bool {
        let mut buf = [0u8; 16 * 1024];
        for _ in 0..16 {
            match sys::read(fd, &mut buf) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) => return e.kind() == io::ErrorKind::WouldBlock,
            }
        }
        true
    }

    fn serve(&mut self) {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut polled: Vec<ConnKey> = Vec::new();
        let pollfd = |fd: BorrowedFd<'_>, events: libc::c_short| libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        };
        loop {
            fds.clear();
            polled.clear();
            fds.push(pollfd(self.sigfd.as_fd(), libc::POLLIN));
            if let Some(listener) = &self.listener {
                fds.push(pollfd(listener.as_fd(), libc::POLLIN));
            }
            let first_drain = fds.len();
            for fd in &self.draining {
                fds.push(pollfd(fd.as_fd(), libc::POLLIN));
            }
            let first_conn = fds.len();
            for conn in &self.conns {
                let out = if conn.queued.is_empty() {
                    0
                } else {
                    libc::POLLOUT
                };
                fds.push(pollfd(conn.control.fd(), libc::POLLIN | out));
                polled.push(conn.key);
            }
            if sys::poll(&mut fds, -1).is_err() {
                return;
            }
            if fds[0].revents != 0 && self.on_sigchld().is_err() {
                return;
            }
            if first_drain == 2 && fds[1].revents != 0 {
                self.accept_all();
            }
            // Drained pipes at their end close (their pollfds are rebuilt
            // on the next turn).
            let mut at = 0;
            self.draining.retain(|fd| {
                let revents = fds[first_drain + at].revents;
                at += 1;
                revents == 0 || Init::drain(fd.as_fd())
            });
            for (i, &key) in polled.iter().enumerate() {
                let revents = fds[first_conn + i].revents;
                if revents != 0 && self.on_connection(key, revents).is_err() {
                    return;
                }
            }
        }
    }

    /// What a connection's poll revents ask for.
    fn on_connection(&mut self, key: ConnKey, revents: libc::c_short) -> Result<(), HostGone> {
        let hung_up = revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0;
        if !self.persistent() {
            // Tied to the creator: its hang-up ends everything at once.
            if hung_up {
                return Err(HostGone);
            }
            return if revents & libc::POLLIN != 0 {
                self.on_control(key)
            } else {
                Ok(())
            };
        }
        if revents & libc::POLLOUT != 0 {
            let flushed = self.conn_mut(key).map_or(Ok(()), Conn::flush);
            if flushed.is_err() {
                return self.close(key);
            }
        }
        if revents & libc::POLLIN != 0 {
            // What a closing host sent last is still read; its end of file
            // then closes the connection.
            if self.on_control(key).is_err() {
                return self.close(key);
            }
        } else if hung_up {
            return self.close(key);
        }
        Ok(())
    }

    /// Takes every pending connection (persistent sandboxes).
    fn accept_all(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        while let Ok(Some(sock)) = sys::accept(listener.as_fd()) {
            if self.conns.len() >= MAX_CONNECTIONS {
                continue; // dropped: closed at once
            }
            let key = self.next_key;
            self.next_key = self.next_key.wrapping_add(1).max(PRIMARY + 1);
            self.conns.push(Conn::new(key, Control::new(sock)));
        }
    }

    /// Children ended: collect them all, report the commands among them.
    fn on_sigchld(&mut self) -> Result<(), HostGone> {
        let _ = sys::drain_signalfd(self.sigfd.as_fd());
        let mut commands = std::mem::take(&mut self.commands);
        let reaped = reaper::reap(&mut commands, |conn, event| {
            self.deliver(conn, event)
                .map_err(|_| io::Error::from_raw_os_error(libc::EPIPE))
        });
        self.commands = commands;
        reaped.map_err(|_| HostGone)
    }

    fn on_control(&mut self, key: ConnKey) -> Result<(), HostGone> {
        let Some(conn) = self.conn_mut(key) else {
            return Ok(());
        };
        match conn.control.receive() {
            Incoming::Request(Request::Spawn(spawn), mut fds) => {
                let id = spawn.id;
                // The kept read ends come last (the count was checked).
                let kept = fds.split_off(fds.len() - spawn.stdio.kept());
                let (event, pty_master) = self.spawn(key, spawn, fds);
                if let Event::Spawned { pid, .. } | Event::SpawnedPty { pid, .. } = event {
                    self.commands.insert(key, id, pid, kept);
                }
                // A terminal's master end goes to the host with the answer;
                // our copy closes once it is sent (or its connection is).
                self.deliver_with(key, &event, pty_master)
            }
            Incoming::Request(Request::Signal { id, signal, group }, _) => {
                // Unknown or finished commands are ignored: the host may race
                // a command's exit.
                if let Some(pid) = self.commands.pid_of(key, id) {
                    let _ = sys::kill(if group { -pid } else { pid }, signal);
                }
                Ok(())
            }
            Incoming::Request(Request::SignalAll { signal }, _) => {
                reaper::signal_all(self.scope, signal);
                Ok(())
            }
            Incoming::Request(Request::Persist, mut fds) => {
                let errno = match fds.pop() {
                    Some(listener) if key == PRIMARY => self.persist(listener),
                    _ => libc::EINVAL,
                };
                self.deliver(key, &Event::Persisted { errno })
            }
            // Go is the runtime child's sync point, not for init.
            Incoming::Request(Request::Go, _) | Incoming::Malformed | Incoming::Nothing => Ok(()),
            Incoming::BadSpawn(id) => self.deliver(
                key,
                &Event::SpawnFailed {
                    id,
                    errno: libc::EINVAL,
                },
            ),
            Incoming::HostGone => Err(HostGone),
        }
    }

    /// `Request::Persist`: outlive the creator and accept connections on
    /// `listener`. Returns 0 or the errno of what failed (nothing changed
    /// then).
    fn persist(&mut self, listener: OwnedFd) -> i32 {
        if self.persistent() {
            return libc::EALREADY;
        }
        if !sys::is_listening_seqpacket(listener.as_fd()) {
            return libc::ENOTSOCK;
        }
        if let Err(e) = sys::set_nonblocking(listener.as_fd()) {
            return e.raw_os_error().unwrap_or(libc::EIO);
        }
        if let Err(e) = sys::clear_parent_death_signal() {
            return e.raw_os_error().unwrap_or(libc::EIO);
        }
        self.listener = Some(listener);
        0
    }

    /// Starts one command; the answer for the host, and for a command on a
    /// terminal the terminal's master end to send with it. Its stdio `fds`
    /// are closed when this returns.
    fn spawn(
        &self,
        conn: ConnKey,
        spawn: sandlot_proto::Spawn,
        fds: Vec<OwnedFd>,
    ) -> (Event, Option<OwnedFd>) {
        let id = spawn.id;
        // Two commands with one id would make every later event ambiguous.
        if self.commands.pid_of(conn, id).is_some() {
            let errno = libc::EEXIST;
            return (Event::SpawnFailed { id, errno }, None);
        }
        let mask = spawn.stdio;
        let started = spawn::Plan::new(spawn)
            .and_then(|plan| spawn::start(&plan, mask, fds, self.reset_signals));
        match started {
            Ok(spawn::Started {
                pid,
                pty_master: Some(master),
            }) => (Event::SpawnedPty { id, pid }, Some(master)),
            Ok(spawn::Started { pid, .. }) => (Event::Spawned { id, pid }, None),
            Err(errno) => (Event::SpawnFailed { id, errno }, None),
        }
    }

    /// Sends an event to connection `conn`. Tied to its creator, the
    /// sandbox blocks until the host takes it (an error: the host is gone).
    /// A persistent one never waits on one host for the others: what the
    /// socket cannot take now is queued, a connection too far behind or
    /// gone is closed, and an event for a closed connection is dropped.
    fn deliver(&mut self, conn: ConnKey, event: &Event) -> Result<(), HostGone> {
        self.deliver_with(conn, event, None)
    }

    /// [`Init::deliver`] with a descriptor attached (`SCM_RIGHTS`), queued
    /// with its event when the socket is full.
    fn deliver_with(
        &mut self,
        conn: ConnKey,
        event: &Event,
        fd: Option<OwnedFd>,
    ) -> Result<(), HostGone> {
        let persistent = self.persistent();
        let Some(c) = self.conn_mut(conn) else {
            return if persistent { Ok(()) } else { Err(HostGone) };
        };
        let encoded = event.encode();
        if !persistent {
            return c
                .control
                .send(&encoded, fd.as_ref().map(|fd| fd.as_fd()))
                .map_err(|_| HostGone);
        }
        let sent = if c.queued.is_empty() {
            c.control
                .try_send(&encoded, fd.as_ref().map(|fd| fd.as_fd()))
        } else {
            Ok(false)
        };
        match sent {
            Ok(true) => Ok(()),
            Ok(false) if c.queued.len() < MAX_QUEUED_EVENTS => {
                c.queued.push_back(Queued { encoded, fd });
                Ok(())
            }
            _ => self.close(conn),
        }
    }
}
