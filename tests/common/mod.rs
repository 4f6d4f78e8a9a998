//! Helpers shared by the integration tests. These tests need root and the
//! real kernel; without root they fail with a message saying so — they
//! never pass by skipping.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sandlot::{CommandResult, RunOptions, Runtime, Sandbox, SandboxOptions};

pub mod fakenet;
pub mod oci;
pub mod persist;

/// Fails the test unless it runs as root.
pub fn require_root() {
    let euid = nix::unistd::geteuid().as_raw();
    assert_eq!(
        euid, 0,
        "sandlot's integration tests create user namespaces, cgroups and mounts and \
         must run as root (euid is {euid}): run `sudo -E cargo test --workspace`"
    );
}

/// Templates for tests live beside the build, on the repository's own
/// (idmap-capable) filesystem; `SANDLOT_TEST_DATA_DIR` overrides it (the
/// cgroup v2 guest mounts an ext4 there, its root being a tmpfs).
pub fn data_dir() -> PathBuf {
    match std::env::var_os("SANDLOT_TEST_DATA_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/sandlot-test-data"),
    }
}

/// The template tests that may run elsewhere than on our hosts use:
/// `SANDLOT_TEST_TEMPLATE`, default `base` (the host's /usr). The cgroup v2
/// guest has no /usr and sets a busybox directory template.
pub fn template() -> String {
    std::env::var("SANDLOT_TEST_TEMPLATE").unwrap_or_else(|_| "base".into())
}

/// Options with the test template ([`template`]).
pub fn options() -> SandboxOptions {
    SandboxOptions::template(template())
}

/// A runtime for one test; dropping it destroys every sandbox it made,
/// also when the test fails. With `SANDLOT_TEST_TEMPLATE_DIR` set, that
/// root filesystem directory is imported as [`template`] first.
pub fn runtime() -> Runtime {
    require_root();
    let runtime = Runtime::builder()
        .data_dir(data_dir())
        .build()
        .expect("build a runtime");
    if let Some(dir) = std::env::var_os("SANDLOT_TEST_TEMPLATE_DIR") {
        let store = runtime.templates();
        if store.get(&template()).is_err() {
            // Another test's runtime may import it at the same moment.
            if let Err(e) = store.import_dir(&template(), &dir) {
                store
                    .get(&template())
                    .unwrap_or_else(|_| panic!("import {dir:?} as {}: {e}", template()));
            }
        }
    }
    runtime
}

/// A runtime whose first create already happened: that create attaches the
/// base template's layers (a once-per-runtime cache), so a [`census`] taken
/// now compares like with like.
pub fn warmed_runtime() -> Runtime {
    let rt = runtime();
    sandbox(&rt).kill().expect("destroy the warm-up sandbox");
    rt
}

pub fn sandbox(runtime: &Runtime) -> Sandbox {
    runtime.create(options()).expect("create a sandbox")
}

/// Runs a shell command line, asserts it succeeded, returns its stdout.
pub fn sh(sandbox: &Sandbox, line: &str) -> String {
    let result = sandbox
        .commands()
        .run(line, RunOptions::default())
        .unwrap_or_else(|e| panic!("run {line:?}: {e}"));
    assert_ok(line, &result);
    result.stdout_str()
}

pub fn assert_ok(what: &str, result: &CommandResult) {
    assert!(
        result.success(),
        "{what:?} failed: {:?}\nstdout: {}\nstderr: {}",
        result.exit,
        result.stdout_str(),
        result.stderr_str()
    );
}

/// Polls `check` until it holds or `limit` passes (for things the kernel
/// finishes asynchronously, like a process dying after SIGKILL).
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn process_exists(pid: i32) -> bool {
    // kill(pid, 0) also finds zombies; /proc/<pid>/stat state tells.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// What a sandbox could leak, counted from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Census {
    pub fds: usize,
    pub host_mounts: usize,
    /// Mounts in each runtime's private namespace (by spawner thread).
    pub spawner_mounts: BTreeMap<i32, usize>,
    pub cgroup_dirs: Vec<PathBuf>,
    pub children: Vec<i32>,
}

/// Lines of a /proc file; `None` if it cannot be read (a thread that
/// exited between the listing and the read).
fn count_lines(path: &str) -> Option<usize> {
    fs::read_to_string(path).ok().map(|t| t.lines().count())
}

/// The cgroup dirs of this process's runtimes (`sandlot-<pid>-<n>`) and
/// every dir below them (the sandboxes'). Other processes' runtimes on the
/// machine are not ours to count.
fn sandlot_cgroup_dirs(dir: &std::path::Path, depth: usize, out: &mut Vec<PathBuf>) {
    let ours = format!("sandlot-{}-", std::process::id());
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with(&ours) {
            out.push(path.clone());
            all_dirs_below(&path, out);
        } else if depth > 0 {
            sandlot_cgroup_dirs(&path, depth - 1, out);
        }
    }
}

/// Every cgroup dir on the machine whose path contains `fragment` (for
/// what another process — a killed test host — left behind).
pub fn cgroup_dirs_containing(fragment: &str) -> Vec<PathBuf> {
    fn walk(dir: &std::path::Path, depth: usize, fragment: &str, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = entry.path();
            if path.to_string_lossy().contains(fragment) {
                out.push(path.clone());
            }
            if depth > 0 {
                walk(&path, depth - 1, fragment, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(
        std::path::Path::new("/sys/fs/cgroup"),
        8,
        fragment,
        &mut out,
    );
    out
}

fn all_dirs_below(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(entry.path());
            all_dirs_below(&entry.path(), out);
        }
    }
}

/// Counts this process's descriptors, mounts, cgroup dirs (its runtimes'
/// and their sandboxes') and child processes.
pub fn census() -> Census {
    let mut spawner_mounts = BTreeMap::new();
    let mut children = Vec::new();
    for task in fs::read_dir("/proc/self/task").unwrap().flatten() {
        let tid: i32 = task.file_name().to_string_lossy().parse().unwrap();
        let comm = fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == "sandlot-spawner" {
            if let Some(mounts) = count_lines(&format!("/proc/self/task/{tid}/mountinfo")) {
                spawner_mounts.insert(tid, mounts);
            }
        }
        let kids = fs::read_to_string(task.path().join("children")).unwrap_or_default();
        children.extend(
            kids.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    children.sort();
    let mut cgroup_dirs = Vec::new();
    sandlot_cgroup_dirs(std::path::Path::new("/sys/fs/cgroup"), 8, &mut cgroup_dirs);
    cgroup_dirs.sort();
    Census {
        fds: fs::read_dir("/proc/self/fd").unwrap().count(),
        // A census that cannot count must not compare equal by accident.
        host_mounts: count_lines("/proc/self/mountinfo").expect("read /proc/self/mountinfo"),
        spawner_mounts,
        cgroup_dirs,
        children,
    }
}
