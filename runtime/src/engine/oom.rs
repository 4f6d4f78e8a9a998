//! OOM kills inside a sandbox: noticed by the io thread as they happen,
//! published as [`ResourceEvent::Oom`] on the runtime's resource events,
//! and attributed to the command they ended (`ExitReason::OomKilled`).
//!
//! The count the host has seen (`seen`) only grows; whoever first reads a
//! higher count from the cgroup — the io thread on a notification, a
//! command exit, `metrics()` — publishes the difference, so every kill is
//! reported once.

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::engine::error::Result;
use crate::engine::lifecycle::{EventBus, OomEvent, ResourceEvent};
use crate::kernel::cgroups::{OomNotifier, SandboxCgroup};

/// After a v1 notification that found no new kill, look again after these
/// pauses (the notification precedes the kill).
const RECHECKS: [Duration; 3] = [
    Duration::from_millis(5),
    Duration::from_millis(50),
    Duration::from_millis(500),
];

/// What to do after a notification or a recheck.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Nothing: a kill was published, or there is nothing to wait for.
    Done,
    /// Look again after this pause (attempt number).
    Recheck(u32, Duration),
    /// The cgroup is gone (destroy is under way): stop watching.
    Gone,
}

/// One sandbox's OOM notifier and the count the host has seen.
pub(crate) struct OomWatch {
    notifier: OomNotifier,
    seen: AtomicU64,
    sandbox_id: String,
    bus: Arc<EventBus<ResourceEvent>>,
}

impl OomWatch {
    pub fn new(
        cgroup: &SandboxCgroup,
        sandbox_id: &str,
        bus: Arc<EventBus<ResourceEvent>>,
    ) -> Result<OomWatch> {
        let notifier = cgroup.oom_notifier()?;
        let seen = notifier.kills().unwrap_or(0);
        Ok(OomWatch {
            notifier,
            seen: AtomicU64::new(seen),
            sandbox_id: sandbox_id.to_string(),
            bus,
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

    /// Reads the count from the cgroup, publishes kills not yet reported,
    /// and returns the count.
    pub fn kills_now(&self) -> u64 {
        match self.notifier.kills() {
            Ok(count) => {
                self.observe(count);
                count
            }
            Err(_) => self.seen(),
        }
    }

    /// Records `count` as read from the cgroup; publishes what is new.
    /// Returns whether it was new.
    pub fn observe(&self, count: u64) -> bool {
        let before = self.seen.fetch_max(count, Ordering::Relaxed);
        if count <= before {
            return false;
        }
        self.bus.publish(ResourceEvent::Oom(OomEvent {
            sandbox_id: self.sandbox_id.clone(),
            kills: count - before,
            total: count,
            at: SystemTime::now(),
        }));
        true
    }

    /// The notifier fired (`attempt` is `None`) or a recheck came due.
    pub fn check(&self, attempt: Option<u32>) -> Next {
        let Ok(count) = self.notifier.kills() else {
            return Next::Gone;
        };
        if self.observe(count) {
            return Next::Done;
        }
        // v2 notifies of every change of memory.events, most of them no
        // kill; only v1's notification announces a kill still to come.
        let (_, priority) = self.wait_fd();
        let next = attempt.map_or(0, |a| a + 1);
        match RECHECKS.get(next as usize) {
            Some(pause) if !priority => Next::Recheck(next, *pause),
            _ => Next::Done,
        }
    }
}
