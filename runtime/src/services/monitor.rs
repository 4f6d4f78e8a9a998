//! `ResourceMonitor`: samples one sandbox, or every sandbox of a runtime,
//! on a thread of its own at a fixed interval, keeps a bounded history of
//! [`Metrics`] per sandbox, and raises a [`ResourceAlert`] whenever a
//! usage crosses its threshold — once going up (`Exceeded`), once coming
//! back down (`Recovered`), never on every sample in between.
//!
//! Alerts go to the monitor's own receiver and to
//! [`Runtime::resource_events`](crate::Runtime::resource_events). The
//! monitor stops when it is dropped, when its sandbox is gone, or when
//! its runtime shuts down; it never keeps either alive.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::engine::error::{Error, Result};
use crate::engine::lifecycle::{AlertKind, ResourceAlert, ResourceEvent, ResourceKind};
use crate::engine::sandbox::{RuntimeCtx, SandboxShared};
use crate::engine::sync::lock;
use crate::services::metrics::{self, cpu_percent, Metrics};

/// Alerts a monitor keeps for its reader; past it new ones are dropped
/// (they also went to the runtime's resource events).
const ALERT_QUEUE: usize = 1024;

/// Usage, in percent, above which an alert is raised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Of the CPU limit (see [`Metrics::cpu_percent`]). Default 80.
    pub cpu_percent: f64,
    /// Of the memory limit. Default 85.
    pub memory_percent: f64,
    /// Of the writable layer. Default 90.
    pub disk_percent: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            cpu_percent: 80.0,
            memory_percent: 85.0,
            disk_percent: 90.0,
        }
    }
}

/// What a monitor watches: `&sandbox` or `&runtime` convert into it.
#[derive(Clone)]
pub struct MonitorTarget(pub(crate) Target);

#[derive(Clone)]
pub(crate) enum Target {
    Sandbox(Arc<SandboxShared>),
    /// A runtime, held weakly: the monitor must not keep it alive.
    Runtime(Weak<RuntimeCtx>),
}

struct Shared {
    history: Mutex<HashMap<String, VecDeque<Metrics>>>,
    running: AtomicBool,
}

/// Samples one sandbox, or every sandbox of a runtime, on a thread of its
/// own (`sandlot-monitor`) at a fixed interval; keeps the last
/// `history_len` [`Metrics`] per sandbox (each with `cpu_percent` since the
/// monitor's own previous sample); raises a [`ResourceAlert`] when a usage
/// crosses its [`Thresholds`] — once going up (`Exceeded`), once coming
/// back down (`Recovered`). Alerts go to [`ResourceMonitor::alerts`] and to
/// [`Runtime::resource_events`](crate::Runtime::resource_events). It stops when dropped, when its sandbox
/// is gone or when its runtime shuts down, and keeps neither alive.
///
/// ```no_run
/// # use std::time::Duration;
/// # use sandlot::{ResourceMonitor, Runtime, SandboxOptions, Thresholds};
/// # let rt = Runtime::new()?;
/// # let sandbox = rt.create(SandboxOptions::default())?;
/// let monitor = ResourceMonitor::start(&sandbox, Duration::from_secs(1), 60, Thresholds::default())?;
/// for alert in monitor.alerts().iter() {
///     println!("{} {:?} {:?} at {:.0}%", alert.sandbox_id, alert.resource, alert.kind, alert.percent);
/// }
/// # Ok::<(), sandlot::Error>(())
/// ```
pub struct ResourceMonitor {
    shared: Arc<Shared>,
    alerts: Receiver<ResourceAlert>,
    stop: Option<Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl std::fmt::Debug for ResourceMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceMonitor")
            .field("running", &self.is_running())
            .finish()
    }
}

impl ResourceMonitor {
    /// Samples `target` now and every `interval`, keeping the last
    /// `history_len` samples per sandbox.
    pub fn start(
        target: impl Into<MonitorTarget>,
        interval: Duration,
        history_len: usize,
        thresholds: Thresholds,
    ) -> Result<ResourceMonitor> {
        if interval.is_zero() {
            return Err(Error::invalid("interval", "must be above zero"));
        }
        if history_len == 0 {
            return Err(Error::invalid("history_len", "must be at least 1"));
        }
        for (name, value) in [
            ("thresholds.cpu_percent", thresholds.cpu_percent),
            ("thresholds.memory_percent", thresholds.memory_percent),
            ("thresholds.disk_percent", thresholds.disk_percent),
        ] {
            if !value.is_finite() || value <= 0.0 {
                return Err(Error::invalid(
                    "thresholds",
                    format!("{name} is {value}: must be a percentage above 0"),
                ));
            }
        }
        let watched = target.into().0;
        let shared = Arc::new(Shared {
            history: Mutex::new(HashMap::new()),
            running: AtomicBool::new(true),
        });
        let (alerts_tx, alerts) = crossbeam_channel::bounded(ALERT_QUEUE);
        let (stop, stop_rx) = crossbeam_channel::bounded(1);
        let sampler = Sampler {
            watched,
            shared: shared.clone(),
            alerts: alerts_tx,
            thresholds,
            history_len,
            per_sandbox: HashMap::new(),
        };
        let thread = thread::Builder::new()
            .name("sandlot-monitor".into())
            .spawn(move || sampler.run(interval, stop_rx))
            .map_err(|e| Error::io("start the monitor thread", e))?;
        Ok(ResourceMonitor {
            shared,
            alerts,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// This monitor's alerts.
    pub fn alerts(&self) -> &Receiver<ResourceAlert> {
        &self.alerts
    }

    /// The samples kept for a sandbox, oldest first.
    pub fn history(&self, sandbox_id: &str) -> Vec<Metrics> {
        let history = lock(&self.shared.history);
        history
            .get(sandbox_id)
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The newest sample of a sandbox.
    pub fn latest(&self, sandbox_id: &str) -> Option<Metrics> {
        let history = lock(&self.shared.history);
        history.get(sandbox_id).and_then(|h| h.back().cloned())
    }

    /// The sandboxes with samples.
    pub fn sandboxes(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .shared
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    /// False once the thread has stopped (its sandbox died, its runtime
    /// shut down).
    pub fn is_running(&self) -> bool {
        self.shared.running.load(Ordering::SeqCst)
    }
}

impl Drop for ResourceMonitor {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Per-sandbox state of the sampling thread.
struct Tracked {
    /// (when, CPU ns) of the previous sample.
    previous: (Instant, u64),
    /// Above the threshold, by [`ResourceKind`] (cpu, memory, disk).
    above: [bool; 3],
}

struct Sampler {
    watched: Target,
    shared: Arc<Shared>,
    alerts: Sender<ResourceAlert>,
    thresholds: Thresholds,
    history_len: usize,
    per_sandbox: HashMap<String, Tracked>,
}

impl Sampler {
    fn run(mut self, interval: Duration, stop: Receiver<()>) {
        let mut next = Instant::now();
        loop {
            if !self.tick() {
                break;
            }
            next += interval;
            match stop.recv_deadline(next.max(Instant::now())) {
                Err(RecvTimeoutError::Timeout) => {}
                // Dropped (or told to stop).
                Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.shared.running.store(false, Ordering::SeqCst);
    }

    /// One round of samples; false when there is nothing left to watch.
    fn tick(&mut self) -> bool {
        let sandboxes: Vec<Arc<SandboxShared>> = match &self.watched {
            Target::Sandbox(sandbox) => vec![sandbox.clone()],
            Target::Runtime(weak) => {
                let Some(runtime) = weak.upgrade() else {
                    return false;
                };
                if runtime.is_closed() {
                    return false;
                }
                runtime.sandboxes()
            }
        };
        let mut sampled = Vec::with_capacity(sandboxes.len());
        for sandbox in &sandboxes {
            match metrics::sample(sandbox) {
                Ok(sample) => {
                    self.record(sandbox, sample.at, sample.metrics);
                    sampled.push(sandbox.id.clone());
                }
                Err(_) if matches!(self.watched, Target::Sandbox(_)) => return false,
                // Destroyed between the listing and the sample.
                Err(_) => {}
            }
        }
        if let Target::Runtime(_) = self.watched {
            // Forget sandboxes that are gone.
            self.per_sandbox.retain(|id, _| sampled.contains(id));
            let mut history = lock(&self.shared.history);
            history.retain(|id, _| sampled.contains(id));
        }
        true
    }

    fn record(&mut self, sandbox: &SandboxShared, at: Instant, mut metrics: Metrics) {
        let tracked = self
            .per_sandbox
            .entry(sandbox.id.clone())
            .or_insert_with(|| Tracked {
                previous: (sandbox.started, 0),
                above: [false; 3],
            });
        let now = (at, metrics.cpu_usage_ns);
        metrics.cpu_percent = cpu_percent(tracked.previous, now, metrics.cpu_count);
        tracked.previous = now;

        let t = &self.thresholds;
        let usage = [
            (ResourceKind::Cpu, metrics.cpu_percent, t.cpu_percent),
            (
                ResourceKind::Memory,
                metrics.memory_fraction() * 100.0,
                t.memory_percent,
            ),
            (
                ResourceKind::Disk,
                metrics.disk_fraction() * 100.0,
                t.disk_percent,
            ),
        ];
        for (i, (resource, percent, threshold)) in usage.into_iter().enumerate() {
            let above = percent > threshold;
            if above == tracked.above[i] {
                continue;
            }
            tracked.above[i] = above;
            let alert = ResourceAlert {
                sandbox_id: sandbox.id.clone(),
                resource,
                kind: if above {
                    AlertKind::Exceeded
                } else {
                    AlertKind::Recovered
                },
                percent,
                threshold,
                at: metrics.timestamp,
            };
            // The runtime-wide stream first: whoever sees the alert here
            // finds it there too.
            sandbox
                .ctx
                .resource_events
                .publish(ResourceEvent::Alert(alert.clone()));
            let _ = self.alerts.try_send(alert);
        }

        let mut history = lock(&self.shared.history);
        let h = history.entry(sandbox.id.clone()).or_default();
        if h.len() == self.history_len {
            h.pop_front();
        }
        h.push_back(metrics);
    }
}
