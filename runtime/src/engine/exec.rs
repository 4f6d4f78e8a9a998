//! The processes a sandbox runs on request ("executions": commands today,
//! code contexts and terminals are the same underneath), as the host
//! tracks them from the spawn request to the exit report: who asked, the
//! output pipes the io thread reads, the deadline, and how the exit is
//! reported ([`ExitReason`] and its precedence).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Sender;
use nix::errno::Errno;
use sandlot_proto::{Status, Usage};

use crate::engine::lifecycle::{CommandExit, ExitReason, ProcessEvent, Signal};
use crate::engine::output::EventSender;
use crate::engine::reactor::Token;

/// init's answer to a spawn request that started the process.
#[derive(Debug)]
pub(crate) struct Spawned {
    /// Its pid inside the sandbox.
    pub pid: i32,
    /// For a process on a terminal: a copy of the terminal's master end for
    /// input and resizing (the io thread reads output from its own copy).
    pub master: Option<OwnedFd>,
}

/// The host's record of one process in flight.
pub(crate) struct Execution {
    pub argv: Vec<String>,
    pub user: String,
    pub pid: Option<i32>,
    pub started: Instant,
    pub started_at: SystemTime,
    pub events: EventSender,
    /// init's answer to the spawn request, for the caller waiting on it.
    pub spawned: Option<Sender<Result<Spawned, Errno>>>,
    /// The process asked for a terminal: the output budget of its master
    /// end, which the io thread starts reading when init hands it over.
    pub terminal: Option<u64>,
    /// Output pipes the io thread still reads.
    pub outputs: Vec<Token>,
    pub timed_out: bool,
    /// When its time limit passes (moved by a pause with the pause clock),
    /// and the io thread's timer for it.
    pub deadline: Option<Instant>,
    pub timer: Option<u64>,
    /// Set by the io thread when stdout / stderr output was discarded.
    pub truncated: [Arc<AtomicBool>; 2],
    /// The sandbox's OOM kill count when the process started.
    pub oom_before: u64,
    /// init reported the exit; the `Exit` event waits for the outputs.
    pub exited: Option<(Status, Usage)>,
    /// What it is to the sandbox: activity or not, counted, listed.
    pub role: Role,
}

/// What an execution is to its sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A command: activity while it runs, counted against
    /// `max_concurrent`, listed.
    Command,
    /// A template's start command: listed among the commands, but a server
    /// that lives as long as its sandbox is neither activity (it would keep
    /// the idle timeout from ever passing) nor counted.
    Service,
    /// sandlot's own helper (a code context's interpreter, waiting between
    /// cells): neither activity, counted nor listed.
    Helper,
}

/// The executions of one sandbox.
#[derive(Default)]
pub(crate) struct ExecTable {
    pub next_id: u64,
    pub running: HashMap<u64, Execution>,
    /// What makes the sandbox Active: executions that are commands, and
    /// activity guards (a code cell running).
    pub active: usize,
}

impl ExecTable {
    /// Executions that are commands (not start commands, not helpers such
    /// as a code context's interpreter).
    pub fn commands(&self) -> usize {
        self.running
            .values()
            .filter(|e| e.role == Role::Command)
            .count()
    }
}

/// The largest peak RSS a report may claim (1 TiB): init's numbers come
/// from inside the sandbox and are not trusted to fit anything.
const MAX_RSS_KIB: u64 = 1 << 30;

fn micros(value: u64) -> Duration {
    Duration::from_micros(value)
}

impl Execution {
    fn truncated(&self) -> (bool, bool) {
        (
            self.truncated[0].load(Ordering::Relaxed),
            self.truncated[1].load(Ordering::Relaxed),
        )
    }

    /// The final event for an exit report from init. `oom_kills` reads the
    /// sandbox's OOM count now; it is only called for a SIGKILL death.
    pub fn exit_event(
        &self,
        status: Status,
        usage: Usage,
        oom_kills: impl FnOnce() -> u64,
    ) -> CommandExit {
        let (code, signal, ended) = match status {
            Status::Exited(code) => (Some(code), None, ExitReason::Exited),
            Status::Signaled { signal, .. } => (None, Signal::new(signal), ExitReason::Signaled),
        };
        let (stdout_truncated, stderr_truncated) = self.truncated();
        let killed = signal == Some(Signal::KILL) || code == Some(128 + libc::SIGKILL);
        // The order is ExitReason's documented precedence.
        let reason = if self.timed_out {
            ExitReason::TimedOut
        } else if killed && oom_kills() > self.oom_before {
            ExitReason::OomKilled
        } else if stdout_truncated || stderr_truncated {
            ExitReason::OutputLimit
        } else {
            ended
        };
        CommandExit {
            code,
            signal,
            reason,
            duration: self.started.elapsed(),
            cpu_user: micros(usage.user_micros),
            cpu_system: micros(usage.system_micros),
            peak_rss_bytes: usage.max_rss_kib.min(MAX_RSS_KIB) * 1024,
            stdout_truncated,
            stderr_truncated,
        }
    }

    /// The final event when the sandbox went away underneath the process.
    pub fn destroyed_event(&self) -> CommandExit {
        let (stdout_truncated, stderr_truncated) = self.truncated();
        CommandExit {
            code: None,
            signal: Some(Signal::KILL),
            reason: if self.timed_out {
                ExitReason::TimedOut
            } else {
                ExitReason::SandboxDestroyed
            },
            duration: self.started.elapsed(),
            cpu_user: Duration::ZERO,
            cpu_system: Duration::ZERO,
            peak_rss_bytes: 0,
            stdout_truncated,
            stderr_truncated,
        }
    }

    /// Sends the final event.
    pub fn send_exit(&self, exit: CommandExit) {
        self.events.send_exit(ProcessEvent::Exit(exit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::output::event_queue;

    fn execution() -> Execution {
        let (events, _rx) = event_queue(|_| {});
        Execution {
            argv: vec!["true".into()],
            user: "root".into(),
            pid: Some(2),
            started: Instant::now(),
            started_at: SystemTime::now(),
            events,
            spawned: None,
            terminal: None,
            outputs: Vec::new(),
            timed_out: false,
            deadline: None,
            timer: None,
            truncated: Default::default(),
            oom_before: 0,
            exited: None,
            role: Role::Command,
        }
    }

    #[test]
    fn reported_numbers_cannot_overflow() {
        let usage = Usage {
            user_micros: u64::MAX,
            system_micros: u64::MAX,
            max_rss_kib: u64::MAX,
        };
        let exit = execution().exit_event(Status::Exited(0), usage, || 0);
        assert_eq!(exit.peak_rss_bytes, MAX_RSS_KIB * 1024);
        assert_eq!(exit.cpu_user, Duration::from_micros(u64::MAX));
    }

    #[test]
    fn precedence_of_reasons() {
        let mut e = execution();
        let killed = Status::Signaled {
            signal: libc::SIGKILL,
            core_dumped: false,
        };
        assert_eq!(
            e.exit_event(killed, Usage::default(), || 1).reason,
            ExitReason::OomKilled
        );
        assert_eq!(
            e.exit_event(killed, Usage::default(), || 0).reason,
            ExitReason::Signaled
        );
        e.timed_out = true;
        assert_eq!(
            e.exit_event(killed, Usage::default(), || 1).reason,
            ExitReason::TimedOut
        );
        assert_eq!(e.destroyed_event().reason, ExitReason::TimedOut);
    }
}
