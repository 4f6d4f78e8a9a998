//! A sandbox's shared state — owned by the runtime's table, the io thread
//! (through [`Handler`]), the reaper (through [`Expiring`]) and every
//! handle — and the runtime context every sandbox shares ([`RuntimeCtx`]:
//! the table, the event buses, the threads).
//!
//! No lock here is held across anything slow: every lock guards a few
//! fields, and whoever needs the kernel resources of a running sandbox
//! clones them out ([`SandboxShared::live`]) and works without a lock.
//! So `list()`, `info()` and `is_alive()` never wait for a teardown, and
//! a teardown never waits for a pause or a metrics read. Lock order, for
//! the few places that take two: `execs` → `status`; the table, `live`,
//! `oom`, `metadata` and the event buses are leaves.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use sandlot_proto::{Event, Request};
use sandlot_rootfs::Template;

use crate::engine::control::{self, Incoming};
use crate::engine::error::{Error, Result};
use crate::engine::exec::{ExecTable, Execution, Role, Spawned};
use crate::engine::extensions::Extensions;
use crate::engine::lifecycle::OutputStream;
pub use crate::engine::lifecycle::SandboxInfo;
use crate::engine::lifecycle::{EventBus, LifecycleEvent, Reason, ResourceEvent, State};
use crate::engine::oom::{Next, OomWatch};
use crate::engine::options::TimeoutAction;
use crate::engine::orphans;
use crate::engine::output::{Output, READ_CHUNK};
use crate::engine::persist::{
    from_ms, to_ms, Graveyard, RecordLock, SandboxFiles, StateDir, Tombstone, TombstonePolicy,
};
use crate::engine::reactor::{Handler, Reactor, TimerKind, Token};
use crate::engine::reaper::{Expiring, Reaper, Teardowns};
use crate::engine::sync::lock;
use crate::kernel::cgroups::SandboxCgroup;
use crate::kernel::limits::{ExecLimits, Limits};
use crate::kernel::spawn::TemplateLease;
use crate::kernel::userns::IdRange;
use crate::sys::process;
use sandlot_proto::monitor::{Lifecycle, OnTimeout, Phase};

/// What every sandbox of a runtime shares with it.
pub(crate) struct RuntimeCtx {
    pub events: EventBus<LifecycleEvent>,
    pub resource_events: Arc<EventBus<ResourceEvent>>,
    pub reactor: Arc<Reactor>,
    pub reaper: Reaper,
    pub teardowns: Teardowns,
    pub range: IdRange,
    /// Runtime-wide state of services (the network's engine, started with
    /// the first sandbox that needs it): held here without the engine
    /// knowing its type, released at shutdown once every sandbox is gone.
    pub services: Extensions,
    /// A persistent runtime's state dir.
    pub state: Option<Arc<StateDir>>,
    /// Ended sandboxes of a runtime without a state dir.
    pub graveyard: Graveyard,
    pub tombstones: TombstonePolicy,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    sandboxes: HashMap<String, Arc<SandboxShared>>,
    /// Set by shutdown: no sandbox is admitted any more.
    closed: bool,
}

impl RuntimeCtx {
    pub fn new(
        reactor: Arc<Reactor>,
        reaper: Reaper,
        teardowns: Teardowns,
        range: IdRange,
        state: Option<Arc<StateDir>>,
        tombstones: TombstonePolicy,
    ) -> RuntimeCtx {
        RuntimeCtx {
            events: EventBus::default(),
            resource_events: Arc::default(),
            reactor,
            reaper,
            teardowns,
            range,
            services: Extensions::default(),
            state,
            graveyard: Graveyard::default(),
            tombstones,
            table: Mutex::default(),
        }
    }

    /// The tombstone of an ended sandbox, if it ended recently enough.
    pub fn tombstone(&self, id: &str) -> Option<Tombstone> {
        match &self.state {
            Some(state) => state.tombstone(id),
            None => self.graveyard.get(id, self.tombstones),
        }
    }

    /// Every tombstone kept now, oldest first.
    pub fn all_tombstones(&self) -> Vec<Tombstone> {
        match &self.state {
            Some(state) => state.tombstones(),
            None => self.graveyard.all(self.tombstones),
        }
    }

    /// Puts a new sandbox in the table if `check` (quotas, under the same
    /// lock as the insertion) lets it and the runtime is not shutting
    /// down (`RuntimeShutDown`: a create that loses the race leaves
    /// nothing).
    pub fn admit(
        &self,
        sandbox: Arc<SandboxShared>,
        check: impl FnOnce(&HashMap<String, Arc<SandboxShared>>) -> Result<()>,
    ) -> Result<()> {
        let mut table = lock(&self.table);
        if table.closed {
            return Err(Error::RuntimeShutDown);
        }
        check(&table.sandboxes)?;
        table.sandboxes.insert(sandbox.id.clone(), sandbox);
        Ok(())
    }

    /// Puts an adopted sandbox in the table, unless one of that id is
    /// there already (returned instead).
    pub fn admit_or_get(&self, sandbox: Arc<SandboxShared>) -> Result<Option<Arc<SandboxShared>>> {
        let mut table = lock(&self.table);
        if table.closed {
            return Err(Error::RuntimeShutDown);
        }
        if let Some(existing) = table.sandboxes.get(&sandbox.id) {
            return Ok(Some(existing.clone()));
        }
        table.sandboxes.insert(sandbox.id.clone(), sandbox);
        Ok(None)
    }

    pub fn get(&self, id: &str) -> Option<Arc<SandboxShared>> {
        lock(&self.table).sandboxes.get(id).cloned()
    }

    /// Every sandbox in the table now.
    pub fn sandboxes(&self) -> Vec<Arc<SandboxShared>> {
        lock(&self.table).sandboxes.values().cloned().collect()
    }

    pub fn count(&self) -> usize {
        lock(&self.table).sandboxes.len()
    }

    fn remove(&self, id: &str) {
        lock(&self.table).sandboxes.remove(id);
    }

    /// Shutdown: admits nothing from now on; returns what is in the table.
    pub fn close(&self) -> Vec<Arc<SandboxShared>> {
        let mut table = lock(&self.table);
        table.closed = true;
        table.sandboxes.values().cloned().collect()
    }

    pub fn is_closed(&self) -> bool {
        lock(&self.table).closed
    }
}

/// Kernel resources of a running sandbox. The slot holds the one
/// reference destroy takes; clones (a pause, a metrics read) keep the
/// descriptors open until they finish.
pub(crate) struct Live {
    /// init's pid in the host's pid namespace.
    pub pid: i32,
    pub pidfd: OwnedFd,
    pub control: OwnedFd,
    /// The sandbox's root directory (`/proc/<init>/root`), `O_PATH`;
    /// shared with streams that outlive a call (a tar export, a watch).
    pub root: Arc<OwnedFd>,
    /// The writable tmpfs, `O_PATH`: disk usage for metrics.
    pub rw: OwnedFd,
    pub cgroup: Arc<SandboxCgroup>,
    /// The io thread's registrations of `control` and `pidfd`.
    pub tokens: [Token; 2],
    /// Keeps the template's layers attached in the spawner's namespace
    /// (held for its drop); `None` for a sandbox adopted from a state dir
    /// (its own mount namespace holds its layers).
    #[allow(dead_code)]
    pub lease: Option<TemplateLease>,
}

struct Status {
    state: State,
    /// Why the sandbox ended, once it has.
    end_reason: Option<Reason>,
    deadline: Instant,
    end_at: SystemTime,
    /// While paused with the pause clock: the lifetime that was left (the
    /// deadline does not apply meanwhile).
    clock_stopped: Option<Duration>,
    /// When the current pause began.
    paused_at: Option<Instant>,
    /// When a command last started or ended, or the files API was used.
    last_activity: SystemTime,
    /// The same, for the idle timeout's clock.
    last_activity_at: Instant,
    /// When it ended, once it has.
    ended_at: Option<SystemTime>,
}

/// What a new sandbox is made of.
pub(crate) struct NewSandbox {
    pub id: String,
    pub template_name: String,
    pub template: Arc<Template>,
    pub metadata: BTreeMap<String, String>,
    pub env: Vec<(String, String)>,
    pub hostname: String,
    pub timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub on_timeout: TimeoutAction,
    pub limits: Limits,
    pub exec_limits: ExecLimits,
    pub pause_clock: bool,
    /// Now for a new sandbox; the record's time for an adopted one.
    pub created_at: SystemTime,
    /// `created_at + timeout` for a new sandbox.
    pub end_at: SystemTime,
}

pub(crate) struct SandboxShared {
    pub id: String,
    pub template_name: String,
    pub template: Arc<Template>,
    /// Replaced as a whole by `set_metadata` (a pool hands a sandbox to a
    /// new owner with the owner's metadata).
    metadata: Mutex<BTreeMap<String, String>>,
    pub env: Vec<(String, String)>,
    pub hostname: String,
    pub created_at: SystemTime,
    /// For uptime.
    pub started: Instant,
    pub limits: Limits,
    pub exec_limits: ExecLimits,
    /// The lifetime clock stops while paused.
    pub pause_clock: bool,
    /// The lifetime it was given (a sandbox paused at its timeout gets it
    /// again on resume).
    pub timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub on_timeout: TimeoutAction,
    pub ctx: Arc<RuntimeCtx>,
    /// Its directory in the state dir (persistent runtimes), set once it
    /// exists.
    files: OnceLock<SandboxFiles>,
    /// The runtime let go of it (a persistent runtime's shutdown): it
    /// lives on, but not for this process.
    detached: AtomicBool,
    /// Where init's answer to `Request::Persist` goes.
    persist_reply: Mutex<Option<crossbeam_channel::Sender<i32>>>,
    /// It outlives its creator (create's step 17 is done, or it was
    /// adopted): a shutdown lets go of it instead of ending it.
    persisted: AtomicBool,
    status: Mutex<Status>,
    live: Mutex<Option<Arc<Live>>>,
    pub execs: Mutex<ExecTable>,
    /// The OOM watch and its io-thread registration, until destroy.
    oom: Mutex<Option<(Arc<OomWatch>, Token)>>,
    /// Services' state (see `extensions.rs`).
    pub ext: Extensions,
    /// The teardown finished (a second destroy waits for it).
    ended: (Mutex<bool>, Condvar),
    /// init's end was noticed and handed to a teardown thread.
    gone: AtomicBool,
    me: Weak<SandboxShared>,
}

/// Keeps a sandbox Active (see [`SandboxShared::activity`]).
pub(crate) struct ActivityGuard {
    sandbox: Arc<SandboxShared>,
}

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.sandbox.activity_ended();
    }
}

/// How long a spawn request may wait for init's answer while the sandbox
/// runs (a paused sandbox answers once resumed).
const SPAWN_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the end of an adopted sandbox's init (not our child: it cannot
/// be reaped here) is waited for after the kill.
const ADOPTED_DEATH_WAIT: Duration = Duration::from_secs(10);

/// What a sandbox's clocks say at some moment.
enum Due {
    Nothing,
    Lifetime,
    Idle,
}

impl fmt::Debug for SandboxShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxShared")
            .field("id", &self.id)
            .field("state", &self.state())
            .finish()
    }
}

impl SandboxShared {
    pub fn new(spec: NewSandbox, ctx: Arc<RuntimeCtx>) -> Arc<SandboxShared> {
        let now = SystemTime::now();
        let started = Instant::now();
        // Whole milliseconds: what a state dir records, so that a sandbox
        // read back from one ends at the very same time.
        let end_at = from_ms(to_ms(spec.end_at));
        let left = end_at.duration_since(now).unwrap_or_default();
        Arc::new_cyclic(|me| SandboxShared {
            id: spec.id,
            template_name: spec.template_name,
            template: spec.template,
            metadata: Mutex::new(spec.metadata),
            env: spec.env,
            hostname: spec.hostname,
            created_at: from_ms(to_ms(spec.created_at)),
            started,
            limits: spec.limits,
            exec_limits: spec.exec_limits,
            pause_clock: spec.pause_clock,
            timeout: spec.timeout,
            idle_timeout: spec.idle_timeout,
            on_timeout: spec.on_timeout,
            ctx,
            files: OnceLock::new(),
            detached: AtomicBool::new(false),
            persist_reply: Mutex::new(None),
            persisted: AtomicBool::new(false),
            status: Mutex::new(Status {
                state: State::Pending,
                end_reason: None,
                deadline: started + left,
                end_at,
                clock_stopped: None,
                paused_at: None,
                last_activity: now,
                last_activity_at: started,
                ended_at: None,
            }),
            live: Mutex::new(None),
            execs: Mutex::default(),
            oom: Mutex::new(None),
            ext: Extensions::default(),
            ended: (Mutex::new(false), Condvar::new()),
            gone: AtomicBool::new(false),
            me: me.clone(),
        })
    }

    fn handler(&self) -> Weak<dyn Handler> {
        self.me.clone()
    }

    // ---- state ------------------------------------------------------------

    pub fn state(&self) -> State {
        lock(&self.status).state
    }

    /// Moves to `to` if the state machine allows it and publishes the event.
    pub fn transition(&self, to: State, reason: Reason) -> Result<State, State> {
        let mut status = lock(&self.status);
        let from = status.state;
        if !from.can_become(to) {
            return Err(from);
        }
        status.state = to;
        drop(status);
        self.publish(from, to, reason);
        Ok(from)
    }

    /// Moves `from → to` only if the sandbox is in `from` now (Running ⇄
    /// Active must not undo a pause that happened meanwhile).
    pub fn transition_from(&self, from: State, to: State, reason: Reason) -> bool {
        let mut status = lock(&self.status);
        if status.state != from || !from.can_become(to) {
            return false;
        }
        status.state = to;
        drop(status);
        self.publish(from, to, reason);
        true
    }

    fn publish(&self, from: State, to: State, reason: Reason) {
        self.ctx.events.publish(LifecycleEvent {
            sandbox_id: self.id.clone(),
            from,
            to,
            reason,
            at: SystemTime::now(),
        });
    }

    /// The runtime let go of it (a persistent runtime's shutdown): nothing
    /// more about it comes to this process, no exit report included.
    pub fn is_detached(&self) -> bool {
        self.detached.load(Ordering::SeqCst)
    }

    pub fn not_running(&self) -> Error {
        if self.detached.load(Ordering::SeqCst) {
            return Error::RuntimeShutDown;
        }
        Error::SandboxNotRunning {
            id: self.id.clone(),
            state: self.state(),
        }
    }

    pub fn check_accepts_commands(&self) -> Result<()> {
        // Another process may have paused or begun stopping it.
        self.refresh();
        if self.state().accepts_commands() {
            Ok(())
        } else {
            Err(self.not_running())
        }
    }

    pub fn end_reason(&self) -> Option<Reason> {
        lock(&self.status).end_reason.clone()
    }

    /// A command started or ended, or the files API was used: activity,
    /// for the idle timeout (also in the state dir, for other processes and
    /// the monitor).
    pub fn touch(&self) {
        {
            let mut status = lock(&self.status);
            status.last_activity = SystemTime::now();
            status.last_activity_at = Instant::now();
        }
        if let Some(files) = self.files.get() {
            files.touch();
        }
    }

    pub fn last_activity(&self) -> SystemTime {
        lock(&self.status).last_activity
    }

    pub fn metadata(&self) -> BTreeMap<String, String> {
        lock(&self.metadata).clone()
    }

    /// Replaces the metadata (in the record too, for every process).
    pub fn set_metadata(&self, metadata: BTreeMap<String, String>) -> Result<()> {
        if let Some(files) = self.files.get() {
            let _lock = files.lock()?;
            if !files.exists() {
                return Err(self.not_running());
            }
            let mut record = files.current_record()?;
            record.metadata = metadata.clone();
            files.write_record(&record)?;
        }
        *lock(&self.metadata) = metadata;
        Ok(())
    }

    pub fn info(&self) -> SandboxInfo {
        self.refresh();
        let (state, end_at, end_reason, ended_at) = {
            let status = lock(&self.status);
            (
                status.state,
                status.end_at,
                status.end_reason.clone(),
                status.ended_at,
            )
        };
        SandboxInfo {
            id: self.id.clone(),
            template: self.template_name.clone(),
            state,
            metadata: self.metadata(),
            hostname: self.hostname.clone(),
            created_at: self.created_at,
            end_at,
            init_pid: self.init_pid(),
            commands_in_flight: lock(&self.execs).commands(),
            end_reason,
            limits: self.limits.clone(),
            idle_timeout: self.idle_timeout,
            ended_at,
        }
    }

    // ---- the lifetime -----------------------------------------------------

    pub fn end_at(&self) -> SystemTime {
        lock(&self.status).end_at
    }

    /// Tells the reaper when to look at the sandbox next: at the end of
    /// its lifetime, or earlier when its idle timeout could pass first. A
    /// persistent sandbox's clocks are its monitor's (they hold with no
    /// process of sandlot running), so the reaper leaves it alone.
    pub fn arm_deadline(&self) {
        if self.files.get().is_some() {
            return;
        }
        let at = {
            let status = lock(&self.status);
            match self.idle_timeout {
                Some(idle) => status.deadline.min(status.last_activity_at + idle),
                None => status.deadline,
            }
        };
        let me: Weak<dyn Expiring> = self.me.clone();
        self.ctx.reaper.deadline(me, at);
    }

    /// What is due at `now`: the lifetime's end, the idle timeout, or
    /// nothing yet (never while the clock is stopped by a pause).
    fn due(&self, now: Instant) -> Due {
        // The lock order is `execs` → `status`.
        let execs = lock(&self.execs);
        let status = lock(&self.status);
        if status.clock_stopped.is_some() || !status.state.is_live() {
            return Due::Nothing;
        }
        if status.deadline <= now {
            return Due::Lifetime;
        }
        let idle = self
            .idle_timeout
            .filter(|idle| status.last_activity_at + *idle <= now);
        // A command in flight is activity for as long as it runs; a sandbox
        // being stopped ends anyway.
        let busy = execs.active > 0 || status.state == State::Stopping;
        if idle.is_some() && !busy {
            return Due::Idle;
        }
        Due::Nothing
    }

    /// Pause: remember when; with the pause clock, the lifetime left.
    pub fn pause_started(&self) {
        let mut status = lock(&self.status);
        status.paused_at = Some(Instant::now());
        if self.pause_clock && status.clock_stopped.is_none() {
            status.clock_stopped = Some(status.deadline.saturating_duration_since(Instant::now()));
        }
    }

    /// Resume: the lifetime left runs from now (with the pause clock);
    /// returns how long the pause lasted.
    pub fn pause_ended(&self) -> Duration {
        let paused_for = {
            let mut status = lock(&self.status);
            let paused_for = status
                .paused_at
                .take()
                .map(|at| at.elapsed())
                .unwrap_or_default();
            let Some(mut left) = status.clock_stopped.take() else {
                return paused_for;
            };
            if left.is_zero() && self.on_timeout == TimeoutAction::Pause {
                // Paused by its timeout: resumed, it gets its lifetime again.
                left = self.timeout;
            }
            status.deadline = Instant::now() + left;
            status.end_at = from_ms(to_ms(SystemTime::now() + left));
            paused_for
        };
        self.arm_deadline();
        paused_for
    }

    pub fn clock_stopped(&self) -> bool {
        lock(&self.status).clock_stopped.is_some()
    }

    /// Moves the deadline to `timeout` from now and tells the reaper (a
    /// persistent sandbox: its monitor, through the lifecycle file).
    pub fn set_timeout(&self, timeout: Duration) -> Result<()> {
        crate::engine::options::validate_timeout(timeout)?;
        let _lock = match self.files.get() {
            Some(files) => {
                let lock = files.lock()?;
                if !files.exists() {
                    return Err(self.not_running());
                }
                self.refresh();
                Some(lock)
            }
            None => None,
        };
        {
            let mut status = lock(&self.status);
            if !status.state.is_live() {
                return Err(Error::SandboxNotRunning {
                    id: self.id.clone(),
                    state: status.state,
                });
            }
            status.deadline = Instant::now() + timeout;
            status.end_at = from_ms(to_ms(SystemTime::now() + timeout));
            if status.clock_stopped.is_some() {
                // Paused with the clock stopped: all of it is left.
                status.clock_stopped = Some(timeout);
            }
        }
        self.save_lifecycle()?;
        self.arm_deadline();
        Ok(())
    }

    // ---- persistence ------------------------------------------------------

    /// Ties the sandbox to its directory in the state dir (once).
    pub fn set_files(&self, files: SandboxFiles) {
        let _ = self.files.set(files);
    }

    pub fn files(&self) -> Option<&SandboxFiles> {
        self.files.get()
    }

    /// It outlives this process from now on.
    pub fn mark_persisted(&self) {
        self.persisted.store(true, Ordering::SeqCst);
    }

    pub fn is_persisted(&self) -> bool {
        self.persisted.load(Ordering::SeqCst)
    }

    /// Commands (and code cells) in flight, start commands and helpers
    /// aside.
    pub fn commands_in_flight(&self) -> usize {
        lock(&self.execs).active
    }

    /// The lifecycle file's contents for the sandbox as it is now.
    pub fn lifecycle(&self) -> Lifecycle {
        let ms = |d: Duration| d.as_millis() as u64;
        let status = lock(&self.status);
        Lifecycle {
            phase: match status.state {
                State::Paused => Phase::Paused,
                State::Stopping => Phase::Stopping,
                _ => Phase::Running,
            },
            end_at_ms: to_ms(status.end_at),
            idle_ms: self.idle_timeout.map_or(0, ms),
            clock_left_ms: status.clock_stopped.map(ms),
            on_timeout: match self.on_timeout {
                TimeoutAction::Kill => OnTimeout::Kill,
                TimeoutAction::Pause => OnTimeout::Pause,
            },
            timeout_ms: ms(self.timeout),
        }
    }

    /// Writes the lifecycle file of a persistent sandbox (its monitor
    /// follows it); the caller holds the record's lock.
    pub fn save_lifecycle(&self) -> Result<()> {
        match self.files.get() {
            Some(files) => files.write_lifecycle(&self.lifecycle()),
            None => Ok(()),
        }
    }

    /// The record's lock of a persistent sandbox (`None` otherwise), with
    /// what other processes changed taken in; `SandboxNotRunning` if it
    /// ended meanwhile.
    pub fn lock_files(&self) -> Result<Option<RecordLock>> {
        let Some(files) = self.files.get() else {
            return Ok(None);
        };
        let lock = files.lock()?;
        if !files.exists() {
            return Err(self.not_running());
        }
        self.refresh();
        Ok(Some(lock))
    }

    /// Takes in what another process (or the monitor) changed in a
    /// persistent sandbox's record and lifecycle: its metadata, its end,
    /// a pause, a resume, a stop. Two `stat`s when nothing changed.
    pub fn refresh(&self) {
        let Some(files) = self.files.get() else {
            return;
        };
        if lock(&self.live).is_none() {
            return; // being built, ended or detached
        }
        let (record, lifecycle) = files.changed();
        if record {
            if let Ok(record) = files.read_record() {
                *lock(&self.metadata) = record.metadata;
            }
        }
        if lifecycle {
            if let Ok(lifecycle) = files.read_lifecycle() {
                self.apply_lifecycle(&lifecycle);
            }
        }
    }

    fn apply_lifecycle(&self, lifecycle: &Lifecycle) {
        let active = lock(&self.execs).active;
        let (from, to) = {
            let mut status = lock(&self.status);
            status.end_at = from_ms(lifecycle.end_at_ms);
            let left = status
                .end_at
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            status.deadline = Instant::now() + left;
            status.clock_stopped = lifecycle.clock_left_ms.map(Duration::from_millis);
            let from = status.state;
            let to = match (lifecycle.phase, from) {
                (Phase::Paused, State::Running | State::Active) => {
                    status.paused_at = Some(Instant::now());
                    Some(State::Paused)
                }
                (Phase::Running, State::Paused) => {
                    status.paused_at = None;
                    Some(if active == 0 {
                        State::Running
                    } else {
                        State::Active
                    })
                }
                (Phase::Stopping, State::Running | State::Active | State::Paused) => {
                    Some(State::Stopping)
                }
                _ => None,
            };
            match to {
                Some(to) if from.can_become(to) => status.state = to,
                _ => return,
            }
            (from, to.expect("matched above"))
        };
        let reason = match to {
            State::Paused if lifecycle.clock_left_ms == Some(0) => Reason::Timeout,
            State::Paused => Reason::Paused,
            State::Stopping => Reason::Stopped,
            _ => Reason::Resumed,
        };
        self.publish(from, to, reason);
    }

    /// Lets go of a persistent sandbox without ending it (its runtime shut
    /// down): init, its processes, cgroups and files stay for the next
    /// process. Commands this process started run on, but their output
    /// and exit have nobody to go to; their handles see the end.
    pub fn detach(&self) {
        let Some(live) = lock(&self.live).take() else {
            return;
        };
        self.detached.store(true, Ordering::SeqCst);
        self.gone.store(true, Ordering::SeqCst);
        let reactor = &self.ctx.reactor;
        reactor.remove_watch(live.tokens[0], live.control.as_fd());
        reactor.remove_watch(live.tokens[1], live.pidfd.as_fd());
        self.unwatch_oom();
        self.ext.release_all();
        self.end_executions();
        if let Some(files) = self.files.get() {
            files.set_busy(false);
        }
        live.cgroup.disown();
        // If init is our child, someone must reap it once it ends.
        if let Ok(pidfd) = live.pidfd.try_clone() {
            orphans::watch(pidfd);
        }
        drop(live);
        self.ctx.remove(&self.id);
        self.mark_ended();
    }

    /// An adoption that failed half-way: out of the table, nothing of the
    /// sandbox touched (it lives on for others).
    pub fn drop_adoption(&self) {
        self.unwatch_oom();
        if let Some(live) = lock(&self.live).take() {
            let reactor = &self.ctx.reactor;
            reactor.remove_watch(live.tokens[0], live.control.as_fd());
            reactor.remove_watch(live.tokens[1], live.pidfd.as_fd());
            live.cgroup.disown();
        }
        self.detached.store(true, Ordering::SeqCst);
        self.ctx.remove(&self.id);
        self.mark_ended();
    }

    /// An adopted sandbox's state as its files say (no transition: it was
    /// made elsewhere); published as one event from Pending.
    pub fn restore(&self, lifecycle: &Lifecycle) {
        let to = match lifecycle.phase {
            Phase::Paused => State::Paused,
            Phase::Stopping => State::Stopping,
            Phase::Running => State::Running,
        };
        {
            let mut status = lock(&self.status);
            status.state = to;
            status.clock_stopped = lifecycle.clock_left_ms.map(Duration::from_millis);
            if to == State::Paused {
                status.paused_at = Some(Instant::now());
            }
        }
        self.mark_persisted();
        self.publish(State::Pending, to, Reason::Adopted);
    }

    /// Where init's answer to `Request::Persist` (0, or an errno) will
    /// arrive; call before sending the request.
    pub fn expect_persisted(&self) -> crossbeam_channel::Receiver<i32> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        *lock(&self.persist_reply) = Some(tx);
        rx
    }

    // ---- kernel resources -------------------------------------------------

    /// Installs the kernel resources of a sandbox whose init said Ready.
    /// If the sandbox was destroyed while it started (runtime shutdown),
    /// the resources are released here and the caller gets the error.
    pub fn set_live(&self, live: Live) -> Result<()> {
        let live = Arc::new(live);
        {
            let mut slot = lock(&self.live);
            if self.state() != State::Destroyed {
                *slot = Some(live);
                return Ok(());
            }
        }
        let _ = self.teardown(&live, false);
        self.mark_ended();
        Err(self.not_running())
    }

    /// The kernel resources while the sandbox is live: a clone, used
    /// without holding any lock of the sandbox.
    pub fn live(&self) -> Option<Arc<Live>> {
        lock(&self.live).clone()
    }

    pub fn init_pid(&self) -> Option<i32> {
        lock(&self.live).as_ref().map(|l| l.pid)
    }

    /// A duplicate of init's pidfd: readable once the sandbox has ended
    /// (for threads that must stop with it, like a files watch).
    pub fn init_pidfd(&self) -> Option<OwnedFd> {
        self.live().and_then(|l| l.pidfd.try_clone().ok())
    }

    /// Whether init still runs (its pidfd is not yet readable).
    pub fn init_alive(&self) -> bool {
        self.live()
            .is_some_and(|l| !process::pidfd_exited(l.pidfd.as_fd()))
    }

    // ---- requests to init -------------------------------------------------

    pub fn send_request(&self, request: &Request) -> Result<()> {
        self.send_request_with_fds(request, &[])
    }

    /// Sends a request to init (without holding any lock: a frozen init
    /// may leave the socket full and the send waiting).
    pub fn send_request_with_fds(&self, request: &Request, fds: &[BorrowedFd<'_>]) -> Result<()> {
        let live = self.live().ok_or_else(|| self.not_running())?;
        control::send(live.control.as_fd(), request, fds, false).map_err(|errno| match errno {
            Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN => self.not_running(),
            errno => Error::setup("send to init", errno),
        })
    }

    pub fn send_signal(&self, id: u64, signal: i32, group: bool) -> Result<()> {
        if !lock(&self.execs).running.contains_key(&id) {
            // Already finished: nothing left to signal.
            return Ok(());
        }
        self.send_request(&Request::Signal { id, signal, group })
    }

    // ---- executions -------------------------------------------------------

    /// Records a new execution; the first one that is a command makes
    /// the sandbox Active. Past `max_concurrent` of them in flight:
    /// `QuotaExceeded`.
    pub fn register_execution(&self, execution: Execution) -> Result<u64> {
        // What another process changed was taken in by the launcher's
        // check a moment ago (refreshing takes `execs` itself: not here).
        let mut execs = lock(&self.execs);
        if !self.state().accepts_commands() {
            return Err(self.not_running());
        }
        let counts = execution.role == Role::Command;
        if let Some(max) = self.exec_limits.max_concurrent {
            let in_flight = execs.commands();
            if counts && in_flight >= max {
                return Err(Error::QuotaExceeded {
                    what: "max_concurrent",
                    limit: max as u64,
                });
            }
        }
        execs.next_id += 1;
        let id = execs.next_id;
        execs.running.insert(id, execution);
        drop(execs);
        if counts {
            self.activity_started();
        }
        self.touch();
        Ok(id)
    }

    /// Something that makes the sandbox Active began (the first makes it
    /// Active).
    fn activity_started(&self) {
        let first = {
            let mut execs = lock(&self.execs);
            execs.active += 1;
            execs.active == 1
        };
        if first {
            if let Some(files) = self.files.get() {
                // Other processes and the monitor: busy while this lasts.
                files.set_busy(true);
            }
            self.transition_from(State::Running, State::Active, Reason::CommandStarted);
        }
    }

    /// Something that made the sandbox Active ended (the last makes it
    /// Running).
    fn activity_ended(&self) {
        let idle = {
            let mut execs = lock(&self.execs);
            execs.active = execs.active.saturating_sub(1);
            execs.active == 0
        };
        self.touch();
        if idle {
            if let Some(files) = self.files.get() {
                files.set_busy(false);
            }
            self.transition_from(State::Active, State::Running, Reason::Idle);
        }
    }

    /// The sandbox is Active while the guard lives (a code cell runs in an
    /// interpreter that is otherwise background); both ends are activity.
    pub fn activity(self: &Arc<Self>) -> ActivityGuard {
        self.activity_started();
        self.touch();
        ActivityGuard {
            sandbox: self.clone(),
        }
    }

    /// Hands an output pipe of execution `id` to the io thread.
    pub fn watch_output(&self, id: u64, output: Output) -> Result<(), Errno> {
        let reactor = &self.ctx.reactor;
        let token = reactor.watch_output(self.handler(), output)?;
        match lock(&self.execs).running.get_mut(&id) {
            Some(execution) => execution.outputs.push(token),
            None => reactor.drop_output(token),
        }
        Ok(())
    }

    /// Arms (or re-arms, after a pause) execution `id`'s deadline.
    pub fn arm_exec_deadline(&self, id: u64, at: Instant) {
        let mut execs = lock(&self.execs);
        let Some(execution) = execs.running.get_mut(&id) else {
            return;
        };
        execution.deadline = Some(at);
        if let Some(old) = execution.timer.take() {
            self.ctx.reactor.cancel_timer(old);
        }
        execution.timer = Some(self.ctx.reactor.add_timer(
            at,
            self.handler(),
            TimerKind::Deadline(id),
        ));
    }

    /// Moves every execution's deadline by `by` (resume with the pause
    /// clock).
    pub fn shift_exec_deadlines(&self, by: Duration) {
        let ids: Vec<(u64, Instant)> = lock(&self.execs)
            .running
            .iter()
            .filter_map(|(id, e)| e.deadline.map(|d| (*id, d + by)))
            .collect();
        for (id, at) in ids {
            self.arm_exec_deadline(id, at);
        }
    }

    /// Waits for init's answer to the spawn request of execution `id`.
    pub fn wait_spawned(
        &self,
        id: u64,
        reply: &crossbeam_channel::Receiver<Result<Spawned, Errno>>,
    ) -> Result<Result<Spawned, Errno>> {
        loop {
            match reply.recv_timeout(SPAWN_REPLY_TIMEOUT) {
                Ok(answer) => return Ok(answer),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Err(self.not_running())
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    if self.state() == State::Paused {
                        continue; // answered on resume
                    }
                    self.abandon_execution(id);
                    return Err(Error::Protocol {
                        id: self.id.clone(),
                        reason: format!(
                            "init did not answer spawn request {id} within {SPAWN_REPLY_TIMEOUT:?}"
                        ),
                    });
                }
            }
        }
    }

    /// Forgets an execution that never reached init.
    pub fn abandon_execution(&self, id: u64) {
        if let Some(execution) = self.remove_execution(id) {
            for token in execution.outputs {
                self.ctx.reactor.drop_output(token);
            }
        }
    }

    /// Removes an execution; the last active one makes the sandbox
    /// Running again.
    fn remove_execution(&self, id: u64) -> Option<Execution> {
        let execution = lock(&self.execs).running.remove(&id)?;
        if let Some(timer) = execution.timer {
            self.ctx.reactor.cancel_timer(timer);
        }
        if execution.role != Role::Command {
            self.touch();
        } else {
            self.activity_ended();
        }
        Some(execution)
    }

    /// Sends the exit of execution `id` if init reported it and every
    /// output pipe is closed.
    fn finish_if_done(&self, id: u64) {
        let done = {
            let execs = lock(&self.execs);
            execs
                .running
                .get(&id)
                .is_some_and(|e| e.exited.is_some() && e.outputs.is_empty())
        };
        if !done {
            return;
        }
        if let Some(execution) = self.remove_execution(id) {
            let (status, usage) = execution.exited.expect("checked above");
            let exit = execution.exit_event(status, usage, || self.oom_kills_now());
            execution.send_exit(exit);
        }
    }

    /// One event from init, and the terminal master that came with a
    /// `SpawnedPty` (already checked by the control channel).
    fn on_event(&self, event: Event, master: Option<OwnedFd>) {
        match event {
            Event::Spawned { id, pid } => self.on_spawned(id, pid, None, false),
            Event::SpawnedPty { id, pid } => self.on_spawned(id, pid, master, true),
            Event::SpawnFailed { id, errno } => self.spawn_failed(id, Errno::from_raw(errno)),
            Event::Exited {
                id, status, usage, ..
            } => {
                let outputs = {
                    let mut execs = lock(&self.execs);
                    let Some(execution) = execs.running.get_mut(&id) else {
                        return;
                    };
                    execution.exited = Some((status, usage));
                    execution.outputs.clone()
                };
                // What the process wrote before it exited is in its pipes:
                // forward that, then the exit (see `output.rs`).
                if outputs.is_empty() {
                    self.finish_if_done(id);
                } else {
                    self.ctx.reactor.finish_outputs(&outputs);
                }
            }
            Event::Persisted { errno } => {
                if let Some(reply) = lock(&self.persist_reply).take() {
                    let _ = reply.send(errno);
                }
            }
            Event::Ready { .. } | Event::SetupFailed { .. } => {}
        }
    }

    /// init started execution `id` (on a terminal if `on_terminal`, with
    /// its master end). The answer must match the request: a terminal
    /// exactly when one was asked for, with a master end. A process that
    /// started otherwise is killed and its spawn fails with `EPROTO`.
    fn on_spawned(&self, id: u64, pid: i32, master: Option<OwnedFd>, on_terminal: bool) {
        let terminal = {
            let mut execs = lock(&self.execs);
            let Some(execution) = execs.running.get_mut(&id) else {
                return;
            };
            execution.pid = Some(pid);
            execution.terminal.map(|budget| {
                (
                    budget,
                    execution.events.clone(),
                    execution.truncated[0].clone(),
                )
            })
        };
        let answer = match (terminal, on_terminal, master) {
            (None, false, _) => Ok(Spawned { pid, master: None }),
            (Some((budget, events, truncated)), true, Some(master)) => {
                // Watched here, on the io thread, before anyone can see the
                // exit: output the process writes at once is never missed.
                let watched = nix::fcntl::fcntl(
                    &master,
                    nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                )
                .and_then(|_| {
                    master
                        .try_clone()
                        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
                })
                .and_then(|copy| {
                    let output =
                        Output::new(id, OutputStream::Stdout, events, master, budget, truncated)
                            .on_terminal();
                    self.watch_output(id, output).map(|()| copy)
                });
                watched.map(|copy| Spawned {
                    pid,
                    master: Some(copy),
                })
            }
            _ => Err(Errno::EPROTO),
        };
        match answer {
            Ok(spawned) => {
                let mut execs = lock(&self.execs);
                if let Some(reply) = execs.running.get_mut(&id).and_then(|e| e.spawned.take()) {
                    let _ = reply.send(Ok(spawned));
                }
            }
            Err(errno) => {
                if let Some(live) = self.live() {
                    let kill = Request::Signal {
                        id,
                        signal: libc::SIGKILL,
                        group: true,
                    };
                    let _ = control::send(live.control.as_fd(), &kill, &[], true);
                }
                self.spawn_failed(id, errno);
            }
        }
    }

    /// The spawn of execution `id` failed (or its process was killed for
    /// answering wrongly): forget it and tell the caller.
    fn spawn_failed(&self, id: u64, errno: Errno) {
        if let Some(mut execution) = self.remove_execution(id) {
            for token in execution.outputs.drain(..) {
                self.ctx.reactor.drop_output(token);
            }
            if let Some(reply) = execution.spawned.take() {
                let _ = reply.send(Err(errno));
            }
        }
    }

    // ---- OOM --------------------------------------------------------------

    /// Registers the sandbox's OOM notifier with the io thread. Called
    /// once, before the sandbox is live; undone by teardown.
    pub fn watch_oom(&self, cgroup: &SandboxCgroup) -> Result<()> {
        let watch = Arc::new(OomWatch::new(
            cgroup,
            &self.id,
            self.ctx.resource_events.clone(),
        )?);
        let token = self
            .ctx
            .reactor
            .watch_oom(self.handler(), watch.clone())
            .map_err(|e| Error::setup("watch for OOM kills", e))?;
        *lock(&self.oom) = Some((watch, token));
        Ok(())
    }

    fn unwatch_oom(&self) {
        if let Some((_, token)) = lock(&self.oom).take() {
            self.ctx.reactor.unwatch_oom(token);
        }
    }

    fn oom_watch(&self) -> Option<Arc<OomWatch>> {
        lock(&self.oom).as_ref().map(|(w, _)| w.clone())
    }

    /// OOM kills the host has seen so far (no syscall).
    pub fn oom_seen(&self) -> u64 {
        self.oom_watch().map_or(0, |w| w.seen())
    }

    /// Reads the OOM count from the cgroup, publishes kills not yet
    /// reported, and returns the count.
    pub fn oom_kills_now(&self) -> u64 {
        self.oom_watch().map_or(0, |w| w.kills_now())
    }

    /// Records an OOM count read elsewhere (metrics); publishes what is new.
    pub fn observe_oom_count(&self, count: u64) {
        if let Some(watch) = self.oom_watch() {
            watch.observe(count);
        }
    }

    // ---- the end ----------------------------------------------------------

    /// A create that failed before the sandbox went live: out of the
    /// table, nothing left registered (its cgroup and child were already
    /// released by the creator), what services attached to it at create
    /// (its network) released, and its tombstone says why.
    pub fn forget(&self, why: Reason) {
        self.unwatch_oom();
        self.ext.release_all();
        {
            let mut status = lock(&self.status);
            status.end_reason.get_or_insert(why.clone());
            status.ended_at = Some(SystemTime::now());
        }
        match (self.files.get(), &self.ctx.state) {
            (Some(files), Some(state)) => {
                if let Ok(_lock) = files.lock() {
                    if files.exists() {
                        let _ = state.bury(&files.dir, &why);
                        files.remove();
                    }
                }
            }
            _ => self.bury_here(),
        }
        self.ctx.remove(&self.id);
        self.mark_ended();
    }

    /// Keeps the tombstone of a sandbox of a runtime without a state dir.
    fn bury_here(&self) {
        if self.ctx.state.is_some() {
            return;
        }
        let info = self.info();
        let ended_at = info.ended_at.unwrap_or_else(SystemTime::now);
        self.ctx
            .graveyard
            .bury(Tombstone { info, ended_at }, self.ctx.tombstones);
    }

    fn mark_ended(&self) {
        let (done, cv) = &self.ended;
        *lock(done) = true;
        cv.notify_all();
    }

    fn wait_ended(&self) {
        let (done, cv) = &self.ended;
        let mut done = lock(done);
        while !*done {
            done = cv.wait(done).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Ends the sandbox on a teardown thread (from the io thread or the
    /// reaper, which must not wait for it); once.
    fn destroy_later(&self, reason: Reason) {
        if self.gone.swap(true, Ordering::SeqCst) {
            return;
        }
        let Some(me) = self.me.upgrade() else {
            return;
        };
        self.ctx.teardowns.run(move || {
            let _ = me.destroy(reason);
        });
    }

    /// Kills every process of the sandbox and releases everything it held.
    /// Idempotent: later calls wait for the first one and return Ok.
    pub fn destroy(&self, reason: Reason) -> Result<()> {
        let live = lock(&self.live).take();
        let Some(live) = live else {
            // Being built, or ended (or ending) already.
            let mut status = lock(&self.status);
            if matches!(status.state, State::Pending | State::Starting) {
                // Still being built: doom it; the creator tears it down
                // when it tries to install the resources (see `set_live`).
                status.end_reason = Some(reason.clone());
                let from = std::mem::replace(&mut status.state, State::Destroyed);
                drop(status);
                self.publish(from, State::Destroyed, reason);
                return Ok(());
            }
            let ending = status.state == State::Destroyed;
            drop(status);
            if ending {
                self.wait_ended();
            }
            return Ok(());
        };
        // init's end, noticed by the io thread meanwhile, is this teardown.
        self.gone.store(true, Ordering::SeqCst);
        let reason = match reason {
            Reason::InitDied if self.oom_kills_now() > 0 => Reason::Oom,
            reason => reason,
        };
        // A persistent sandbox is ended by one process at a time, under its
        // record's lock: the first writes the tombstone and removes what is
        // left; whoever comes second (another process, its monitor) finds
        // the record gone and learns from the tombstone why it ended.
        let mut ours = true;
        let mut reason = reason;
        let files_lock = match (self.files.get(), &self.ctx.state) {
            (Some(files), Some(state)) => {
                let lock = files.lock().ok();
                if files.exists() {
                    let _ = state.bury(&files.dir, &reason);
                } else {
                    ours = false;
                    if let Some(why) = state.tombstone(&self.id).and_then(|t| t.info.end_reason) {
                        reason = why;
                    }
                }
                lock
            }
            _ => None,
        };
        let (from, paused) = {
            let mut status = lock(&self.status);
            status.end_reason = Some(reason.clone());
            status.ended_at = Some(SystemTime::now());
            let from = std::mem::replace(&mut status.state, State::Destroyed);
            (from, from == State::Paused || status.paused_at.is_some())
        };
        let torn_down = self.teardown(&live, paused);
        if let Some(files) = self.files.get() {
            files.set_busy(false);
            if ours {
                files.remove();
            }
        }
        drop(files_lock);
        // The last reference closes every descriptor: the mount namespace,
        // the overlay and the writable tmpfs go with it.
        drop(live);
        self.ctx.remove(&self.id);
        self.publish(from, State::Destroyed, reason);
        self.bury_here();
        self.mark_ended();
        // Ended by someone else: what they could not remove is theirs.
        if ours {
            torn_down
        } else {
            Ok(())
        }
    }

    /// Kills every process of the sandbox and releases what `live` holds:
    /// the work of `destroy`, shared with a create that was doomed while
    /// it started (`set_live`). No lock of the sandbox is held meanwhile.
    fn teardown(&self, live: &Live, paused: bool) -> Result<()> {
        // 1. Nothing more will come from init: stop watching its socket and
        //    pidfd first (the pidfd turns readable at the kill below).
        let reactor = &self.ctx.reactor;
        reactor.remove_watch(live.tokens[0], live.control.as_fd());
        reactor.remove_watch(live.tokens[1], live.pidfd.as_fd());

        // 2. SIGKILL to every task: cgroup.kill where there is one (it
        //    reaches frozen tasks too), else to init, whose death ends the
        //    whole pid namespace. Reaping init waits until every process in
        //    it is gone.
        if !matches!(live.cgroup.kill(), Ok(true)) {
            let _ = process::pidfd_signal(live.pidfd.as_fd(), libc::SIGKILL);
        }
        if paused {
            // The v1 freezer holds even killed tasks until thawed (v2 lets
            // them die); they wake with SIGKILL pending and run no code.
            let _ = live.cgroup.thaw();
        }
        let reaped = match process::reap_pidfd(live.pidfd.as_fd(), true) {
            // Not our child (adopted from a state dir): its parent reaps
            // it; we wait for its end.
            Err(Errno::ECHILD) => {
                process::wait_pidfd_exited(live.pidfd.as_fd(), ADOPTED_DEATH_WAIT)
            }
            other => other.map(drop),
        };

        // 3. Services let go of what refers to the sandbox.
        self.unwatch_oom();
        self.ext.release_all();

        // 4. Executions in flight end with what they wrote, then their exit.
        self.end_executions();

        // 5. The cgroup dirs, now that no task is left in them.
        let removed = live.cgroup.remove();
        reaped.map_err(|e| Error::setup("reap init", e))?;
        removed?;
        Ok(())
    }

    /// The lifetime ran out with `TimeoutAction::Pause` (a sandbox of a
    /// runtime without a state dir; a persistent one's monitor does this):
    /// Paused for `Reason::Timeout`, its clock stopped with nothing left —
    /// a resume gives it its whole timeout again — and frozen. If it cannot
    /// be frozen it ends instead.
    fn pause_at_timeout(&self) {
        let Some(live) = self.live() else {
            return;
        };
        if !matches!(self.due(Instant::now()), Due::Lifetime) {
            return; // moved meanwhile
        }
        let paused = [State::Running, State::Active]
            .into_iter()
            .any(|from| self.transition_from(from, State::Paused, Reason::Timeout));
        if !paused {
            return;
        }
        {
            let mut status = lock(&self.status);
            status.paused_at = Some(Instant::now());
            status.clock_stopped = Some(Duration::ZERO);
        }
        if live.cgroup.freeze().is_err() {
            self.destroy_later(Reason::Timeout);
        }
    }

    /// Executions in flight end with what is in their pipes, then an exit
    /// that says the sandbox is gone.
    fn end_executions(&self) {
        let reactor = &self.ctx.reactor;
        let executions: Vec<Execution> = {
            let mut execs = lock(&self.execs);
            execs.active = 0;
            execs.running.drain().map(|(_, e)| e).collect()
        };
        let mut buf = Vec::new();
        for execution in executions {
            if let Some(timer) = execution.timer {
                reactor.cancel_timer(timer);
            }
            if buf.is_empty() && !execution.outputs.is_empty() {
                buf = vec![0u8; READ_CHUNK];
            }
            for token in &execution.outputs {
                reactor.flush_output(*token, &mut buf);
            }
            execution.send_exit(execution.destroyed_event());
        }
    }

    /// The runtime failed while serving this sandbox: Error, then torn
    /// down (Destroyed with the reason) on a teardown thread. Never blocks.
    pub fn fail(&self, what: String) {
        let _ = self.transition(State::Error, Reason::Internal(what.clone()));
        self.destroy_later(Reason::Internal(what));
    }
}

impl Handler for SandboxShared {
    fn control_readable(&self, _reactor: &Reactor, buf: &mut [u8]) -> bool {
        let Some(live) = self.live() else {
            return false;
        };
        loop {
            match control::recv(live.control.as_fd(), buf, true) {
                Ok(Incoming::Event(event, master)) => self.on_event(event, master),
                Ok(Incoming::Empty) => return true,
                Ok(Incoming::Closed) | Err(_) => return false,
            }
        }
    }

    fn init_gone(&self) {
        if self.gone.load(Ordering::SeqCst) {
            return;
        }
        // Stop watching at once (a readable pidfd stays readable), then
        // tear down on another thread. No live resources: a destroy took
        // them, and removed the watches first.
        let Some(live) = self.live() else {
            return;
        };
        let reactor = &self.ctx.reactor;
        reactor.remove_watch(live.tokens[0], live.control.as_fd());
        reactor.remove_watch(live.tokens[1], live.pidfd.as_fd());
        self.destroy_later(Reason::InitDied);
    }

    fn output_closed(&self, exec: u64, token: Token) {
        if let Some(execution) = lock(&self.execs).running.get_mut(&exec) {
            execution.outputs.retain(|t| *t != token);
        }
        self.finish_if_done(exec);
    }

    fn deadline_passed(&self, exec: u64) {
        if self.clock_stopped() {
            // Paused with the clock stopped: resume re-arms the deadline.
            return;
        }
        {
            let mut execs = lock(&self.execs);
            let Some(execution) = execs.running.get_mut(&exec) else {
                return;
            };
            if execution.deadline.is_some_and(|d| d > Instant::now()) {
                // Moved later by a pause; a new timer is armed.
                return;
            }
            execution.timed_out = true;
            execution.timer = None;
        }
        if let Some(live) = self.live() {
            let kill = Request::Signal {
                id: exec,
                signal: libc::SIGKILL,
                group: true,
            };
            let _ = control::send(live.control.as_fd(), &kill, &[], true);
        }
    }

    fn check_oom(&self, reactor: &Reactor, attempt: Option<u32>) {
        let Some(watch) = self.oom_watch() else {
            return;
        };
        match watch.check(attempt) {
            Next::Done => {}
            Next::Recheck(next, pause) => {
                reactor.add_timer(
                    Instant::now() + pause,
                    self.handler(),
                    TimerKind::OomRecheck(next),
                );
            }
            Next::Gone => self.unwatch_oom(),
        }
    }

    fn failed(&self, what: String) {
        self.fail(what);
    }
}

impl Expiring for SandboxShared {
    fn expire(&self, now: Instant) {
        match self.due(now) {
            Due::Lifetime if self.on_timeout == TimeoutAction::Pause => {
                // Pausing waits for the freezer: not on the reaper.
                if let Some(me) = self.me.upgrade() {
                    self.ctx.teardowns.run(move || me.pause_at_timeout());
                }
            }
            Due::Lifetime => self.destroy_later(Reason::Timeout),
            Due::Idle => self.destroy_later(Reason::IdleTimeout),
            // Moved, or activity since: look again when it could be due.
            Due::Nothing => self.arm_deadline(),
        }
    }
}
