//! Nothing outlives a sandbox, on success or failure: the census counts
//! descriptors, mounts (the host's and the runtime's private ones), cgroup
//! directories and child processes of the whole process, so the tests of
//! this binary take turns (`ONE_AT_A_TIME`).

use std::sync::Mutex;

use sandlot::{Error, RunOptions, SandboxOptions, State};
use sandlot_tests::{census, runtime, warmed_runtime};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn two_hundred_cycles_leak_nothing() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rt = warmed_runtime();
    let before = census();
    for i in 0..200 {
        let sb = rt.create(SandboxOptions::default()).unwrap();
        let out = sb
            .commands()
            .run(
                format!("echo {i} > /tmp/f && cat /tmp/f"),
                RunOptions::default(),
            )
            .unwrap();
        assert_eq!(out.stdout_str().trim(), i.to_string());
        if i % 2 == 0 {
            // Half of them with a command still running at destroy.
            let _running = sb
                .commands()
                .spawn(["sleep", "100"], RunOptions::default())
                .unwrap();
            sb.kill().unwrap();
        } else {
            sb.kill().unwrap();
        }
    }
    let after = census();
    assert_eq!(after, before, "resources leaked over 200 cycles");
    drop(rt);
    let gone = census();
    assert!(
        gone.cgroup_dirs.is_empty(),
        "runtime cgroup dirs left: {:?}",
        gone.cgroup_dirs
    );
    assert!(
        gone.children.is_empty(),
        "child processes left: {:?}",
        gone.children
    );
    // A joined thread's /proc entry can outlive the join by a moment.
    assert!(
        sandlot_tests::eventually(std::time::Duration::from_secs(2), || census()
            .spawner_mounts
            .is_empty()),
        "the spawner thread (and its mount namespace) outlived the runtime"
    );
}

/// Removes a test template and its directory, also when the test fails.
struct TemplateGuard<'a> {
    runtime: &'a sandlot::Runtime,
    name: &'static str,
    dir: std::path::PathBuf,
}

impl Drop for TemplateGuard<'_> {
    fn drop(&mut self) {
        let _ = self.runtime.templates().remove(self.name);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A failure inside the child names its step and errno, and the runtime
/// rolls everything back: a directory template whose /proc is a file makes
/// the child's proc mount fail with ENOTDIR.
#[test]
fn a_setup_failure_names_its_step_and_leaves_nothing() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let dir = sandlot_tests::data_dir().join("../broken-proc-rootfs");
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["etc", "bin", "dev", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(dir.join("proc"), b"not a directory").unwrap();
    let guard = TemplateGuard {
        runtime: &rt,
        name: "broken-proc",
        dir: dir.clone(),
    };
    rt.templates().import_dir(guard.name, &dir).unwrap();
    // Attach the template's layers once, so the census compares like with
    // like (that first attach is a per-runtime cache, not a leak).
    let _ = rt.create(SandboxOptions::template(guard.name));
    let before = census();
    let events = rt.events();

    let error = rt
        .create(SandboxOptions::template(guard.name))
        .expect_err("create must fail");
    match &error {
        Error::Setup { step, errno, .. } => {
            assert_eq!(*step, "mount /proc");
            assert_eq!(*errno, nix::errno::Errno::ENOTDIR);
        }
        other => panic!("expected a setup error, got {other:?}"),
    }
    assert_eq!(error.to_string(), "mount /proc: ENOTDIR: Not a directory");
    let transitions: Vec<(State, State)> = events.try_iter().map(|e| (e.from, e.to)).collect();
    assert_eq!(
        transitions,
        vec![
            (State::Pending, State::Starting),
            (State::Starting, State::Error)
        ]
    );
    assert!(rt.list(&sandlot::ListFilter::all()).is_empty());
    assert_eq!(census(), before, "a failed create left something behind");
}

/// A template's layers, attached in the runtime's own mount namespace for
/// its sandboxes, are detached once none of them lives (here with no
/// linger), not only when the runtime ends.
#[test]
fn layers_nobody_uses_are_detached() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    sandlot_tests::require_root();
    let rt = sandlot::Runtime::builder()
        .data_dir(sandlot_tests::data_dir())
        .template_linger(std::time::Duration::ZERO)
        .build()
        .unwrap();
    let spawner_mounts = || -> usize { census().spawner_mounts.values().sum() };
    let idle = spawner_mounts();
    assert!(idle > 0, "no spawner thread found by the census");
    let a = rt.create(sandlot_tests::options()).unwrap();
    let b = rt.create(sandlot_tests::options()).unwrap();
    let in_use = spawner_mounts();
    assert!(in_use > idle, "the template's layers were not attached");
    a.kill().unwrap();
    // One sandbox of the template still lives: the layers stay.
    let c = rt.create(sandlot_tests::options()).unwrap();
    assert_eq!(spawner_mounts(), in_use, "layers re-attached while in use");
    b.kill().unwrap();
    c.kill().unwrap();
    assert!(
        sandlot_tests::eventually(std::time::Duration::from_secs(5), || spawner_mounts()
            == idle),
        "the layers of a template nobody uses stayed attached: {} mounts, {idle} before",
        spawner_mounts()
    );
}
