//! What a process run in a sandbox reports: its output streams, how it
//! ended and why ([`ExitReason`] and its precedence), and the [`Signal`]s
//! that can end it. Commands and code contexts both report these.

use std::fmt;
use std::time::Duration;

/// A signal, by its Linux number: `Signal::TERM`, `Signal::KILL`, or any
/// number from 1 to 64 through [`Signal::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(i32);

impl Signal {
    pub const HUP: Signal = Signal(libc::SIGHUP);
    pub const INT: Signal = Signal(libc::SIGINT);
    pub const QUIT: Signal = Signal(libc::SIGQUIT);
    pub const ABRT: Signal = Signal(libc::SIGABRT);
    pub const KILL: Signal = Signal(libc::SIGKILL);
    pub const USR1: Signal = Signal(libc::SIGUSR1);
    pub const SEGV: Signal = Signal(libc::SIGSEGV);
    pub const USR2: Signal = Signal(libc::SIGUSR2);
    pub const PIPE: Signal = Signal(libc::SIGPIPE);
    pub const ALRM: Signal = Signal(libc::SIGALRM);
    pub const TERM: Signal = Signal(libc::SIGTERM);
    pub const CHLD: Signal = Signal(libc::SIGCHLD);
    pub const CONT: Signal = Signal(libc::SIGCONT);
    pub const STOP: Signal = Signal(libc::SIGSTOP);
    pub const TSTP: Signal = Signal(libc::SIGTSTP);
    pub const XCPU: Signal = Signal(libc::SIGXCPU);
    pub const XFSZ: Signal = Signal(libc::SIGXFSZ);
    pub const WINCH: Signal = Signal(libc::SIGWINCH);
    pub const SYS: Signal = Signal(libc::SIGSYS);

    /// The signal numbered `number` (1 to 64), or `None`.
    pub fn new(number: i32) -> Option<Signal> {
        (1..=64).contains(&number).then_some(Signal(number))
    }

    /// Its Linux number.
    pub fn as_raw(self) -> i32 {
        self.0
    }

    /// `SIGTERM`, `SIGKILL`, …, or `SIG<n>` for a number without a name.
    pub fn name(self) -> String {
        const NAMES: [&str; 32] = [
            "", "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV",
            "USR2", "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN",
            "TTOU", "URG", "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
        ];
        match NAMES.get(self.0 as usize) {
            Some(name) if !name.is_empty() => format!("SIG{name}"),
            _ => format!("SIG{}", self.0),
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl PartialEq<i32> for Signal {
    fn eq(&self, other: &i32) -> bool {
        self.0 == *other
    }
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// Why a command ended. When several apply, the first in this order wins
/// (what sandlot knows for certain first, then limits that killed, then
/// limits that did not, then the program's own ending); `code` and
/// `signal` always tell how the process itself ended:
///
/// 1. `SandboxDestroyed` — the sandbox went away (`TimedOut` if the
///    command's own time limit had passed first);
/// 2. `TimedOut` — sandlot killed it at its time limit;
/// 3. `OomKilled` — it died of SIGKILL (or, run through a shell, exited
///    with 137 = 128 + SIGKILL) and the sandbox's cgroup counted an OOM
///    kill while it ran. The count is per sandbox, so a kill of another
///    process of the sandbox at the same moment is attributed too;
/// 4. `OutputLimit` — output past `ExecLimits::max_output_bytes` was
///    discarded (the command itself ran on to its end);
/// 5. `Signaled` — a signal ended it;
/// 6. `Exited` — it exited on its own (any code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    Exited,
    Signaled,
    TimedOut,
    OomKilled,
    OutputLimit,
    SandboxDestroyed,
}

impl ExitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Exited => "exited",
            ExitReason::Signaled => "signaled",
            ExitReason::TimedOut => "timed_out",
            ExitReason::OomKilled => "oom_killed",
            ExitReason::OutputLimit => "output_limit",
            ExitReason::SandboxDestroyed => "sandbox_destroyed",
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a command ended, and what it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandExit {
    pub code: Option<i32>,
    pub signal: Option<Signal>,
    pub reason: ExitReason,
    /// Wall time from spawn request to exit report.
    pub duration: Duration,
    pub cpu_user: Duration,
    pub cpu_system: Duration,
    /// Largest resident set of the command or a child it waited for.
    pub peak_rss_bytes: u64,
    /// Output past the sandbox's `max_output_bytes` was discarded.
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

impl CommandExit {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// User plus system CPU time.
    pub fn cpu_time(&self) -> Duration {
        self.cpu_user + self.cpu_system
    }

    /// The shell convention: the exit code, or 128 + the signal number.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal.as_raw(),
            (None, None) => 128 + libc::SIGKILL,
        }
    }
}

/// One thing that happened to a spawned command. `Exit` is always last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(CommandExit),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_have_numbers_and_names() {
        assert_eq!(Signal::TERM.as_raw(), 15);
        assert_eq!(Signal::KILL.to_string(), "SIGKILL");
        assert_eq!(Signal::new(40).unwrap().to_string(), "SIG40");
        assert_eq!(Signal::new(0), None);
        assert_eq!(Signal::new(65), None);
        assert!(Signal::INT == libc::SIGINT);
    }
}
