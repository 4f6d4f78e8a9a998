//! The runtime: the in-process lifecycle table and the three threads that
//! serve every sandbox (spawner, reactor, reaper).

use std::collections::HashMap;
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use sandlot_rootfs::{Store, Template};

use crate::engine::control;
use crate::engine::error::{Error, Result};
use crate::engine::lifecycle::{EventBus, LifecycleEvent, Reason, State};
use crate::engine::oom::ResourceEvent;
use crate::engine::options::SandboxOptions;
use crate::engine::reactor::Reactor;
use crate::engine::reaper::{Reaper, ReaperJob};
use crate::engine::resources::ResourceState;
use crate::engine::sandbox::{Live, NewSandbox, Sandbox, SandboxInfo, SandboxShared};
use crate::kernel::caps::CapPlan;
use crate::kernel::cgroups::{unique_runtime_name, CgroupConfig, Cgroups};
use crate::kernel::init_binary;
use crate::kernel::seccomp::{CompiledSeccomp, SeccompCache, SeccompProfile};
use crate::kernel::spawn::{self, CreateJob, Launched, Spawner, SpawnerConfig};
use crate::kernel::userns::IdRange;
use crate::services::quota;
use crate::sys::process;

/// What every sandbox of a runtime shares with it.
pub(crate) struct RuntimeCtx {
    pub events: EventBus,
    pub resource_events: EventBus<ResourceEvent>,
    pub reactor: Arc<Reactor>,
    pub reaper: Sender<ReaperJob>,
    pub table: Mutex<HashMap<String, Arc<SandboxShared>>>,
    pub range: IdRange,
}

/// Builds a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeBuilder {
    data_dir: PathBuf,
    scratch_dir: PathBuf,
    id_range: IdRange,
    max_sandboxes: Option<usize>,
    memory_overcommit: Option<f64>,
    ready_timeout: Duration,
    cgroups: CgroupConfig,
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
            cgroups: CgroupConfig::default(),
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
        let mut reaper = Reaper::start()?;
        let ctx = Arc::new(RuntimeCtx {
            events: EventBus::default(),
            resource_events: EventBus::default(),
            reactor: reactor.clone(),
            reaper: reaper.sender(),
            table: Mutex::new(HashMap::new()),
            range: self.id_range,
        });
        let reactor_thread = {
            let reaper = reaper.sender();
            let reactor = reactor.clone();
            thread::Builder::new()
                .name("sandlot-io".into())
                .spawn(move || reactor.run(reaper))
                .map_err(|e| Error::io("start the reactor thread", e))?
        };
        let spawner = match spawner.ready(crate::sys::fd::borrow(init_fd)) {
            Ok(spawner) => spawner,
            Err(e) => {
                reactor.stop();
                let _ = reactor_thread.join();
                reaper.stop();
                return Err(e.into());
            }
        };
        let base = Arc::new(base);
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                ctx,
                config: self,
                spawner,
                reaper: Mutex::new(reaper),
                reactor_thread: Mutex::new(Some(reactor_thread)),
                store,
                base,
                cgroups,
                caps,
                seccomp,
                default_seccomp,
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
    config: RuntimeBuilder,
    spawner: Spawner,
    reaper: Mutex<Reaper>,
    reactor_thread: Mutex<Option<thread::JoinHandle<()>>>,
    store: Store,
    /// Built (or checked) once at start; every other template is read from
    /// the store at create time, so an import is seen at once.
    base: Arc<Template>,
    cgroups: Cgroups,
    caps: CapPlan,
    seccomp: SeccompCache,
    default_seccomp: CompiledSeccomp,
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
            .field("sandboxes", &self.inner.ctx.table.lock().unwrap().len())
            .finish()
    }
}

/// The sandbox's root as its init sees it, for host-side file access.
fn open_root(launched: &Launched) -> Result<OwnedFd> {
    let path = format!("/proc/{}/root", launched.pid);
    let root = fs::File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(&path)
        .map_err(|e| Error::io(format!("open {path}"), e))?;
    Ok(root.into())
}

fn new_id() -> Result<String> {
    let mut bytes = [0u8; 8];
    process::random_bytes(&mut bytes).map_err(|e| Error::setup("getrandom", e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Kills and reaps a child whose setup did not complete.
struct ChildGuard<'a> {
    pidfd: Option<&'a OwnedFd>,
}

impl ChildGuard<'_> {
    fn disarm(mut self) {
        self.pidfd = None;
    }
}

impl Drop for ChildGuard<'_> {
    fn drop(&mut self) {
        if let Some(pidfd) = self.pidfd {
            let _ = process::pidfd_signal(pidfd.as_fd(), libc::SIGKILL);
            let _ = process::reap_pidfd(pidfd.as_fd(), true);
        }
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

    pub(crate) fn ctx(&self) -> &Arc<RuntimeCtx> {
        &self.inner.ctx
    }

    /// A reference that does not keep the runtime alive.
    pub(crate) fn downgrade(&self) -> WeakRuntime {
        WeakRuntime(Arc::downgrade(&self.inner))
    }

    /// Whether `shutdown` ran (or is running).
    pub(crate) fn is_shut_down(&self) -> bool {
        self.inner.shut_down.load(Ordering::SeqCst)
    }

    /// Every lifecycle transition of every sandbox from now on.
    pub fn events(&self) -> Receiver<LifecycleEvent> {
        self.inner.ctx.events.subscribe()
    }

    fn template(&self, name: &str) -> Result<Arc<Template>> {
        if name == sandlot_rootfs::BASE_NAME {
            return Ok(self.inner.base.clone());
        }
        match self.inner.store.get(name) {
            Ok(template) => Ok(Arc::new(template)),
            Err(sandlot_rootfs::Error::NotFound(_))
            | Err(sandlot_rootfs::Error::InvalidName { .. }) => {
                Err(Error::TemplateNotFound(name.to_string()))
            }
            Err(source) => Err(Error::Template {
                name: name.to_string(),
                source,
            }),
        }
    }

    /// The template registry under the runtime's data dir.
    pub fn templates(&self) -> &Store {
        &self.inner.store
    }

    /// Creates a sandbox and returns when its init is ready.
    pub fn create(&self, options: SandboxOptions) -> Result<Sandbox> {
        if self.inner.shut_down.load(Ordering::SeqCst) {
            return Err(Error::RuntimeShutDown);
        }
        options.validate()?;
        let template = self.template(&options.template)?;
        // What the caller left unset comes from the template's settings.
        let options = crate::services::template::with_defaults(options, &template.settings);
        options.limits.validate()?;
        let id = new_id()?;
        let shared = SandboxShared::new(
            NewSandbox {
                hostname: options.hostname.clone().unwrap_or_else(|| id.clone()),
                id: id.clone(),
                template_name: options.template.clone(),
                template: template.clone(),
                metadata: options.metadata.clone(),
                env: options.env.clone(),
                timeout: options.timeout,
                resources: ResourceState::new(&options),
            },
            self.inner.ctx.clone(),
        );
        {
            let mut table = self.inner.ctx.table.lock().unwrap();
            if let Some(max) = self.inner.config.max_sandboxes {
                if table.len() >= max {
                    drop(table);
                    let _ =
                        shared.transition(State::Failed, Reason::Rejected("max_sandboxes".into()));
                    return Err(Error::QuotaExceeded {
                        what: "max_sandboxes",
                        limit: max as u64,
                    });
                }
            }
            if let Some(ratio) = self.inner.config.memory_overcommit {
                if let Err(e) = quota::check_memory(&table, options.limits.memory, ratio) {
                    drop(table);
                    let _ = shared.transition(State::Failed, Reason::Rejected("memory".into()));
                    return Err(e);
                }
            }
            table.insert(id.clone(), shared.clone());
        }
        let _ = shared.transition(State::Starting, Reason::Created);
        match self.start(&shared, template, &options) {
            Ok(()) => {
                let sandbox = Sandbox { shared };
                crate::services::template::run_start(&sandbox)?;
                Ok(sandbox)
            }
            Err(e) => {
                self.inner.ctx.table.lock().unwrap().remove(&id);
                let _ = shared.transition(State::Error, Reason::SetupFailed(e.to_string()));
                Err(e)
            }
        }
    }

    /// Builds the sandbox (see ARCHITECTURE.md, "parent sequence").
    fn start(
        &self,
        shared: &Arc<SandboxShared>,
        template: Arc<Template>,
        options: &SandboxOptions,
    ) -> Result<()> {
        let inner = &self.inner;
        let limits = &options.limits;
        let seccomp = match &options.seccomp {
            None => inner.default_seccomp.clone(),
            Some(profile) => inner.seccomp.get(profile)?,
        };
        let mut rlimits: Vec<spawn::Rlimit> = vec![
            (libc::RLIMIT_CORE, 0, 0),
            (libc::RLIMIT_NOFILE, limits.open_files, limits.open_files),
        ];
        if let Some(max) = limits.max_file_size {
            rlimits.push((libc::RLIMIT_FSIZE, max, max));
        }
        let mut pending = inner.spawner.submit(CreateJob {
            id: shared.id.clone(),
            hostname: shared.hostname.clone(),
            template,
            disk_bytes: limits.disk,
            rlimits,
            caps: inner.caps,
            seccomp,
        })?;
        // While the spawner assembles the root (on the other core, when
        // there is one): the cgroups and their limits, still before the
        // child exists.
        let cgroup = match inner.cgroups.create(&shared.id, limits) {
            Ok(cgroup) => cgroup,
            Err(e) => {
                // Not handed over: the spawner abandons it before any clone.
                let _ = pending.wait();
                return Err(e.into());
            }
        };
        pending.cgroups_ready(cgroup.v2_dir_fd(), cgroup.v1_task_files())?;
        let launched = pending.wait()?;
        let guard = ChildGuard {
            pidfd: Some(&launched.pidfd),
        };
        spawn::release(&launched, &inner.ctx.range)?;
        control::wait_ready(
            &shared.id,
            launched.control.as_fd(),
            inner.config.ready_timeout,
        )?;
        let root = open_root(&launched)?;
        shared.watch_oom(&cgroup)?;
        let tokens = inner
            .ctx
            .reactor
            .watch_sandbox(shared, launched.control.as_fd(), launched.pidfd.as_fd())
            .map_err(|e| {
                shared.unwatch_oom();
                Error::setup("watch the sandbox", e)
            })?;
        guard.disarm();
        shared.set_live(Live {
            pid: launched.pid,
            pidfd: launched.pidfd,
            control: Arc::new(launched.control),
            root: Arc::new(root),
            rw: launched.rw,
            cgroup: Some(cgroup),
            control_token: Some(tokens[0]),
            init_token: Some(tokens[1]),
        })?;
        if let Err(state) = shared.transition(State::Running, Reason::Started) {
            // Destroyed while starting (runtime shutdown): already torn down.
            return Err(Error::SandboxNotRunning {
                id: shared.id.clone(),
                state,
            });
        }
        let _ = inner.ctx.reaper.send(ReaperJob::Deadline(
            Arc::downgrade(shared),
            shared.deadline(),
        ));
        Ok(())
    }

    /// A handle to a live sandbox of this runtime.
    pub fn connect(&self, id: &str) -> Result<Sandbox> {
        self.inner
            .ctx
            .table
            .lock()
            .unwrap()
            .get(id)
            .map(|shared| Sandbox {
                shared: shared.clone(),
            })
            .ok_or_else(|| Error::SandboxNotFound(id.to_string()))
    }

    /// The sandboxes that match `filter`, oldest first.
    pub fn list(&self, filter: &ListFilter) -> Vec<SandboxInfo> {
        let sandboxes: Vec<Arc<SandboxShared>> = self
            .inner
            .ctx
            .table
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect();
        let mut infos: Vec<SandboxInfo> = sandboxes
            .into_iter()
            .map(|shared| Sandbox { shared }.info())
            .filter(|info| filter.matches(info))
            .collect();
        infos.sort_by_key(|info| info.created_at);
        infos
    }

    /// Destroys every sandbox and stops the runtime's threads. Idempotent;
    /// also runs when the last clone of the runtime is dropped.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }
}

/// A [`Runtime`] that may have been dropped (monitors hold this).
#[derive(Clone)]
pub(crate) struct WeakRuntime(Weak<RuntimeInner>);

impl WeakRuntime {
    pub fn upgrade(&self) -> Option<Runtime> {
        self.0.upgrade().map(|inner| Runtime { inner })
    }
}

impl RuntimeInner {
    fn shutdown(&self) {
        if self.shut_down.swap(true, Ordering::SeqCst) {
            return;
        }
        let sandboxes: Vec<Arc<SandboxShared>> =
            self.ctx.table.lock().unwrap().values().cloned().collect();
        for sandbox in sandboxes {
            let _ = sandbox.destroy(Reason::HostShutdown);
        }
        self.reaper.lock().unwrap().stop();
        self.ctx.reactor.stop();
        if let Some(thread) = self.reactor_thread.lock().unwrap().take() {
            let _ = thread.join();
        }
        self.spawner.stop();
    }
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.shutdown();
    }
}
