//! What the host keeps about a sandbox's resources beside what the kernel
//! counts: the limits it was created with, its command limits, when it was
//! last used, the baseline of `metrics()`'s CPU percentage, the pause clock
//! and the OOM watch. One per sandbox, inside `SandboxShared`; every field
//! has its own small lock (all leaves in the sandbox's lock order).

use std::fs::File;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use crate::engine::oom::OomWatch;
use crate::engine::options::SandboxOptions;
use crate::engine::reactor::Token;
use crate::kernel::limits::{ExecLimits, Limits};

pub(crate) struct ResourceState {
    pub limits: Limits,
    pub exec: ExecLimits,
    /// The lifetime clock stops while paused.
    pub pause_clock: bool,
    /// For uptime.
    pub started: Instant,
    last_activity: Mutex<SystemTime>,
    /// `metrics()`'s previous sample: (when, CPU ns).
    pub(crate) cpu_baseline: Mutex<(Instant, u64)>,
    /// When the current pause began.
    pub(crate) paused_at: Mutex<Option<Instant>>,
    /// The OOM watch and its reactor registration, until destroy.
    oom: Mutex<Option<(Arc<OomWatch>, Token)>>,
    /// `/proc/<init>/net/dev`, opened on the first `metrics()`; closed by
    /// destroy (it holds a reference to the network namespace).
    pub(crate) net_dev: Mutex<Option<File>>,
}

impl ResourceState {
    pub fn new(options: &SandboxOptions) -> ResourceState {
        let now = Instant::now();
        ResourceState {
            limits: options.limits.clone(),
            exec: options.exec_limits,
            pause_clock: options.pause_clock,
            started: now,
            last_activity: Mutex::new(SystemTime::now()),
            cpu_baseline: Mutex::new((now, 0)),
            paused_at: Mutex::new(None),
            oom: Mutex::new(None),
            net_dev: Mutex::new(None),
        }
    }

    /// A command started or ended.
    pub fn touch(&self) {
        *self.last_activity.lock().unwrap() = SystemTime::now();
    }

    pub fn last_activity(&self) -> SystemTime {
        *self.last_activity.lock().unwrap()
    }

    pub(crate) fn set_oom(&self, watch: Arc<OomWatch>, token: Token) {
        *self.oom.lock().unwrap() = Some((watch, token));
    }

    pub(crate) fn oom(&self) -> Option<Arc<OomWatch>> {
        self.oom.lock().unwrap().as_ref().map(|(w, _)| w.clone())
    }

    pub(crate) fn take_oom(&self) -> Option<(Arc<OomWatch>, Token)> {
        self.oom.lock().unwrap().take()
    }
}

impl crate::engine::sandbox::SandboxShared {
    /// Destroy: stop watching for OOM kills and close what refers to the
    /// sandbox's namespaces.
    pub(crate) fn release_resources(&self) {
        self.unwatch_oom();
        *self.resources.net_dev.lock().unwrap() = None;
    }
}
