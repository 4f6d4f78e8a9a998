//! The peers and how each is run with isolation as close to sandlot's as
//! it offers (see BENCHMARKS.md, "What each peer isolates").
//!
//! - `bwrap`: user, pid, mount, net, uts, ipc, cgroup namespaces; /usr
//!   read-only, fresh /proc, /dev, /tmp; no cgroup limits (it has none), no
//!   seccomp (none by default).
//! - `nsjail -Mo`: the same namespaces, a chroot to a tiny root with /usr
//!   read-only and a /tmp tmpfs, memory and pids limits in v1 cgroups; no
//!   seccomp by default.
//! - `crun run` / `runc run`: an OCI bundle with user (0 → 100000, 65536
//!   ids), pid, mount, net, uts, ipc and cgroup namespaces, memory 512 MiB and
//!   pids 128 (sandlot's defaults), /usr bound read-only into a read-only
//!   root, the default masks; no seccomp (the bundle has none).
//!   crun refuses a hybrid cgroup layout, so it runs from a thread of ours
//!   with a private mount namespace in which a small tmpfs covers
//!   /sys/fs/cgroup/unified (never on the host's mounts).
//! - `unshare`: six namespaces, nothing else (the namespace floor).
//! - `/bin/true` spawned directly: the process floor.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

/// A peer binary, found on PATH or where `scripts/install-peers.sh` puts it.
pub fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/opt/sandlot-peers")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The sandlot CLI beside this binary (same target dir), or `$SANDLOT_BIN`.
pub fn sandlot_cli() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("SANDLOT_BIN") {
        return Some(PathBuf::from(bin));
    }
    let me = std::env::current_exe().ok()?;
    let cli = me.parent()?.join("sandlot");
    cli.is_file().then_some(cli)
}

/// Runs a command to completion with null stdio; its wall time.
pub fn time_status(cmd: &mut Command) -> Result<Duration, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    let took = started.elapsed();
    if out.status.success() {
        Ok(took)
    } else {
        Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs a command that leaves something running behind it (`crun run
/// --detach`): no pipes, which the thing left behind would hold open.
pub fn run_detached(cmd: &mut Command) -> Result<(), String> {
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?}: {status}"))
    }
}

/// Scratch space for the peers: OCI bundles, nsjail's root, cgroup parents.
/// Removed on drop.
pub struct Workspace {
    pub dir: PathBuf,
    /// `sandlot-bench-<pid>`: the cgroup parent name every peer uses, in
    /// every hierarchy (our own new dirs, removed on drop).
    pub cgroup_name: String,
}

const MEMORY_LIMIT: u64 = 512 * 1024 * 1024;
const PIDS_LIMIT: u64 = 128;

impl Workspace {
    pub fn new() -> Workspace {
        let name = format!("sandlot-bench-{}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the bench workspace");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let ws = Workspace {
            dir,
            cgroup_name: name,
        };
        ws.make_root();
        ws
    }

    /// A root that is empty but for mount points and the usrmerge links.
    fn make_root(&self) {
        let root = self.root();
        for d in ["usr", "proc", "dev", "tmp", "sys", "etc"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        for l in ["bin", "lib", "lib64", "sbin"] {
            if Path::new("/usr").join(l).exists() {
                symlink(format!("usr/{l}"), root.join(l)).unwrap();
            }
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// An OCI bundle running `args`; `runtime` names its cgroup dir.
    pub fn bundle(&self, name: &str, args: &[&str]) -> PathBuf {
        let bundle = self.dir.join(name);
        fs::create_dir_all(&bundle).unwrap();
        let rootfs = self.root();
        let mounts = json!([
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/usr", "type": "bind", "source": "/usr",
             "options": ["rbind", "ro", "nosuid", "nodev"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "size=1g"]},
        ]);
        let config = json!({
            "ociVersion": "1.0.0",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "cwd": "/",
                "capabilities": {
                    "bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
                    "effective": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
                    "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE"]
                },
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                "noNewPrivileges": true
            },
            "root": {"path": rootfs, "readonly": true},
            "hostname": "peer",
            "mounts": mounts,
            "linux": {
                "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
                "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
                "resources": {
                    "memory": {"limit": MEMORY_LIMIT},
                    "pids": {"limit": PIDS_LIMIT}
                },
                "cgroupsPath": format!("/{}/{name}", self.cgroup_name),
                "namespaces": [
                    {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                    {"type": "uts"}, {"type": "mount"}, {"type": "user"},
                    {"type": "cgroup"}
                ],
                "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                    "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
                "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                    "/proc/sysrq-trigger"]
            }
        });
        fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
        bundle
    }

    /// nsjail's v1 cgroup parents (it adds `NSJAIL.<pid>` below them).
    pub fn nsjail_cgroup_parents(&self) {
        for controller in ["memory", "pids"] {
            let _ = fs::create_dir(
                Path::new("/sys/fs/cgroup")
                    .join(controller)
                    .join(&self.cgroup_name),
            );
        }
    }

    pub fn bwrap_args(&self, argv: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "--unshare-all",
            "--die-with-parent",
            "--uid",
            "0",
            "--gid",
            "0",
            "--ro-bind",
            "/usr",
            "/usr",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for l in ["bin", "lib", "lib64", "sbin"] {
            if Path::new("/usr").join(l).exists() {
                args.extend(["--symlink".into(), format!("usr/{l}"), format!("/{l}")]);
            }
        }
        args.push("--".into());
        args.extend(argv.iter().map(|s| s.to_string()));
        args
    }

    pub fn nsjail_args(&self, argv: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "-Mo".into(),
            "--quiet".into(),
            "--user".into(),
            "0:100000:65536".into(),
            "--group".into(),
            "0:100000:65536".into(),
            "--chroot".into(),
            self.root().display().to_string(),
            "-R".into(),
            "/usr".into(),
            "-T".into(),
            "/tmp".into(),
            "--cgroup_mem_max".into(),
            MEMORY_LIMIT.to_string(),
            "--cgroup_mem_parent".into(),
            self.cgroup_name.clone(),
            "--cgroup_pids_max".into(),
            PIDS_LIMIT.to_string(),
            "--cgroup_pids_parent".into(),
            self.cgroup_name.clone(),
            "--rlimit_as".into(),
            "max".into(),
            "--".into(),
        ];
        args.extend(argv.iter().map(|s| s.to_string()));
        args
    }
}

/// Removes `<hierarchy>/<name>` and everything below it, in every cgroup
/// hierarchy: only dirs the peers made under our name.
pub fn remove_cgroup_tree(name: &str) {
    let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.flatten() {
        let top = h.path().join(name);
        if top.is_dir() {
            remove_dirs(&top);
        }
    }
}

fn remove_dirs(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_dirs(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

impl Drop for Workspace {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.cgroup_name);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread in a private mount namespace where a tmpfs hides the empty
/// cgroup2 hierarchy, so crun sees plain v1 (it refuses the hybrid
/// layout). Commands spawned from this thread inherit its namespace; the
/// host's mounts are never changed.
pub struct PrivateNs {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl PrivateNs {
    pub fn start() -> Result<PrivateNs, String> {
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("bench-crun-ns".into())
            .spawn(move || {
                let setup = || -> Result<(), String> {
                    use nix::mount::{mount, MsFlags};
                    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
                        .map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
                    mount(
                        None::<&str>,
                        "/",
                        None::<&str>,
                        MsFlags::MS_REC | MsFlags::MS_SLAVE,
                        None::<&str>,
                    )
                    .map_err(|e| format!("make / rslave: {e}"))?;
                    if Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
                        mount(
                            Some("none"),
                            "/sys/fs/cgroup/unified",
                            Some("tmpfs"),
                            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                            // crun writes its would-be v2 files here.
                            Some("size=16m"),
                        )
                        .map_err(|e| format!("tmpfs over /sys/fs/cgroup/unified: {e}"))?;
                    }
                    Ok(())
                };
                let _ = ready_tx.send(setup());
                for job in jobs_rx {
                    job();
                }
            })
            .map_err(|e| e.to_string())?;
        ready_rx.recv().map_err(|e| e.to_string())??;
        Ok(PrivateNs {
            jobs: Some(jobs_tx),
            thread: Some(thread),
        })
    }

    /// Runs `f` on the namespace's thread and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        self.jobs
            .as_ref()
            .unwrap()
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .unwrap();
        rx.recv().unwrap()
    }
}

impl Drop for PrivateNs {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The pid of a running OCI container, from `<runtime> state <id>`.
pub fn container_pid(runtime: &Path, id: &str, ns: Option<&PrivateNs>) -> Option<i32> {
    let runtime = runtime.to_path_buf();
    let id = id.to_string();
    let state = move || Command::new(&runtime).args(["state", &id]).output().ok();
    let out = match ns {
        Some(ns) => ns.run(state),
        None => state(),
    }?;
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    state.get("pid")?.as_i64().map(|p| p as i32)
}
