//! The lifecycle: legal transitions with reasons, timeouts, set_timeout,
//! list, connect, kill, shutdown, and init dying with its host.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use sandlot::{Error, LifecycleEvent, ListFilter, Reason, RunOptions, SandboxOptions, State};
use sandlot_tests::{eventually, process_exists, runtime, sandbox, sh};

fn next_for(events: &crossbeam_channel::Receiver<LifecycleEvent>, id: &str) -> LifecycleEvent {
    loop {
        let event = events
            .recv_timeout(Duration::from_secs(20))
            .expect("a lifecycle event");
        if event.sandbox_id == id {
            return event;
        }
    }
}

#[test]
fn every_transition_is_legal_and_has_its_reason() {
    let rt = runtime();
    let events = rt.events();
    let sb = sandbox(&rt);
    sh(&sb, "true");
    sb.kill().unwrap();
    let seen: Vec<(State, State, Reason)> = (0..5)
        .map(|_| {
            let e = next_for(&events, sb.id());
            (e.from, e.to, e.reason)
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (State::Pending, State::Starting, Reason::Created),
            (State::Starting, State::Running, Reason::Started),
            (State::Running, State::Active, Reason::CommandStarted),
            (State::Active, State::Running, Reason::Idle),
            (State::Running, State::Destroyed, Reason::Killed),
        ]
    );
    for (from, to, _) in &seen {
        assert!(from.can_become(*to));
    }
}

#[test]
fn the_sandbox_timeout_fires_and_emits_its_event() {
    let rt = runtime();
    let events = rt.events();
    let sb = rt
        .create(SandboxOptions::default().timeout(Duration::from_millis(500)))
        .unwrap();
    let pid = sb.info().init_pid.unwrap();
    let end = loop {
        let e = next_for(&events, sb.id());
        if e.to == State::Destroyed {
            break e;
        }
    };
    assert_eq!(end.reason, Reason::Timeout);
    assert_eq!(sb.state(), State::Destroyed);
    assert_eq!(sb.end_reason(), Some(Reason::Timeout));
    assert!(!sb.is_alive());
    assert!(!process_exists(pid), "init outlived its sandbox");
    assert!(matches!(
        rt.connect(sb.id()),
        Err(Error::SandboxNotFound(_))
    ));
}

#[test]
fn set_timeout_moves_the_deadline_both_ways() {
    let rt = runtime();
    let sb = rt
        .create(SandboxOptions::default().timeout(Duration::from_millis(700)))
        .unwrap();
    let first_end = sb.end_at();
    sb.set_timeout(Duration::from_secs(60)).unwrap();
    assert!(sb.end_at() > first_end + Duration::from_secs(50));
    assert!(sb.end_at() > SystemTime::now() + Duration::from_secs(50));
    // Past the original deadline it is still alive and working.
    std::thread::sleep(Duration::from_millis(1200));
    assert!(sb.is_alive());
    assert_eq!(sh(&sb, "echo ok").trim(), "ok");
    // Shortened, it dies.
    sb.set_timeout(Duration::from_millis(100)).unwrap();
    assert!(eventually(Duration::from_secs(10), || sb.state() == State::Destroyed));
    assert_eq!(sb.end_reason(), Some(Reason::Timeout));
    assert!(matches!(
        sb.set_timeout(Duration::from_secs(5)),
        Err(Error::SandboxNotRunning {
            state: State::Destroyed,
            ..
        })
    ));
    assert!(matches!(
        sb.set_timeout(Duration::ZERO),
        Err(Error::InvalidOptions {
            option: "timeout",
            ..
        })
    ));
}

#[test]
fn list_filters_by_state_and_metadata_and_connect_finds() {
    let rt = runtime();
    let a = rt
        .create(
            SandboxOptions::default()
                .metadata("user_id", "u1")
                .metadata("kind", "x"),
        )
        .unwrap();
    let b = rt
        .create(SandboxOptions::default().metadata("user_id", "u1"))
        .unwrap();
    let c = rt
        .create(SandboxOptions::default().metadata("user_id", "u2"))
        .unwrap();
    let _busy = b
        .commands()
        .spawn(["sleep", "100"], RunOptions::default())
        .unwrap();

    let ids = |filter: ListFilter| -> Vec<String> {
        rt.list(&filter).into_iter().map(|i| i.id).collect()
    };
    assert_eq!(ids(ListFilter::all()), vec![a.id(), b.id(), c.id()]);
    assert_eq!(
        ids(ListFilter::all().metadata("user_id", "u1")),
        vec![a.id(), b.id()]
    );
    assert_eq!(
        ids(ListFilter::all()
            .metadata("user_id", "u1")
            .metadata("kind", "x")),
        vec![a.id()]
    );
    assert_eq!(ids(ListFilter::all().state(State::Active)), vec![b.id()]);
    assert_eq!(
        ids(ListFilter::all()
            .state(State::Running)
            .metadata("user_id", "u2")),
        vec![c.id()]
    );

    let again = rt.connect(a.id()).unwrap();
    assert_eq!(again.metadata().get("kind").map(String::as_str), Some("x"));
    assert_eq!(sh(&again, "hostname").trim(), a.id());
    assert!(matches!(rt.connect("nope"), Err(Error::SandboxNotFound(id)) if id == "nope"));

    c.kill().unwrap();
    assert_eq!(
        ids(ListFilter::all().metadata("user_id", "u2")),
        Vec::<String>::new()
    );
}

#[test]
fn kill_is_idempotent_and_a_killed_sandbox_refuses_work() {
    let rt = runtime();
    let sb = sandbox(&rt);
    let pid = sb.info().init_pid.unwrap();
    let running = sb
        .commands()
        .spawn(["sleep", "100"], RunOptions::default())
        .unwrap();
    sb.kill().unwrap();
    sb.kill().unwrap();
    rt.connect(sb.id()).err().unwrap();
    assert!(!process_exists(pid));
    assert_eq!(
        running.wait().unwrap().exit.reason,
        sandlot::ExitReason::SandboxDestroyed
    );
    match sb.commands().run("true", RunOptions::default()) {
        Err(Error::SandboxNotRunning { id, state }) => {
            assert_eq!(id, sb.id());
            assert_eq!(state, State::Destroyed);
        }
        other => panic!("expected SandboxNotRunning, got {other:?}"),
    }
    assert!(!sb.is_alive());
    assert_eq!(sb.info().init_pid, None);
}

#[test]
fn concurrent_kills_tear_down_once() {
    let rt = runtime();
    let events = rt.events();
    let sb = sandbox(&rt);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let sb = sb.clone();
            std::thread::spawn(move || sb.kill())
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    let destroyed = events
        .try_iter()
        .filter(|e| e.sandbox_id == sb.id() && e.to == State::Destroyed)
        .count();
    assert_eq!(destroyed, 1);
}

#[test]
fn a_dead_init_is_noticed_and_cleaned_up() {
    let rt = runtime();
    let events = rt.events();
    let sb = sandbox(&rt);
    let pid = sb.info().init_pid.unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let end = loop {
        let e = next_for(&events, sb.id());
        if e.to == State::Destroyed {
            break e;
        }
    };
    assert_eq!(end.reason, Reason::InitDied);
    assert!(rt.list(&ListFilter::all()).is_empty());
}

#[test]
fn shutting_down_the_runtime_destroys_its_sandboxes() {
    let rt = runtime();
    let events = rt.events();
    let a = sandbox(&rt);
    let b = sandbox(&rt);
    let pids = [a.info().init_pid.unwrap(), b.info().init_pid.unwrap()];
    rt.shutdown();
    for pid in pids {
        assert!(!process_exists(pid));
    }
    assert_eq!(a.state(), State::Destroyed);
    let reasons: Vec<Reason> = events
        .try_iter()
        .filter(|e| e.to == State::Destroyed)
        .map(|e| e.reason)
        .collect();
    assert_eq!(reasons, vec![Reason::HostShutdown, Reason::HostShutdown]);
    assert!(matches!(
        rt.create(SandboxOptions::default()),
        Err(Error::RuntimeShutDown)
    ));

    // Dropping the last handle of a runtime does the same.
    let rt = runtime();
    let c = sandbox(&rt);
    let pid = c.info().init_pid.unwrap();
    drop(rt);
    assert!(!process_exists(pid));
    assert_eq!(c.state(), State::Destroyed);
}

/// Kills a host process with a live sandbox: its init must die with it
/// (parent-death signal + init exiting on control EOF), and the next runtime
/// removes the cgroups the dead host left behind.
#[test]
fn init_dies_with_its_host_and_leftovers_are_removed() {
    sandlot_tests::require_root();
    let mut host = Command::new(env!("CARGO_BIN_EXE_sandlot-test-host"))
        .arg(sandlot_tests::data_dir())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(host.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut fields = line.split_whitespace();
    let init: i32 = fields.next().unwrap().parse().unwrap();
    let id = fields.next().unwrap().to_string();
    assert!(process_exists(init));
    host.kill().unwrap();
    host.wait().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || !process_exists(init)),
        "init {init} outlived its host"
    );
    // The dead host could not remove its cgroups; a new runtime does.
    let rt = runtime();
    let leftovers = sandlot_tests::cgroup_dirs_containing(&id);
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    drop(rt);
}

#[test]
fn a_host_with_more_descriptors_than_the_sandbox_limit_can_create() {
    // Found by the density benchmark: with 1,000 sandboxes a host holds
    // about 5,000 descriptors, more than a sandbox's RLIMIT_NOFILE (1024).
    let rt = runtime();
    let null = std::fs::File::open("/dev/null").unwrap();
    let extra: Vec<std::os::fd::OwnedFd> = (0..1100)
        .map(|_| {
            std::os::fd::AsFd::as_fd(&null)
                .try_clone_to_owned()
                .unwrap()
        })
        .collect();
    let sb = sandbox(&rt);
    assert_eq!(sh(&sb, "echo ok"), "ok\n");
    sb.kill().unwrap();
    drop(extra);
}
