//! Warm pools: sandboxes created (and optionally warmed with a command)
//! ahead of demand, so that handing one out costs a queue pop and two
//! bookkeeping updates instead of a whole create.
//!
//! A [`Pool`] keeps `warm` sandboxes ready. `refill_threads` background
//! threads ("sandlot-pool") create replacements as sandboxes are taken;
//! [`Pool::acquire`] takes the oldest ready one, checks that it is still
//! alive and not about to expire (a dead or stale one is handed to the
//! refill threads for destruction and the next is tried — never handed
//! out), gives it a fresh deadline and the caller's metadata, and returns.
//! With nothing ready it creates one on the caller's thread (a miss).
//!
//! Pooled sandboxes are ordinary sandboxes of the runtime: they count
//! against `max_sandboxes`, show up in `Runtime::list` (metadata
//! `sandlot.pool` = the pool's name) and die with the runtime. While
//! pooled they live at most `idle_timeout`; the pool never hands out one
//! with less than [`MIN_REMAINING`] of it left.
//!
//! Why not also a pool of bare namespaces or cgroups: see BENCHMARKS.md
//! ("pre-created namespaces and cgroups") — a ready sandbox costs about the
//! same to keep and saves the whole create, where a pre-made cgroup or a
//! pre-cloned child would save at most the 10–15% of a create those steps
//! take.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::api::runtime::Runtime;
use crate::api::sandbox::Sandbox;
use crate::engine::error::{Error, Result};
use crate::engine::options::{validate_metadata, validate_timeout, SandboxOptions};
use crate::services::commands::{Cmd, RunOptions};

/// A pooled sandbox with less lifetime than this left is replaced rather
/// than handed out: the new owner's `set_timeout` could lose the race with
/// the reaper.
pub const MIN_REMAINING: Duration = Duration::from_secs(1);

/// Metadata key every pooled sandbox carries while it waits in its pool.
pub const POOL_METADATA_KEY: &str = "sandlot.pool";

/// How a [`Pool`] creates, keeps and refills its sandboxes.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Name for metadata and thread names (default `"pool"`).
    pub name: String,
    /// What every sandbox is created with. Its `timeout` is the lifetime an
    /// acquired sandbox gets from the moment it is acquired; its metadata
    /// is what an acquired sandbox starts with (plus the acquirer's).
    pub options: SandboxOptions,
    /// Sandboxes kept ready ahead of demand.
    pub warm: usize,
    /// Most sandboxes the pool holds at once, ready and being created
    /// (at least `warm`). Each miss raises the pool's target by one above
    /// `warm`, up to `max`; each hit that leaves more than `warm` ready
    /// lowers it again — a burst grows the pool, a lull shrinks it back.
    pub max: usize,
    /// Background threads creating replacements (at least 1). Creates are
    /// serialised on the runtime's spawner thread, but each also has work
    /// on the creating thread (cgroups, id maps, waiting for init): two
    /// threads overlap those.
    pub refill_threads: usize,
    /// Run in every sandbox before it counts as ready (e.g. `python3 -c
    /// 'import numpy'` to page in an interpreter); a sandbox where it fails
    /// is destroyed, never handed out.
    pub warmup: Option<Cmd>,
    /// Longest a sandbox waits in the pool; older ones are replaced.
    pub idle_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            name: "pool".into(),
            options: SandboxOptions::default(),
            warm: 4,
            max: 8,
            refill_threads: 1,
            warmup: None,
            idle_timeout: Duration::from_secs(600),
        }
    }
}

impl PoolConfig {
    pub fn new(options: SandboxOptions) -> Self {
        PoolConfig {
            options,
            ..PoolConfig::default()
        }
    }
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
    pub fn warm(mut self, warm: usize) -> Self {
        self.warm = warm;
        self.max = self.max.max(warm);
        self
    }
    pub fn max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }
    pub fn refill_threads(mut self, threads: usize) -> Self {
        self.refill_threads = threads;
        self
    }
    pub fn warmup(mut self, cmd: impl Into<Cmd>) -> Self {
        self.warmup = Some(cmd.into());
        self
    }
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    fn validate(&self) -> Result<()> {
        self.options.validate()?;
        validate_timeout(self.idle_timeout)?;
        if self.idle_timeout <= MIN_REMAINING {
            return Err(Error::invalid(
                "idle_timeout",
                format!("must exceed {MIN_REMAINING:?}"),
            ));
        }
        if self.max == 0 || self.max < self.warm {
            return Err(Error::invalid(
                "max",
                format!("must be at least 1 and at least warm ({})", self.warm),
            ));
        }
        if self.refill_threads == 0 {
            return Err(Error::invalid("refill_threads", "must be at least 1"));
        }
        Ok(())
    }
}

/// What an acquired sandbox gets on top of the pool's options.
#[derive(Debug, Clone, Default)]
pub struct Acquire {
    /// Added to (and overriding) the pool options' metadata.
    pub metadata: BTreeMap<String, String>,
    /// The sandbox's lifetime from now (default: the pool options').
    pub timeout: Option<Duration>,
}

impl Acquire {
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// Counters of a pool since it started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolStats {
    /// Sandboxes ready now.
    pub ready: usize,
    /// Being created now.
    pub creating: usize,
    /// Acquires served from the pool.
    pub hits: u64,
    /// Acquires that found nothing ready and created on the caller's thread.
    pub misses: u64,
    /// Pooled sandboxes found dead or stale at acquire and destroyed.
    pub replaced: u64,
    /// Background creates (and warmups) that failed.
    pub refill_failures: u64,
    /// Background creates that succeeded.
    pub refills: u64,
    /// Time of one background create, warmup included: median, p99, max
    /// over the last `LATENCY_WINDOW` (1,024) refills.
    pub refill_median: Duration,
    pub refill_p99: Duration,
    pub refill_max: Duration,
    /// The last refill error, if any.
    pub last_error: Option<String>,
}

/// Refill latencies kept for [`PoolStats`].
pub const LATENCY_WINDOW: usize = 1024;

struct Ready {
    sandbox: Sandbox,
    pooled_at: Instant,
}

#[derive(Default)]
struct State {
    ready: VecDeque<Ready>,
    creating: usize,
    /// Taken from the pool, waiting for a refill thread to destroy them.
    discard: Vec<Sandbox>,
    stats: PoolStats,
    latencies: VecDeque<Duration>,
    /// Raised by misses (see `PoolConfig::max`): the pool aims at
    /// `warm + boost` ready sandboxes.
    boost: usize,
    shut: bool,
}

struct Inner {
    runtime: Runtime,
    config: PoolConfig,
    /// The options pooled sandboxes are created with (pool marker,
    /// idle timeout).
    pooled_options: SandboxOptions,
    state: Mutex<State>,
    /// Refill threads wait here for work (a taken sandbox, a discard,
    /// shutdown).
    work: Condvar,
    /// `wait_ready` waits here for refills.
    filled: Condvar,
}

/// A warm pool of sandboxes, kept created ahead of demand (see
/// ARCHITECTURE.md, "Warm pools").
pub struct Pool {
    inner: Arc<Inner>,
    threads: Mutex<Vec<thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.inner.config.name)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Pool {
    /// Validates `config` and starts the refill threads, which begin
    /// filling the pool at once (see [`Pool::wait_ready`]).
    pub fn new(runtime: &Runtime, config: PoolConfig) -> Result<Pool> {
        config.validate()?;
        let mut pooled_options = config.options.clone();
        pooled_options.timeout = config.idle_timeout;
        pooled_options
            .metadata
            .insert(POOL_METADATA_KEY.into(), config.name.clone());
        let inner = Arc::new(Inner {
            runtime: runtime.clone(),
            pooled_options,
            config,
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            filled: Condvar::new(),
        });
        let pool = Pool {
            inner,
            threads: Mutex::new(Vec::new()),
        };
        for i in 0..pool.inner.config.refill_threads {
            let inner = pool.inner.clone();
            let thread = thread::Builder::new()
                .name(format!("sandlot-pool-{i}"))
                .spawn(move || inner.refill_loop())
                .map_err(|e| Error::io("start a pool refill thread", e));
            match thread {
                Ok(thread) => pool.threads.lock().unwrap().push(thread),
                Err(e) => {
                    pool.shutdown();
                    return Err(e);
                }
            }
        }
        Ok(pool)
    }

    /// A live sandbox: a pooled one when one is ready (a hit), otherwise a
    /// new one created on this thread (a miss).
    pub fn acquire(&self) -> Result<Sandbox> {
        self.acquire_with(Acquire::default())
    }

    /// [`Pool::acquire`] with metadata and a lifetime of the caller's.
    pub fn acquire_with(&self, acquire: Acquire) -> Result<Sandbox> {
        let inner = &self.inner;
        let mut metadata = inner.config.options.metadata.clone();
        metadata.extend(acquire.metadata);
        validate_metadata(&metadata)?;
        let timeout = acquire.timeout.unwrap_or(inner.config.options.timeout);
        validate_timeout(timeout)?;
        while let Some(sandbox) = inner.take_ready()? {
            // Between the checks in take_ready and here the reaper may still
            // end it: a failed set_timeout means exactly that.
            if sandbox.set_timeout(timeout).is_err() || !sandbox.is_alive() {
                inner.discard(sandbox);
                continue;
            }
            sandbox.set_metadata(metadata)?;
            inner.state.lock().unwrap().stats.hits += 1;
            return Ok(sandbox);
        }
        {
            let mut state = inner.state.lock().unwrap();
            state.stats.misses += 1;
            let room = inner.config.max - inner.config.warm;
            state.boost = (state.boost + 1).min(room);
        }
        inner.work.notify_one();
        let mut options = inner.config.options.clone();
        options.metadata = metadata;
        options.timeout = timeout;
        let sandbox = inner.runtime.create(options)?;
        if let Some(cmd) = &inner.config.warmup {
            if let Err(e) = warm(&sandbox, cmd) {
                let _ = sandbox.kill();
                return Err(e);
            }
        }
        Ok(sandbox)
    }

    /// Waits until `warm` sandboxes are ready, or `timeout` passes; true if
    /// they are.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        let mut state = self.inner.state.lock().unwrap();
        loop {
            if state.ready.len() >= self.inner.config.warm {
                return true;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() || state.shut {
                return false;
            }
            state = self.inner.filled.wait_timeout(state, left).unwrap().0;
        }
    }

    /// Counters since the pool started.
    pub fn stats(&self) -> PoolStats {
        let state = self.inner.state.lock().unwrap();
        let mut stats = state.stats.clone();
        stats.ready = state.ready.len();
        stats.creating = state.creating;
        let mut sorted: Vec<Duration> = state.latencies.iter().copied().collect();
        drop(state);
        sorted.sort();
        if let Some(max) = sorted.last() {
            let at = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
            stats.refill_median = at(0.5);
            stats.refill_p99 = at(0.99);
            stats.refill_max = *max;
        }
        stats
    }

    /// Stops refilling and destroys every sandbox the pool holds (acquired
    /// ones belong to their callers and are left alone). Waits for creates
    /// in flight. Idempotent; also runs on drop.
    pub fn shutdown(&self) {
        let inner = &self.inner;
        inner.state.lock().unwrap().shut = true;
        inner.work.notify_all();
        inner.filled.notify_all();
        for thread in self.threads.lock().unwrap().drain(..) {
            let _ = thread.join();
        }
        // The threads are gone: whatever is left is ours to destroy.
        let (ready, discard) = {
            let mut state = inner.state.lock().unwrap();
            (
                std::mem::take(&mut state.ready),
                std::mem::take(&mut state.discard),
            )
        };
        for sandbox in ready.into_iter().map(|r| r.sandbox).chain(discard) {
            let _ = sandbox.kill();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Runs the warmup command; a failure or a non-zero exit is an error.
fn warm(sandbox: &Sandbox, cmd: &Cmd) -> Result<()> {
    let result = sandbox.commands().run(cmd.clone(), RunOptions::default())?;
    if result.success() {
        Ok(())
    } else {
        Err(Error::invalid(
            "warmup",
            format!(
                "{cmd:?} failed with {:?}: {}",
                result.exit,
                result.stderr_str().trim()
            ),
        ))
    }
}

impl Inner {
    /// The oldest usable ready sandbox; unusable ones (dead, or too close
    /// to their pool deadline) go to the discard list.
    fn take_ready(&self) -> Result<Option<Sandbox>> {
        let mut state = self.state.lock().unwrap();
        if state.shut {
            return Err(Error::invalid("pool", "the pool was shut down"));
        }
        let stale_at = SystemTime::now() + MIN_REMAINING;
        while let Some(ready) = state.ready.pop_front() {
            let sandbox = ready.sandbox;
            let fresh = ready.pooled_at.elapsed() + MIN_REMAINING < self.config.idle_timeout
                && sandbox.end_at() > stale_at;
            if fresh && sandbox.is_alive() {
                if state.ready.len() > self.config.warm {
                    state.boost = state.boost.saturating_sub(1);
                }
                drop(state);
                self.work.notify_one();
                return Ok(Some(sandbox));
            }
            state.stats.replaced += 1;
            state.discard.push(sandbox);
        }
        drop(state);
        self.work.notify_one();
        Ok(None)
    }

    fn discard(&self, sandbox: Sandbox) {
        let mut state = self.state.lock().unwrap();
        state.stats.replaced += 1;
        state.discard.push(sandbox);
        drop(state);
        self.work.notify_one();
    }

    /// What a refill thread does next.
    fn next_job(&self) -> Option<Job> {
        let mut state = self.state.lock().unwrap();
        loop {
            if state.shut {
                return None;
            }
            if let Some(sandbox) = state.discard.pop() {
                return Some(Job::Destroy(sandbox));
            }
            // Stale ones are replaced ahead of time, not at acquire.
            if let Some(front) = state.ready.front() {
                if front.pooled_at.elapsed() + MIN_REMAINING >= self.config.idle_timeout
                    || !front.sandbox.is_alive()
                {
                    let sandbox = state.ready.pop_front().expect("front exists").sandbox;
                    state.stats.replaced += 1;
                    return Some(Job::Destroy(sandbox));
                }
            }
            let held = state.ready.len() + state.creating;
            if held < self.config.warm + state.boost && held < self.config.max {
                state.creating += 1;
                return Some(Job::Create);
            }
            // Sleep until woken, but look at the oldest one's age now and
            // then.
            let nap = state.ready.front().map_or(Duration::from_secs(60), |r| {
                (self.config.idle_timeout.saturating_sub(MIN_REMAINING))
                    .saturating_sub(r.pooled_at.elapsed())
                    .max(Duration::from_millis(10))
            });
            state = self.work.wait_timeout(state, nap).unwrap().0;
        }
    }

    fn refill_loop(&self) {
        let mut backoff = Duration::from_millis(10);
        while let Some(job) = self.next_job() {
            match job {
                Job::Destroy(sandbox) => {
                    let _ = sandbox.kill();
                }
                Job::Create => {
                    let started = Instant::now();
                    let result = self
                        .runtime
                        .create(self.pooled_options.clone())
                        .and_then(|sb| match &self.config.warmup {
                            Some(cmd) => match warm(&sb, cmd) {
                                Ok(()) => Ok(sb),
                                Err(e) => {
                                    let _ = sb.kill();
                                    Err(e)
                                }
                            },
                            None => Ok(sb),
                        });
                    let took = started.elapsed();
                    let mut state = self.state.lock().unwrap();
                    state.creating -= 1;
                    match result {
                        Ok(sandbox) => {
                            backoff = Duration::from_millis(10);
                            state.stats.refills += 1;
                            if state.latencies.len() == LATENCY_WINDOW {
                                state.latencies.pop_front();
                            }
                            state.latencies.push_back(took);
                            if state.shut {
                                drop(state);
                                let _ = sandbox.kill();
                                continue;
                            }
                            state.ready.push_back(Ready {
                                sandbox,
                                pooled_at: Instant::now(),
                            });
                            drop(state);
                            self.filled.notify_all();
                        }
                        Err(e) => {
                            state.stats.refill_failures += 1;
                            state.stats.last_error = Some(e.to_string());
                            let shut = state.shut;
                            drop(state);
                            if shut || matches!(e, Error::RuntimeShutDown) {
                                return;
                            }
                            // A template gone or a quota reached: do not spin.
                            self.sleep_unless_stopping(backoff);
                            backoff = (backoff * 2).min(Duration::from_secs(1));
                        }
                    }
                }
            }
        }
    }

    fn sleep_unless_stopping(&self, nap: Duration) {
        let state = self.state.lock().unwrap();
        if !state.shut {
            let _ = self.work.wait_timeout(state, nap).unwrap();
        }
    }
}

enum Job {
    Create,
    Destroy(Sandbox),
}
