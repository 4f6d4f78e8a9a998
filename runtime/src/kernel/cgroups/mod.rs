//! Per-sandbox cgroups: layout detection, limits, stats, kill, freeze.
//!
//! One [`Cgroups`] per runtime detects the machine's layout once
//! ([`Layout`], decided in `layout.rs` only), and creates the runtime's own
//! directory `<parent>/<runtime_name>` in every hierarchy it uses; each
//! sandbox gets `<parent>/<runtime_name>/<sandbox_id>` there
//! ([`SandboxCgroup`]). `<parent>` defaults to this process's own cgroup in
//! each hierarchy, so nothing is created outside our own subtree.
//!
//! Hierarchies used:
//! - pure v2: the one cgroup2 hierarchy; memory, pids and cpu are enabled
//!   in `cgroup.subtree_control` from the parent down (see
//!   [`CgroupConfig::move_self_to_leaf`] for the no-internal-processes
//!   rule);
//! - hybrid (our machines): v1 memory, pids, cpu and cpuacct (one dir when
//!   comounted), plus the controller-less cgroup2 hierarchy, which gives
//!   `cgroup.kill`, `cgroup.freeze` and a directory fd for
//!   `clone3(CLONE_INTO_CGROUP)`; the v1 freezer is then not needed;
//! - pure v1: memory, pids, cpu, cpuacct and freezer;
//! - cpuset only for sandboxes pinned with [`Limits::cpuset`]; never blkio,
//!   devices or named hierarchies (`name=systemd`).
//!
//! # Order of operations for the runtime
//! 1. [`Cgroups::create`] before the clone: limits are in place before the
//!    child exists.
//! 2. Put the child in: pure v2 — `clone3(CLONE_INTO_CGROUP,
//!    v2_dir_fd)`, nothing else; hybrid — `clone3` into the unified dir,
//!    then the child writes "0" to each of [`SandboxCgroup::v1_task_files`]
//!    itself (the runtime does this: a thread moving itself skips the
//!    machine-wide lock and its RCU grace period); a process placed from
//!    outside — [`SandboxCgroup::attach`]. Either way BEFORE the child
//!    unshares its cgroup namespace: the namespace root is the cgroup the
//!    child is in at unshare time.
//! 3. Destroy: [`SandboxCgroup::kill`] (cgroup.kill; on `Ok(false)` signal
//!    the pids of [`SandboxCgroup::procs`]), reap, then
//!    [`SandboxCgroup::remove`], which waits briefly for killed tasks to
//!    leave.
//!
//! # Why not cgroups-rs
//! The team's choice was cgroups-rs; version 0.5.1 was evaluated on the
//! hybrid host and is not used:
//! - `hierarchies::auto()` picks V1 on a hybrid host and never sees the
//!   unified hierarchy, so no `cgroup.kill`, no v2 freeze and no fd for
//!   `CLONE_INTO_CGROUP`;
//! - `Cgroup::new` on V1 mkdirs in every mounted hierarchy — blkio, devices
//!   and `name=systemd` included; restricting controllers applies one
//!   relative path to all hierarchies, which is wrong here (our memory
//!   cgroup is `/process_api/<hash>`, the others `/`), so it takes one
//!   `Cgroup` per controller;
//! - on V2 it enables controllers from the hierarchy root down, writing
//!   `cgroup.subtree_control` of cgroups that are not ours, ignoring errors;
//! - paths are hard-coded to `/sys/fs/cgroup` and `/proc/self`: no
//!   fixtures, so detection cannot be unit-tested;
//! - create + limits + delete in the five v1 hierarchies: median 650–750 µs
//!   against 275–295 µs for plain file writes (300 runs each; it re-parses
//!   mountinfo for every `Cgroup`, then `create_dir_all`s and truncating
//!   opens), and its delete sleeps 10–80 ms between retries;
//! - it brings 90 crates (zbus and an async stack for its systemd
//!   manager, nix 0.25, thiserror 1) into a library that wants few.
//!
//! Its parsing helpers are not injectable either, so this module uses none
//! of it: a few hundred lines of plain file I/O on directory fds.

#![deny(unsafe_code)]

mod error;
mod files;
mod layout;
mod oom;
mod stats;
mod v1;
mod v2;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub use error::CgroupError;
pub use layout::{Controller, Hierarchy, Kind, Layout, Version};
pub use oom::OomNotifier;
pub use stats::CgroupStats;
pub use v1::cpu_quota_us;
pub use v2::cpu_max;

use crate::kernel::limits::{Limits, MachineLimits};
use stats::{StatDir, StatFiles};

/// Where sandbox cgroups go and where the layout is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupConfig {
    /// The parent of the runtime's dir, as a path relative to each
    /// hierarchy's root (e.g. `/ci.slice/test`); it must exist. `None`:
    /// this process's own cgroup in each hierarchy.
    pub parent: Option<PathBuf>,
    /// Where `mountinfo` and `cgroup` are read from: `/proc/self`; tests
    /// inject fixtures. Its parent (`/proc`) is where other processes are
    /// looked up.
    pub proc_root: PathBuf,
    /// cgroup v2's no-internal-processes rule: a non-root cgroup that holds
    /// processes cannot enable controllers for its children. When
    /// controllers must be enabled in our own cgroup (no `parent`
    /// configured) and it is non-root and holds processes — typical under
    /// systemd — `true` (the default) moves THIS process, and any child of
    /// ours still there, into a new leaf `<own>/sandlot-host-<pid>` and
    /// then enables them. If processes that are not ours remain,
    /// [`Cgroups::new`] fails with [`CgroupError::InternalProcesses`]
    /// (fix: a delegated cgroup of our own, e.g. `systemd-run --scope -p
    /// Delegate=yes`, or `parent`). When the last `Cgroups` of the process
    /// is dropped and the leaf holds only this process, the process moves
    /// back and the leaf is removed. `false`: fail instead of moving.
    pub move_self_to_leaf: bool,
}

impl Default for CgroupConfig {
    fn default() -> Self {
        CgroupConfig {
            parent: None,
            proc_root: PathBuf::from("/proc/self"),
            move_self_to_leaf: true,
        }
    }
}

/// How a persistent sandbox's cgroup dirs are named:
/// `sandlot-persistent-<id>`, directly in the parent (see
/// [`Cgroups::persistent`]). Never mistaken for a dead runtime's
/// leftover by [`Cgroups::remove_leftovers`]; removed by whoever ends the
/// sandbox, or by the next process that opens its state dir.
pub const PERSISTENT_PREFIX: &str = "sandlot-persistent-";

/// A fresh runtime name, `sandlot-<pid>-<n>`: unique within this process
/// and recognisable by [`Cgroups::remove_leftovers`] once the process is
/// gone.
pub fn unique_runtime_name() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("sandlot-{}-{n}", std::process::id())
}

/// The runtime's dir in one hierarchy.
#[derive(Debug)]
struct RuntimeDir {
    /// Index into the layout's hierarchies.
    hier: usize,
    version: Version,
    /// Roles this hierarchy serves for sandboxes (Cpuset included when it
    /// serves it; its file is only written for pinned sandboxes).
    roles: Vec<Controller>,
    /// Serves Cpuset.
    cpuset: bool,
    /// Serves only Cpuset: created on the first pinned sandbox.
    lazy: bool,
    parent: PathBuf,
    path: PathBuf,
    /// Set once the dir exists; shared with the sandboxes placed in it.
    fd: OnceLock<Arc<OwnedFd>>,
    /// Made by this runtime, and so removed by it. A persistent runtime
    /// places sandboxes straight in the parent, which it never removes.
    owned: bool,
}

impl RuntimeDir {
    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.get().expect("runtime dir created").as_fd()
    }

    /// Where a sandbox of this runtime goes, in this hierarchy.
    fn placement(&self) -> Placed {
        Placed {
            hier: self.hier,
            version: self.version,
            fd: Arc::clone(self.fd.get().expect("runtime dir created")),
            path: self.path.clone(),
        }
    }
}

/// The dir a sandbox's own dir lives in, in one hierarchy: its runtime's
/// dir, or (a sandbox adopted from a state dir) whatever dir its creator
/// placed it in.
#[derive(Debug)]
struct Placed {
    /// Index into the layout's hierarchies.
    hier: usize,
    version: Version,
    fd: Arc<OwnedFd>,
    path: PathBuf,
}

impl Placed {
    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[derive(Debug)]
struct Inner {
    layout: Layout,
    proc_dir: PathBuf,
    machine: MachineLimits,
    dirs: Vec<RuntimeDir>,
    /// v1 `memory.memsw.limit_in_bytes` exists (swap accounting).
    memsw: bool,
    /// v2 `memory.swap.max` exists.
    swap_max: bool,
    cpuset_lock: Mutex<()>,
    cpuset_ready: OnceLock<()>,
    /// Claims on the host leaf (v2), released after the dirs are removed.
    leaf: Mutex<Vec<v2::LeafRef>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for d in self.dirs.iter_mut().rev() {
            if d.fd.take().is_some() && d.owned {
                let _ = files::rmdir_path(&d.path);
            }
        }
        self.leaf.get_mut().map(Vec::clear).ok();
    }
}

/// The cgroups of one runtime. See the [module docs](self).
#[derive(Debug)]
pub struct Cgroups {
    inner: Arc<Inner>,
}

impl Cgroups {
    /// Detects the layout once, then creates `<parent>/<runtime_name>` in
    /// each hierarchy it uses (on v2 enabling memory, pids and cpu in
    /// `cgroup.subtree_control` of the parent and of that dir). Everything
    /// made is removed again on failure, and when the last of this value
    /// and its [`SandboxCgroup`]s is dropped.
    ///
    /// `runtime_name` should be unique on the machine and start with
    /// `sandlot-<pid>-` so that [`Cgroups::remove_leftovers`] of a later
    /// runtime can recognise it once this process is gone.
    pub fn new(cfg: &CgroupConfig, runtime_name: &str) -> Result<Cgroups, CgroupError> {
        check_name(runtime_name)?;
        Cgroups::build(cfg, Some(runtime_name))
    }

    /// For a persistent runtime: sandboxes go straight into the parent
    /// (`<parent>/<sandbox name>`, see [`PERSISTENT_PREFIX`]) instead of
    /// into a runtime dir that dies with this process — a later runtime
    /// would remove a dead runtime's dir, and a shared one could be removed
    /// by one process while another creates in it. The parent is never
    /// removed; on v2 its `cgroup.subtree_control` gets memory, pids and
    /// cpu as for a runtime dir.
    pub fn persistent(cfg: &CgroupConfig) -> Result<Cgroups, CgroupError> {
        Cgroups::build(cfg, None)
    }

    /// `runtime_name`: the runtime's own dir below the parent; `None`:
    /// the parent itself.
    fn build(cfg: &CgroupConfig, runtime_name: Option<&str>) -> Result<Cgroups, CgroupError> {
        let mut layout = Layout::detect(&cfg.proc_root)?;
        // Another Cgroups of this process may have moved us into the host
        // leaf: our own cgroup is then its parent.
        if let Some(vi) = layout.v2_index() {
            let h = &mut layout.hierarchies_mut()[vi];
            let leaf = v2::host_leaf_name(std::process::id());
            if h.own_path.file_name() == Some(leaf.as_ref()) {
                h.own_path = h.own_path.parent().unwrap_or(Path::new("/")).to_owned();
            }
        }
        for role in [
            Controller::Memory,
            Controller::Pids,
            Controller::Cpu,
            Controller::CpuAcct,
        ] {
            if layout.index_of(role).is_none() {
                return Err(CgroupError::ControllerUnavailable {
                    controller: role.v1_name(),
                    detail: "no mounted v1 hierarchy has it and no cgroup2 hierarchy offers it \
                             where this process lives"
                        .into(),
                });
            }
        }
        let proc_dir = cfg
            .proc_root
            .parent()
            .unwrap_or(Path::new("/proc"))
            .to_owned();
        let mut inner = Inner {
            layout,
            proc_dir,
            machine: MachineLimits::current(),
            dirs: Vec::new(),
            memsw: false,
            swap_max: false,
            cpuset_lock: Mutex::new(()),
            cpuset_ready: OnceLock::new(),
            leaf: Mutex::new(Vec::new()),
        };
        // From here on, dropping `inner` undoes what was made.

        // The cgroup2 hierarchy first: what it offers (cgroup.freeze)
        // decides whether the v1 freezer is needed.
        if let Some(vi) = inner.layout.v2_index() {
            let h = &inner.layout.hierarchies()[vi];
            let (parent, may_move) = parent_dir(h, cfg)?;
            let roles = roles_of(&inner.layout, vi);
            let needed: Vec<&'static str> = roles
                .iter()
                .filter(|r| **r != Controller::Cpuset)
                .filter_map(|r| r.v2_name())
                .collect();
            if !needed.is_empty() {
                let claim = v2::prepare_parent(
                    &parent,
                    &needed,
                    may_move && cfg.move_self_to_leaf,
                    &inner.proc_dir,
                )?;
                inner.leaf.get_mut().expect("not shared yet").extend(claim);
            }
            let d = match runtime_name {
                Some(name) => make_runtime_dir(vi, Version::V2, roles, parent, name, false, false)?,
                None => parent_as_runtime_dir(vi, Version::V2, roles, parent, false)?,
            };
            inner.dirs.push(d);
            let d = inner.dirs.last().expect("just pushed");
            v2::enable(&d.path, &needed)?;
            // The root cgroup has neither file (it can be neither frozen
            // nor killed) — a persistent runtime's parent may be the root:
            // there the kernel's version says what every other cgroup has.
            let is_root = !files::exists_at(d.fd(), "cgroup.type");
            let version = crate::kernel::version::parse(&crate::kernel::version::release());
            let at_least = |v: (u32, u32)| version.is_some_and(|k| k >= v);
            let has_freeze =
                files::exists_at(d.fd(), "cgroup.freeze") || (is_root && at_least((5, 2)));
            let has_kill =
                files::exists_at(d.fd(), "cgroup.kill") || (is_root && at_least((5, 14)));
            inner.swap_max = files::exists_at(d.fd(), "memory.swap.max");
            inner.layout.apply_v2_probe(has_freeze, has_kill);
        }

        // Then every v1 hierarchy that serves a role; cpuset's alone is
        // created on first use.
        let mut v1_hiers: Vec<usize> = Controller::ALL
            .iter()
            .filter_map(|&c| inner.layout.index_of(c))
            .filter(|&i| inner.layout.hierarchies()[i].version == Version::V1)
            .collect();
        v1_hiers.sort_unstable();
        v1_hiers.dedup();
        for hi in v1_hiers {
            let h = &inner.layout.hierarchies()[hi];
            let (parent, _) = parent_dir(h, cfg)?;
            let roles = roles_of(&inner.layout, hi);
            let lazy = roles == [Controller::Cpuset];
            let has_cpuset = h.has("cpuset");
            let d = match runtime_name {
                Some(name) if lazy => RuntimeDir {
                    hier: hi,
                    version: Version::V1,
                    roles,
                    cpuset: true,
                    lazy: true,
                    path: parent.join(name),
                    parent,
                    fd: OnceLock::new(),
                    owned: true,
                },
                Some(name) => {
                    make_runtime_dir(hi, Version::V1, roles, parent, name, has_cpuset, false)?
                }
                None => parent_as_runtime_dir(hi, Version::V1, roles, parent, lazy)?,
            };
            if d.roles.contains(&Controller::Memory) {
                inner.memsw = files::exists_at(d.fd(), "memory.memsw.limit_in_bytes");
            }
            inner.dirs.push(d);
        }
        Ok(Cgroups {
            inner: Arc::new(inner),
        })
    }

    /// Which version serves which role, and where.
    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    /// The runtime's dirs that exist now, one per hierarchy used.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.inner
            .dirs
            .iter()
            .filter(|d| d.fd.get().is_some())
            .map(|d| d.path.clone())
            .collect()
    }

    /// The dirs [`Cgroups::create`] would make for `name` with `limits`,
    /// before it does (a persistent sandbox's record lists them first, so
    /// that a creator that dies in between leaves nothing unaccounted for).
    pub fn paths_for(&self, name: &str, limits: &Limits) -> Vec<PathBuf> {
        self.inner
            .dirs
            .iter()
            .filter(|d| !d.lazy || limits.cpuset.is_some())
            .map(|d| d.path.join(name))
            .collect()
    }

    /// Creates `<runtime dir>/<sandbox_id>` in every hierarchy used and
    /// writes the limits (after validating them). On failure whatever was
    /// made is removed before the error is returned.
    pub fn create(&self, sandbox_id: &str, limits: &Limits) -> Result<SandboxCgroup, CgroupError> {
        limits.validate_for(&self.inner.machine)?;
        check_name(sandbox_id)?;
        let inner = &*self.inner;
        let pinned_dir = match limits.cpuset {
            Some(_) => Some(inner.ensure_cpuset()?),
            None => None,
        };
        let mut sb = SandboxCgroup {
            inner: Arc::clone(&self.inner),
            id: sandbox_id.to_owned(),
            placed: Vec::with_capacity(inner.dirs.len()),
            remaining: Mutex::new(Vec::with_capacity(inner.dirs.len())),
            v2_fd: None,
            memory_limit: limits.memory,
            pids_max: limits.pids,
            stats: Mutex::new(None),
        };
        for (di, d) in inner.dirs.iter().enumerate() {
            if d.lazy && pinned_dir != Some(di) {
                continue;
            }
            files::mkdir_at(d.fd(), sandbox_id, &d.path)?;
            sb.placed.push(d.placement());
            sb.remaining
                .get_mut()
                .unwrap_or_else(|p| p.into_inner())
                .push(sb.placed.len() - 1);
            let writes = match d.version {
                Version::V1 => v1::limit_writes(&d.roles, limits, inner.memsw),
                Version::V2 => v2::limit_writes(&d.roles, limits, inner.swap_max),
            };
            for (file, value) in writes {
                files::write_at(d.fd(), &format!("{sandbox_id}/{file}"), &value, &d.path)?;
            }
            if d.version == Version::V2 {
                sb.v2_fd = Some(files::open_dir_at(d.fd(), sandbox_id, &d.path)?);
            }
        }
        Ok(sb)
    }

    /// The cgroups of a sandbox another process made (a persistent one):
    /// `paths` are its dirs, one per hierarchy, as its record lists them.
    /// Each is matched to the hierarchy mounted above it; all must share
    /// one name (the sandbox's). Nothing is created; the dirs are removed
    /// by [`SandboxCgroup::remove`] like those of a sandbox made here.
    pub fn adopt(&self, paths: &[PathBuf], limits: &Limits) -> Result<SandboxCgroup, CgroupError> {
        let bad =
            |path: &Path, why: &str| CgroupError::Detect(format!("{}: {why}", path.display()));
        let name = paths
            .first()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .ok_or_else(|| CgroupError::Detect("no cgroup dirs to adopt".into()))?
            .to_owned();
        check_name(&name)?;
        let mut sb = SandboxCgroup {
            inner: Arc::clone(&self.inner),
            id: name.clone(),
            placed: Vec::with_capacity(paths.len()),
            remaining: Mutex::new(Vec::with_capacity(paths.len())),
            v2_fd: None,
            memory_limit: limits.memory,
            pids_max: limits.pids,
            stats: Mutex::new(None),
        };
        for path in paths {
            if path.file_name().and_then(|n| n.to_str()) != Some(name.as_str()) {
                return Err(bad(path, "not named like the sandbox's other cgroup dirs"));
            }
            let parent = path.parent().ok_or_else(|| bad(path, "has no parent"))?;
            // The hierarchy mounted deepest above it.
            let hier = self
                .inner
                .layout
                .hierarchies()
                .iter()
                .enumerate()
                .filter(|(_, h)| parent.starts_with(&h.mount_point))
                .max_by_key(|(_, h)| h.mount_point.as_os_str().len())
                .map(|(i, _)| i)
                .ok_or_else(|| bad(path, "is in no cgroup hierarchy this runtime uses"))?;
            let version = self.inner.layout.hierarchies()[hier].version;
            let fd = Arc::new(files::open_dir(parent)?);
            if version == Version::V2 {
                sb.v2_fd = Some(files::open_dir_at(fd.as_fd(), &name, parent)?);
            }
            sb.placed.push(Placed {
                hier,
                version,
                fd,
                path: parent.to_owned(),
            });
            sb.remaining
                .get_mut()
                .unwrap_or_else(|p| p.into_inner())
                .push(sb.placed.len() - 1);
        }
        Ok(sb)
    }

    /// Removes what dead runtimes left beside ours: dirs named
    /// `sandlot-<pid>-*` (and host leaves `sandlot-host-<pid>`) in each
    /// parent we use, whose `<pid>` no longer exists in `/proc` and whose
    /// cgroups hold no process. Children are removed first; a tree with a
    /// live process in it is left alone. Returns every dir removed.
    pub fn remove_leftovers(&self) -> Vec<PathBuf> {
        let me = std::process::id();
        let mut removed = Vec::new();
        let mut seen: Vec<&Path> = Vec::new();
        for d in &self.inner.dirs {
            if seen.contains(&d.parent.as_path()) {
                continue;
            }
            seen.push(&d.parent);
            let Ok(entries) = std::fs::read_dir(&d.parent) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(pid) = leftover_pid(&name.to_string_lossy()) else {
                    continue;
                };
                if pid == me || self.inner.proc_dir.join(pid.to_string()).exists() {
                    continue;
                }
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_tree(&entry.path(), &mut removed);
                }
            }
        }
        removed
    }
}

impl Inner {
    /// Makes pinning possible: creates the cpuset hierarchy's runtime dir
    /// (v1) or enables cpuset for our subtree (v2), once. Returns the index
    /// of the dir that serves cpuset.
    fn ensure_cpuset(&self) -> Result<usize, CgroupError> {
        let Some(di) = self.dirs.iter().position(|d| d.cpuset) else {
            return Err(CgroupError::ControllerUnavailable {
                controller: "cpuset",
                detail: "no mounted v1 hierarchy has it and no cgroup2 hierarchy offers it, \
                         so limits.cpuset cannot be honoured"
                    .into(),
            });
        };
        if self.cpuset_ready.get().is_some() {
            return Ok(di);
        }
        let _guard = self.cpuset_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.cpuset_ready.get().is_some() {
            return Ok(di);
        }
        let d = &self.dirs[di];
        match d.version {
            Version::V1 => {
                if d.fd.get().is_none() && !d.owned {
                    // A persistent runtime's parent exists already.
                    let fd = files::open_dir(&d.path)?;
                    let _ = d.fd.set(Arc::new(fd));
                } else if d.fd.get().is_none() {
                    let made = make_runtime_dir(
                        d.hier,
                        Version::V1,
                        Vec::new(),
                        d.parent.clone(),
                        d.path
                            .file_name()
                            .and_then(|n| n.to_str())
                            .unwrap_or_default(),
                        true,
                        true,
                    )?;
                    let fd = made.fd.into_inner().expect("made");
                    // cannot fail: only this (locked) code sets it
                    let _ = d.fd.set(fd);
                }
            }
            Version::V2 => {
                // Our parent may hold processes again only if the host
                // leaf logic allowed it; prepare_parent handles both.
                let own = self.layout.hierarchies()[d.hier].own_dir();
                let may_move = own.as_deref() == Some(d.parent.as_path());
                let claim = v2::prepare_parent(&d.parent, &["cpuset"], may_move, &self.proc_dir)?;
                self.leaf
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(claim);
                v2::enable(&d.path, &["cpuset"])?;
            }
        }
        let _ = self.cpuset_ready.set(());
        Ok(di)
    }
}

/// The parent dir in hierarchy `h`, and whether it is our own cgroup.
fn parent_dir(h: &Hierarchy, cfg: &CgroupConfig) -> Result<(PathBuf, bool), CgroupError> {
    let rel = cfg.parent.as_deref().unwrap_or(&h.own_path);
    let own = Path::new("/").join(rel) == Path::new("/").join(&h.own_path);
    let dir = h.dir_of(rel).ok_or_else(|| {
        CgroupError::Detect(format!(
            "cgroup {} is not visible under {} (mounted from {})",
            rel.display(),
            h.mount_point.display(),
            h.mount_root.display()
        ))
    })?;
    Ok((dir, own))
}

/// The roles that hierarchy `hi` serves.
fn roles_of(layout: &Layout, hi: usize) -> Vec<Controller> {
    Controller::ALL
        .into_iter()
        .filter(|&c| layout.index_of(c) == Some(hi))
        .collect()
}

/// mkdir `<parent>/<name>`, open it, and on v1 cpuset hierarchies copy the
/// parent's cpus/mems; the dir is removed again if a later step fails.
fn make_runtime_dir(
    hier: usize,
    version: Version,
    roles: Vec<Controller>,
    parent: PathBuf,
    name: &str,
    has_cpuset: bool,
    lazy: bool,
) -> Result<RuntimeDir, CgroupError> {
    let path = parent.join(name);
    std::fs::create_dir(&path).map_err(|e| CgroupError::Mkdir {
        path: path.clone(),
        errno: error::errno_of(&e),
    })?;
    let prepared = files::open_dir(&path).and_then(|fd| {
        if version == Version::V1 && has_cpuset {
            v1::prepare_cpuset(&parent, fd.as_fd(), &path)?;
        }
        Ok(fd)
    });
    match prepared {
        Ok(fd) => Ok(RuntimeDir {
            hier,
            version,
            cpuset: roles.contains(&Controller::Cpuset) || lazy,
            roles,
            lazy,
            parent,
            path,
            fd: OnceLock::from(Arc::new(fd)),
            owned: true,
        }),
        Err(e) => {
            let _ = std::fs::remove_dir(&path);
            Err(e)
        }
    }
}

/// A persistent runtime's "runtime dir" in one hierarchy: the parent
/// itself, opened, never removed (`lazy`: the cpuset-only hierarchy, opened
/// on first use).
fn parent_as_runtime_dir(
    hier: usize,
    version: Version,
    roles: Vec<Controller>,
    parent: PathBuf,
    lazy: bool,
) -> Result<RuntimeDir, CgroupError> {
    let fd = OnceLock::new();
    if !lazy {
        let _ = fd.set(Arc::new(files::open_dir(&parent)?));
    }
    Ok(RuntimeDir {
        hier,
        version,
        cpuset: roles.contains(&Controller::Cpuset) || lazy,
        roles,
        lazy,
        path: parent.clone(),
        parent,
        fd,
        owned: false,
    })
}

/// Names may be one path component of safe characters.
fn check_name(name: &str) -> Result<(), CgroupError> {
    let bad = |reason| {
        Err(CgroupError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 200 {
        return bad("must be 1 to 200 characters");
    }
    if name.starts_with('.') {
        return bad("must not start with a dot");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return bad("only ASCII letters, digits, '-', '_' and '.' are allowed");
    }
    Ok(())
}

/// The pid in `sandlot-<pid>-<anything>` or `sandlot-host-<pid>`.
fn leftover_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("sandlot-")?;
    let digits = match rest.strip_prefix("host-") {
        Some(pid) => pid,
        None => {
            let (pid, tail) = rest.split_once('-')?;
            if tail.is_empty() {
                return None;
            }
            pid
        }
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Removes a cgroup tree, children first, if no cgroup in it holds a
/// process; returns whether it is gone.
fn remove_tree(path: &Path, removed: &mut Vec<PathBuf>) -> bool {
    let mut all_gone = true;
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                all_gone &= remove_tree(&entry.path(), removed);
            }
        }
    }
    if !all_gone {
        return false;
    }
    match files::read_path(&path.join("cgroup.procs")) {
        Ok(procs) if procs.trim().is_empty() => {}
        _ => return false,
    }
    if std::fs::remove_dir(path).is_ok() {
        removed.push(path.to_owned());
        true
    } else {
        false
    }
}

/// The cgroups of one sandbox. Dropping it kills what is left in it and
/// removes the dirs (best effort); [`SandboxCgroup::remove`] reports errors.
#[derive(Debug)]
pub struct SandboxCgroup {
    inner: Arc<Inner>,
    id: String,
    /// Where its dir is, in each hierarchy used.
    placed: Vec<Placed>,
    /// Indexes into `placed` of the dirs not removed yet.
    remaining: Mutex<Vec<usize>>,
    v2_fd: Option<OwnedFd>,
    memory_limit: u64,
    pids_max: u64,
    stats: Mutex<Option<StatFiles>>,
}

impl std::fmt::Debug for StatFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatFiles")
    }
}

impl SandboxCgroup {
    /// The sandbox id (the dirs' name).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The sandbox's dirs, one per hierarchy.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.placed.iter().map(|d| d.path.join(&self.id)).collect()
    }

    /// The `tasks` files of the sandbox's v1 dirs, for a child that joins
    /// them itself by writing "0" (itself) to each while it is still
    /// single-threaded and host root: moving only the calling thread skips
    /// the machine-wide lock a `cgroup.procs` write of another process takes
    /// for writing — which waits for a whole RCU grace period (6–15 ms on
    /// our VMs) whenever no other move happened within the last one.
    pub fn v1_task_files(&self) -> Vec<PathBuf> {
        self.dirs()
            .filter(|d| d.version == Version::V1)
            .map(|d| d.path.join(&self.id).join("tasks"))
            .collect()
    }

    /// An `O_DIRECTORY` fd of the sandbox's cgroup2 dir, for
    /// `clone3(CLONE_INTO_CGROUP)`; on a hybrid host this is the dir in the
    /// controller-less unified hierarchy. `None` without cgroup2.
    pub fn v2_dir_fd(&self) -> Option<BorrowedFd<'_>> {
        self.v2_fd.as_ref().map(|fd| fd.as_fd())
    }

    /// Moves process `pid` (all its threads) into the sandbox: writes it to
    /// `cgroup.procs` in every hierarchy — except the v2 one when
    /// `skip_v2`, for a child that clone3 already put there. Before the
    /// process unshares its cgroup namespace. (The runtime's own children
    /// join through [`SandboxCgroup::v1_task_files`] instead: cheaper.)
    pub fn attach(&self, pid: i32, skip_v2: bool) -> Result<(), CgroupError> {
        let value = pid.to_string();
        let file = format!("{}/cgroup.procs", self.id);
        for d in self.dirs() {
            if skip_v2 && d.version == Version::V2 {
                continue;
            }
            files::write_at(d.fd(), &file, &value, &d.path)?;
        }
        Ok(())
    }

    /// SIGKILLs every process in the sandbox at once through `cgroup.kill`
    /// (v2, or the unified hierarchy of a hybrid host; kernel 5.14+).
    /// `Ok(false)` when that is not available: signal the pids of
    /// [`SandboxCgroup::procs`] instead. Processes are gone shortly after,
    /// not necessarily on return.
    pub fn kill(&self) -> Result<bool, CgroupError> {
        if !self.inner.layout.has_kill() {
            return Ok(false);
        }
        match self.dir_of_version(Version::V2) {
            Some(d) => v2::kill(d.fd(), &self.id, &d.path),
            None => Ok(false),
        }
    }

    /// Stops every process in the sandbox and returns once all are frozen
    /// (v2 `cgroup.freeze`, waiting for `frozen 1` with poll; else the v1
    /// freezer). Fails, thawed again, if that takes more than 5 s.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        match self.freezer()? {
            (Version::V2, d) => v2::freeze(d.fd(), &self.id, &d.path),
            (Version::V1, d) => v1::freeze(d.fd(), &self.id, &d.path),
        }
    }

    /// Lets the processes run again.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        match self.freezer()? {
            (Version::V2, d) => v2::thaw(d.fd(), &self.id, &d.path),
            (Version::V1, d) => v1::thaw(d.fd(), &self.id, &d.path),
        }
    }

    /// Is the sandbox frozen (all of it)? `false` when it cannot be told.
    pub fn is_frozen(&self) -> bool {
        match self.freezer() {
            Ok((Version::V2, d)) => v2::is_frozen(d.fd(), &self.id).unwrap_or(false),
            Ok((Version::V1, d)) => {
                let file = format!("{}/freezer.state", self.id);
                v1::state(d.fd(), &file, &d.path).is_ok_and(|s| s == "FROZEN")
            }
            Err(_) => false,
        }
    }

    /// CPU, memory and pids usage. The first call opens the files (six
    /// fds, kept until the sandbox cgroup is removed); later calls only
    /// pread them.
    pub fn stats(&self) -> Result<CgroupStats, CgroupError> {
        let mut files = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        if files.is_none() {
            let dir = |role| -> Result<StatDir<'_>, CgroupError> {
                let d = self
                    .dir_of_role(role)
                    .ok_or(CgroupError::Unsupported("stats"))?;
                Ok(StatDir {
                    version: d.version,
                    fd: d.fd(),
                    base: &d.path,
                    id: &self.id,
                })
            };
            *files = Some(StatFiles::open(
                &dir(Controller::CpuAcct)?,
                &dir(Controller::Memory)?,
                &dir(Controller::Pids)?,
            )?);
        }
        files
            .as_mut()
            .expect("opened above")
            .read(self.memory_limit, self.pids_max)
    }

    /// Registers for notifications of OOM kills in the sandbox's memory
    /// cgroup (see [`OomNotifier`]).
    pub fn oom_notifier(&self) -> Result<OomNotifier, CgroupError> {
        let d = self
            .dir_of_role(Controller::Memory)
            .ok_or(CgroupError::Unsupported("OOM notification"))?;
        OomNotifier::open(d.version, d.fd(), &d.path, &self.id)
    }

    /// The processes in the sandbox (from the v2 dir when there is one).
    pub fn procs(&self) -> Result<Vec<i32>, CgroupError> {
        let d = self
            .dir_of_version(Version::V2)
            .or_else(|| self.dirs().next())
            .ok_or(CgroupError::Unsupported("listing processes"))?;
        let file = format!("{}/cgroup.procs", self.id);
        let text = std::fs::read_to_string(d.path.join(&file)).map_err(|e| CgroupError::Read {
            path: d.path.join(&file),
            errno: error::errno_of(&e),
        })?;
        Ok(files::parse_pids(&text))
    }

    /// Removes the sandbox's dir in every hierarchy. Tasks killed a moment
    /// ago may still be leaving: EBUSY is retried for up to 2 s, then the
    /// error names the path. Dirs that could not be removed are retried
    /// when the value is dropped. Works through a shared reference, so
    /// that a teardown need not wait for a reader of the stats to finish.
    pub fn remove(&self) -> Result<(), CgroupError> {
        // close our fds into the dirs first
        *self.stats.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let mut first_err = None;
        let mut remaining = self.remaining.lock().unwrap_or_else(|p| p.into_inner());
        remaining.retain(|&di| {
            let d = &self.placed[di];
            match files::rmdir_at(d.fd(), &self.id, &d.path) {
                Ok(()) => false,
                Err(e) => {
                    first_err.get_or_insert(e);
                    true
                }
            }
        });
        first_err.map_or(Ok(()), Err)
    }

    /// Lets go of the sandbox's cgroups without removing them (a
    /// persistent sandbox this process no longer serves): dropping the
    /// value then kills and removes nothing.
    pub fn disown(&self) {
        self.remaining
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Kills what is left: cgroup.kill, or signals (frozen first when the
    /// v1 freezer is there, so nothing forks meanwhile).
    fn kill_rest(&self) {
        for _ in 0..20 {
            let Ok(pids) = self.procs() else { return };
            if pids.is_empty() {
                return;
            }
            if !matches!(self.kill(), Ok(true)) {
                let frozen = self.freeze().is_ok();
                for pid in pids {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                if frozen {
                    let _ = self.thaw();
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn dirs(&self) -> impl Iterator<Item = &Placed> {
        self.placed.iter()
    }

    fn dir_of_version(&self, v: Version) -> Option<&Placed> {
        self.dirs().find(|d| d.version == v)
    }

    fn dir_of_role(&self, role: Controller) -> Option<&Placed> {
        let hi = self.inner.layout.index_of(role)?;
        self.dirs().find(|d| d.hier == hi)
    }

    fn freezer(&self) -> Result<(Version, &Placed), CgroupError> {
        self.dir_of_role(Controller::Freezer)
            .map(|d| (d.version, d))
            .ok_or(CgroupError::Unsupported("freezing"))
    }
}

impl Drop for SandboxCgroup {
    fn drop(&mut self) {
        if self
            .remaining
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
        {
            return;
        }
        self.kill_rest();
        let _ = self.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("sandlot-12-0").is_ok());
        assert!(check_name("ab12_x.y").is_ok());
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", "é"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        let e = check_name("a/b").unwrap_err();
        assert!(
            e.to_string().starts_with("invalid cgroup name \"a/b\": "),
            "{e}"
        );
    }

    #[test]
    fn leftover_names() {
        assert_eq!(leftover_pid("sandlot-123-0"), Some(123));
        assert_eq!(leftover_pid("sandlot-123-test-x"), Some(123));
        assert_eq!(leftover_pid("sandlot-host-77"), Some(77));
        assert_eq!(leftover_pid("sandlot-123"), None);
        assert_eq!(leftover_pid("sandlot-123-"), None);
        assert_eq!(leftover_pid("sandlot-x-1"), None);
        assert_eq!(leftover_pid("other-123-0"), None);
        assert_eq!(leftover_pid("sandlot-host-"), None);
    }

    #[test]
    fn runtime_names_are_unique_and_recognisable() {
        let (a, b) = (unique_runtime_name(), unique_runtime_name());
        assert_ne!(a, b);
        assert_eq!(leftover_pid(&a), Some(std::process::id()));
        assert!(check_name(&a).is_ok());
    }

    #[test]
    fn default_config() {
        let c = CgroupConfig::default();
        assert_eq!(c.parent, None);
        assert_eq!(c.proc_root, Path::new("/proc/self"));
        assert!(c.move_self_to_leaf);
    }
}
