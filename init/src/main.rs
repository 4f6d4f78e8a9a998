//! `sandlot-init`: PID 1 of every sandlot sandbox.
//!
//! It starts commands when the host asks (over the control socket at fd 3,
//! with their stdio passed as descriptors), reports when they end, forwards
//! signals, and reaps every orphan. It never sees user output. When the host
//! goes away it kills everything and exits, which ends the sandbox.
//!
//! How the runtime starts it: executed from a sealed memfd as PID 1 of a new
//! pid namespace (inside user, mount, net, uts, ipc and cgroup namespaces),
//! with fd 3 the connected `SOCK_SEQPACKET` control socket, fds 0-2
//! `/dev/null` and nothing else open. Outside a pid namespace (tests) it
//! works the same, as a child subreaper. The protocol is `sandlot_proto`.

#![deny(unsafe_code)]

mod control;
mod reaper;
mod spawn;
#[allow(unsafe_code)]
mod sys;

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::ExitCode;

use sandlot_proto::{Event, Request, CONTROL_FD, PROTOCOL_VERSION};

use control::{Control, Incoming};
use reaper::{Commands, Scope};

fn main() -> ExitCode {
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
        control: Control::new(sock),
        sigfd,
        commands: Commands::default(),
        scope,
        reset_signals,
    };
    let ready = Event::Ready {
        version: PROTOCOL_VERSION,
    };
    if init.control.send(&ready).is_ok() {
        // 6. Serve until the host is gone.
        init.serve();
    }

    // 7. Nobody to report to: end every process, then ourselves.
    reaper::kill_all_and_reap(scope);
    Ok(())
}

struct Init {
    control: Control,
    sigfd: OwnedFd,
    commands: Commands,
    scope: Scope,
    reset_signals: u64,
}

/// The host is gone (end of file, or a send or receive failed).
struct HostGone;

impl Init {
    fn serve(&mut self) {
        let mut fds = [
            libc::pollfd {
                fd: self.control.fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.sigfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        loop {
            if sys::poll(&mut fds, -1).is_err() {
                return;
            }
            if fds[1].revents != 0 && self.on_sigchld().is_err() {
                return;
            }
            let control = fds[0].revents;
            if control & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                return;
            }
            if control & libc::POLLIN != 0 && self.on_control().is_err() {
                return;
            }
        }
    }

    /// Children ended: collect them all, report the commands among them.
    fn on_sigchld(&mut self) -> Result<(), HostGone> {
        let _ = sys::drain_signalfd(self.sigfd.as_fd());
        let control = &self.control;
        reaper::reap(&mut self.commands, |event| control.send(event)).map_err(|_| HostGone)
    }

    fn on_control(&mut self) -> Result<(), HostGone> {
        match self.control.receive() {
            Incoming::Request(Request::Spawn(spawn), fds) => {
                let id = spawn.id;
                let event = self.spawn(spawn, fds);
                if let Event::Spawned { pid, .. } = event {
                    self.commands.insert(id, pid);
                }
                self.send(&event)
            }
            Incoming::Request(Request::Signal { id, signal, group }, _) => {
                // Unknown or finished commands are ignored: the host may race
                // a command's exit.
                if let Some(pid) = self.commands.pid_of(id) {
                    let _ = sys::kill(if group { -pid } else { pid }, signal);
                }
                Ok(())
            }
            Incoming::Request(Request::SignalAll { signal }, _) => {
                reaper::signal_all(self.scope, signal);
                Ok(())
            }
            // Go is the runtime child's sync point, not for init.
            Incoming::Request(Request::Go | Request::Persist, _)
            | Incoming::Malformed
            | Incoming::Nothing => Ok(()),
            Incoming::BadSpawn(id) => self.send(&Event::SpawnFailed {
                id,
                errno: libc::EINVAL,
            }),
            Incoming::HostGone => Err(HostGone),
        }
    }

    /// Starts one command; the answer for the host. Its stdio `fds` are
    /// closed when this returns.
    fn spawn(&self, spawn: sandlot_proto::Spawn, fds: Vec<OwnedFd>) -> Event {
        let id = spawn.id;
        // Two commands with one id would make every later event ambiguous.
        if self.commands.pid_of(id).is_some() {
            return Event::SpawnFailed {
                id,
                errno: libc::EEXIST,
            };
        }
        let mask = spawn.stdio;
        let started = spawn::Plan::new(spawn)
            .and_then(|plan| spawn::start(&plan, mask, fds, self.reset_signals));
        match started {
            Ok(pid) => Event::Spawned { id, pid },
            Err(errno) => Event::SpawnFailed { id, errno },
        }
    }

    fn send(&self, event: &Event) -> Result<(), HostGone> {
        self.control.send(event).map_err(|_| HostGone)
    }
}
