//! The runtime: the façade a host program holds. Building it starts the
//! threads that serve every sandbox (spawner, io, reaper, teardown);
//! `create` runs the parent sequence (`create.rs`); `list`, `connect` and
//! `events` read the engine's table and buses.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use sandlot_rootfs::Store;

use crate::api::create::{self, Factory};
use crate::api::sandbox::Sandbox;
use crate::engine::error::{Error, Result};
use crate::engine::lifecycle::{
    LifecycleEvent, NetworkDenied, Reason, ResourceEvent, State, Subscription,
};
use crate::engine::options::SandboxOptions;
use crate::engine::reactor::Reactor;
use crate::engine::reaper::{Reaper, Teardowns};
use crate::engine::sandbox::{RuntimeCtx, SandboxInfo};
use crate::engine::sync::lock;
use crate::kernel::caps::CapPlan;
use crate::kernel::cgroups::{unique_runtime_name, CgroupConfig, Cgroups};
use crate::kernel::init_binary;
use crate::kernel::seccomp::{SeccompCache, SeccompProfile};
use crate::kernel::spawn::{Spawner, SpawnerConfig};
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

    pub fn build(self) -> Result<Runtime> {
        let euid = nix::unistd::geteuid().as_raw();
        if euid != 0 {
            return Err(Error::NotRoot { euid });
        }
        self.id_range.validate()?;
        if let Some(ratio) = self.memory_overcommit {
            quota::validate_ratio(ratio)?;
        }
        // The spawner sets up its namespaces while this thread writes the
        // init memfd and makes the cgroups (both ~1 ms on a one-shot run).
        let spawner = Spawner::start(SpawnerConfig {
            scratch_dir: self.scratch_dir.clone(),
            range: self.id_range,
            template_linger: self.template_linger,
        })?;
        let init_fd = init_binary::init_fd()?;
        let store = Store::open(&self.data_dir).map_err(|source| Error::Template {
            name: sandlot_rootfs::BASE_NAME.into(),
            source,
        })?;
        let base = store
            .get(sandlot_rootfs::BASE_NAME)
            .map_err(|source| Error::Template {
                name: sandlot_rootfs::BASE_NAME.into(),
                source,
            })?;

        let caps = CapPlan::sandbox_default()?;
        let seccomp = SeccompCache::native()?;
        let default_seccomp = seccomp.get(&SeccompProfile::default())?;
        let cgroups = Cgroups::new(&self.cgroups, &unique_runtime_name())?;
        cgroups.remove_leftovers();

        let reactor = Reactor::new()?;
        let ctx = Arc::new(RuntimeCtx::new(
            reactor.clone(),
            Reaper::start()?,
            Teardowns::start()?,
            self.id_range,
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
        let spawner = match spawner.ready(crate::sys::fd::borrow(init_fd)) {
            Ok(spawner) => spawner,
            Err(e) => {
                stop_threads(&ctx, reactor_thread);
                return Err(e.into());
            }
        };
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                ctx,
                factory: Factory {
                    spawner,
                    cgroups,
                    store,
                    base: Arc::new(base),
                    caps,
                    seccomp,
                    default_seccomp,
                    max_sandboxes: self.max_sandboxes,
                    memory_overcommit: self.memory_overcommit,
                    ready_timeout: self.ready_timeout,
                },
                reactor_thread: Mutex::new(Some(reactor_thread)),
                shut_down: AtomicBool::new(false),
            }),
        })
    }
}

/// Which sandboxes [`Runtime::list`] returns.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    states: Vec<State>,
    metadata: Vec<(String, String)>,
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

    /// A handle to a live sandbox of this runtime.
    pub fn connect(&self, id: &str) -> Result<Sandbox> {
        self.inner
            .ctx
            .get(id)
            .map(Sandbox::new)
            .ok_or_else(|| Error::SandboxNotFound(id.to_string()))
    }

    /// The sandboxes that match `filter`, oldest first. Never waits for a
    /// teardown.
    pub fn list(&self, filter: &ListFilter) -> Vec<SandboxInfo> {
        let mut infos: Vec<SandboxInfo> = self
            .inner
            .ctx
            .sandboxes()
            .into_iter()
            .map(|shared| shared.info())
            .filter(|info| filter.matches(info))
            .collect();
        infos.sort_by_key(|info| info.created_at);
        infos
    }

    /// Destroys every sandbox and stops the runtime's threads. Idempotent;
    /// also runs when the last clone of the runtime is dropped. A create
    /// racing it fails with `RuntimeShutDown` and leaves nothing.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }
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
            let _ = sandbox.destroy(Reason::HostShutdown);
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
        self.factory.spawner.stop();
    }
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.shutdown();
    }
}
