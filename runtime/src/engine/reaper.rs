//! Who ends sandboxes on the runtime's behalf: the one thread that owns
//! every deadline ("sandlot-reaper"), and a small pool of teardown threads
//! ("sandlot-teardown-N") that do the slow part of ending a sandbox (kill,
//! reap, rmdir), so that one slow teardown never delays another
//! sandbox's deadline, and the io thread never waits for one.
//!
//! Deadlines live in a min-heap keyed by sandbox: moving a deadline pushes
//! a new entry and the stale one is recognised when it comes due; when
//! stale entries outnumber live ones the heap is rebuilt, so its size stays
//! within twice the number of sandboxes whatever callers do.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Mutex, Weak};
use std::thread;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::engine::error::{Error, Result};
use crate::engine::sync::lock;

/// Something with a deadline: a sandbox.
pub(crate) trait Expiring: Send + Sync {
    /// Called when the deadline registered last comes due: end it if it
    /// is still due at `now` (not moved, clock not stopped), without
    /// blocking (hand the teardown to [`Teardowns`]).
    fn expire(&self, now: Instant);
}

pub(crate) enum ReaperJob {
    /// The sandbox's deadline is now `at`.
    Deadline(Weak<dyn Expiring>, Instant),
    Stop,
}

pub(crate) struct Reaper {
    jobs: Sender<ReaperJob>,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
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
            thread: Mutex::new(Some(thread)),
        })
    }

    /// (Re)sets a sandbox's deadline.
    pub fn deadline(&self, sandbox: Weak<dyn Expiring>, at: Instant) {
        let _ = self.jobs.send(ReaperJob::Deadline(sandbox, at));
    }

    pub fn stop(&self) {
        let _ = self.jobs.send(ReaperJob::Stop);
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.stop();
    }
}

fn key_of(sandbox: &Weak<dyn Expiring>) -> usize {
    sandbox.as_ptr() as *const () as usize
}

fn run(jobs: Receiver<ReaperJob>) {
    let mut heap: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
    // Each sandbox's current deadline.
    let mut current: HashMap<usize, (Instant, Weak<dyn Expiring>)> = HashMap::new();
    loop {
        let job = match heap.peek() {
            None => jobs.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(Reverse((at, _))) => jobs.recv_deadline(*at),
        };
        match job {
            Ok(ReaperJob::Deadline(sandbox, at)) => {
                let key = key_of(&sandbox);
                current.insert(key, (at, sandbox));
                heap.push(Reverse((at, key)));
                if heap.len() > 2 * current.len() + 64 {
                    heap = current
                        .iter()
                        .map(|(key, (at, _))| Reverse((*at, *key)))
                        .collect();
                }
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
            // A later deadline was set since this entry was pushed.
            if current
                .get(&key)
                .is_none_or(|(current_at, _)| *current_at != at)
            {
                continue;
            }
            let Some((_, sandbox)) = current.remove(&key) else {
                continue;
            };
            if let Some(sandbox) = sandbox.upgrade() {
                sandbox.expire(now);
            }
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A few threads that run teardowns (and other slow work the io thread and
/// the reaper must not wait for), in the order queued.
pub(crate) struct Teardowns {
    jobs: Mutex<Option<Sender<Job>>>,
    threads: Mutex<Vec<thread::JoinHandle<()>>>,
}

/// Threads of the teardown pool: two teardowns may each wait on a slow
/// kernel (a frozen task, an rmdir retry) while later ones still run.
const TEARDOWN_THREADS: usize = 2;

impl Teardowns {
    pub fn start() -> Result<Teardowns> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let mut threads = Vec::new();
        for n in 0..TEARDOWN_THREADS {
            let rx = rx.clone();
            let thread = thread::Builder::new()
                .name(format!("sandlot-teardown-{n}"))
                .spawn(move || {
                    for job in rx {
                        // A panicking job must not take the pool with it.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                })
                .map_err(|e| Error::io("start a teardown thread", e))?;
            threads.push(thread);
        }
        Ok(Teardowns {
            jobs: Mutex::new(Some(tx)),
            threads: Mutex::new(threads),
        })
    }

    /// Queues `job`; runs it on the calling thread once the pool stopped.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) {
        let sender = lock(&self.jobs).clone();
        match sender {
            Some(tx) => {
                if let Err(e) = tx.send(Box::new(job)) {
                    (e.into_inner())();
                }
            }
            None => job(),
        }
    }

    /// Lets the queued jobs finish, then stops the threads.
    pub fn stop(&self) {
        lock(&self.jobs).take();
        let threads = std::mem::take(&mut *lock(&self.threads));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl Drop for Teardowns {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    struct Counter(AtomicUsize, Sender<()>);

    impl Expiring for Counter {
        fn expire(&self, _now: Instant) {
            self.0.fetch_add(1, Ordering::SeqCst);
            let _ = self.1.send(());
        }
    }

    #[test]
    fn a_moved_deadline_fires_once_at_its_new_time() {
        let reaper = Reaper::start().unwrap();
        let (tx, fired) = crossbeam_channel::unbounded();
        let sandbox = Arc::new(Counter(AtomicUsize::new(0), tx));
        let dyn_sandbox: Arc<dyn Expiring> = sandbox.clone();
        let weak = Arc::downgrade(&dyn_sandbox);
        let now = Instant::now();
        // Moved later before it came due: the first entry is stale.
        reaper.deadline(weak.clone(), now + Duration::from_millis(300));
        reaper.deadline(weak.clone(), now + Duration::from_secs(3600));
        assert!(fired.recv_timeout(Duration::from_millis(600)).is_err());
        // Moved into the past: fires.
        reaper.deadline(weak, now);
        fired.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(sandbox.0.load(Ordering::SeqCst), 1);
        reaper.stop();
    }

    #[test]
    fn teardowns_run_after_stop_on_the_caller() {
        let pool = Teardowns::start().unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let t = tx.clone();
        pool.run(move || t.send(1).unwrap());
        pool.stop();
        pool.run(move || tx.send(2).unwrap());
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![1, 2]);
    }
}
