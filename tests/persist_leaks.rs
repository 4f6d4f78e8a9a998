//! Leak census of persistent sandboxes, in a test binary of its own: it
//! counts the descriptors of the whole test process, which another test's
//! runtime running at the same time would disturb.

use std::time::Duration;

use sandlot::{ListFilter, Reason, State};
use sandlot_tests::persist::{PersistHost, StateDir};
use sandlot_tests::{cgroup_dirs_containing, eventually, process_exists, sh};

const HOST: &str = env!("CARGO_BIN_EXE_sandlot-test-persist-host");

/// The tests here count what the whole process holds: one at a time.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ALONE.lock().unwrap_or_else(|p| p.into_inner())
}

fn open_fds() -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            format!(
                "{} -> {}",
                e.file_name().to_string_lossy(),
                target.display()
            )
        })
        .collect();
    fds.sort();
    fds
}

#[test]
fn sandboxes_outlive_a_killed_creator_and_another_process_adopts_them() {
    let _alone = alone();
    let state = StateDir::new("outlive");
    let host = PersistHost::start(HOST, &state, 3, None);
    let made = host.sandboxes.clone();
    host.kill();
    for (id, pid) in &made {
        assert!(process_exists(*pid), "init of {id} died with its creator");
    }
    assert_eq!(state.monitors().len(), 3, "one monitor per sandbox");

    // The init binary's memfd stays loaded for the process's life: load it
    // before counting.
    drop(state.runtime());
    let fds_before = open_fds();
    let rt = state.runtime();
    let mut listed: Vec<String> = rt
        .list(&ListFilter::all())
        .into_iter()
        .map(|i| i.id)
        .collect();
    listed.sort();
    let mut ids: Vec<String> = made.iter().map(|(id, _)| id.clone()).collect();
    ids.sort();
    assert_eq!(
        listed, ids,
        "list shows every live sandbox of the state dir"
    );
    for (index, (id, pid)) in made.iter().enumerate() {
        let sandbox = rt.connect(id).expect("adopt");
        assert_eq!(sandbox.info().init_pid, Some(*pid));
        assert_eq!(sandbox.metadata()["index"], index.to_string());
        assert_eq!(sh(&sandbox, "cat /tmp/index"), index.to_string());
        assert_eq!(
            sandbox.files().read("/tmp/index").unwrap(),
            index.to_string().as_bytes()
        );
        // The creator's command still runs in it.
        assert!(sh(&sandbox, "ps -eo comm").contains("sleep"));
        sandbox.kill().expect("kill");
        assert_eq!(sandbox.end_reason(), Some(Reason::Killed));
        assert!(
            eventually(Duration::from_secs(5), || !process_exists(*pid)),
            "init {pid} outlived kill"
        );
        assert!(
            cgroup_dirs_containing(id).is_empty(),
            "cgroups of {id} left"
        );
    }
    assert!(
        state.sandbox_dirs().is_empty(),
        "state files left: {:?}",
        state.sandbox_dirs()
    );
    assert!(
        eventually(Duration::from_secs(5), || state.monitors().is_empty()),
        "monitors left"
    );
    let info = rt.inspect(&made[0].0).expect("a tombstone");
    assert_eq!(info.state, State::Destroyed);
    assert_eq!(info.end_reason, Some(Reason::Killed));
    drop(rt);
    assert_eq!(
        open_fds(),
        fds_before,
        "descriptors of the test process leaked"
    );
}

/// Children of this process (any thread's).
fn children() -> Vec<i32> {
    let mut kids = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        kids.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    kids.sort();
    kids
}

#[test]
fn many_threads_create_exec_and_kill_on_a_persistent_runtime_without_deadlock_or_leak() {
    let _alone = alone();
    const THREADS: usize = 8;
    const CYCLES: usize = 100;
    let state = StateDir::new("stress");
    drop(state.runtime());
    let fds_before = open_fds();
    let kids_before = children();
    let rt = state.runtime();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A watchdog: a deadlock fails the test instead of hanging it.
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                assert!(
                    start.elapsed() < Duration::from_secs(600),
                    "no progress for 10 minutes: deadlock"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let observers: Vec<_> = (0..2)
        .map(|_| {
            let rt = rt.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut looks = 0u64;
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    for info in rt.list(&ListFilter::all()) {
                        if let Ok(sandbox) = rt.connect(&info.id) {
                            let _ = sandbox.metrics();
                            let _ = sandbox.info();
                        }
                    }
                    looks += 1;
                }
                looks
            })
        })
        .collect();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let rt = rt.clone();
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for i in 0..CYCLES {
                    let sandbox = rt
                        .create(sandlot_tests::options().metadata("worker", t.to_string()))
                        .expect("create");
                    let line = format!("{t}-{i}");
                    sandbox.files().write("/tmp/line", &line).expect("write");
                    assert_eq!(sh(&sandbox, "cat /tmp/line"), line);
                    sandbox.kill().expect("kill");
                    ids.push(sandbox.id().to_string());
                }
                ids
            })
        })
        .collect();
    let ids: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("a worker failed"))
        .collect();
    assert_eq!(ids.len(), THREADS * CYCLES);
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let looks: u64 = observers.into_iter().map(|o| o.join().unwrap()).sum();
    watchdog.join().unwrap();
    assert!(looks > 0);
    drop(rt);

    // Nothing left: records, cgroups, monitors, processes, descriptors.
    assert!(
        state.sandbox_dirs().is_empty(),
        "records left: {:?}",
        state.sandbox_dirs()
    );
    let cgroups_left: Vec<_> = cgroup_dirs_containing("sandlot-persistent-")
        .into_iter()
        .filter(|d| {
            ids.iter()
                .any(|id| d.to_string_lossy().ends_with(id.as_str()))
        })
        .collect();
    assert!(cgroups_left.is_empty(), "cgroups left: {cgroups_left:?}");
    assert!(
        eventually(Duration::from_secs(10), || state.monitors().is_empty()),
        "monitors left: {:?}",
        state.monitors()
    );
    assert!(
        eventually(Duration::from_secs(10), || children() == kids_before),
        "processes left: {:?}",
        children()
    );
    assert_eq!(open_fds(), fds_before, "descriptors leaked");
}
