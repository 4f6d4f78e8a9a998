//! The events a runtime publishes, and the bus that fans them out.
//!
//! Every queue here is bounded: a subscriber that stops reading misses
//! events (counted, see [`Subscription::missed`]) instead of growing the
//! host's memory; the publisher never waits for a subscriber.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::State;
use crate::engine::sync::lock;

/// Why a transition happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// `create` began building the sandbox.
    Created,
    /// init reported ready.
    Started,
    /// This process took over a sandbox another process made (a persistent
    /// runtime's `connect`): the first event it sees of it.
    Adopted,
    /// A command started while the sandbox was idle.
    CommandStarted,
    /// The last command in flight ended.
    Idle,
    Paused,
    Resumed,
    /// The sandbox's deadline passed (it ended, or paused with
    /// `TimeoutAction::Pause`).
    Timeout,
    /// It was idle (no command, file operation, code run or `touch`) for
    /// longer than its idle timeout.
    IdleTimeout,
    /// `stop(grace)` began (→ Stopping) or ended it.
    Stopped,
    /// `kill()` (or the CLI) ended it.
    Killed,
    /// init exited on its own (crashed or was killed from outside).
    InitDied,
    /// init was killed by the OOM killer (the sandbox's memory cgroup
    /// counted OOM kills when init died).
    Oom,
    /// The runtime shut down (dropped or `shutdown()`).
    HostShutdown,
    /// Setup failed; the message names the step and errno.
    SetupFailed(String),
    /// Rejected before anything was built (quota, resources).
    Rejected(String),
    /// The runtime failed while serving the sandbox (a bug in sandlot);
    /// the message says where. The sandbox was destroyed, the others live.
    Internal(String),
}

impl Reason {
    /// The name of an end reason as tombstones and the CLI write it
    /// (`sandlot_proto::monitor::reason`); transitions that end nothing
    /// have their own names.
    pub fn as_str(&self) -> &'static str {
        use sandlot_proto::monitor::reason as end;
        match self {
            Reason::Created => "created",
            Reason::Started => "started",
            Reason::Adopted => "adopted",
            Reason::CommandStarted => "command_started",
            Reason::Idle => "idle",
            Reason::Paused => "paused",
            Reason::Resumed => "resumed",
            Reason::Timeout => end::TIMEOUT,
            Reason::IdleTimeout => end::IDLE,
            Reason::Stopped => end::STOPPED,
            Reason::Killed => end::KILLED,
            Reason::InitDied => end::INIT_DIED,
            Reason::Oom => end::OOM,
            Reason::HostShutdown => end::HOST_SHUTDOWN,
            Reason::SetupFailed(_) => end::START_FAILED,
            Reason::Rejected(_) => "rejected",
            Reason::Internal(_) => end::INTERNAL,
        }
    }

    /// The message of reasons that carry one, else empty.
    pub fn detail(&self) -> &str {
        match self {
            Reason::SetupFailed(m) | Reason::Rejected(m) | Reason::Internal(m) => m,
            _ => "",
        }
    }

    /// The reason [`Reason::as_str`] and [`Reason::detail`] describe;
    /// unknown names (a newer writer) read as `Internal`.
    pub fn from_parts(name: &str, detail: &str) -> Reason {
        use sandlot_proto::monitor::reason as end;
        match name {
            end::TIMEOUT => Reason::Timeout,
            end::IDLE => Reason::IdleTimeout,
            end::STOPPED => Reason::Stopped,
            end::KILLED => Reason::Killed,
            end::INIT_DIED => Reason::InitDied,
            end::OOM => Reason::Oom,
            end::HOST_SHUTDOWN => Reason::HostShutdown,
            end::START_FAILED => Reason::SetupFailed(detail.to_string()),
            "rejected" => Reason::Rejected(detail.to_string()),
            end::INTERNAL => Reason::Internal(detail.to_string()),
            other => Reason::Internal(format!("{other}: {detail}")),
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.detail() {
            "" => f.write_str(self.as_str()),
            detail => write!(f, "{}: {detail}", self.as_str()),
        }
    }
}

/// One state transition of one sandbox.
#[derive(Debug, Clone)]
pub struct LifecycleEvent {
    pub sandbox_id: String,
    pub from: State,
    pub to: State,
    pub reason: Reason,
    pub at: SystemTime,
}

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

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    Cpu,
    Memory,
    Disk,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertKind {
    /// Usage went above the threshold.
    Exceeded,
    /// Usage went back to or below it.
    Recovered,
}

/// A usage crossed a threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceAlert {
    pub sandbox_id: String,
    pub resource: ResourceKind,
    pub kind: AlertKind,
    /// The usage in percent at the sample that crossed.
    pub percent: f64,
    pub threshold: f64,
    pub at: SystemTime,
}

/// Events one subscriber may have waiting before it misses new ones.
pub const SUBSCRIPTION_CAPACITY: usize = 4096;

struct Subscriber<T> {
    tx: Sender<T>,
    missed: Arc<AtomicU64>,
}

/// Fan-out of events to every subscriber. Dropped receivers are pruned on
/// the next publish; a full one misses the event.
pub(crate) struct EventBus<T> {
    subscribers: Mutex<Vec<Subscriber<T>>>,
}

impl<T> Default for EventBus<T> {
    fn default() -> Self {
        EventBus {
            subscribers: Mutex::new(Vec::new()),
        }
    }
}

impl<T: Clone> EventBus<T> {
    pub fn subscribe(&self) -> Subscription<T> {
        let (tx, rx) = crossbeam_channel::bounded(SUBSCRIPTION_CAPACITY);
        let missed = Arc::new(AtomicU64::new(0));
        lock(&self.subscribers).push(Subscriber {
            tx,
            missed: missed.clone(),
        });
        Subscription { rx, missed }
    }

    pub fn publish(&self, event: T) {
        let mut subs = lock(&self.subscribers);
        subs.retain(|sub| match sub.tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                sub.missed.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
    }
}

/// The receiving end of [`Runtime::events`](crate::Runtime::events) and
/// [`Runtime::resource_events`](crate::Runtime::resource_events): a
/// crossbeam [`Receiver`] (every receive method is available through it)
/// that holds at most [`SUBSCRIPTION_CAPACITY`] unread events. When it is
/// full, new events are not queued but counted in [`Subscription::missed`]:
/// a subscriber that stops reading costs bounded memory.
pub struct Subscription<T> {
    rx: Receiver<T>,
    missed: Arc<AtomicU64>,
}

impl<T> Subscription<T> {
    /// Events dropped because this subscription was full.
    pub fn missed(&self) -> u64 {
        self.missed.load(Ordering::Relaxed)
    }
}

impl<T> Deref for Subscription<T> {
    type Target = Receiver<T>;

    fn deref(&self) -> &Receiver<T> {
        &self.rx
    }
}

impl<T> std::fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("queued", &self.rx.len())
            .field("missed", &self.missed())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_subscriber_misses_events_and_the_publisher_never_waits() {
        let bus = EventBus::default();
        let slow = bus.subscribe();
        let fast = bus.subscribe();
        for i in 0..SUBSCRIPTION_CAPACITY + 10 {
            bus.publish(i);
            assert_eq!(fast.try_recv(), Ok(i));
        }
        assert_eq!(slow.len(), SUBSCRIPTION_CAPACITY);
        assert_eq!(slow.missed(), 10);
        assert_eq!(fast.missed(), 0);
        assert_eq!(slow.recv(), Ok(0));
    }

    #[test]
    fn end_reasons_round_trip_through_their_names() {
        let reasons = [
            Reason::Timeout,
            Reason::IdleTimeout,
            Reason::Stopped,
            Reason::Killed,
            Reason::InitDied,
            Reason::Oom,
            Reason::HostShutdown,
            Reason::SetupFailed("mount /proc: EPERM".into()),
            Reason::Internal("io thread".into()),
        ];
        for reason in reasons {
            assert_eq!(Reason::from_parts(reason.as_str(), reason.detail()), reason);
        }
        assert_eq!(
            Reason::from_parts("eaten_by_a_grue", "x"),
            Reason::Internal("eaten_by_a_grue: x".into())
        );
    }

    #[test]
    fn dropped_subscribers_are_pruned() {
        let bus = EventBus::default();
        drop(bus.subscribe());
        let kept = bus.subscribe();
        bus.publish(1);
        assert_eq!(lock(&bus.subscribers).len(), 1);
        assert_eq!(kept.recv(), Ok(1));
    }
}
