//! OOM kills inside a sandbox: noticed by the reactor as they happen,
//! published as [`ResourceEvent::Oom`] on [`Runtime::resource_events`], and
//! attributed to the command they ended (`ExitReason::OomKilled`).
//!
//! The count the host has seen (`seen`) only grows; whoever first reads a
//! higher count from the cgroup — the reactor on a notification, a command
//! exit, `metrics()` — publishes the difference, so every kill is reported
//! once.

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::api::runtime::Runtime;
use crate::engine::error::{Error, Result};
use crate::engine::reactor::Reactor;
use crate::engine::sandbox::SandboxShared;
use crate::kernel::cgroups::{OomNotifier, SandboxCgroup};
use crate::services::monitor::ResourceAlert;

/// Something a sandbox's resources did.
#[derive(Debug, Clone, PartialEq)]
pub enum ResourceEvent {
    /// The kernel's OOM killer killed processes in the sandbox (its memory
    /// limit was reached).
    Oom(OomEvent),
    /// A [`ResourceMonitor`](crate::ResourceMonitor) saw usage cross a
    /// threshold.
    Alert(ResourceAlert),
}

impl ResourceEvent {
    pub fn sandbox_id(&self) -> &str {
        match self {
            ResourceEvent::Oom(e) => &e.sandbox_id,
            ResourceEvent::Alert(a) => &a.sandbox_id,
        }
    }
}

/// OOM kills in one sandbox since the last report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomEvent {
    pub sandbox_id: String,
    /// Processes killed since the previous event.
    pub kills: u64,
    /// Processes killed since the sandbox started.
    pub total: u64,
    pub at: SystemTime,
}

/// After a v1 notification that found no new kill, look again after these
/// pauses (the notification precedes the kill).
const RECHECKS: [Duration; 3] = [
    Duration::from_millis(5),
    Duration::from_millis(50),
    Duration::from_millis(500),
];

/// One sandbox's OOM notifier and the count the host has seen.
#[derive(Debug)]
pub(crate) struct OomWatch {
    notifier: OomNotifier,
    seen: AtomicU64,
}

impl OomWatch {
    pub fn new(cgroup: &SandboxCgroup) -> Result<OomWatch> {
        let notifier = cgroup.oom_notifier()?;
        let seen = notifier.kills().unwrap_or(0);
        Ok(OomWatch {
            notifier,
            seen: AtomicU64::new(seen),
        })
    }

    pub fn wait_fd(&self) -> (BorrowedFd<'_>, bool) {
        self.notifier.wait_fd()
    }

    pub fn acknowledge(&self) {
        self.notifier.acknowledge()
    }

    /// The count the host has seen (no syscall).
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }
}

impl SandboxShared {
    /// Registers the sandbox's OOM notifier with the reactor. Called once,
    /// before the sandbox is live; undone by [`SandboxShared::unwatch_oom`].
    pub(crate) fn watch_oom(self: &Arc<Self>, cgroup: &SandboxCgroup) -> Result<()> {
        let watch = Arc::new(OomWatch::new(cgroup)?);
        let token = self
            .ctx
            .reactor
            .watch_oom(self, watch.clone())
            .map_err(|e| Error::setup("watch for OOM kills", e))?;
        self.resources.set_oom(watch, token);
        Ok(())
    }

    pub(crate) fn unwatch_oom(&self) {
        if let Some((_, token)) = self.resources.take_oom() {
            self.ctx.reactor.unwatch_oom(token);
        }
    }

    /// OOM kills the host has seen so far (no syscall).
    pub(crate) fn oom_seen(&self) -> u64 {
        self.resources.oom().map_or(0, |w| w.seen())
    }

    /// Reads the OOM count from the cgroup, publishes an event for kills
    /// not yet reported, and returns the count.
    pub(crate) fn oom_kills_now(&self) -> u64 {
        let Some(watch) = self.resources.oom() else {
            return 0;
        };
        match watch.notifier.kills() {
            Ok(count) => {
                self.observe_oom(&watch, count);
                count
            }
            Err(_) => watch.seen(),
        }
    }

    /// Records `count` as read from the cgroup; publishes what is new.
    /// Returns whether it was new.
    pub(crate) fn observe_oom_count(&self, count: u64) -> bool {
        self.resources
            .oom()
            .is_some_and(|watch| self.observe_oom(&watch, count))
    }

    fn observe_oom(&self, watch: &OomWatch, count: u64) -> bool {
        let before = watch.seen.fetch_max(count, Ordering::Relaxed);
        if count <= before {
            return false;
        }
        self.ctx
            .resource_events
            .publish(ResourceEvent::Oom(OomEvent {
                sandbox_id: self.id.clone(),
                kills: count - before,
                total: count,
                at: SystemTime::now(),
            }));
        true
    }

    /// Reactor: the OOM notifier fired (`attempt` is `None`), or a recheck
    /// came due.
    pub(crate) fn check_oom(self: &Arc<Self>, reactor: &Reactor, attempt: Option<u32>) {
        let Some(watch) = self.resources.oom() else {
            return;
        };
        let count = match watch.notifier.kills() {
            Ok(count) => count,
            Err(_) => {
                // The cgroup is gone (destroy is under way).
                self.unwatch_oom();
                return;
            }
        };
        if self.observe_oom(&watch, count) {
            return;
        }
        // v2 notifies of every change of memory.events, most of them no
        // kill; only v1's notification announces a kill still to come.
        let (_, priority) = watch.wait_fd();
        let next = attempt.map_or(0, |a| a + 1);
        if !priority {
            if let Some(pause) = RECHECKS.get(next as usize) {
                reactor.add_oom_recheck(Instant::now() + *pause, Arc::downgrade(self), next);
            }
        }
    }
}

impl Runtime {
    /// Every OOM kill in every sandbox of this runtime, and every alert of
    /// every [`ResourceMonitor`](crate::ResourceMonitor) of it, from now on.
    pub fn resource_events(&self) -> crossbeam_channel::Receiver<ResourceEvent> {
        self.ctx().resource_events.subscribe()
    }
}
