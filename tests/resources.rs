//! Watching and steering a sandbox's resources: metrics, the resource
//! monitor and its alerts, health, pause and resume (and the pause clock).
//! Busybox-compatible commands only: this file also runs in the pure
//! cgroup v2 guest (scripts/test-cgroup2-vm.sh).

use std::time::{Duration, SystemTime};

use crossbeam_channel::Receiver;
use sandlot::{
    AlertKind, Error, ExecLimits, ExitReason, HealthStatus, LifecycleEvent, Limits, Reason,
    ResourceEvent, ResourceKind, ResourceMonitor, RunOptions, Sandbox, State, Thresholds,
};
use sandlot_tests::{eventually, options, process_exists, runtime, sandbox, sh};

const MIB: u64 = 1 << 20;

/// Holds `mib` MiB of anonymous memory until killed: dd reads it into one
/// buffer, then blocks writing to a pipe nobody reads.
fn hold(sb: &Sandbox, mib: u64) -> sandlot::CommandHandle {
    sb.commands()
        .spawn(
            format!("dd if=/dev/zero bs={mib}M count=1 2>/dev/null | sleep 1000"),
            RunOptions::default(),
        )
        .unwrap()
}

fn spin(sb: &Sandbox) -> sandlot::CommandHandle {
    sb.commands()
        .spawn("while :; do :; done", RunOptions::default())
        .unwrap()
}

fn destroyed(events: &Receiver<LifecycleEvent>, id: &str, within: Duration) -> LifecycleEvent {
    let end = std::time::Instant::now() + within;
    loop {
        let left = end.saturating_duration_since(std::time::Instant::now());
        let event = events.recv_timeout(left).expect("the sandbox's end");
        if event.sandbox_id == id && event.to == State::Destroyed {
            return event;
        }
    }
}

#[test]
fn metrics_reflect_a_100_mib_allocation() {
    let rt = runtime();
    let sb = sandbox(&rt);
    let before = sb.metrics().unwrap();
    assert!(before.memory_used < 50 * MIB, "{before:?}");
    assert_eq!(before.active_executions, 0);

    let holder = hold(&sb, 100);
    assert!(
        eventually(Duration::from_secs(20), || sb
            .metrics()
            .is_ok_and(|m| m.memory_used >= 100 * MIB)),
        "{:?}",
        sb.metrics()
    );
    let m = sb.metrics().unwrap();
    assert!(m.memory_peak >= 100 * MIB, "{m:?}");
    assert!(m.memory_used < m.memory_limit);
    assert!(m.processes >= 3, "init, dd, sleep: {m:?}");
    assert_eq!(m.active_executions, 1);
    assert!(m.last_activity >= before.last_activity);
    assert!(m.uptime > before.uptime);
    assert!(m.timestamp <= SystemTime::now());

    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(eventually(Duration::from_secs(10), || sb
        .metrics()
        .is_ok_and(|m| m.memory_used < 50 * MIB)));
    let after = sb.metrics().unwrap();
    assert!(after.memory_peak >= 100 * MIB, "the peak stays: {after:?}");
    assert_eq!(after.active_executions, 0);
}

#[test]
fn metrics_count_disk_and_network() {
    let rt = runtime();
    let sb = sandbox(&rt);
    let before = sb.metrics().unwrap();
    assert!(before.disk_total > 0);
    sh(&sb, "dd if=/dev/zero of=/tmp/f bs=1M count=10 2>/dev/null");
    let after = sb.metrics().unwrap();
    assert!(after.disk_used >= before.disk_used + 10 * MIB, "{after:?}");
    // Loopback traffic counts (rx and tx both see it): a TCP connect to a
    // closed port is a SYN and a RST. bash (the host's base template) has
    // /dev/tcp, busybox (the v2 guest's template) has nc.
    sh(
        &sb,
        "for i in 1 2 3; do (echo > /dev/tcp/127.0.0.1/9) 2>/dev/null; \
         nc 127.0.0.1 9 </dev/null 2>/dev/null; done; true",
    );
    let net = sb.metrics().unwrap();
    assert!(
        net.net_tx_packets >= 6 && net.net_rx_packets >= 6,
        "{net:?}"
    );
    assert!(net.net_tx_bytes > 0 && net.net_rx_bytes > 0, "{net:?}");
    sb.kill().unwrap();
    assert!(matches!(sb.metrics(), Err(Error::SandboxNotRunning { .. })));
}

#[test]
fn a_paused_sandbox_uses_no_cpu_refuses_commands_and_resumes() {
    let rt = runtime();
    let sb = sandbox(&rt);
    let spinner = spin(&sb);
    assert!(eventually(Duration::from_secs(10), || sb
        .metrics()
        .is_ok_and(|m| m.cpu_usage_ns > 100_000_000)));

    let t = std::time::Instant::now();
    sb.pause().unwrap();
    eprintln!("pause took {:?}", t.elapsed());
    assert_eq!(sb.state(), State::Paused);
    let frozen = sb.metrics().unwrap().cpu_usage_ns;
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        sb.metrics().unwrap().cpu_usage_ns,
        frozen,
        "a paused sandbox's CPU counter advanced"
    );
    match sb.commands().run("true", RunOptions::default()) {
        Err(Error::SandboxNotRunning { state, .. }) => assert_eq!(state, State::Paused),
        other => panic!("expected SandboxNotRunning(Paused), got {other:?}"),
    }
    sb.pause().unwrap(); // idempotent

    let t = std::time::Instant::now();
    sb.resume().unwrap();
    eprintln!("resume took {:?}", t.elapsed());
    assert_eq!(sb.state(), State::Active, "the spinner is still in flight");
    assert!(eventually(Duration::from_secs(10), || sb
        .metrics()
        .is_ok_and(|m| m.cpu_usage_ns > frozen + 50_000_000)));
    spinner.kill().unwrap();
    assert_eq!(spinner.wait().unwrap().exit.reason, ExitReason::Signaled);
    assert_eq!(sh(&sb, "echo back"), "back\n");
    sb.resume().unwrap(); // idempotent
    assert_eq!(sb.state(), State::Running);
}

#[test]
fn pause_and_resume_emit_events_and_an_idle_sandbox_resumes_to_running() {
    let rt = runtime();
    let events = rt.events();
    let sb = sandbox(&rt);
    sb.pause().unwrap();
    sb.resume().unwrap();
    let seen: Vec<(State, State, Reason)> = events
        .try_iter()
        .filter(|e| e.sandbox_id == sb.id())
        .map(|e| (e.from, e.to, e.reason))
        .skip(2) // created, started
        .collect();
    assert_eq!(
        seen,
        vec![
            (State::Running, State::Paused, Reason::Paused),
            (State::Paused, State::Running, Reason::Resumed),
        ]
    );
    sb.kill().unwrap();
    assert!(matches!(
        sb.pause(),
        Err(Error::SandboxNotRunning {
            state: State::Destroyed,
            ..
        })
    ));
}

#[test]
fn a_paused_sandbox_can_be_destroyed() {
    let rt = runtime();
    let sb = sandbox(&rt);
    let spinner = spin(&sb);
    let init = sb.info().init_pid.unwrap();
    sb.pause().unwrap();
    sb.kill().unwrap();
    assert_eq!(sb.state(), State::Destroyed);
    assert!(!process_exists(init));
    assert_eq!(
        spinner.wait().unwrap().exit.reason,
        ExitReason::SandboxDestroyed
    );
}

#[test]
fn by_default_the_timeout_runs_on_while_paused() {
    let rt = runtime();
    let events = rt.events();
    let sb = rt
        .create(options().timeout(Duration::from_millis(800)))
        .unwrap();
    let init = sb.info().init_pid.unwrap();
    sb.pause().unwrap();
    let end = destroyed(&events, sb.id(), Duration::from_secs(20));
    assert_eq!(end.from, State::Paused);
    assert_eq!(end.reason, Reason::Timeout);
    assert!(!process_exists(init));
}

#[test]
fn with_the_pause_clock_a_paused_sandbox_does_not_age() {
    let rt = runtime();
    let events = rt.events();
    // The command's limit must come before the sandbox's however slow the
    // spawn is (an emulated guest can take a second): 1 s against 3 s.
    let sb = rt
        .create(
            options()
                .timeout(Duration::from_millis(3000))
                .pause_clock(true)
                .exec_limits(ExecLimits::default().max_time(Duration::from_millis(1000))),
        )
        .unwrap();
    let sleeper = sb
        .commands()
        .spawn(["sleep", "30"], RunOptions::default())
        .unwrap();
    sb.pause().unwrap();
    // Well past both the sandbox's timeout and the command's limit.
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(sb.state(), State::Paused);
    assert!(sb.is_alive());
    sb.resume().unwrap();
    assert_eq!(sb.state(), State::Active);
    assert_eq!(sb.commands().list().len(), 1, "the command was not killed");
    // The clocks run again from where they stopped: the command's limit
    // comes first, then the sandbox's.
    let exit = sleeper.wait().unwrap().exit;
    assert_eq!(exit.reason, ExitReason::TimedOut);
    assert!(exit.duration > Duration::from_millis(3500), "{exit:?}");
    let end = destroyed(&events, sb.id(), Duration::from_secs(20));
    assert_eq!(end.reason, Reason::Timeout);
}

#[test]
fn a_monitor_keeps_bounded_history_raises_alerts_and_stops_with_its_sandbox() {
    let rt = runtime();
    let all = rt.resource_events();
    let sb = rt
        .create(options().limits(Limits {
            memory: 64 * MIB,
            ..Limits::default()
        }))
        .unwrap();
    let monitor = ResourceMonitor::start(
        &sb,
        Duration::from_millis(50),
        4,
        Thresholds {
            memory_percent: 50.0,
            // dd filling its buffer is a CPU burst: only memory here.
            cpu_percent: 1e6,
            ..Thresholds::default()
        },
    )
    .unwrap();
    let holder = hold(&sb, 40);
    let alert = monitor
        .alerts()
        .recv_timeout(Duration::from_secs(20))
        .expect("a memory alert");
    assert_eq!(
        (alert.resource, alert.kind, alert.sandbox_id.as_str()),
        (ResourceKind::Memory, AlertKind::Exceeded, sb.id())
    );
    assert!(alert.percent > 50.0 && alert.threshold == 50.0, "{alert:?}");
    holder.kill().unwrap();
    holder.wait().unwrap();
    let back = monitor
        .alerts()
        .recv_timeout(Duration::from_secs(20))
        .expect("a recovery");
    assert_eq!(
        (back.resource, back.kind),
        (ResourceKind::Memory, AlertKind::Recovered)
    );
    // The runtime-wide stream saw both.
    let relayed: Vec<_> = all
        .try_iter()
        .filter(|e| matches!(e, ResourceEvent::Alert(_)))
        .collect();
    assert_eq!(relayed.len(), 2, "{relayed:?}");

    assert!(eventually(Duration::from_secs(5), || monitor
        .history(sb.id())
        .len()
        == 4));
    std::thread::sleep(Duration::from_millis(200));
    let history = monitor.history(sb.id());
    assert_eq!(history.len(), 4, "bounded");
    assert!(history.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
    assert!(monitor.is_running());

    sb.kill().unwrap();
    assert!(eventually(Duration::from_secs(5), || !monitor.is_running()));
    assert_eq!(
        monitor.history(sb.id()).len(),
        4,
        "history outlives the sandbox"
    );
}

#[test]
fn a_runtime_monitor_samples_every_sandbox_and_stops_at_shutdown() {
    let rt = runtime();
    let a = sandbox(&rt);
    let b = sandbox(&rt);
    let monitor =
        ResourceMonitor::start(&rt, Duration::from_millis(50), 8, Thresholds::default()).unwrap();
    assert!(eventually(Duration::from_secs(5), || {
        let ids = monitor.sandboxes();
        ids.contains(&a.id().to_string()) && ids.contains(&b.id().to_string())
    }));
    b.kill().unwrap();
    assert!(eventually(Duration::from_secs(5), || !monitor
        .sandboxes()
        .contains(&b.id().to_string())));
    assert!(monitor.latest(a.id()).is_some());
    assert!(monitor.is_running());
    rt.shutdown();
    assert!(eventually(Duration::from_secs(5), || !monitor.is_running()));
    assert!(matches!(
        ResourceMonitor::start(&a, Duration::ZERO, 1, Thresholds::default()),
        Err(Error::InvalidOptions { .. })
    ));
}

#[test]
fn health_is_healthy_degraded_or_unhealthy_by_its_four_checks() {
    let rt = runtime();
    let sb = rt
        .create(options().limits(Limits {
            disk: 4 * MIB,
            ..Limits::default()
        }))
        .unwrap();
    let h = sb.health();
    assert_eq!(h.status, HealthStatus::Healthy, "{h:?}");
    assert!(h.alive.passed && h.responsive.passed && h.filesystem.passed && h.resources.passed);
    assert!(h.metrics.is_some());

    // A full disk: still answering, but near a limit.
    let _ = sb.commands().run(
        "dd if=/dev/zero of=/tmp/f bs=1M count=8 2>/dev/null",
        RunOptions::default(),
    );
    let h = sb.health();
    assert_eq!(h.status, HealthStatus::Degraded, "{h:?}");
    assert!(!h.resources.passed && h.responsive.passed, "{h:?}");
    assert!(
        h.resources.detail.contains("disk 100%"),
        "{}",
        h.resources.detail
    );
    sh(&sb, "rm /tmp/f");

    // Paused: alive, not answering, by design.
    sb.pause().unwrap();
    let h = sb.health();
    assert_eq!(h.status, HealthStatus::Degraded, "{h:?}");
    assert!(h.alive.passed && !h.responsive.passed && h.filesystem.passed);
    sb.resume().unwrap();
    assert_eq!(sb.health().status, HealthStatus::Healthy);

    sb.kill().unwrap();
    let h = sb.health();
    assert_eq!(h.status, HealthStatus::Unhealthy);
    assert!(!h.alive.passed && !h.responsive.passed);
}
