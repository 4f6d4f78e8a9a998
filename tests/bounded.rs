//! The host is bounded whatever a sandbox does (issue 10): its memory
//! under any output, the io thread under a writer that never stops, other
//! sandboxes under a teardown that hangs, and creates under a shutdown.
//!
//! Memory is measured as the growth of this process's peak resident set
//! (`VmHWM`, reset through `/proc/self/clear_refs`); the tests here take
//! turns so that one test's allocations are not another's.

use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use sandlot::{Error, ExitReason, ListFilter, ProcessEvent, RunOptions, DEFAULT_OUTPUT_CAP};
use sandlot_tests::{census, options, runtime, sandbox, warmed_runtime};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const MIB: u64 = 1 << 20;

/// Resets the peak resident set and returns the current one, in bytes.
fn reset_peak_rss() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM (needs Linux 4.0+)");
    status_kib("VmRSS") * 1024
}

/// The peak resident set since the last reset, in bytes.
fn peak_rss() -> u64 {
    status_kib("VmHWM") * 1024
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    line.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("unreadable {field} line: {line:?}"))
}

/// Runs `f` on a thread and fails the test if it does not finish within
/// `limit` (a hang, not a speed check: `limit` is generous).
fn finishes_within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

#[test]
fn a_gigabyte_through_run_keeps_host_memory_bounded() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let sb = sandbox(&rt);
    let before = reset_peak_rss();
    let out = sb
        .commands()
        .run(
            "head -c 1073741824 /dev/zero; echo done >&2",
            RunOptions::default(),
        )
        .unwrap();
    let grew = peak_rss().saturating_sub(before);
    println!(
        "1 GiB through run(): host peak RSS grew by {} KiB",
        grew / 1024
    );
    assert_eq!(out.stdout.len() as u64, DEFAULT_OUTPUT_CAP);
    assert!(out.exit.stdout_truncated && !out.exit.stderr_truncated);
    assert!(out.truncated());
    assert_eq!(out.exit.reason, ExitReason::OutputLimit);
    assert_eq!(out.exit.code, Some(0));
    assert_eq!(out.stderr, b"done\n");
    assert!(
        grew < 64 * MIB,
        "host peak RSS grew by {} MiB for 1 GiB of output",
        grew / MIB
    );
}

#[test]
fn a_reader_that_lags_blocks_the_writer_not_the_host() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let sb = sandbox(&rt);
    let before = reset_peak_rss();
    let writer = sb
        .commands()
        .spawn(["cat", "/dev/zero"], RunOptions::default())
        .unwrap();
    // Nobody reads: once the queue and the pipe are full, the writer
    // blocks and the sandbox's CPU time stops growing.
    let cpu = || sb.metrics().unwrap().cpu_usage_ns;
    thread::sleep(Duration::from_millis(500));
    let first = cpu();
    thread::sleep(Duration::from_secs(1));
    let stalled = cpu() - first;
    let grew = peak_rss().saturating_sub(before);
    println!(
        "lagging reader: writer CPU over 1 s while blocked {} µs; host peak RSS grew {} KiB",
        stalled / 1000,
        grew / 1024
    );
    assert!(
        stalled < 100_000_000,
        "the writer kept running ({} ms of CPU in 1 s) while nobody read",
        stalled / 1_000_000
    );
    assert!(grew < 64 * MIB, "host peak RSS grew by {} MiB", grew / MIB);

    // Reading lets it go on: the stream resumes.
    let mut bytes = 0usize;
    for _ in 0..200 {
        match writer
            .events()
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
        {
            ProcessEvent::Stdout(chunk) => bytes += chunk.len(),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(bytes > 4 << 20, "only {bytes} bytes after resuming");
    writer.kill().unwrap();
    let exit = writer.wait().unwrap().exit;
    assert_eq!(exit.signal, Some(sandlot::Signal::KILL));
}

#[test]
fn a_background_writer_does_not_hold_the_io_thread() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let noisy = sandbox(&rt);
    let quiet = sandbox(&rt);
    // The shell exits at once; `yes` inherited its stdout and writes on.
    let noisy_run = noisy.clone();
    let out = finishes_within(Duration::from_secs(20), "the noisy command", move || {
        noisy_run
            .commands()
            .run("yes & exit 3", RunOptions::default())
            .unwrap()
    });
    assert_eq!(out.exit.code, Some(3));
    // The io thread is free for everyone else.
    for _ in 0..20 {
        let sb = quiet.clone();
        let started = Instant::now();
        let out = finishes_within(Duration::from_secs(5), "run(true) elsewhere", move || {
            sb.commands().run("true", RunOptions::default()).unwrap()
        });
        assert!(out.success());
        println!(
            "run(true) beside a background writer: {:?}",
            started.elapsed()
        );
    }
    noisy.kill().unwrap();
}

/// This process's cgroup path in the hierarchy whose `/proc/self/cgroup`
/// line has `controllers` (`""` for the unified one).
fn own_cgroup(controllers: &str) -> String {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    cgroups
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, names, path) = (parts.next()?, parts.next()?, parts.next()?);
            (names == controllers).then(|| path.trim_start_matches('/').to_string())
        })
        .unwrap_or_else(|| panic!("no {controllers:?} line in /proc/self/cgroup"))
}

/// A v1 freezer cgroup of the test's own, holding every process of a
/// sandbox, frozen behind sandlot's back: the v1 freezer holds even
/// killed tasks, so a teardown's reap waits until it is thawed (dropping
/// this thaws it and removes the dir once the tasks are gone).
struct Frozen {
    dir: std::path::PathBuf,
}

impl Frozen {
    fn sandbox(id: &str) -> Frozen {
        let freezer = std::path::Path::new("/sys/fs/cgroup/freezer");
        assert!(
            freezer.join("tasks").exists(),
            "this test needs a v1 freezer hierarchy (the hybrid hosts have one)"
        );
        let unified = std::path::Path::new("/sys/fs/cgroup/unified").join(own_cgroup(""));
        let prefix = format!("sandlot-{}-", std::process::id());
        let procs = std::fs::read_dir(&unified)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path().join(id).join("cgroup.procs"))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("no cgroup of sandbox {id} under {}", unified.display()));
        let dir = freezer.join(format!("sandlot-test-{}-{id}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let frozen = Frozen { dir };
        for pid in std::fs::read_to_string(procs).unwrap().split_whitespace() {
            std::fs::write(frozen.dir.join("cgroup.procs"), pid).unwrap();
        }
        std::fs::write(frozen.dir.join("freezer.state"), "FROZEN").unwrap();
        assert!(sandlot_tests::eventually(Duration::from_secs(5), || {
            std::fs::read_to_string(frozen.dir.join("freezer.state"))
                .unwrap_or_default()
                .trim()
                == "FROZEN"
        }));
        frozen
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("freezer.state"), "THAWED");
        sandlot_tests::eventually(Duration::from_secs(10), || {
            std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists()
        });
    }
}

#[test]
fn a_hanging_teardown_blocks_neither_list_nor_another_destroy() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let stuck = sandbox(&rt);
    sandlot_tests::sh(&stuck, "sleep 1000 & true");
    let init = stuck.info().init_pid.unwrap();
    // Frozen behind sandlot's back (its state stays Running): the
    // teardown's reap waits until the test thaws the processes.
    let frozen = Frozen::sandbox(stuck.id());
    let killer = {
        let stuck = stuck.clone();
        thread::spawn(move || stuck.kill())
    };
    assert!(
        sandlot_tests::eventually(Duration::from_secs(10), || {
            stuck.state() == sandlot::State::Destroyed
        }),
        "the teardown did not start"
    );
    assert!(
        !killer.is_finished(),
        "the teardown did not wait for the frozen tasks"
    );

    // Meanwhile everything else works.
    let listed = {
        let rt = rt.clone();
        finishes_within(Duration::from_secs(5), "list()", move || {
            rt.list(&ListFilter::all()).len()
        })
    };
    assert!(listed >= 1);
    let info = {
        let stuck = stuck.clone();
        finishes_within(Duration::from_secs(5), "info()", move || stuck.info())
    };
    assert_eq!(info.state, sandlot::State::Destroyed);
    {
        let rt = rt.clone();
        finishes_within(
            Duration::from_secs(20),
            "another create and destroy",
            move || {
                let other = rt.create(options()).unwrap();
                sandlot_tests::sh(&other, "true");
                other.kill().unwrap();
            },
        );
    }
    assert!(!killer.is_finished(), "the frozen teardown ended by itself");

    drop(frozen);
    let killed = finishes_within(Duration::from_secs(20), "the thawed teardown", move || {
        killer.join().unwrap()
    });
    killed.unwrap();
    assert!(!sandlot_tests::process_exists(init));
}

#[test]
fn creates_racing_a_shutdown_fail_cleanly_and_leave_nothing() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    drop(warmed_runtime()); // the process-wide init memfd exists from here on
                            // A joined thread's /proc entry can outlive the join by a moment.
    sandlot_tests::eventually(Duration::from_secs(2), || {
        census().spawner_mounts.is_empty()
    });
    let before = census();
    let rt = runtime();
    let creators: Vec<_> = (0..3)
        .map(|_| {
            let rt = rt.clone();
            thread::spawn(move || {
                let mut created = 0;
                loop {
                    match rt.create(options()) {
                        Ok(_) => created += 1,
                        Err(Error::RuntimeShutDown) => return (created, None),
                        Err(e @ Error::SandboxNotRunning { .. }) => return (created, Some(e)),
                        Err(other) => panic!("a create racing shutdown failed with {other:?}"),
                    }
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(200));
    rt.shutdown();
    let mut total = 0;
    for creator in creators {
        let (created, _) = creator.join().unwrap();
        total += created;
    }
    println!("{total} sandboxes created before the shutdown");
    assert!(rt.list(&ListFilter::all()).is_empty());
    assert!(matches!(rt.create(options()), Err(Error::RuntimeShutDown)));
    drop(rt);
    assert!(
        sandlot_tests::eventually(Duration::from_secs(5), || census() == before),
        "a create racing shutdown left something: before {before:?}, after {:?}",
        census()
    );
}
