use std::sync::Mutex;
use std::time::SystemTime;

use crossbeam_channel::{Receiver, Sender};

use super::State;

/// Why a transition happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// `create` began building the sandbox.
    Created,
    /// init reported ready.
    Started,
    /// A command started while the sandbox was idle.
    CommandStarted,
    /// The last command in flight ended.
    Idle,
    Paused,
    Resumed,
    /// The sandbox's deadline passed.
    Timeout,
    /// `kill()` (or the CLI) ended it.
    Killed,
    /// init exited on its own (crashed or was killed from outside).
    InitDied,
    /// The runtime shut down (dropped or `shutdown()`).
    HostShutdown,
    /// Setup failed; the message names the step and errno.
    SetupFailed(String),
    /// Rejected before anything was built (quota, resources).
    Rejected(String),
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

/// Fan-out of events (lifecycle events, resource events) to every
/// subscriber. Receivers that were dropped are pruned on the next send.
pub(crate) struct EventBus<T = LifecycleEvent> {
    subscribers: Mutex<Vec<Sender<T>>>,
}

impl<T> Default for EventBus<T> {
    fn default() -> Self {
        EventBus {
            subscribers: Mutex::new(Vec::new()),
        }
    }
}

impl<T: Clone> EventBus<T> {
    pub fn subscribe(&self) -> Receiver<T> {
        let (tx, rx) = crossbeam_channel::unbounded();
        self.subscribers.lock().unwrap().push(tx);
        rx
    }

    pub fn publish(&self, event: T) {
        let mut subs = self.subscribers.lock().unwrap();
        subs.retain(|tx| tx.send(event.clone()).is_ok());
    }
}
