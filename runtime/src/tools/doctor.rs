//! `sandlot doctor`: is this machine able to run sandboxes, and if not,
//! what is missing and how to fix it.
//!
//! Each check *tries* the feature the way the runtime uses it, where that
//! is harmless (a user namespace, an idmapped clone of the data dir that is
//! never attached, the runtime's cgroup dirs made and removed, a seccomp
//! filter installed in a throwaway child, a sandbox network namespace with
//! its steering program), and otherwise reads the kernel's
//! own answer (`/proc/filesystems`, sysctls). Nothing is left behind.
//!
//! ```no_run
//! let report = sandlot::doctor::check(std::path::Path::new("/var/lib/sandlot"));
//! print!("{report}");
//! std::process::exit(if report.ok() { 0 } else { 1 });
//! ```

use std::ffi::CString;
use std::fmt;
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::kernel::cgroups::{unique_runtime_name, CgroupConfig, Cgroups, Layout};
use crate::kernel::seccomp::SeccompProfile;
use crate::kernel::userns::{self, IdRange};
use crate::kernel::version;
use crate::sys::{clone, fd, mount as newmount, process, resolve};

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Works.
    Ok,
    /// Works, with a caveat (an older kernel, a setting to know about).
    Warn,
    /// Missing: sandboxes cannot be created (or not safely).
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so that `{:<4}` lines the names up.
        f.pad(match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        })
    }
}

/// One feature sandlot relies on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked (`user namespaces`, `idmapped mounts`, ...).
    pub name: &'static str,
    pub status: Status,
    /// What was found (may span lines).
    pub detail: String,
    /// How to fix it, when it is not [`Status::Ok`].
    pub fix: Option<String>,
}

/// Every check, in the order they ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether nothing required is missing (warnings allowed).
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }

    /// The check named `name`.
    pub fn get(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status == Status::Fail)
    }
}

impl fmt::Display for Report {
    /// `ok   kernel: 6.18.44` lines; details and fixes indented below.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for check in &self.checks {
            let mut lines = check.detail.lines();
            writeln!(
                f,
                "{:<4} {}: {}",
                check.status,
                check.name,
                lines.next().unwrap_or("")
            )?;
            for line in lines {
                writeln!(f, "       {line}")?;
            }
            if let Some(fix) = &check.fix {
                writeln!(f, "       fix: {fix}")?;
            }
        }
        let failed = self.failures().count();
        if failed == 0 {
            writeln!(f, "sandlot can create sandboxes on this machine")
        } else {
            writeln!(
                f,
                "{failed} required feature(s) missing: sandboxes cannot be created"
            )
        }
    }
}

fn ok(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name,
        status: Status::Ok,
        detail: detail.into(),
        fix: None,
    }
}

fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name,
        status: Status::Warn,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name,
        status: Status::Fail,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// Runs every check for a runtime whose templates live in `data_dir`.
pub fn check(data_dir: &Path) -> Report {
    let mut checks = vec![root(), kernel()];
    let (userns_check, idmap) = user_namespaces();
    checks.push(userns_check);
    checks.push(namespaces());
    checks.extend(cgroups());
    checks.push(overlayfs());
    checks.push(idmapped_mounts(data_dir, idmap.as_ref()));
    checks.push(host_usr(idmap.as_ref()));
    checks.push(clone3_pidfd());
    checks.push(seccomp());
    checks.push(openat2());
    checks.push(memfd_exec());
    checks.push(sandbox_networks());
    Report { checks }
}

/// Makes one sandbox network the way a create with a network does (a
/// namespace, `lo` and its routes, the host's sockets inside, the
/// sk_lookup steering program) and drops it. Optional: sandboxes without
/// a network need none of it, so a failure is a warning.
fn sandbox_networks() -> Check {
    const NAME: &str = "sandbox networks";
    let made = crate::kernel::net::NetNamespace::current().and_then(|home| {
        let start = std::time::Instant::now();
        let made = crate::kernel::net::setup::create(&home)?;
        Ok((made, start.elapsed()))
    });
    match made {
        Ok((net, took)) => {
            drop(net);
            ok(
                NAME,
                format!(
                    "made a network namespace with lo, local routes, the proxy's and resolver's \
                     sockets and the sk_lookup steering program in {:.2} ms",
                    took.as_secs_f64() * 1e3
                ),
            )
        }
        Err(e) => warn(
            NAME,
            format!("{e}; sandboxes with the network off are unaffected"),
            "sandboxes with a network need Linux 5.9+ with CONFIG_BPF_SYSCALL and \
             CONFIG_NET_NS, and CAP_NET_ADMIN, CAP_SYS_ADMIN and CAP_BPF for the runtime \
             (not granted inside most containers)",
        ),
    }
}

fn root() -> Check {
    let euid = nix::unistd::geteuid().as_raw();
    if euid == 0 {
        ok("root", "running as root")
    } else {
        fail(
            "root",
            format!("euid is {euid}"),
            "run sandlot as root (it maps id ranges, makes cgroups and mounts)",
        )
    }
}

fn kernel() -> Check {
    kernel_verdict(&version::release())
}

/// The kernel check for `release`: overlayfs on idmapped layers needs
/// 5.19; sandlot is tested on 6.1 and later.
pub fn kernel_verdict(release: &str) -> Check {
    match version::parse(release) {
        Some(v) if v >= (6, 1) => ok("kernel", format!("Linux {release}")),
        Some(v) if v >= (5, 19) => warn(
            "kernel",
            format!("Linux {release}: older than 6.1, the oldest kernel sandlot is tested on"),
            "upgrade to Linux 6.1 or later",
        ),
        Some(_) => fail(
            "kernel",
            format!(
                "Linux {release}: overlayfs on idmapped layers needs 5.19 (idmapped mounts 5.12, \
                 tmpfs ones 6.3)"
            ),
            "upgrade to Linux 6.1 or later",
        ),
        None => warn(
            "kernel",
            format!("cannot parse the release {release:?}"),
            "make sure this is Linux 6.1 or later",
        ),
    }
}

/// Creates one user namespace with the default range, as the runtime's
/// spawner does; its descriptor serves the idmapped-mount checks.
fn user_namespaces() -> (Check, Option<OwnedFd>) {
    const NAME: &str = "user namespaces";
    let max = read_trimmed("/proc/sys/user/max_user_namespaces");
    let mut detail = format!(
        "user.max_user_namespaces = {}",
        max.as_deref().unwrap_or("unreadable")
    );
    if let Some(restrict) = read_trimmed("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") {
        detail.push_str(&format!(
            "; kernel.apparmor_restrict_unprivileged_userns = {restrict}"
        ));
    }
    if max.as_deref() == Some("0") {
        return (
            fail(
                NAME,
                detail,
                "sysctl -w user.max_user_namespaces=15000 (and in /etc/sysctl.d to keep it)",
            ),
            None,
        );
    }
    if !nix::unistd::geteuid().is_root() {
        return (
            fail(
                NAME,
                format!("{detail}; not tried: needs root"),
                "run as root",
            ),
            None,
        );
    }
    match userns::idmap_namespace(&IdRange::default()) {
        Ok(fd) => (
            ok(
                NAME,
                format!("{detail}; created one mapping 0..65536 to 100000..165536"),
            ),
            Some(fd),
        ),
        Err(e) => (
            fail(NAME, format!("{detail}; {e}"), "see the message above"),
            None,
        ),
    }
}

fn namespaces() -> Check {
    let missing: Vec<&str> = ["user", "pid", "mnt", "net", "uts", "ipc", "cgroup"]
        .into_iter()
        .filter(|ns| !Path::new(&format!("/proc/self/ns/{ns}")).exists())
        .collect();
    if missing.is_empty() {
        ok(
            "namespaces",
            "user, pid, mount, network, uts, ipc and cgroup namespaces",
        )
    } else {
        fail(
            "namespaces",
            format!("the kernel lacks: {}", missing.join(", ")),
            "a kernel built with CONFIG_NAMESPACES and every CONFIG_*_NS",
        )
    }
}

/// The layout (which version serves each controller), then whether the
/// runtime's own cgroup dirs can really be made here (delegation).
fn cgroups() -> Vec<Check> {
    let layout = match Layout::detect(Path::new("/proc/self")) {
        Ok(layout) => layout,
        Err(e) => {
            return vec![fail(
                "cgroups",
                e.to_string(),
                "mount cgroup2 at /sys/fs/cgroup (or the v1 memory, pids, cpu hierarchies)",
            )]
        }
    };
    let mut checks = vec![ok("cgroups", layout.to_string().trim_end().to_string())];
    checks.push(
        match Cgroups::new(&CgroupConfig::default(), &unique_runtime_name()) {
            Ok(cgroups) => {
                let dirs: Vec<String> = cgroups
                    .dirs()
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect();
                // Dropping removes them again.
                drop(cgroups);
                ok(
                    "cgroup delegation",
                    format!("made and removed a runtime cgroup in {}", dirs.join(", ")),
                )
            }
            Err(e) => fail(
                "cgroup delegation",
                e.to_string(),
                "give sandlot a writable cgroup of its own: run it under `systemd-run --scope -p \
             Delegate=yes`, or set RuntimeBuilder::cgroup_parent to a delegated subtree",
            ),
        },
    );
    checks
}

fn overlayfs() -> Check {
    let listed = fs::read_to_string("/proc/filesystems")
        .map(|t| {
            t.lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"))
        })
        .unwrap_or(false);
    if listed {
        ok("overlayfs", "the kernel has overlay")
    } else {
        fail(
            "overlayfs",
            "overlay is not in /proc/filesystems",
            "modprobe overlay (and list it in /etc/modules-load.d), or a kernel with \
             CONFIG_OVERLAY_FS",
        )
    }
}

/// The nearest existing directory at or above `path` (the data dir may not
/// exist yet: it will be made on that directory's filesystem).
fn existing_ancestor(path: &Path) -> PathBuf {
    let mut at = path;
    loop {
        if at.is_dir() {
            return at.to_path_buf();
        }
        match at.parent() {
            Some(parent) => at = parent,
            None => return PathBuf::from("/"),
        }
    }
}

/// Clones `dir` as a detached tree and idmaps it — exactly what the
/// runtime does to template layers — then drops it unattached.
fn try_idmap(dir: &Path, idmap: &OwnedFd) -> Result<(), String> {
    let path = CString::new(dir.as_os_str().as_bytes()).map_err(|_| "NUL in path".to_string())?;
    let tree = newmount::clone_tree(&path).map_err(|e| format!("open_tree: {e}"))?;
    newmount::set_attributes(
        tree.as_fd(),
        newmount::MOUNT_ATTR_IDMAP | newmount::MOUNT_ATTR_RDONLY,
        Some(idmap.as_fd()),
    )
    .map_err(|e| format!("mount_setattr(MOUNT_ATTR_IDMAP): {e}"))
}

fn idmapped_mounts(data_dir: &Path, idmap: Option<&OwnedFd>) -> Check {
    const NAME: &str = "idmapped mounts";
    let dir = existing_ancestor(data_dir);
    let fs_name = crate::kernel::mounts::filesystem_name(&dir);
    let Some(idmap) = idmap else {
        return fail(
            NAME,
            format!(
                "data dir {} (on {fs_name}): not tried without a user namespace",
                data_dir.display()
            ),
            "fix user namespaces first",
        );
    };
    match try_idmap(&dir, idmap) {
        Ok(()) => ok(
            NAME,
            format!(
                "data dir {} is on {fs_name}, which can be idmapped",
                data_dir.display()
            ),
        ),
        Err(e) => fail(
            NAME,
            format!("data dir {} is on {fs_name}: {e}", data_dir.display()),
            "put the data dir (--data-dir, RuntimeBuilder::data_dir) on ext4, xfs or btrfs (tmpfs \
             from Linux 6.3 on); overlayfs (sandlot inside a container), NFS and FUSE cannot be \
             idmapped",
        ),
    }
}

/// The base template binds the host's /usr idmapped; other templates do
/// not need it.
fn host_usr(idmap: Option<&OwnedFd>) -> Check {
    const NAME: &str = "base template";
    let fs_name = crate::kernel::mounts::filesystem_name(Path::new("/usr"));
    match idmap.map(|fd| try_idmap(Path::new("/usr"), fd)) {
        Some(Ok(())) => ok(NAME, format!("the host's /usr ({fs_name}) can be idmapped")),
        Some(Err(e)) => warn(
            NAME,
            format!("the host's /usr is on {fs_name}: {e}; the base template will not work"),
            "use an imported template (`sandlot template import`)",
        ),
        None => warn(
            NAME,
            "not tried without a user namespace",
            "fix user namespaces first",
        ),
    }
}

/// Starts a child the way the runtime starts every sandbox: `clone3` with
/// `CLONE_PIDFD`, reaped through the pidfd.
fn clone3_pidfd() -> Check {
    const NAME: &str = "clone3 and pidfds";
    match clone::fork_into(0, None, || process::exit_now(0)) {
        Ok(child) => match process::reap_pidfd(child.pidfd.as_fd(), true) {
            Ok(_) => ok(NAME, "clone3 with CLONE_PIDFD, waitid(P_PIDFD)"),
            Err(e) => fail(
                NAME,
                format!("waitid(P_PIDFD) failed: {e}"),
                "Linux 5.4 or later",
            ),
        },
        Err(e) => fail(
            NAME,
            format!("clone3 with CLONE_PIDFD failed: {e}"),
            "Linux 5.3 or later, and no seccomp filter around sandlot that denies clone3",
        ),
    }
}

/// Compiles the default profile, then installs it (with no_new_privs) in a
/// throwaway child made with clone3 and a pidfd — the runtime's own way of
/// starting a sandbox.
fn seccomp() -> Check {
    const NAME: &str = "seccomp";
    let actions = read_trimmed("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
    for needed in ["errno", "kill_process"] {
        if !actions.split_whitespace().any(|a| a == needed) {
            return fail(
                NAME,
                format!("seccomp actions available: {actions:?}; {needed} is missing"),
                "a kernel built with CONFIG_SECCOMP_FILTER",
            );
        }
    }
    let compiled = match SeccompProfile::default().compile_native() {
        Ok(compiled) => compiled,
        Err(e) => return fail(NAME, e.to_string(), "build sandlot for x86_64 or aarch64"),
    };
    let (read_end, write_end) = match nix::unistd::pipe() {
        Ok(pipe) => pipe,
        Err(e) => return fail(NAME, format!("pipe: {e}"), "see the message"),
    };
    let child = clone::fork_into(0, None, || {
        let code: u8 =
            match crate::kernel::caps::set_no_new_privs().and_then(|()| compiled.install()) {
                Ok(()) => 0,
                Err(errno) => errno.clamp(1, 255) as u8,
            };
        let _ = nix::unistd::write(&write_end, &[code]);
        process::exit_now(0)
    });
    drop(write_end);
    let child = match child {
        Ok(child) => child,
        Err(e) => {
            return fail(
                NAME,
                format!("clone3 with a pidfd failed: {e}"),
                "Linux 5.3 or later (clone3, pidfds)",
            )
        }
    };
    let mut code = [255u8];
    let read = nix::unistd::read(&read_end, &mut code);
    let _ = process::reap_pidfd(child.pidfd.as_fd(), true);
    match (read, code[0]) {
        (Ok(1), 0) => ok(
            NAME,
            format!(
                "filter mode with errno and kill_process; the default profile ({} BPF \
                 instructions) installs",
                compiled.instruction_counts().iter().sum::<usize>()
            ),
        ),
        (_, errno) => fail(
            NAME,
            format!(
                "installing the default profile failed: {}",
                nix::errno::Errno::from_raw(i32::from(errno))
            ),
            "a kernel with CONFIG_SECCOMP_FILTER and no policy forbidding filters",
        ),
    }
}

fn openat2() -> Check {
    let root = match fd::open(c"/", libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) {
        Ok(raw) => raw,
        Err(e) => return fail("openat2", format!("open /: {e}"), "see the message"),
    };
    let result = resolve::open_in_root(fd::borrow(root), c"proc/self/..", libc::O_PATH, 0);
    let _ = nix::unistd::close(root);
    match result {
        // RESOLVE_NO_MAGICLINKS refuses /proc/self: either answer shows
        // the call exists.
        Ok(_) | Err(nix::errno::Errno::ELOOP) => ok(
            "openat2",
            "RESOLVE_IN_ROOT and RESOLVE_NO_MAGICLINKS work (the files API resolves inside the sandbox root)",
        ),
        Err(e) => fail(
            "openat2",
            format!("openat2 failed with {e}"),
            "Linux 5.6 or later",
        ),
    }
}

fn memfd_exec() -> Check {
    const NAME: &str = "memfd exec";
    let setting = read_trimmed("/proc/sys/vm/memfd_noexec");
    let detail = format!(
        "vm.memfd_noexec = {}",
        setting.as_deref().unwrap_or("absent (before Linux 6.3)")
    );
    if setting.as_deref() == Some("2") {
        return fail(
            NAME,
            format!("{detail}: no memfd may be executed, and init runs from a sealed memfd"),
            "sysctl -w vm.memfd_noexec=1 (sandlot asks for MFD_EXEC explicitly)",
        );
    }
    match crate::kernel::init_binary::init_fd() {
        Ok(_) => ok(NAME, format!("{detail}; init loaded into a sealed memfd")),
        Err(e) => fail(NAME, format!("{detail}; {e}"), "see the message"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_are_judged_by_what_sandlot_needs() {
        assert_eq!(kernel_verdict("6.18.44").status, Status::Ok);
        assert_eq!(kernel_verdict("6.1.0-27-amd64").status, Status::Ok);
        assert_eq!(kernel_verdict("5.19.17").status, Status::Warn);
        assert_eq!(kernel_verdict("5.15.0-91-generic").status, Status::Fail);
        assert!(kernel_verdict("5.4.0").fix.is_some());
    }

    #[test]
    fn a_report_fails_only_on_a_failed_check_and_prints_the_fix() {
        let report = Report {
            checks: vec![
                ok("kernel", "Linux 6.18"),
                warn("base template", "line one\nline two", "import one"),
            ],
        };
        assert!(report.ok());
        let text = report.to_string();
        assert!(text.contains("ok   kernel: Linux 6.18\n"), "{text}");
        assert!(
            text.contains(
                "warn base template: line one\n       line two\n       fix: import one\n"
            ),
            "{text}"
        );
        assert!(text.ends_with("sandlot can create sandboxes on this machine\n"));

        let mut broken = report.clone();
        broken
            .checks
            .push(fail("overlayfs", "missing", "modprobe overlay"));
        assert!(!broken.ok());
        assert_eq!(broken.failures().count(), 1);
        assert_eq!(broken.get("overlayfs").unwrap().status, Status::Fail);
        assert!(broken
            .to_string()
            .contains("FAIL overlayfs: missing\n       fix: modprobe overlay\n"));
        assert!(broken
            .to_string()
            .ends_with("1 required feature(s) missing: sandboxes cannot be created\n"));
    }

    #[test]
    fn the_nearest_existing_directory_stands_in_for_a_missing_data_dir() {
        assert_eq!(
            existing_ancestor(Path::new("/proc/self/no/such/dir")),
            PathBuf::from("/proc/self")
        );
        assert_eq!(existing_ancestor(Path::new("/")), PathBuf::from("/"));
    }
}
