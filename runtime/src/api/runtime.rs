//! The runtime: the façade a host program holds. Building it starts the
//! threads that serve every sandbox (spawner, io, reaper, teardown);
//! `create` runs the parent sequence (`create.rs`); `list`, `connect` and
//! `events` read the engine's table and buses.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime};

use sandlot_rootfs::Store;

use crate::api::create;
use crate::api::factory::{Factory, Makers};
use crate::api::persist;
use crate::api::retry::{self, RetryPolicy};
use crate::api::sandbox::Sandbox;
use crate::engine::error::{Error, Result};
use crate::engine::lifecycle::{
    LifecycleEvent, NetworkDenied, Reason, ResourceEvent, State, Subscription,
};
use crate::engine::options::SandboxOptions;
use crate::engine::persist::{Found, StateDir, TombstonePolicy};
use crate::engine::reactor::Reactor;
use crate::engine::reaper::{Reaper, Teardowns};
use crate::engine::sandbox::{RuntimeCtx, SandboxInfo};
use crate::engine::sync::lock;
use crate::kernel::caps::CapPlan;
use crate::kernel::cgroups::{unique_runtime_name, CgroupConfig, Cgroups};
use crate::kernel::init_binary;
use crate::kernel::seccomp::{SeccompCache, SeccompProfile};
use crate::kernel::spawn::{Spawner, SpawnerConfig, StartingSpawner};
use crate::kernel::userns::IdRange;
use crate::services::monitor::{MonitorTarget, Target};
use crate::services::net::service::NetService;
use crate::services::net::NetworkConfig;
use crate::services::quota;

/// Builds a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeBuilder {
    data_dir: PathBuf,
    scratch_dir: PathBuf,
    id_range: IdRange,
    max_sandboxes: Option<usize>,
    memory_overcommit: Option<f64>,
    ready_timeout: Duration,
    template_linger: Duration,
    cgroups: CgroupConfig,
    network: NetworkConfig,
    state_dir: Option<PathBuf>,
    tombstones: TombstonePolicy,
    attach_only: bool,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder {
            data_dir: PathBuf::from("/var/lib/sandlot"),
            scratch_dir: PathBuf::from("/run/sandlot"),
            id_range: IdRange::default(),
            max_sandboxes: None,
            memory_overcommit: None,
            ready_timeout: Duration::from_secs(10),
            template_linger: Duration::from_secs(10),
            cgroups: CgroupConfig::default(),
            network: NetworkConfig::default(),
            state_dir: None,
            tombstones: TombstonePolicy::default(),
            attach_only: false,
        }
    }
}

impl RuntimeBuilder {
    /// Where templates live (must be on an idmap-capable filesystem: ext4,
    /// xfs, btrfs; tmpfs only on 6.3+).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = dir.into();
        self
    }

    /// A directory the runtime covers with a tmpfs in its own private mount
    /// namespace (the host sees only the empty directory).
    pub fn scratch_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.scratch_dir = dir.into();
        self
    }

    /// Host ids sandbox ids map to (default 100000, 65536 ids).
    pub fn id_range(mut self, base: u32, count: u32) -> Self {
        self.id_range = IdRange { base, count };
        self
    }

    /// Creates past this many live sandboxes fail with `QuotaExceeded`.
    pub fn max_sandboxes(mut self, max: usize) -> Self {
        self.max_sandboxes = Some(max);
        self
    }

    /// Refuse a create (`ResourceUnavailable`) when the memory limits of
    /// the live sandboxes plus the new one would exceed the host's
    /// `MemAvailable` times `ratio` (see `quota.rs`). Off by default: an
    /// idle sandbox uses well under 1 MiB of its 512 MiB default limit.
    pub fn memory_overcommit(mut self, ratio: f64) -> Self {
        self.memory_overcommit = Some(ratio);
        self
    }

    /// Where sandbox cgroups go, relative to each hierarchy's root (default:
    /// below this process's own cgroup). On cgroup v2 this should be a
    /// delegated subtree.
    pub fn cgroup_parent(mut self, parent: impl Into<PathBuf>) -> Self {
        self.cgroups.parent = Some(parent.into());
        self
    }

    /// The whole cgroup configuration (see [`CgroupConfig`]).
    pub fn cgroup_config(mut self, config: CgroupConfig) -> Self {
        self.cgroups = config;
        self
    }

    /// How long a new sandbox may take to report ready.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// How long a template's layers stay attached (in the runtime's own
    /// mount namespace) once no sandbox of it lives: the next create of it
    /// within that time skips attaching them. Default 10 s; zero detaches
    /// them with the last sandbox. A removed template's layers are let go
    /// by then too.
    pub fn template_linger(mut self, linger: Duration) -> Self {
        self.template_linger = linger;
        self
    }

    /// How sandboxes' networks are served (see [`NetworkConfig`]): the
    /// proxy's threads and bounds, the default upstream resolver (default:
    /// the host's resolv.conf), namespaces kept ready, where exposed ports
    /// listen. Nothing of it starts before a sandbox needs it.
    pub fn network(mut self, config: NetworkConfig) -> Self {
        self.network = config;
        self
    }

    /// Sandboxes that outlive this process: each gets a record in
    /// `state_dir` (made root-only if it is not), its init stops dying with
    /// its creator, and a small monitor process enforces its lifetime and
    /// idle timeout while no process of sandlot runs. Every runtime on the
    /// same state dir — in this process or any other, at once or later —
    /// sees them all ([`Runtime::list`]) and takes any over
    /// ([`Runtime::connect`]); building one removes what sandboxes that
    /// ended while nobody watched left behind. Dropping a persistent
    /// runtime leaves its sandboxes running (see [`Runtime::shutdown`]).
    /// The CLI's state dir is `/run/sandlot`.
    pub fn persistent(mut self, state_dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(state_dir.into());
        self
    }

    /// A persistent runtime that only takes over, lists and ends sandboxes
    /// of its state dir and creates none (`create` fails with
    /// `Unsupported`): without the spawner thread, the base template and
    /// the compiled seccomp policies it builds in a fraction of the time —
    /// what the CLI's `exec`, `ls`, `kill` … use. Needs `persistent`.
    pub fn attach_only(mut self) -> Self {
        self.attach_only = true;
        self
    }

    /// How long ended sandboxes are remembered — their reason and last
    /// info, for [`Runtime::inspect`] and `list` with
    /// [`ListFilter::ended`] — and how many at most. Default 10 minutes,
    /// 1000. In the state dir when persistent (pruned every 64 ends or 30
    /// s, so the count may pass `max` by that much meanwhile).
    pub fn tombstones(mut self, keep_for: Duration, max: usize) -> Self {
        self.tombstones = TombstonePolicy { keep_for, max };
        self
    }

    pub fn build(self) -> Result<Runtime> {
        let euid = nix::unistd::geteuid().as_raw();
        if euid != 0 {
            return Err(Error::NotRoot { euid });
        }
        self.id_range.validate()?;
        if let Some(ratio) = self.memory_overcommit {
            quota::validate_ratio(ratio)?;
        }
        if self.attach_only && self.state_dir.is_none() {
            return Err(Error::invalid(
                "attach_only",
                "a runtime that creates nothing needs a state dir to take sandboxes from",
            ));
        }
        // The spawner sets up its namespaces while this thread writes the
        // init memfd, reads the base template, compiles seccomp and makes
        // the cgroups (each ~1 ms on a one-shot run). An attach-only
        // runtime needs none of it.
        let store = Store::open(&self.data_dir).map_err(|source| Error::Template {
            name: sandlot_rootfs::BASE_NAME.into(),
            source,
        })?;
        let makers = match self.attach_only {
            true => None,
            false => Some(StartingMakers::start(&self, &store)?),
        };
        let state = match &self.state_dir {
            Some(dir) => Some(Arc::new(StateDir::open(dir, self.tombstones)?)),
            None => None,
        };
        let cgroups = match state {
            Some(_) => Cgroups::persistent(&self.cgroups)?,
            None => Cgroups::new(&self.cgroups, &unique_runtime_name())?,
        };
        cgroups.remove_leftovers();

        let reactor = Reactor::new()?;
        let ctx = Arc::new(RuntimeCtx::new(
            reactor.clone(),
            Reaper::start()?,
            Teardowns::start()?,
            self.id_range,
            state,
            self.tombstones,
        ));
        let network = self.network;
        ctx.services
            .get_or_insert_with(move || NetService::new(network));
        let reactor_thread = {
            let reactor = reactor.clone();
            thread::Builder::new()
                .name("sandlot-io".into())
                .spawn(move || reactor.run())
                .map_err(|e| Error::io("start the io thread", e))?
        };
        let stop_threads = |ctx: &RuntimeCtx, io: thread::JoinHandle<()>| {
            ctx.reactor.stop();
            let _ = io.join();
            ctx.reaper.stop();
            ctx.teardowns.stop();
        };
        let makers = match makers.map(StartingMakers::ready).transpose() {
            Ok(makers) => makers,
            Err(e) => {
                stop_threads(&ctx, reactor_thread);
                return Err(e);
            }
        };
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                ctx,
                factory: Factory {
                    makers,
                    cgroups,
                    store,
                    max_sandboxes: self.max_sandboxes,
                    memory_overcommit: self.memory_overcommit,
                    ready_timeout: self.ready_timeout,
                },
                reactor_thread: Mutex::new(Some(reactor_thread)),
                shut_down: AtomicBool::new(false),
            }),
        }
        .swept())
    }
}

/// What creating needs, being set up: the spawner thread sets up its
/// namespaces and scratch space while the caller's thread does the rest.
struct StartingMakers {
    spawner: StartingSpawner,
    init_fd: std::os::fd::RawFd,
    base: sandlot_rootfs::Template,
    caps: CapPlan,
    seccomp: SeccompCache,
    default_seccomp: crate::kernel::seccomp::CompiledSeccomp,
}

impl StartingMakers {
    fn start(builder: &RuntimeBuilder, store: &Store) -> Result<StartingMakers> {
        let spawner = Spawner::start(SpawnerConfig {
            scratch_dir: builder.scratch_dir.clone(),
            range: builder.id_range,
            template_linger: builder.template_linger,
        })?;
        let init_fd = init_binary::init_fd()?;
        let base = store
            .get(sandlot_rootfs::BASE_NAME)
            .map_err(|source| Error::Template {
                name: sandlot_rootfs::BASE_NAME.into(),
                source,
            })?;
        let caps = CapPlan::sandbox_default()?;
        let seccomp = SeccompCache::native()?;
        let default_seccomp = seccomp.get(&SeccompProfile::default())?;
        Ok(StartingMakers {
            spawner,
            init_fd,
            base,
            caps,
            seccomp,
            default_seccomp,
        })
    }

    /// Hands the spawner the init memfd and waits until it is ready.
    fn ready(self) -> Result<Makers> {
        Ok(Makers {
            spawner: self.spawner.ready(crate::sys::fd::borrow(self.init_fd))?,
            base: Arc::new(self.base),
            caps: self.caps,
            seccomp: self.seccomp,
            default_seccomp: self.default_seccomp,
        })
    }
}

/// Which sandboxes [`Runtime::list`] returns.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    states: Vec<State>,
    metadata: Vec<(String, String)>,
    ended: bool,
}

impl ListFilter {
    pub fn all() -> Self {
        ListFilter::default()
    }

    /// Only sandboxes in `state` (several calls: any of them).
    pub fn state(mut self, state: State) -> Self {
        self.states.push(state);
        self
    }

    /// Only sandboxes whose metadata has `key` = `value` (several: all).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// Ended sandboxes too, from the runtime's tombstones (state
    /// Destroyed, with their end reason).
    pub fn ended(mut self) -> Self {
        self.ended = true;
        self
    }

    fn matches(&self, info: &SandboxInfo) -> bool {
        (self.states.is_empty() || self.states.contains(&info.state))
            && self
                .metadata
                .iter()
                .all(|(k, v)| info.metadata.get(k) == Some(v))
    }
}

struct RuntimeInner {
    ctx: Arc<RuntimeCtx>,
    factory: Factory,
    reactor_thread: Mutex<Option<thread::JoinHandle<()>>>,
    shut_down: AtomicBool,
}

/// The in-process sandbox runtime. Clones share one runtime; when the last
/// clone is dropped (or [`Runtime::shutdown`] is called) every sandbox is
/// destroyed.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("sandboxes", &self.inner.ctx.count())
            .finish()
    }
}

impl From<&Runtime> for MonitorTarget {
    fn from(runtime: &Runtime) -> Self {
        MonitorTarget(Target::Runtime(Arc::downgrade(&runtime.inner.ctx)))
    }
}

impl Runtime {
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// A runtime with default settings.
    pub fn new() -> Result<Runtime> {
        RuntimeBuilder::default().build()
    }

    /// Every lifecycle transition of every sandbox from now on (bounded:
    /// see [`Subscription`]).
    pub fn events(&self) -> Subscription<LifecycleEvent> {
        self.inner.ctx.events.subscribe()
    }

    /// Every OOM kill in every sandbox of this runtime, and every alert of
    /// every [`ResourceMonitor`](crate::ResourceMonitor) of it, from now on.
    pub fn resource_events(&self) -> Subscription<ResourceEvent> {
        self.inner.ctx.resource_events.subscribe()
    }

    /// Every connection and name any sandbox's network refused, from now
    /// on, with the destination and what denied it (a rule as written, an
    /// always-denied range, rebinding, a server name…). Bounded: see
    /// [`Subscription`].
    pub fn network_events(&self) -> Subscription<NetworkDenied> {
        match NetService::of(&self.inner.ctx) {
            Ok(service) => service.events(),
            // Shut down: a subscription that never receives anything.
            Err(_) => crate::engine::lifecycle::EventBus::default().subscribe(),
        }
    }

    /// The template registry under the runtime's data dir.
    pub fn templates(&self) -> &Store {
        &self.inner.factory.store
    }

    /// Creates a sandbox and returns when its init is ready (see
    /// ARCHITECTURE.md, "Setup sequence — parent"). Fails with
    /// `RuntimeShutDown`, leaving nothing, once `shutdown` has begun.
    pub fn create(&self, options: SandboxOptions) -> Result<Sandbox> {
        if self.inner.shut_down.load(Ordering::SeqCst) {
            return Err(Error::RuntimeShutDown);
        }
        create::create(&self.inner.factory, &self.inner.ctx, options).map(Sandbox::new)
    }

    /// Creates a sandbox the way the reference advises doing it reliably:
    /// errors that can pass on another try (the machine busy, a transient
    /// setup failure, a start command too slow) are retried with
    /// exponential backoff and jitter, then each fallback template is
    /// tried; the new sandbox is checked with a trivial command before it
    /// is returned. Invalid options fail at once. When every try failed,
    /// [`Error::AllAttemptsFailed`] lists each one's error.
    pub fn create_with_retry(
        &self,
        options: SandboxOptions,
        policy: &RetryPolicy,
    ) -> Result<Sandbox> {
        retry::create_with_retry(|options| self.create(options), options, policy)
    }

    /// A handle to a live sandbox. A persistent runtime also takes over
    /// one that another process (or an earlier runtime) made — under 5 ms
    /// (`sandlot-bench persist`); its lifetime is never shortened or reset
    /// by connecting. `SandboxNotFound` when there is no such live sandbox
    /// (see [`Runtime::inspect`] for why one ended).
    pub fn connect(&self, id: &str) -> Result<Sandbox> {
        let inner = &self.inner;
        if let Some(shared) = inner.ctx.get(id) {
            return Ok(Sandbox::new(shared));
        }
        match &inner.ctx.state {
            Some(state) => persist::adopt(&inner.factory, &inner.ctx, state, id).map(Sandbox::new),
            None => Err(Error::SandboxNotFound(id.to_string())),
        }
    }

    /// The sandboxes that match `filter`, oldest first: this runtime's,
    /// and on a persistent runtime every live sandbox of the state dir
    /// (without taking them over). Never waits for a teardown.
    pub fn list(&self, filter: &ListFilter) -> Vec<SandboxInfo> {
        let ctx = &self.inner.ctx;
        let mut infos: Vec<SandboxInfo> = ctx
            .sandboxes()
            .into_iter()
            .map(|shared| shared.info())
            .collect();
        if let Some(state) = &ctx.state {
            for id in state.ids() {
                if infos.iter().any(|i| i.id == id) {
                    continue;
                }
                if let Found::Live(record) = state.scan(&id) {
                    infos.extend(persist::info_from_files(state, &record));
                }
            }
        }
        if filter.ended {
            let live: Vec<String> = infos.iter().map(|i| i.id.clone()).collect();
            infos.extend(
                ctx.all_tombstones()
                    .into_iter()
                    .filter(|t| !live.contains(&t.info.id))
                    .map(|t| t.info),
            );
        }
        infos.retain(|info| filter.matches(info));
        infos.sort_by_key(|info| info.created_at);
        infos
    }

    /// One sandbox, live or ended within the tombstone policy (then with
    /// state Destroyed and its end reason). Does not take a persistent
    /// sandbox over. `SandboxNotFound` otherwise.
    pub fn inspect(&self, id: &str) -> Result<SandboxInfo> {
        let ctx = &self.inner.ctx;
        if let Some(shared) = ctx.get(id) {
            return Ok(shared.info());
        }
        if let Some(state) = &ctx.state {
            if persist::plausible_id(id) {
                if let Found::Live(record) = state.scan(id) {
                    if let Some(info) = persist::info_from_files(state, &record) {
                        return Ok(info);
                    }
                }
            }
        }
        ctx.tombstone(id)
            .map(|t| t.info)
            .ok_or_else(|| Error::SandboxNotFound(id.to_string()))
    }

    /// Destroys every sandbox (a persistent runtime: of the whole state
    /// dir) that has had no activity for longer than `threshold` and has
    /// no command in flight, with reason `IdleTimeout`.
    pub fn cleanup_inactive(&self, threshold: Duration) -> CleanupReport {
        let ctx = &self.inner.ctx;
        let now = SystemTime::now();
        let idle_since = |last: SystemTime| now.duration_since(last).unwrap_or_default();
        let mut candidates: Vec<String> = Vec::new();
        for shared in ctx.sandboxes() {
            let (last, busy) = match (&ctx.state, shared.files()) {
                (Some(state), Some(_)) => {
                    persist::activity(state, &shared.id).unwrap_or((now, true))
                }
                _ => (shared.last_activity(), shared.commands_in_flight() > 0),
            };
            if shared.state().is_live() && !busy && idle_since(last) > threshold {
                candidates.push(shared.id.clone());
            }
        }
        if let Some(state) = &ctx.state {
            for id in state.ids() {
                if candidates.contains(&id) || ctx.get(&id).is_some() {
                    continue;
                }
                let Some((last, busy)) = persist::activity(state, &id) else {
                    continue;
                };
                if !busy && idle_since(last) > threshold {
                    candidates.push(id);
                }
            }
        }
        let mut report = CleanupReport::default();
        for id in candidates {
            let ended = self
                .connect(&id)
                .and_then(|sandbox| sandbox.shared.destroy(Reason::IdleTimeout));
            match ended {
                Ok(()) => report.destroyed.push(id),
                // Ended meanwhile by someone else: not a failure.
                Err(Error::SandboxNotFound(_)) => {}
                Err(e) => report.failed.push((id, e)),
            }
        }
        report
    }

    /// The state dir of a persistent runtime.
    pub fn state_dir(&self) -> Option<&Path> {
        self.inner.ctx.state.as_deref().map(StateDir::root)
    }

    /// Removes what sandboxes of the state dir that ended while nobody
    /// watched left behind, starts a monitor for any live one without,
    /// and forgets old tombstones (done by `build`).
    fn swept(self) -> Runtime {
        if let Some(state) = &self.inner.ctx.state {
            state.sweep_staging();
            for id in state.ids() {
                if let Found::Live(record) = state.scan(&id) {
                    persist::ensure_monitor(&self.inner.ctx, state, &record);
                }
            }
            state.prune_tombstones();
        }
        self
    }

    /// Destroys every sandbox and stops the runtime's threads. Idempotent;
    /// also runs when the last clone of the runtime is dropped. A create
    /// racing it fails with `RuntimeShutDown` and leaves nothing. A
    /// persistent runtime destroys none: it lets go of its sandboxes (their
    /// handles then fail with `RuntimeShutDown`), which live on for the
    /// next process; commands it started run on without anyone to read
    /// their output.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }
}

/// What [`Runtime::cleanup_inactive`] did.
#[derive(Debug, Default)]
pub struct CleanupReport {
    /// Ids of the sandboxes it destroyed.
    pub destroyed: Vec<String>,
    /// Those it could not, and why.
    pub failed: Vec<(String, Error)>,
}

impl RuntimeInner {
    fn shutdown(&self) {
        if self.shut_down.swap(true, Ordering::SeqCst) {
            return;
        }
        // From here no create is admitted; those admitted already are in
        // the list (a sandbox still starting is doomed, and its creator
        // tears it down).
        let sandboxes = self.ctx.close();
        for sandbox in sandboxes {
            if sandbox.is_persisted() {
                sandbox.detach();
            } else {
                let _ = sandbox.destroy(Reason::HostShutdown);
            }
        }
        // Runtime-wide services (the network's threads) once no sandbox
        // holds them.
        self.ctx.services.release_all();
        self.ctx.reaper.stop();
        self.ctx.teardowns.stop();
        self.ctx.reactor.stop();
        if let Some(thread) = lock(&self.reactor_thread).take() {
            let _ = thread.join();
        }
        if let Some(makers) = &self.factory.makers {
            makers.spawner.stop();
        }
    }
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.shutdown();
    }
}
