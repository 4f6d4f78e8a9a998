//! The one thread ("sandlot-reaper") that owns every sandbox deadline and
//! runs teardowns that must not happen on the reactor thread.
//!
//! Deadlines live in a min-heap; moving a deadline pushes a new entry and
//! the stale one is recognised when it comes due (the sandbox's current
//! deadline is later), so `set_timeout` never searches the heap.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Weak};
use std::thread;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::engine::error::{Error, Result};
use crate::engine::lifecycle::Reason;
use crate::engine::sandbox::SandboxShared;

pub(crate) enum ReaperJob {
    /// The sandbox's deadline is now `at`.
    Deadline(Weak<SandboxShared>, Instant),
    /// Tear the sandbox down (init died, noticed by the reactor).
    Destroy(Arc<SandboxShared>, Reason),
    Stop,
}

pub(crate) struct Reaper {
    jobs: Sender<ReaperJob>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Reaper {
    pub fn start() -> Result<Reaper> {
        let (jobs, rx) = crossbeam_channel::unbounded();
        let thread = thread::Builder::new()
            .name("sandlot-reaper".into())
            .spawn(move || run(rx))
            .map_err(|e| Error::io("start the reaper thread", e))?;
        Ok(Reaper {
            jobs,
            thread: Some(thread),
        })
    }

    pub fn sender(&self) -> Sender<ReaperJob> {
        self.jobs.clone()
    }

    pub fn stop(&mut self) {
        let _ = self.jobs.send(ReaperJob::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(jobs: Receiver<ReaperJob>) {
    let mut heap: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut waiting: HashMap<u64, Weak<SandboxShared>> = HashMap::new();
    let mut seq = 0u64;
    loop {
        let job = match heap.peek() {
            None => jobs.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(Reverse((at, _))) => jobs.recv_deadline(*at),
        };
        match job {
            Ok(ReaperJob::Deadline(sandbox, at)) => {
                seq += 1;
                heap.push(Reverse((at, seq)));
                waiting.insert(seq, sandbox);
            }
            Ok(ReaperJob::Destroy(sandbox, reason)) => {
                let _ = sandbox.destroy(reason);
            }
            Ok(ReaperJob::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        while let Some(Reverse((at, key))) = heap.peek().copied() {
            if at > now {
                break;
            }
            heap.pop();
            let Some(sandbox) = waiting.remove(&key).and_then(|w| w.upgrade()) else {
                continue;
            };
            // A later deadline was set since this entry was pushed.
            if sandbox.deadline_due(now) {
                let _ = sandbox.destroy(Reason::Timeout);
            }
        }
    }
}
