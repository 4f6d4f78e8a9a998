//! Sandboxes that outlive their creator (issue 14): persistent runtimes,
//! adoption by other processes, monitors that enforce the clocks while no
//! process of sandlot runs, idle timeouts, graceful stop, tombstones, and
//! the lifecycle helpers (SessionPool, create_with_retry). Root, the real
//! kernel; every test works in a state dir of its own.

use std::time::Duration;

use sandlot::{ListFilter, Reason, State};
use sandlot_tests::persist::{PersistHost, StateDir};
use sandlot_tests::{cgroup_dirs_containing, eventually, process_exists, sh};

const HOST: &str = env!("CARGO_BIN_EXE_sandlot-test-persist-host");

#[test]
fn a_deadline_holds_while_no_sandlot_process_runs() {
    let state = StateDir::new("deadline");
    let lifetime = Duration::from_millis(1500);
    let host = PersistHost::start(HOST, &state, 1, Some(lifetime));
    let (id, init) = host.sandboxes[0].clone();
    let created = std::time::Instant::now();
    // The monitor is started just after create returns, off its path (a
    // creator killed within that moment leaves the deadline to the next
    // process that opens the state dir): kill the host once it runs.
    assert!(
        eventually(Duration::from_secs(5), || state.monitors().len() == 1),
        "no monitor started"
    );
    host.kill();
    assert!(process_exists(init), "init died with its creator");
    // Nothing of the sandbox runs a second after its deadline, with no
    // process of sandlot but its monitor alive meanwhile.
    std::thread::sleep((lifetime + Duration::from_secs(1)).saturating_sub(created.elapsed()));
    assert!(
        !process_exists(init),
        "init outlived its deadline by a second"
    );
    assert!(cgroup_dirs_containing(&id).is_empty(), "cgroups left");
    assert!(state.sandbox_dirs().is_empty(), "state files left");
    assert!(
        eventually(Duration::from_secs(2), || state.monitors().is_empty()),
        "the monitor outlived its sandbox"
    );
    // The next process to open the state dir finds nothing to clean, and
    // the reason.
    let rt = state.runtime();
    assert!(rt.list(&ListFilter::all()).is_empty());
    let info = rt.inspect(&id).expect("its tombstone");
    assert_eq!(info.end_reason, Some(Reason::Timeout));
    assert_eq!(info.metadata["index"], "0");
    assert!(matches!(
        rt.connect(&id),
        Err(sandlot::Error::SandboxNotFound(_))
    ));
}

#[test]
fn a_stale_record_whose_pid_was_reused_is_cleaned_and_that_process_untouched() {
    let state = StateDir::new("stale");
    let rt = state.runtime();
    let sandbox = rt.create(sandlot_tests::options()).expect("create");
    let id = sandbox.id().to_string();
    let init = sandbox.info().init_pid.unwrap();
    drop(sandbox);
    drop(rt); // lets go of it: it lives on
    assert!(process_exists(init));
    // Its monitor and its init die without anyone noticing (SIGKILL).
    assert!(eventually(Duration::from_secs(2), || state
        .monitors()
        .len()
        == 1));
    for pid in state.monitors().into_iter().chain([init]) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    }
    assert!(eventually(Duration::from_secs(5), || !process_exists(init)));
    // An unrelated process now has what could be init's pid: the record is
    // made to name it (its start time stays the dead init's).
    let mut unrelated = std::process::Command::new("sleep")
        .arg("100")
        .spawn()
        .unwrap();
    let path = state.path.join("sandboxes").join(&id).join("record.json");
    let mut record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    record["init"]["pid"] = serde_json::json!(unrelated.id());
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&record).unwrap()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();

    let rt = state.runtime();
    assert!(
        rt.list(&ListFilter::all()).is_empty(),
        "a dead record was listed as live"
    );
    assert!(matches!(
        rt.connect(&id),
        Err(sandlot::Error::SandboxNotFound(_))
    ));
    assert!(
        state.sandbox_dirs().is_empty(),
        "the stale record was not removed"
    );
    assert!(
        cgroup_dirs_containing(&id).is_empty(),
        "its cgroups were not removed"
    );
    assert_eq!(rt.inspect(&id).unwrap().end_reason, Some(Reason::InitDied));
    assert!(
        unrelated.try_wait().unwrap().is_none(),
        "the process that got the pid was touched"
    );
    unrelated.kill().unwrap();
    unrelated.wait().unwrap();
}

/// Waits for the end of `id`, as `inspect` reports it.
fn end_of(rt: &sandlot::Runtime, id: &str, within: Duration) -> Option<Reason> {
    let mut reason = None;
    eventually(within, || {
        reason = rt
            .inspect(id)
            .ok()
            .filter(|i| i.state == State::Destroyed)
            .and_then(|i| i.end_reason);
        reason.is_some()
    });
    reason
}

/// The idle timeout of a sandbox of `rt`: it fires with no activity, not
/// while a command runs, not while files are written, and `touch` and
/// `info` are activity and not activity respectively.
fn idle_timeout_behaves(rt: &sandlot::Runtime) {
    let idle = Duration::from_millis(800);
    let options = || sandlot_tests::options().idle_timeout(idle);

    // A command that runs longer than the idle timeout keeps it alive; the
    // clock starts again when it ends.
    let busy = rt.create(options()).unwrap();
    let out = busy
        .commands()
        .run("sleep 1.6; echo done", sandlot::RunOptions::default())
        .unwrap();
    assert_eq!(out.stdout_str(), "done\n");
    assert!(busy.is_alive(), "idle timeout fired while a command ran");

    // Files written every 200 ms keep it alive for 2 s.
    let writing = rt.create(options()).unwrap();
    for i in 0..10 {
        writing.files().write("/tmp/beat", format!("{i}")).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        writing.is_alive(),
        "idle timeout fired while files were written"
    );

    // Only info() and is_alive(): not activity.
    let watched = rt.create(options()).unwrap();
    let touched = rt.create(options()).unwrap();
    for _ in 0..10 {
        let _ = watched.info();
        let _ = watched.is_alive();
        touched.touch();
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(touched.is_alive(), "touch() is activity");
    assert_eq!(
        end_of(rt, watched.id(), Duration::from_secs(3)),
        Some(Reason::IdleTimeout),
        "info() and is_alive() kept it alive"
    );
    for sandbox in [&busy, &writing, &touched] {
        assert_eq!(
            end_of(rt, sandbox.id(), Duration::from_secs(4)),
            Some(Reason::IdleTimeout),
            "{} did not time out once idle",
            sandbox.id()
        );
    }
}

#[test]
fn the_idle_timeout_fires_only_without_activity() {
    let rt = sandlot_tests::runtime();
    idle_timeout_behaves(&rt);
}

#[test]
fn the_idle_timeout_of_a_persistent_sandbox_fires_only_without_activity() {
    let state = StateDir::new("idle");
    let rt = state.runtime();
    idle_timeout_behaves(&rt);
    // With no sandlot process at all: its monitor ends it.
    let id = rt
        .create(sandlot_tests::options().idle_timeout(Duration::from_millis(500)))
        .unwrap()
        .id()
        .to_string();
    drop(rt);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        state.sandbox_dirs().is_empty(),
        "the monitor did not end an idle sandbox"
    );
    let rt = state.runtime();
    assert_eq!(
        rt.inspect(&id).unwrap().end_reason,
        Some(Reason::IdleTimeout)
    );
}

#[test]
fn stop_lets_a_trap_run_kills_what_ignores_sigterm_and_refuses_new_commands() {
    for persistent in [false, true] {
        let state = StateDir::new(if persistent { "stop-p" } else { "stop" });
        let rt = if persistent {
            state.runtime()
        } else {
            sandlot_tests::runtime()
        };
        let events = rt.events();
        let sandbox = rt.create(sandlot_tests::options()).unwrap();
        let trapping = sandbox
            .commands()
            .spawn(
                "trap 'echo saved; exit 3' TERM; echo ready; while :; do sleep 0.05; done",
                sandlot::RunOptions::default(),
            )
            .unwrap();
        let stubborn = sandbox
            .commands()
            .spawn(
                "trap '' TERM; echo ready; exec sleep 100",
                sandlot::RunOptions::default(),
            )
            .unwrap();
        for handle in [&trapping, &stubborn] {
            match handle
                .events()
                .recv_timeout(Duration::from_secs(5))
                .unwrap()
            {
                sandlot::ProcessEvent::Stdout(b) => assert_eq!(b, b"ready\n"),
                other => panic!("expected ready, got {other:?}"),
            }
        }
        let grace = Duration::from_millis(1200);
        let stopper = {
            let sandbox = sandbox.clone();
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                sandbox.stop(grace).unwrap();
                started.elapsed()
            })
        };
        // Stopping is announced; new commands are refused meanwhile.
        let stopping = loop {
            let event = events.recv_timeout(Duration::from_secs(5)).unwrap();
            if event.to == State::Stopping {
                break event;
            }
        };
        assert_eq!(stopping.reason, Reason::Stopped);
        match sandbox
            .commands()
            .run("true", sandlot::RunOptions::default())
        {
            Err(sandlot::Error::SandboxNotRunning { state, .. }) => {
                assert_eq!(state, State::Stopping)
            }
            other => panic!("a command started during stop: {other:?}"),
        }
        // The trap ran (its output and its exit code).
        let trapped = trapping.wait().unwrap();
        assert_eq!(trapped.stdout_str(), "saved\n");
        assert_eq!(trapped.exit.code, Some(3));
        // What ignored SIGTERM died at the end of the grace.
        let took = stopper.join().unwrap();
        assert!(
            took >= grace,
            "stop returned after {took:?}, before the grace"
        );
        let ignored = stubborn.wait().unwrap();
        assert_ne!(ignored.exit.code, Some(0));
        assert_eq!(sandbox.end_reason(), Some(Reason::Stopped));
        assert_eq!(
            rt.inspect(sandbox.id()).unwrap().end_reason,
            Some(Reason::Stopped)
        );
    }
}

/// The pid of init of `sandbox`.
fn init_of(sandbox: &sandlot::Sandbox) -> nix::unistd::Pid {
    nix::unistd::Pid::from_raw(sandbox.info().init_pid.expect("init runs"))
}

#[test]
fn tombstones_give_the_reason_of_every_kind_of_end() {
    let failing = sandlot_tests::persist::BusyboxTemplate::failing("tombstones");
    for persistent in [false, true] {
        let state = StateDir::new(if persistent { "tomb-p" } else { "tomb" });
        let rt = if persistent {
            state.runtime()
        } else {
            sandlot_tests::runtime()
        };
        let events = rt.events();
        let new = |options: sandlot::SandboxOptions| rt.create(options).unwrap();
        let base = sandlot_tests::options;
        let mut ends: Vec<(String, Reason)> = Vec::new();

        let timed = new(base().timeout(Duration::from_millis(300)));
        ends.push((timed.id().into(), Reason::Timeout));
        let idle = new(base().idle_timeout(Duration::from_millis(300)));
        ends.push((idle.id().into(), Reason::IdleTimeout));
        let stopped = new(base());
        stopped.stop(Duration::ZERO).unwrap();
        ends.push((stopped.id().into(), Reason::Stopped));
        let killed = new(base());
        killed.kill().unwrap();
        ends.push((killed.id().into(), Reason::Killed));
        let died = new(base());
        nix::sys::signal::kill(init_of(&died), nix::sys::signal::SIGKILL).unwrap();
        ends.push((died.id().into(), Reason::InitDied));

        // The OOM killer picks init (its score raised to the maximum) when
        // four shells together outgrow the memory limit: each holds a
        // quarter of it, init's score counts the whole limit.
        let oom = new(base().limits(sandlot::Limits {
            memory: 64 << 20,
            ..sandlot::Limits::default()
        }));
        let hog = oom
            .commands()
            .spawn(
                "sleep 0.3; for i in 1 2 3 4; do (a=xxxxxxxx; while :; do a=\"$a$a\"; done) & done; wait",
                sandlot::RunOptions::default(),
            )
            .unwrap();
        std::fs::write(format!("/proc/{}/oom_score_adj", init_of(&oom)), "1000").unwrap();
        ends.push((oom.id().into(), Reason::Oom));

        // A start command that fails: the create fails, the end is kept.
        let started = rt.create(sandlot::SandboxOptions::template(&failing.name));
        assert!(
            matches!(started, Err(sandlot::Error::StartFailed { .. })),
            "{started:?}"
        );
        let failed_id = loop {
            let event = events.recv_timeout(Duration::from_secs(10)).unwrap();
            if event.to == State::Destroyed && matches!(event.reason, Reason::SetupFailed(_)) {
                break event.sandbox_id;
            }
        };

        for (id, want) in &ends {
            assert_eq!(
                end_of(&rt, id, Duration::from_secs(10)).as_ref(),
                Some(want),
                "persistent {persistent}: {id}"
            );
        }
        let _ = hog.wait();
        match end_of(&rt, &failed_id, Duration::from_secs(5)) {
            Some(Reason::SetupFailed(why)) => assert!(why.contains("start command"), "{why}"),
            other => panic!("persistent {persistent}: start failure ended as {other:?}"),
        }
        // Listing with ended sandboxes shows them all, with reasons.
        let listed = rt.list(&ListFilter::all().ended());
        for (id, want) in &ends {
            let info = listed.iter().find(|i| &i.id == id).expect("listed");
            assert_eq!(info.end_reason.as_ref(), Some(want));
        }

        // The host shutting down ends the sandboxes of a runtime without
        // a state dir, and says so; a persistent one lets them live on.
        let last = new(base());
        drop(rt);
        if persistent {
            let rt = state.runtime();
            assert!(
                rt.connect(last.id()).is_ok(),
                "a persistent sandbox ended with its runtime"
            );
        } else {
            assert_eq!(last.info().state, State::Destroyed);
            assert_eq!(last.end_reason(), Some(Reason::HostShutdown));
        }
    }
}

#[test]
fn two_processes_run_commands_in_one_sandbox_and_a_kill_from_one_ends_it_for_both() {
    let state = StateDir::new("two");
    let mut host = PersistHost::start_with(HOST, &state, 1, None, true);
    let (id, init) = host.sandboxes[0].clone();
    let mut lines = host.lines.take().unwrap();
    let rt = state.runtime();
    let sandbox = rt.connect(&id).unwrap();
    // Both run commands at once, each with its own ids and output.
    let mut theirs = Vec::new();
    for i in 0..50 {
        assert_eq!(
            sh(&sandbox, &format!("echo mine {i}")),
            format!("mine {i}\n")
        );
        if i % 10 == 0 {
            theirs.push(lines.next().unwrap().unwrap());
        }
    }
    assert!(theirs.iter().all(|l| l.starts_with("ran ")), "{theirs:?}");
    // A kill from this process ends it for the other one too, with the
    // reason, and nothing of it is left.
    sandbox.kill().unwrap();
    let ended = lines
        .find_map(|l| l.ok().filter(|l| l.starts_with("ended")))
        .expect("the other process saw the end");
    assert_eq!(ended, "ended destroyed killed");
    assert!(host
        .wait(Duration::from_secs(5))
        .is_some_and(|s| s.success()));
    assert!(!process_exists(init));
    assert!(cgroup_dirs_containing(&id).is_empty());
    assert!(state.sandbox_dirs().is_empty());
}

/// Whether the sandbox's cgroup2 dir says it is frozen.
fn frozen(id: &str) -> bool {
    cgroup_dirs_containing(id).iter().any(|dir| {
        std::fs::read_to_string(dir.join("cgroup.events")).is_ok_and(|e| e.contains("frozen 1"))
            || std::fs::read_to_string(dir.join("freezer.state"))
                .is_ok_and(|s| s.trim() == "FROZEN")
    })
}

#[test]
fn a_timeout_can_pause_instead_and_resume_gives_the_whole_timeout_again() {
    let timeout = Duration::from_millis(1500);
    let options = || {
        sandlot_tests::options()
            .timeout(timeout)
            .on_timeout(sandlot::TimeoutAction::Pause)
    };
    // A runtime without a state dir: the reaper pauses it.
    let rt = sandlot_tests::runtime();
    let events = rt.events();
    let sandbox = rt.create(options()).unwrap();
    let paused = loop {
        let event = events.recv_timeout(Duration::from_secs(5)).unwrap();
        if event.to == State::Paused {
            break event;
        }
    };
    assert_eq!(paused.reason, Reason::Timeout);
    assert!(sandbox.is_alive());
    assert!(eventually(Duration::from_secs(2), || frozen(sandbox.id())));
    sandbox.resume().unwrap();
    let left = sandbox
        .end_at()
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(left > timeout / 2, "resumed with {left:?} left");
    assert_eq!(sh(&sandbox, "echo back"), "back\n");
    sandbox.kill().unwrap();

    // A persistent one, with no sandlot process alive: its monitor pauses
    // it; a process that connects later finds it paused, refuses commands
    // at once, and resumes it.
    let state = StateDir::new("autopause");
    let rt = state.runtime();
    let id = rt.create(options()).unwrap().id().to_string();
    let end_at = rt.inspect(&id).unwrap().end_at;
    drop(rt);
    assert!(
        eventually(Duration::from_secs(4), || frozen(&id)),
        "the monitor did not pause it at its timeout"
    );
    let rt = state.runtime();
    let sandbox = rt.connect(&id).unwrap();
    assert_eq!(sandbox.state(), State::Paused);
    assert_eq!(sandbox.end_at(), end_at, "connect moved the end");
    let started = std::time::Instant::now();
    match sandbox
        .commands()
        .run("true", sandlot::RunOptions::default())
    {
        Err(sandlot::Error::SandboxNotRunning { state, .. }) => assert_eq!(state, State::Paused),
        other => panic!("a command in a paused sandbox: {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the refusal waited"
    );
    sandbox.resume().unwrap();
    assert!(
        eventually(Duration::from_millis(500), || !frozen(&id)),
        "still frozen"
    );
    assert_eq!(sh(&sandbox, "echo back"), "back\n");
    assert!(sandbox.end_at() > end_at, "resume gave no new lifetime");
    sandbox.kill().unwrap();
}

#[test]
fn connecting_never_moves_the_end_of_a_sandbox() {
    let state = StateDir::new("connect-end");
    let rt = state.runtime();
    let sandbox = rt
        .create(sandlot_tests::options().timeout(Duration::from_secs(600)))
        .unwrap();
    sandbox.set_timeout(Duration::from_secs(30)).unwrap();
    let end_at = sandbox.end_at();
    let id = sandbox.id().to_string();
    drop(sandbox);
    drop(rt);
    for _ in 0..3 {
        let rt = state.runtime();
        let sandbox = rt.connect(&id).unwrap();
        assert_eq!(sandbox.end_at(), end_at);
        assert_eq!(rt.inspect(&id).unwrap().end_at, end_at);
    }
    let rt = state.runtime();
    rt.connect(&id).unwrap().kill().unwrap();
}

#[test]
fn a_session_pool_keeps_one_sandbox_per_key_and_replaces_dead_and_expiring_ones() {
    let rt = sandlot_tests::runtime();
    let pool = sandlot::SessionPool::new(
        &rt,
        sandlot::SessionPoolConfig::new(sandlot_tests::options())
            .name("test")
            .max_sessions(2),
    )
    .unwrap();
    let a = pool.get("alice").unwrap();
    assert_eq!(
        pool.get("alice").unwrap().id(),
        a.id(),
        "created on first use only"
    );
    assert_eq!(a.metadata()[sandlot::SESSION_METADATA_KEY], "alice");
    let b = pool.get("bob").unwrap();
    assert_ne!(a.id(), b.id());
    // Dead: recreated on the next get.
    a.kill().unwrap();
    let a2 = pool.get("alice").unwrap();
    assert_ne!(a2.id(), a.id());
    assert_eq!(sh(&a2, "echo hi"), "hi\n");
    // Bounded: a third key evicts the least recently used (bob).
    let c = pool.get("carol").unwrap();
    assert_eq!(pool.len(), 2);
    assert_eq!(b.end_reason(), Some(Reason::Killed), "bob was not evicted");
    assert!(a2.is_alive() && c.is_alive());
    // Cleanup drops dead sessions.
    c.kill().unwrap();
    assert_eq!(pool.cleanup(), 1);
    assert_eq!(pool.len(), 1);
    pool.shutdown();
    assert!(!a2.is_alive());

    // About to expire: replaced rather than handed out.
    let short = sandlot::SessionPool::new(
        &rt,
        sandlot::SessionPoolConfig::new(sandlot_tests::options().timeout(Duration::from_secs(2)))
            .min_remaining(Duration::from_millis(1500)),
    )
    .unwrap();
    let first = short.get("k").unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let second = short.get("k").unwrap();
    assert_ne!(
        first.id(),
        second.id(),
        "an expiring sandbox was handed out"
    );
    assert!(!first.is_alive());
    short.shutdown();
}

#[test]
fn session_pools_and_warm_pools_work_on_a_persistent_runtime() {
    let state = StateDir::new("pools");
    let config = || sandlot::SessionPoolConfig::new(sandlot_tests::options()).name("chat");
    let id = {
        let rt = state.runtime();
        let pool = sandlot::SessionPool::new(&rt, config()).unwrap();
        let sandbox = pool.get("user-1").unwrap();
        sandbox.files().write("/tmp/history", "hello").unwrap();
        sandbox.id().to_string()
        // pool and runtime dropped: the session lives on
    };
    // A later process (here: a later runtime) finds the session again.
    let rt = state.runtime();
    let pool = sandlot::SessionPool::new(&rt, config()).unwrap();
    let again = pool.get("user-1").unwrap();
    assert_eq!(again.id(), id);
    assert_eq!(again.files().read("/tmp/history").unwrap(), b"hello");
    pool.shutdown();
    assert!(rt.list(&ListFilter::all()).is_empty());

    let warm = sandlot::Pool::new(
        &rt,
        sandlot::PoolConfig::new(sandlot_tests::options()).warm(2),
    )
    .unwrap();
    let taken = warm.acquire().unwrap();
    assert_eq!(sh(&taken, "echo pooled"), "pooled\n");
    taken.kill().unwrap();
    warm.shutdown();
    assert!(
        eventually(Duration::from_secs(5), || state.sandbox_dirs().is_empty()),
        "the pool left sandboxes: {:?}",
        state.sandbox_dirs()
    );
}

#[test]
fn create_with_retry_falls_back_reports_every_attempt_and_never_retries_bad_options() {
    let failing = sandlot_tests::persist::BusyboxTemplate::failing("retry");
    let rt = sandlot_tests::runtime();
    let policy = sandlot::RetryPolicy::default()
        .attempts(2)
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .fallback_template(sandlot_tests::template());
    let events = rt.events();
    let sandbox = rt
        .create_with_retry(sandlot::SandboxOptions::template(&failing.name), &policy)
        .expect("the fallback template works");
    assert_eq!(sandbox.info().template, sandlot_tests::template());
    let failed_starts = events
        .try_iter()
        .filter(|e| e.to == State::Destroyed && matches!(e.reason, Reason::SetupFailed(_)))
        .count();
    assert_eq!(failed_starts, 2, "the failing template was tried twice");
    sandbox.kill().unwrap();

    // Everything fails: every attempt's error, in order.
    let policy = sandlot::RetryPolicy::default()
        .attempts(2)
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .fallback_template("no-such-template");
    match rt.create_with_retry(sandlot::SandboxOptions::template(&failing.name), &policy) {
        Err(sandlot::Error::AllAttemptsFailed(attempts)) => {
            assert_eq!(attempts.len(), 3, "{attempts:?}");
            assert!(matches!(
                attempts[0].error,
                sandlot::Error::StartFailed { .. }
            ));
            assert!(matches!(
                attempts[1].error,
                sandlot::Error::StartFailed { .. }
            ));
            assert!(matches!(
                attempts[2].error,
                sandlot::Error::TemplateNotFound(_)
            ));
            assert_eq!(attempts[2].template, "no-such-template");
        }
        other => panic!("expected every attempt to fail, got {other:?}"),
    }

    // Invalid options: one attempt, no retry.
    let started = std::time::Instant::now();
    match rt.create_with_retry(
        sandlot_tests::options().timeout(Duration::ZERO),
        &sandlot::RetryPolicy::default().backoff(Duration::from_secs(5), Duration::from_secs(5)),
    ) {
        Err(sandlot::Error::AllAttemptsFailed(attempts)) => {
            assert_eq!(attempts.len(), 1);
            assert!(matches!(
                attempts[0].error,
                sandlot::Error::InvalidOptions { .. }
            ));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bad options were retried"
    );
    assert!(rt.list(&ListFilter::all()).is_empty());
}

#[test]
fn a_start_command_that_logs_outlives_its_creator_and_is_not_activity() {
    let logging = sandlot_tests::persist::BusyboxTemplate::new(
        "logging",
        sandlot::StartCommand {
            command: "i=0; while :; do echo log line $i; echo $i >/tmp/count; \
                      i=$((i+1)); usleep 2000; done & touch /tmp/ready; wait"
                .into(),
            ready: Some(sandlot::Readiness::File("/tmp/ready".into())),
            ready_timeout_secs: 10,
        },
    );
    let state = StateDir::new("start-log");
    let rt = state.runtime();
    let sandbox = rt
        .create(sandlot::SandboxOptions::template(&logging.name))
        .unwrap();
    // A server-like start command is not activity: Running, not Active.
    assert_eq!(sandbox.state(), State::Running);
    let id = sandbox.id().to_string();
    drop(sandbox);
    drop(rt); // its creator lets go: nobody in it reads the output any more
    std::thread::sleep(Duration::from_millis(1500));
    let rt = state.runtime();
    let sandbox = rt.connect(&id).unwrap();
    let count = || {
        sh(&sandbox, "cat /tmp/count")
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let first = count();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        count() > first,
        "the start command stopped once its creator was gone (its output had nowhere to go)"
    );
    sandbox.kill().unwrap();
}

#[test]
fn a_command_that_writes_outlives_the_process_that_read_its_output() {
    let state = StateDir::new("command-output");
    let rt = state.runtime();
    let sandbox = rt.create(sandlot_tests::options()).unwrap();
    let id = sandbox.id().to_string();
    // 8 KiB to stdout and a line to stderr every 10 ms: a closed pipe kills
    // the shell (SIGPIPE), an undrained one blocks it within 0.1 s.
    let writer = sandbox
        .command("sh")
        .args([
            "-c",
            "i=0; while :; do i=$((i+1)); printf '%8192s\\n' \"$i\"; echo \"err $i\" >&2; \
             echo $i >/tmp/n; sleep 0.01; done",
        ])
        .spawn()
        .unwrap();
    let line = writer.events().recv_timeout(Duration::from_secs(10));
    assert!(
        matches!(line, Ok(sandlot::ProcessEvent::Stdout(_))),
        "{line:?}"
    );
    drop(writer);
    drop(sandbox);
    drop(rt); // the process that read its output lets go
    std::thread::sleep(Duration::from_millis(1000));
    let rt = state.runtime();
    let sandbox = rt.connect(&id).unwrap();
    let count = || -> u64 { sh(&sandbox, "cat /tmp/n").trim().parse().unwrap() };
    let first = count();
    assert!(
        sandlot_tests::eventually(Duration::from_secs(10), || count() > first + 10),
        "the command stopped once nobody read its output (at {first})"
    );
    assert!(sh(&sandbox, "ps -eo args").contains("while :"));
    sandbox.kill().unwrap();
}

#[test]
fn cleanup_inactive_destroys_only_what_is_idle_longer_than_the_threshold() {
    for persistent in [false, true] {
        let state = StateDir::new(if persistent { "cleanup-p" } else { "cleanup" });
        let rt = if persistent {
            state.runtime()
        } else {
            sandlot_tests::runtime()
        };
        let idle = rt.create(sandlot_tests::options()).unwrap();
        let busy = rt.create(sandlot_tests::options()).unwrap();
        let touched = rt.create(sandlot_tests::options()).unwrap();
        let running = busy
            .commands()
            .spawn("sleep 3", sandlot::RunOptions::default())
            .unwrap();
        // A persistent sandbox this runtime never touched (made by another).
        let other = if persistent {
            let elsewhere = state.runtime();
            let id = elsewhere
                .create(sandlot_tests::options())
                .unwrap()
                .id()
                .to_string();
            drop(elsewhere);
            Some(id)
        } else {
            None
        };
        for _ in 0..6 {
            touched.touch();
            std::thread::sleep(Duration::from_millis(200));
        }
        let report = rt.cleanup_inactive(Duration::from_millis(700));
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        let mut destroyed = report.destroyed.clone();
        destroyed.sort();
        let mut want: Vec<String> = [idle.id().to_string()].into_iter().chain(other).collect();
        want.sort();
        assert_eq!(destroyed, want, "persistent {persistent}");
        assert_eq!(idle.end_reason(), Some(Reason::IdleTimeout));
        assert!(busy.is_alive() && touched.is_alive());
        for id in &want {
            assert_eq!(
                rt.inspect(id).unwrap().end_reason,
                Some(Reason::IdleTimeout)
            );
        }
        drop(running);
        busy.kill().unwrap();
        touched.kill().unwrap();
    }
}

#[test]
fn the_state_dir_and_control_sockets_are_root_only() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let state = StateDir::new("modes");
    // Made too open by someone else: made root-only.
    std::fs::create_dir_all(&state.path).unwrap();
    std::fs::set_permissions(&state.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let rt = state.runtime();
    let sandbox = rt.create(sandlot_tests::options()).unwrap();
    let dir = state.path.join("sandboxes").join(sandbox.id());
    for (path, mode) in [
        (state.path.clone(), 0o700),
        (state.path.join("sandboxes"), 0o700),
        (state.path.join("tombstones"), 0o700),
        (dir.clone(), 0o700),
        (dir.join("control"), 0o600),
        (dir.join("record.json"), 0o600),
        (dir.join("lifecycle"), 0o600),
    ] {
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, mode, "{}", path.display());
        assert_eq!(meta.uid(), 0, "{}", path.display());
    }
    // Nothing of it is visible inside.
    let out = sandbox
        .commands()
        .run(
            format!("ls {} 2>&1; echo $?", state.path.display()),
            sandlot::RunOptions::default(),
        )
        .unwrap();
    assert!(
        out.stdout_str().trim().ends_with('2') || out.stdout_str().contains("No such"),
        "{}",
        out.stdout_str()
    );
    sandbox.kill().unwrap();
}

/// A persistent runtime's shutdown lets go of a sandbox that has code
/// contexts — one idle, one in the middle of a cell — and returns; a new
/// runtime takes the sandbox over and its contexts start afresh. (The
/// contexts' release used to wait for an exit report that only the
/// control connection the shutdown had just closed could bring: forever.)
#[test]
fn shutdown_lets_go_of_a_sandbox_with_code_contexts() {
    use sandlot::code::{CellOptions, CodeContextOptions, Language};
    let state = StateDir::new("contexts");
    let rt = state.runtime();
    let sb = rt.create(sandlot_tests::options()).unwrap();
    let id = sb.id().to_string();
    let python = CodeContextOptions::new(Language::Python).ipython(false);
    let idle = sb.code().create_context(python.clone()).unwrap();
    sb.code()
        .run(&idle, "x = 1", CellOptions::default())
        .unwrap();
    let busy = sb.code().create_context(python.clone()).unwrap();
    let cell = {
        let sb = sb.clone();
        std::thread::spawn(move || {
            sb.code()
                .run(&busy, "import time\ntime.sleep(60)", CellOptions::default())
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let shutting = rt.clone();
    std::thread::spawn(move || {
        shutting.shutdown();
        let _ = done_tx.send(());
    });
    // A bound that only tells a hang from an answer.
    assert!(
        done_rx.recv_timeout(Duration::from_secs(30)).is_ok(),
        "the shutdown hung on the sandbox's code contexts"
    );
    let ended = cell.join().unwrap();
    assert!(
        ended.map_or(true, |e| e.state_lost || e.error.is_some()),
        "the running cell must end lost or failed when its runtime lets go"
    );
    drop(rt);

    let rt = state.runtime();
    let again = rt.connect(&id).expect("the sandbox lived on");
    let fresh = again.code().create_context(python).unwrap();
    let execution = again
        .code()
        .run(&fresh, "1 + 1", CellOptions::default())
        .unwrap();
    assert_eq!(execution.text(), Some("2"));
    again.kill().unwrap();
}
