//! Root integration tests of the cgroups module against the real kernel.
//!
//! They run on whatever layout the machine has: the hybrid host (v1
//! controllers + an empty cgroup2) and the pure-v2 guest of
//! `scripts/test-cgroup2-vm.sh` (in the root cgroup and with
//! `VM_CGROUP=/ci.slice/test`). Without root they fail with a message that
//! says how to run them.
//!
//! Child processes are this test binary again, run as helpers (see
//! [`helper_process_entry`]); each is killed and reaped by a guard, and
//! every cgroup is removed by the library's own drop guards, so a failing
//! test leaves nothing behind.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use sandlot::testing::cgroups::{
    CgroupConfig, CgroupError, Cgroups, Controller, Kind, SandboxCgroup, Version,
};
use sandlot::Limits;

const HELPER_ENV: &str = "SANDLOT_CGROUP_TEST_HELPER";

// ---------------------------------------------------------------- helpers

/// Tests that need this process to stay where it is take it shared; the
/// test of the v2 host leaf takes it exclusively.
static PLACEMENT: RwLock<()> = RwLock::new(());
/// Timing-sensitive tests run one at a time.
static TIMING: Mutex<()> = Mutex::new(());

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the cgroups integration tests need root (they create real cgroups): run them as root, \
         e.g. `sudo -E cargo test -p sandlot --test cgroups`, or in the v2 guest with \
         scripts/test-cgroup2-vm.sh"
    );
}

fn shared() -> RwLockReadGuard<'static, ()> {
    require_root();
    PLACEMENT.read().unwrap_or_else(|p| p.into_inner())
}

fn timing() -> MutexGuard<'static, ()> {
    TIMING.lock().unwrap_or_else(|p| p.into_inner())
}

/// A runtime name that `remove_leftovers` recognises: `sandlot-<pid>-…`.
fn runtime_name(test: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "sandlot-{}-{}-{test}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn runtime(test: &str) -> Cgroups {
    Cgroups::new(&CgroupConfig::default(), &runtime_name(test)).expect("Cgroups::new")
}

/// A helper process (this binary in helper mode), killed and reaped on drop.
struct Helper {
    child: Child,
}

/// This test binary, re-run as a helper process in `mode`.
fn helper_command(mode: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "helper_process_entry",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(HELPER_ENV, mode);
    command
}

impl Helper {
    /// Starts a helper; modes that act wait for [`Helper::go`] first, so
    /// the test can attach it to a cgroup before it does anything.
    fn spawn(mode: &str) -> Helper {
        let child = helper_command(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn helper");
        Helper { child }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn go(&mut self) {
        self.child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(b"g")
            .expect("tell helper to go");
    }

    /// Waits for the helper to exit (bounded).
    fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "helper {} still running after {limit:?}",
                self.pid()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` every millisecond until it holds or `limit` passes.
fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    cond()
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path.as_ref())
        .unwrap_or_else(|e| panic!("read {}: {e}", path.as_ref().display()))
}

/// The dir of `sb` that serves `role`.
fn dir_of(cg: &Cgroups, sb: &SandboxCgroup, role: Controller) -> PathBuf {
    let mount = &cg.layout().hierarchy_of(role).unwrap().mount_point;
    sb.paths()
        .into_iter()
        .filter(|p| p.starts_with(mount))
        .max_by_key(|p| p.as_os_str().len())
        .unwrap_or_else(|| panic!("no dir for {role} under {}", mount.display()))
}

/// Every cgroup path in `/proc/<pid>/cgroup`.
fn proc_cgroup_paths(pid: i32) -> Vec<String> {
    read(format!("/proc/{pid}/cgroup"))
        .lines()
        .map(|l| l.splitn(3, ':').nth(2).unwrap().to_string())
        .collect()
}

/// The hierarchy-relative path of an absolute cgroup dir.
fn relative(cg: &Cgroups, dir: &Path) -> String {
    let h = cg
        .layout()
        .hierarchies()
        .iter()
        .filter(|h| dir.starts_with(&h.mount_point))
        .max_by_key(|h| h.mount_point.as_os_str().len())
        .unwrap();
    let rel = dir.strip_prefix(&h.mount_point).unwrap();
    h.mount_root.join(rel).display().to_string()
}

/// The helper processes' side: not a test of its own but the entry point of
/// the helper processes the tests start (this binary with HELPER_ENV set,
/// `--ignored`); ignored in a normal run, where it would have nothing to do.
#[test]
#[ignore = "entry point of helper processes, run by the tests themselves"]
fn helper_process_entry() {
    let Ok(mode) = std::env::var(HELPER_ENV) else {
        return;
    };
    let go = || {
        let mut b = [0u8; 1];
        let _ = std::io::Read::read(&mut std::io::stdin(), &mut b);
    };
    let sleep_forever = || loop {
        std::thread::sleep(Duration::from_secs(3600));
    };
    let spawn_sleeper = || {
        helper_command("sleep")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
    };
    let (name, arg) = mode.split_once(':').unwrap_or((&mode, "0"));
    let arg: usize = arg.parse().unwrap();
    match name {
        "sleep" => sleep_forever(),
        "spin" => {
            go();
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        "memhog" => {
            go();
            let mut held = Vec::new();
            for _ in 0..arg {
                held.push(vec![1u8; 1 << 20]); // filled, so every page is touched
            }
            std::process::exit(0); // survived: the limit did not bite
        }
        "forkbomb" => {
            go();
            let mut kids = Vec::new();
            for _ in 0..arg {
                match spawn_sleeper() {
                    Ok(c) => kids.push(c),
                    Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                        std::process::exit(kids.len() as i32)
                    }
                    Err(e) => panic!("spawn: {e}"),
                }
            }
            std::process::exit(250); // never refused
        }
        "tree" => {
            go();
            let kids: Vec<_> = (0..arg).map(|_| spawn_sleeper().unwrap()).collect();
            std::mem::forget(kids);
            sleep_forever();
        }
        other => panic!("unknown helper mode {other}"),
    }
}

// ------------------------------------------------------------------ tests

#[test]
fn layout_matches_mountinfo() {
    let _g = shared();
    let cg = runtime("layout");
    let layout = cg.layout();
    eprintln!("{layout}");
    let mountinfo = read("/proc/self/mountinfo");
    let pure_v2 = mountinfo
        .lines()
        .any(|l| l.contains(" /sys/fs/cgroup ") && l.contains(" - cgroup2 "));
    for role in [
        Controller::Memory,
        Controller::Pids,
        Controller::Cpu,
        Controller::CpuAcct,
    ] {
        let want = if pure_v2 { Version::V2 } else { Version::V1 };
        assert_eq!(layout.version_of(role), Some(want), "{role}");
    }
    if pure_v2 {
        assert_eq!(layout.kind(), Kind::V2);
    } else {
        // the hybrid host: v1 controllers, freeze and kill through unified
        assert_eq!(layout.kind(), Kind::Hybrid);
        assert_eq!(layout.version_of(Controller::Freezer), Some(Version::V2));
        assert!(layout.has_kill());
        // runtime dirs only where needed: never blkio, devices, systemd,
        // and cpuset only once a sandbox is pinned
        for d in cg.dirs() {
            let d = d.display().to_string();
            for never in ["/blkio/", "/devices/", "/systemd/", "/cpuset/", "/freezer/"] {
                assert!(!d.contains(never), "{d}");
            }
        }
        assert_eq!(
            cg.dirs().len(),
            5,
            "memory pids cpu cpuacct unified: {:?}",
            cg.dirs()
        );
    }
}

#[test]
fn attached_child_is_in_every_sandbox_cgroup_with_limits_written() {
    let _g = shared();
    let cg = runtime("attach");
    let limits = Limits {
        cpus: 0.5,
        memory: 64 << 20,
        pids: 16,
        ..Limits::default()
    };
    let sb = cg.create("sb-attach", &limits).unwrap();
    assert!(
        sb.v2_dir_fd().is_some(),
        "both layouts here have a cgroup2 hierarchy"
    );
    let child = Helper::spawn("sleep");
    sb.attach(child.pid(), false).unwrap();

    let paths = proc_cgroup_paths(child.pid());
    for dir in sb.paths() {
        let rel = relative(&cg, &dir);
        assert!(
            paths.contains(&rel),
            "{rel} not in /proc/{}/cgroup: {paths:?}",
            child.pid()
        );
    }
    assert_eq!(sb.procs().unwrap(), vec![child.pid()]);
    // hierarchies we do not use keep the child where we are
    let ours = proc_cgroup_paths(std::process::id() as i32);
    let lines = read(format!("/proc/{}/cgroup", child.pid()));
    for (line, own) in lines.lines().zip(&ours) {
        if line.contains(":blkio:") || line.contains(":devices:") || line.contains("name=systemd") {
            assert!(line.ends_with(&format!(":{own}")), "{line}");
        }
    }

    // the limits, as the kernel shows them
    let mem = dir_of(&cg, &sb, Controller::Memory);
    let cpu = dir_of(&cg, &sb, Controller::Cpu);
    let pids = dir_of(&cg, &sb, Controller::Pids);
    assert_eq!(read(pids.join("pids.max")).trim(), "16");
    match cg.layout().version_of(Controller::Memory).unwrap() {
        Version::V1 => {
            assert_eq!(read(mem.join("memory.limit_in_bytes")).trim(), "67108864");
            if mem.join("memory.memsw.limit_in_bytes").exists() {
                assert_eq!(
                    read(mem.join("memory.memsw.limit_in_bytes")).trim(),
                    "67108864"
                );
            }
            assert_eq!(read(mem.join("memory.swappiness")).trim(), "0");
            assert_eq!(read(cpu.join("cpu.cfs_quota_us")).trim(), "50000");
            assert_eq!(read(cpu.join("cpu.cfs_period_us")).trim(), "100000");
        }
        Version::V2 => {
            assert_eq!(read(mem.join("memory.max")).trim(), "67108864");
            if mem.join("memory.swap.max").exists() {
                assert_eq!(read(mem.join("memory.swap.max")).trim(), "0");
            }
            assert_eq!(read(cpu.join("cpu.max")).trim(), "50000 100000");
        }
    }
    let st = sb.stats().unwrap();
    // the helper and its test-harness thread: pids counts threads
    assert!((1..=4).contains(&st.pids_current), "{st:?}");
    assert_eq!(st.pids_max, 16);
    assert_eq!(st.memory_limit, 64 << 20);
    // (memory_current may be 0: on v1, pages charged before the attach stay
    // with the old cgroup, and the sleeping helper allocates nothing after)
}

#[test]
fn memory_limit_bites_and_oom_kill_is_counted() {
    let _g = shared();
    let cg = runtime("oom");
    let limits = Limits {
        memory: 32 << 20,
        ..Limits::default()
    };
    let sb = cg.create("sb-oom", &limits).unwrap();
    let mut child = Helper::spawn("memhog:256");
    sb.attach(child.pid(), false).unwrap();
    child.go();
    let status = child.wait(Duration::from_secs(60));
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the memory hog was not OOM-killed: {status:?}"
    );
    let st = sb.stats().unwrap();
    eprintln!("after the OOM kill: {st:?}");
    assert!(st.oom_kills >= 1, "{st:?}");
    assert_eq!(st.memory_limit, 32 << 20);
    if let Some(peak) = st.memory_peak {
        assert!(peak > 16 << 20 && peak <= (32 << 20) + (1 << 20), "{st:?}");
    }
}

#[test]
fn pids_limit_bites() {
    let _g = shared();
    let cg = runtime("pids");
    let limits = Limits {
        pids: 8,
        ..Limits::default()
    };
    let sb = cg.create("sb-pids", &limits).unwrap();
    let mut child = Helper::spawn("forkbomb:64");
    sb.attach(child.pid(), false).unwrap();
    child.go();
    let status = child.wait(Duration::from_secs(120));
    let spawned = status.code().expect("exited");
    assert_ne!(spawned, 250, "every fork succeeded: pids.max did not bite");
    assert!(
        (1..8).contains(&spawned),
        "spawned {spawned} children under pids.max 8"
    );
    let st = sb.stats().unwrap();
    assert!(st.pids_current <= 8, "{st:?}");
    assert!(sb.kill().unwrap());
    assert!(wait_until(Duration::from_secs(5), || sb
        .procs()
        .unwrap()
        .is_empty()));
}

#[test]
fn cpu_quota_of_half_a_core() {
    let _g = shared();
    let _t = timing();
    let cg = runtime("cpu");
    let limits = Limits {
        cpus: 0.5,
        ..Limits::default()
    };
    let sb = cg.create("sb-cpu", &limits).unwrap();
    let mut child = Helper::spawn("spin");
    sb.attach(child.pid(), false).unwrap();
    child.go();
    std::thread::sleep(Duration::from_millis(200));
    let (t0, u0) = (Instant::now(), sb.stats().unwrap().cpu_usage_ns);
    std::thread::sleep(Duration::from_millis(1500));
    let (t1, u1) = (Instant::now(), sb.stats().unwrap().cpu_usage_ns);
    let share = (u1 - u0) as f64 / (t1 - t0).as_nanos() as f64;
    eprintln!("cpu share with cpus = 0.5: {share:.3}");
    assert!(
        (0.35..=0.65).contains(&share),
        "share {share:.3} of a core, wanted about 0.5"
    );
}

#[test]
fn freeze_stops_the_cpu_counter_and_thaw_resumes_it() {
    let _g = shared();
    let _t = timing();
    let cg = runtime("freeze");
    let sb = cg.create("sb-freeze", &Limits::default()).unwrap();
    let mut child = Helper::spawn("spin");
    sb.attach(child.pid(), false).unwrap();
    child.go();
    std::thread::sleep(Duration::from_millis(100));
    assert!(!sb.is_frozen());

    let t = Instant::now();
    sb.freeze().unwrap();
    eprintln!("freeze took {:?}", t.elapsed());
    assert!(sb.is_frozen());
    let u0 = sb.stats().unwrap().cpu_usage_ns;
    std::thread::sleep(Duration::from_millis(300));
    let u1 = sb.stats().unwrap().cpu_usage_ns;
    assert!(
        u1 - u0 < 5_000_000,
        "frozen, yet {} ns of cpu were used",
        u1 - u0
    );

    let t = Instant::now();
    sb.thaw().unwrap();
    eprintln!("thaw took {:?}", t.elapsed());
    assert!(!sb.is_frozen());
    std::thread::sleep(Duration::from_millis(300));
    let u2 = sb.stats().unwrap().cpu_usage_ns;
    assert!(
        u2 - u1 > 50_000_000,
        "thawed, but only {} ns of cpu in 300 ms",
        u2 - u1
    );
}

#[test]
fn kill_ends_every_process() {
    let _g = shared();
    let cg = runtime("kill");
    let mut sb = Some(cg.create("sb-kill", &Limits::default()).unwrap());
    let s = sb.as_ref().unwrap();
    let mut child = Helper::spawn("tree:4");
    s.attach(child.pid(), false).unwrap();
    child.go();
    assert!(
        wait_until(Duration::from_secs(30), || s.procs().unwrap().len() == 5),
        "procs: {:?}",
        s.procs()
    );
    let victims = s.procs().unwrap();
    assert!(s.kill().unwrap(), "cgroup.kill exists on both layouts here");
    assert!(wait_until(Duration::from_secs(5), || s
        .procs()
        .unwrap()
        .is_empty()));
    assert_eq!(
        child.wait(Duration::from_secs(5)).signal(),
        Some(libc::SIGKILL)
    );
    for pid in victims {
        // gone, or a zombie waiting for its reaper
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = state
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next();
        assert!(
            matches!(state, None | Some("Z") | Some("X")),
            "{pid} is {state:?}"
        );
    }
    let paths = s.paths();
    sb.take().unwrap().remove().unwrap();
    for p in paths {
        assert!(!p.exists(), "{} left behind", p.display());
    }
}

#[test]
fn remove_leaves_no_dir() {
    let _g = shared();
    let cg = runtime("remove");
    let runtime_dirs = cg.dirs();
    assert!(runtime_dirs.iter().all(|d| d.is_dir()));
    let sb = cg.create("sb-remove", &Limits::default()).unwrap();
    let paths = sb.paths();
    assert!(paths.iter().all(|p| p.is_dir()));
    sb.remove().unwrap();
    for p in &paths {
        assert!(!p.exists(), "{} left behind", p.display());
    }
    drop(sb);
    // a dropped SandboxCgroup removes itself too
    let sb = cg.create("sb-dropped", &Limits::default()).unwrap();
    let paths = sb.paths();
    drop(sb);
    for p in &paths {
        assert!(!p.exists(), "{} left behind by drop", p.display());
    }
    drop(cg);
    for d in &runtime_dirs {
        assert!(!d.exists(), "{} left behind by Cgroups drop", d.display());
    }
}

#[test]
fn a_runtime_outliving_its_sandboxes_and_the_reverse() {
    let _g = shared();
    let cg = runtime("order");
    let runtime_dirs = cg.dirs();
    let sb = cg.create("sb-order", &Limits::default()).unwrap();
    drop(cg); // the runtime dirs stay while a sandbox needs them
    assert!(runtime_dirs.iter().all(|d| d.is_dir()));
    let child = Helper::spawn("sleep");
    sb.attach(child.pid(), false).unwrap();
    drop(sb); // kills what is inside, then removes everything
    for d in &runtime_dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    drop(child);
}

#[test]
fn failure_after_mkdir_leaves_nothing() {
    let _g = shared();
    let cg = runtime("fail");
    // valid syntax, so it passes validate(), but no such CPU: the kernel
    // rejects the cpuset.cpus write after the dirs were made
    let limits = Limits {
        cpuset: Some("4095".into()),
        ..Limits::default()
    };
    let err = cg.create("sb-fail", &limits).unwrap_err();
    eprintln!("{err}");
    let msg = err.to_string();
    assert!(matches!(err, CgroupError::Write { .. }), "{err:?}");
    assert!(msg.contains("sb-fail/cpuset.cpus"), "{msg}");
    assert!(msg.starts_with("write 4095 to /sys/fs/cgroup/"), "{msg}");
    for d in cg.dirs() {
        assert!(
            !d.join("sb-fail").exists(),
            "{} left behind",
            d.join("sb-fail").display()
        );
    }
    // invalid limits never reach the kernel
    let bad = Limits {
        memory: 0,
        ..Limits::default()
    };
    match cg.create("sb-invalid", &bad) {
        Err(CgroupError::Limits(e)) => assert_eq!(e.field(), "memory"),
        other => panic!("{other:?}"),
    }
    for d in cg.dirs() {
        assert!(!d.join("sb-invalid").exists());
    }
    // a name that is not one path component
    assert!(matches!(
        cg.create("../escape", &Limits::default()),
        Err(CgroupError::InvalidName { .. })
    ));
}

#[test]
fn cpuset_pinning() {
    let _g = shared();
    let cg = runtime("cpuset");
    let limits = Limits {
        cpuset: Some("0".into()),
        ..Limits::default()
    };
    let sb = cg.create("sb-pinned", &limits).unwrap();
    let child = Helper::spawn("sleep");
    sb.attach(child.pid(), false).unwrap();
    let status = read(format!("/proc/{}/status", child.pid()));
    let allowed = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim();
    assert_eq!(allowed, "0");
    // an unpinned sandbox of the same runtime is not restricted
    let free = cg.create("sb-free", &Limits::default()).unwrap();
    let other = Helper::spawn("sleep");
    free.attach(other.pid(), false).unwrap();
    let status = read(format!("/proc/{}/status", other.pid()));
    let allowed = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim();
    assert_ne!(allowed, "0", "unpinned sandbox got pinned");
}

/// Dirs made by hand, removed children-first on drop.
struct FakeDirs(Vec<PathBuf>);

impl Drop for FakeDirs {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[test]
fn remove_leftovers_removes_a_dead_runtime() {
    let _g = shared();
    let cg = runtime("leftovers");
    let dead = {
        let mut c = Command::new("/bin/sh")
            .args(["-c", "exit 0"])
            .spawn()
            .unwrap();
        c.wait().unwrap();
        c.id()
    };
    let me = std::process::id();
    let mut fake = FakeDirs(Vec::new());
    let mut dead_dirs = Vec::new();
    let mut live_dirs = Vec::new();
    for d in cg.dirs() {
        let parent = d.parent().unwrap();
        let dead_rt = parent.join(format!("sandlot-{dead}-0"));
        let live_rt = parent.join(format!("sandlot-{me}-fake-live"));
        for p in [&dead_rt, &dead_rt.join("sb1"), &live_rt] {
            std::fs::create_dir(p).unwrap();
            fake.0.push(p.clone());
        }
        dead_dirs.push(dead_rt.join("sb1"));
        dead_dirs.push(dead_rt);
        live_dirs.push(live_rt);
    }
    let removed = cg.remove_leftovers();
    for d in &dead_dirs {
        assert!(
            removed.contains(d),
            "{} not removed: {removed:?}",
            d.display()
        );
        assert!(!d.exists());
    }
    // children come before their parent
    let pos = |p: &PathBuf| removed.iter().position(|r| r == p).unwrap();
    for pair in dead_dirs.chunks(2) {
        assert!(pos(&pair[0]) < pos(&pair[1]));
    }
    for d in &live_dirs {
        assert!(d.exists(), "live runtime {} was removed", d.display());
    }
    // ours are untouched
    assert!(cg.dirs().iter().all(|d| d.is_dir()));
}

#[test]
fn create_remove_many_leaves_nothing() {
    let _g = shared();
    let cg = runtime("many");
    let n = if cg.layout().kind() == Kind::V2 {
        200
    } else {
        300
    };
    let limits = Limits::default();
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let sb = cg.create(&format!("sb-{i}"), &limits).unwrap();
        sb.remove().unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    eprintln!(
        "create + remove of a sandbox cgroup ({:?}, {} hierarchies): median {:?}, p90 {:?} over {n}",
        cg.layout().kind(),
        cg.dirs().len(),
        times[n / 2],
        times[n * 9 / 10]
    );
    for d in cg.dirs() {
        let left: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().unwrap().is_dir())
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
    // stats are cheap enough for 1,000 calls a second
    let sb = cg.create("sb-stats", &limits).unwrap();
    sb.stats().unwrap();
    let t = Instant::now();
    for _ in 0..1000 {
        sb.stats().unwrap();
    }
    eprintln!("stats(): {:?} per call", t.elapsed() / 1000);
}

#[test]
fn v2_host_leaf_and_the_no_internal_processes_rule() {
    require_root();
    let _g = PLACEMENT.write().unwrap_or_else(|p| p.into_inner());
    let before = read("/proc/self/cgroup");
    let v2_own = before
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap()
        .to_string();
    let cg = runtime("leaf");
    let needs_controllers = cg.layout().kind() == Kind::V2;
    let leaf = format!("sandlot-host-{}", std::process::id());
    let during = read("/proc/self/cgroup");
    if needs_controllers && v2_own != "/" {
        // our own cgroup holds us: we moved into the leaf to enable
        // controllers for our subtree
        assert!(during.contains(&format!("0::{v2_own}/{leaf}")), "{during}");
        let own_dir = cg.layout().v2().unwrap().own_dir().unwrap();
        assert!(own_dir.join(&leaf).join("cgroup.procs").exists());
        // a second runtime reuses the leaf and puts its dir beside it
        let cg2 = runtime("leaf2");
        assert!(cg2.dirs()[0].starts_with(&own_dir), "{:?}", cg2.dirs());
        assert!(!cg2.dirs()[0].starts_with(own_dir.join(&leaf)));
        drop(cg2);
        drop(cg);
        // the last one moved us back and removed the leaf
        assert_eq!(read("/proc/self/cgroup"), before);
        assert!(!own_dir.join(&leaf).exists());
        // not allowed to move: the rule is explained
        let cfg = CgroupConfig {
            move_self_to_leaf: false,
            ..CgroupConfig::default()
        };
        let err = Cgroups::new(&cfg, &runtime_name("nomove")).unwrap_err();
        eprintln!("{err}");
        assert!(
            matches!(err, CgroupError::InternalProcesses { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("Delegate=yes"));
    } else {
        // root cgroup or no v2 controllers needed: nothing moves
        assert_eq!(during, before);
        drop(cg);
        assert_eq!(read("/proc/self/cgroup"), before);
    }
}

/// A copy of /proc/self's mountinfo and cgroup without the cgroup2
/// hierarchy: the library then sees a pure-v1 machine.
struct V1View(PathBuf);

impl V1View {
    fn new() -> V1View {
        let base = std::env::temp_dir().join(format!("cgtest-v1view-{}", std::process::id()));
        let dir = base.join("self");
        std::fs::create_dir_all(&dir).unwrap();
        let view = V1View(base);
        let mountinfo: String = read("/proc/self/mountinfo")
            .lines()
            .filter(|l| !l.contains(" - cgroup2 "))
            .map(|l| format!("{l}\n"))
            .collect();
        let cgroup: String = read("/proc/self/cgroup")
            .lines()
            .filter(|l| !l.starts_with("0::"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(dir.join("mountinfo"), mountinfo).unwrap();
        std::fs::write(dir.join("cgroup"), cgroup).unwrap();
        view
    }
}

impl Drop for V1View {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn pure_v1_path_freezer_and_kill_fallback() {
    let _g = shared();
    if !read("/proc/self/mountinfo").contains(" - cgroup cgroup ") {
        // the v2 guest: no v1 hierarchy exists to exercise; the hybrid host
        // runs this path
        eprintln!("no cgroup v1 hierarchies on this machine: the v1 path runs on the hybrid host");
        assert!(
            Cgroups::new(&CgroupConfig::default(), &runtime_name("v1none"))
                .unwrap()
                .layout()
                .kind()
                == Kind::V2
        );
        return;
    }
    let _t = timing();
    let view = V1View::new();
    let cfg = CgroupConfig {
        proc_root: view.0.join("self"),
        ..CgroupConfig::default()
    };
    let cg = Cgroups::new(&cfg, &runtime_name("v1")).unwrap();
    assert_eq!(cg.layout().kind(), Kind::V1);
    assert_eq!(
        cg.layout().version_of(Controller::Freezer),
        Some(Version::V1)
    );
    assert!(!cg.layout().has_kill());
    assert!(
        cg.dirs()
            .iter()
            .any(|d| d.starts_with("/sys/fs/cgroup/freezer")),
        "{:?}",
        cg.dirs()
    );
    assert!(!cg
        .dirs()
        .iter()
        .any(|d| d.starts_with("/sys/fs/cgroup/unified")));

    let sb = cg.create("sb-v1", &Limits::default()).unwrap();
    assert!(sb.v2_dir_fd().is_none());
    let mut child = Helper::spawn("spin");
    sb.attach(child.pid(), false).unwrap();
    child.go();
    std::thread::sleep(Duration::from_millis(100));

    let t = Instant::now();
    sb.freeze().unwrap();
    eprintln!("v1 freeze took {:?}", t.elapsed());
    assert!(sb.is_frozen());
    let u0 = sb.stats().unwrap().cpu_usage_ns;
    std::thread::sleep(Duration::from_millis(300));
    let u1 = sb.stats().unwrap().cpu_usage_ns;
    assert!(
        u1 - u0 < 5_000_000,
        "frozen, yet {} ns of cpu were used",
        u1 - u0
    );
    sb.thaw().unwrap();
    assert!(!sb.is_frozen());
    std::thread::sleep(Duration::from_millis(300));
    assert!(sb.stats().unwrap().cpu_usage_ns - u1 > 50_000_000);

    // no cgroup.kill: the caller is told, and dropping the sandbox still
    // kills what is inside (signals) and removes every dir
    assert!(!sb.kill().unwrap());
    let paths = sb.paths();
    drop(sb);
    assert_eq!(
        child.wait(Duration::from_secs(5)).signal(),
        Some(libc::SIGKILL)
    );
    for p in &paths {
        assert!(!p.exists(), "{} left behind", p.display());
    }
}
