//! `sandbox.health()`: four checks, each reported, and a verdict.
//!
//! | check | passes when |
//! |---|---|
//! | alive | the sandbox is in a live state and init runs |
//! | responsive | init answers a trivial command (`:` through the template's shell) within 5 s — any answer, even "no such program", shows init serving requests |
//! | filesystem | the sandbox's root reads host-side through its root fd (openat2 confined to the root, then getdents) |
//! | resources | memory, disk and processes are each below 95% of their limits (CPU is not: a busy CPU is work, not ill health) |
//!
//! The verdict: **Unhealthy** if not alive, or init did not answer;
//! **Degraded** if alive and answering but paused, at its command limit,
//! unreadable, or near a limit; **Healthy** otherwise.

use std::ffi::CStr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::error::Error;
use crate::engine::lifecycle::State;
use crate::engine::sandbox::SandboxShared;
use crate::services::commands::{self, Cmd, RunOptions};
use crate::services::metrics::{self, Metrics};
use crate::sys::resolve::open_in_root;

/// How long init gets to answer.
pub const RESPONSIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Usage at or above this fraction of a limit fails the resources check.
pub const RESOURCE_LIMIT_FRACTION: f64 = 0.95;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStatus {
    Healthy,
    Degraded,
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub passed: bool,
    /// What was seen, or why it failed.
    pub detail: String,
    pub took: Duration,
}

/// The four checks and the verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub status: HealthStatus,
    pub alive: HealthCheck,
    pub responsive: HealthCheck,
    pub filesystem: HealthCheck,
    pub resources: HealthCheck,
    /// The sample the resources check used, when there was one.
    pub metrics: Option<Metrics>,
}

fn timed(f: impl FnOnce() -> (bool, String)) -> HealthCheck {
    let start = Instant::now();
    let (passed, detail) = f();
    HealthCheck {
        passed,
        detail,
        took: start.elapsed(),
    }
}

fn skipped() -> HealthCheck {
    HealthCheck {
        passed: false,
        detail: "not checked: the sandbox is not alive".into(),
        took: Duration::ZERO,
    }
}

/// Why init did not answer, when that is no sign of ill health.
enum Unanswered {
    /// Paused or at its command limit: by design.
    Expected,
    Failed,
}

/// Runs four checks and gives a verdict (the docs of
/// [`Sandbox::health`](crate::Sandbox::health) say which).
pub(crate) fn check(sandbox: &Arc<SandboxShared>) -> Health {
    Checker(sandbox.clone()).health()
}

struct Checker(Arc<SandboxShared>);

impl Checker {
    /// Runs four checks and gives a verdict:
    ///
    /// - alive: the sandbox is in a live state and init runs;
    /// - responsive: init answers a trivial command (`:` through the
    ///   template's shell) within [`RESPONSIVE_TIMEOUT`] — any answer, even
    ///   "no such program", shows init serving requests;
    /// - filesystem: the sandbox's root reads host-side through its root
    ///   fd;
    /// - resources: memory, disk and processes are each below
    ///   [`RESOURCE_LIMIT_FRACTION`] of their limits (CPU is not checked: a
    ///   busy CPU is work, not ill health).
    ///
    /// **Unhealthy** if not alive or init did not answer; **Degraded** if
    /// paused, at `max_concurrent`, unreadable or near a limit; **Healthy**
    /// otherwise. Takes about the time of one command (1.4 ms median
    /// here); at most 5 s when init is stuck.
    pub fn health(&self) -> Health {
        let alive = timed(|| {
            let state = self.0.state();
            if !state.is_live() {
                (false, format!("state {state}"))
            } else if !self.0.init_alive() {
                (false, "init has exited".into())
            } else {
                (true, format!("state {state}"))
            }
        });
        if !alive.passed {
            return Health {
                status: HealthStatus::Unhealthy,
                alive,
                responsive: skipped(),
                filesystem: skipped(),
                resources: skipped(),
                metrics: None,
            };
        }

        let mut unanswered = Unanswered::Failed;
        let responsive = timed(|| match self.probe() {
            Ok(detail) => (true, detail),
            Err((why, detail)) => {
                unanswered = why;
                (false, detail)
            }
        });
        let filesystem = timed(|| match self.read_root() {
            Ok(()) => (true, "/ is readable".into()),
            Err(e) => (false, e),
        });
        let mut metrics = None;
        let resources = timed(|| match metrics::sample(&self.0) {
            Ok(sample) => {
                let m = sample.metrics;
                let usage = [
                    ("memory", m.memory_fraction()),
                    ("disk", m.disk_fraction()),
                    ("processes", m.processes_fraction()),
                ];
                let detail = usage
                    .iter()
                    .map(|(name, f)| format!("{name} {:.0}%", f * 100.0))
                    .collect::<Vec<_>>()
                    .join(", ");
                let passed = usage.iter().all(|(_, f)| *f < RESOURCE_LIMIT_FRACTION);
                metrics = Some(m);
                (passed, detail)
            }
            Err(e) => (false, e.to_string()),
        });

        let status = if !responsive.passed && matches!(unanswered, Unanswered::Failed) {
            HealthStatus::Unhealthy
        } else if responsive.passed && filesystem.passed && resources.passed {
            HealthStatus::Healthy
        } else {
            HealthStatus::Degraded
        };
        Health {
            status,
            alive,
            responsive,
            filesystem,
            resources,
            metrics,
        }
    }

    /// A trivial command, on a thread of its own so that a stuck init
    /// costs at most [`RESPONSIVE_TIMEOUT`] (the thread ends when the
    /// command does, or with the sandbox).
    fn probe(&self) -> std::result::Result<String, (Unanswered, String)> {
        let sandbox = self.0.clone();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let started = std::thread::Builder::new()
            .name("sandlot-health".into())
            .spawn(move || {
                let options = RunOptions::default().timeout(RESPONSIVE_TIMEOUT);
                let _ = tx.send(commands::run(&sandbox, Cmd::Shell(":".into()), options));
            });
        if let Err(e) = started {
            return Err((Unanswered::Failed, format!("cannot start a probe: {e}")));
        }
        match rx.recv_timeout(RESPONSIVE_TIMEOUT) {
            Ok(Ok(result)) => Ok(format!("a command ran ({})", result.exit.reason)),
            Ok(Err(e @ (Error::CommandNotFound { .. } | Error::Spawn { .. }))) => {
                Ok(format!("init answered: {e}"))
            }
            Ok(Err(
                e @ Error::SandboxNotRunning {
                    state: State::Paused,
                    ..
                },
            ))
            | Ok(Err(e @ Error::QuotaExceeded { .. })) => {
                Err((Unanswered::Expected, e.to_string()))
            }
            Ok(Err(e)) => Err((Unanswered::Failed, e.to_string())),
            Err(_) => Err((
                Unanswered::Failed,
                format!("no answer within {RESPONSIVE_TIMEOUT:?}"),
            )),
        }
    }

    fn read_root(&self) -> std::result::Result<(), String> {
        let live = self
            .0
            .live()
            .ok_or_else(|| "the sandbox is gone".to_string())?;
        const DOT: &CStr = c".";
        let fd = open_in_root(
            live.root.as_fd(),
            DOT,
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )
        .map_err(|e| format!("open /: {e}"))?;
        let mut dir = nix::dir::Dir::from_fd(fd).map_err(|e| format!("open /: {e}"))?;
        let mut entries = dir.iter();
        match entries.next() {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(format!("read /: {e}")),
            None => Err("read /: no entries".into()),
        }
    }
}
