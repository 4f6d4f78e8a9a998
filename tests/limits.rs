//! Every limit, shown biting: memory (OOM kill inside the sandbox), pids
//! (fork bomb), CPU (share of a core), disk (ENOSPC), output (truncated),
//! time (killed), concurrency (refused), open files and file size
//! (rlimits), bad values (refused at create), the runtime's memory quota.
//!
//! The commands use only what both the host's /usr and busybox offer, so
//! this file also runs in the pure cgroup v2 guest
//! (scripts/test-cgroup2-vm.sh).

use std::time::{Duration, Instant};

use sandlot::{
    Cmd, Error, ExecLimits, ExitReason, Limits, ResourceEvent, RunOptions, Runtime, Sandbox,
    SandboxOptions,
};
use sandlot_tests::{census, eventually, options, process_exists, runtime, sandbox, sh};

const MIB: u64 = 1 << 20;

fn limited(rt: &Runtime, limits: Limits) -> Sandbox {
    rt.create(options().limits(limits))
        .expect("create a limited sandbox")
}

fn with_exec(rt: &Runtime, exec: ExecLimits) -> Sandbox {
    rt.create(options().exec_limits(exec))
        .expect("create a sandbox with exec limits")
}

fn argv(args: &[&str]) -> Cmd {
    Cmd::Argv(args.iter().map(|a| a.to_string()).collect())
}

fn run(sb: &Sandbox, cmd: impl Into<Cmd>) -> sandlot::CommandResult {
    sb.commands()
        .run(cmd, RunOptions::default())
        .expect("run a command")
}

#[test]
fn a_memory_bomb_is_oom_killed_inside_and_others_live() {
    let rt = runtime();
    let events = rt.resource_events();
    let bomb = limited(
        &rt,
        Limits {
            memory: 64 * MIB,
            ..Limits::default()
        },
    );
    let other = sandbox(&rt);

    // dd reads 256 MiB of zeros into one buffer: every page is touched.
    let direct = run(
        &bomb,
        argv(&["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"]),
    );
    assert_eq!(
        direct.exit.reason,
        ExitReason::OomKilled,
        "{:?}",
        direct.exit
    );
    assert_eq!(direct.exit.signal, Some(sandlot::Signal::KILL));

    // Through a shell that survives and reports 128 + SIGKILL.
    let shell = run(
        &bomb,
        "dd if=/dev/zero of=/dev/null bs=256M count=1; exit $?",
    );
    assert_eq!(shell.exit.reason, ExitReason::OomKilled, "{:?}", shell.exit);
    assert_eq!(shell.exit.code, Some(137));

    // The event, once per kill, for this sandbox.
    let event = events
        .recv_timeout(Duration::from_secs(10))
        .expect("an OOM event");
    match event {
        ResourceEvent::Oom(oom) => {
            assert_eq!(oom.sandbox_id, bomb.id());
            assert!(oom.kills >= 1 && oom.total >= 1, "{oom:?}");
        }
        other => panic!("expected an OOM event, got {other:?}"),
    }
    assert!(bomb.metrics().unwrap().oom_kills >= 2);

    // The sandbox, its neighbour and the host all go on.
    assert_eq!(sh(&bomb, "echo alive"), "alive\n");
    assert_eq!(sh(&other, "echo alive"), "alive\n");
    assert_eq!(other.metrics().unwrap().oom_kills, 0);
    let ok = run(
        &bomb,
        argv(&["dd", "if=/dev/zero", "of=/dev/null", "bs=1M", "count=8"]),
    );
    assert_eq!(ok.exit.reason, ExitReason::Exited);

    // A kill no command exit reports (a background process) is noticed
    // by the watch on the cgroup alone.
    let _ = events.try_iter().count();
    let quiet = bomb
        .commands()
        .spawn(
            "dd if=/dev/zero of=/dev/null bs=256M count=1 & sleep 1000",
            RunOptions::default(),
        )
        .unwrap();
    match events.recv_timeout(Duration::from_secs(10)) {
        Ok(ResourceEvent::Oom(oom)) => assert_eq!(oom.sandbox_id, bomb.id()),
        other => panic!("expected an OOM event, got {other:?}"),
    }
    assert_eq!(bomb.commands().list().len(), 1, "the shell lives on");
    quiet.kill().unwrap();
}

#[test]
fn a_fork_bomb_stops_at_pids_max_and_the_sandbox_still_dies() {
    let rt = runtime();
    let sb = limited(
        &rt,
        Limits {
            pids: 32,
            ..Limits::default()
        },
    );
    let init = sb.info().init_pid.unwrap();
    let _bomb = sb
        .commands()
        .spawn("b() { b | b & }; b; sleep 1000", RunOptions::default())
        .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || sb
            .metrics()
            .is_ok_and(|m| m.processes == 32)),
        "the bomb never reached pids.max: {:?}",
        sb.metrics()
    );
    for _ in 0..20 {
        let m = sb.metrics().unwrap();
        assert!(m.processes <= m.max_processes, "{m:?}");
        assert_eq!(m.max_processes, 32);
    }
    sb.kill().unwrap();
    assert!(!sb.is_alive());
    assert!(!process_exists(init));
    let left: Vec<_> = census()
        .cgroup_dirs
        .into_iter()
        .filter(|d| d.to_string_lossy().contains(sb.id()))
        .collect();
    assert!(left.is_empty(), "cgroup dirs left: {left:?}");
}

#[test]
fn a_cpu_spinner_gets_its_share_of_a_core() {
    let rt = runtime();
    let sb = limited(
        &rt,
        Limits {
            cpus: 0.5,
            ..Limits::default()
        },
    );
    let _spin = sb
        .commands()
        .spawn("while :; do :; done", RunOptions::default())
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (t0, m0) = (Instant::now(), sb.metrics().unwrap());
    std::thread::sleep(Duration::from_secs(2));
    let (t1, m1) = (Instant::now(), sb.metrics().unwrap());
    let share = (m1.cpu_usage_ns - m0.cpu_usage_ns) as f64 / (t1 - t0).as_nanos() as f64;
    eprintln!("cpu share under cpus=0.5 over 2 s: {share:.3} of a core");
    assert!(
        (0.35..=0.65).contains(&share),
        "a spinner under cpus=0.5 got {share:.3} of a core"
    );
    // metrics() says the same as a percentage of the limit.
    assert!(m1.cpu_percent > 70.0 && m1.cpu_percent < 130.0, "{m1:?}");
    assert_eq!(m1.cpu_count, 0.5);
}

#[test]
fn filling_the_disk_gets_enospc_everywhere_writable_and_others_still_write() {
    let rt = runtime();
    let full = limited(
        &rt,
        Limits {
            disk: 8 * MIB,
            ..Limits::default()
        },
    );
    let other = sandbox(&rt);
    for dir in ["/tmp", "/root", "/dev/shm"] {
        let fill = run(
            &full,
            format!("dd if=/dev/zero of={dir}/fill bs=1M count=64 2>&1"),
        );
        assert!(!fill.success(), "{dir}: a 64 MiB write fit in 8 MiB");
        assert!(
            fill.stdout_str().contains("No space left on device"),
            "{dir}: {}",
            fill.stdout_str()
        );
        let m = full.metrics().unwrap();
        assert!(m.disk_used > 7 * MIB, "{dir}: {m:?}");
        assert!(m.disk_total <= 8 * MIB, "{m:?}");
        sh(&full, &format!("rm {dir}/fill"));
    }
    sh(
        &other,
        "dd if=/dev/zero of=/tmp/fill bs=1M count=16 2>/dev/null && ls -l /tmp/fill",
    );
    assert!(other.metrics().unwrap().disk_used >= 16 * MIB);
}

#[test]
fn an_output_flood_is_truncated_at_the_limit_and_flagged() {
    let rt = runtime();
    let sb = with_exec(&rt, ExecLimits::default().max_output_bytes(64 * 1024));
    let out = run(&sb, "head -c 4194304 /dev/zero; echo done >&2");
    assert_eq!(out.stdout.len(), 64 * 1024);
    assert!(out.exit.stdout_truncated && !out.exit.stderr_truncated);
    assert_eq!(out.stderr_str(), "done\n");
    assert_eq!(out.exit.reason, ExitReason::OutputLimit);
    assert_eq!(out.exit.code, Some(0), "the writer ran to its end");
    assert!(out.truncated());

    let err = run(&sb, "head -c 1048576 /dev/zero >&2");
    assert_eq!(err.stderr.len(), 64 * 1024);
    assert!(err.exit.stderr_truncated && !err.exit.stdout_truncated);

    let small = run(&sb, "echo fits");
    assert_eq!(small.stdout_str(), "fits\n");
    assert_eq!(small.exit.reason, ExitReason::Exited);
    assert!(!small.truncated());
}

#[test]
fn a_command_past_max_time_is_killed_and_says_timed_out() {
    let rt = runtime();
    let sb = with_exec(
        &rt,
        ExecLimits::default().max_time(Duration::from_millis(500)),
    );
    let slow = run(&sb, argv(&["sleep", "30"]));
    assert_eq!(slow.exit.reason, ExitReason::TimedOut);
    assert_eq!(slow.exit.signal, Some(sandlot::Signal::KILL));
    assert!(slow.timed_out());
    assert!(slow.exit.duration < Duration::from_secs(30));
    // A shorter per-command timeout wins; a quick command is untouched.
    let shorter = sb
        .commands()
        .run(
            ["sleep", "30"],
            RunOptions::default().timeout(Duration::from_millis(100)),
        )
        .unwrap();
    assert_eq!(shorter.exit.reason, ExitReason::TimedOut);
    assert_eq!(sh(&sb, "echo quick"), "quick\n");
    assert!(sb.is_alive());
}

#[test]
fn the_third_concurrent_command_past_max_concurrent_2_is_refused() {
    let rt = runtime();
    let sb = with_exec(&rt, ExecLimits::default().max_concurrent(2));
    let first = sb
        .commands()
        .spawn(["sleep", "30"], RunOptions::default())
        .unwrap();
    let _second = sb
        .commands()
        .spawn(["sleep", "30"], RunOptions::default())
        .unwrap();
    match sb.commands().spawn(["sleep", "30"], RunOptions::default()) {
        Err(Error::QuotaExceeded { what, limit }) => {
            assert_eq!((what, limit), ("max_concurrent", 2));
        }
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
    assert!(matches!(
        sb.commands().run("true", RunOptions::default()),
        Err(Error::QuotaExceeded { .. })
    ));
    // Not a queue: a slot frees when a command ends.
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(sh(&sb, "echo again"), "again\n");
}

#[test]
fn open_files_and_max_file_size_bite() {
    let rt = runtime();
    let sb = limited(
        &rt,
        Limits {
            open_files: 16,
            max_file_size: Some(64 * 1024),
            ..Limits::default()
        },
    );
    // Open descriptors 3, 4, … until the shell cannot: 15 is the last.
    let fds = run(
        &sb,
        "i=3; while [ $i -lt 40 ]; do eval \"exec $i</dev/null\" || exit 9; echo $i; i=$((i+1)); done",
    );
    assert!(!fds.success(), "40 descriptors under open_files=16");
    assert_eq!(fds.stdout_str().lines().last(), Some("15"), "{fds:?}");

    let big = run(
        &sb,
        argv(&["dd", "if=/dev/zero", "of=/tmp/big", "bs=1K", "count=100"]),
    );
    assert_eq!(
        big.exit.signal,
        Some(sandlot::Signal::XFSZ),
        "{:?}",
        big.exit
    );
    assert_eq!(sh(&sb, "wc -c < /tmp/big").trim(), "65536");
}

#[test]
fn bad_limit_values_are_refused_at_create_naming_the_field() {
    let rt = runtime();
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let cases = [
        (
            Limits {
                memory: 0,
                ..Limits::default()
            },
            "memory",
        ),
        (
            Limits {
                cpus: -1.0,
                ..Limits::default()
            },
            "cpus",
        ),
        (
            Limits {
                pids: pid_max + 1,
                ..Limits::default()
            },
            "pids",
        ),
    ];
    for (limits, field) in cases {
        match rt.create(options().limits(limits)) {
            Err(Error::Limits(e)) => {
                assert_eq!(e.field(), field);
                assert!(
                    e.to_string().starts_with(&format!("limits.{field} is ")),
                    "{e}"
                );
            }
            other => panic!("{field}: expected a limits error, got {other:?}"),
        }
    }
    for (exec, field) in [
        (ExecLimits::default().max_time(Duration::ZERO), "max_time"),
        (ExecLimits::default().max_concurrent(0), "max_concurrent"),
    ] {
        match rt.create(options().exec_limits(exec)) {
            Err(Error::Limits(e)) => assert_eq!(e.field(), field),
            other => panic!("{field}: expected a limits error, got {other:?}"),
        }
    }
    assert!(rt.list(&sandlot::ListFilter::all()).is_empty());
}

fn mem_available() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = meminfo
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[test]
fn the_memory_quota_refuses_what_the_host_cannot_hold() {
    sandlot_tests::require_root();
    // Room for 450 MiB of limits (MemAvailable moves a little while other
    // tests run: the margins below are wider than that).
    let ratio = (450 * MIB) as f64 / mem_available() as f64;
    let rt = Runtime::builder()
        .data_dir(sandlot_tests::data_dir())
        .memory_overcommit(ratio)
        .build()
        .unwrap();
    let _ = runtime(); // the test template, if one is configured
    let limits = Limits {
        memory: 300 * MIB,
        ..Limits::default()
    };
    let first = rt.create(options().limits(limits.clone())).unwrap();
    match rt.create(options().limits(limits.clone())) {
        Err(Error::ResourceUnavailable(why)) => {
            assert!(why.starts_with("memory: "), "{why}");
            assert!(why.contains("300.0 MiB"), "{why}");
        }
        other => panic!("expected ResourceUnavailable, got {other:?}"),
    }
    // A smaller one still fits; freeing the first makes room again.
    let small = rt
        .create(options().limits(Limits {
            memory: 64 * MIB,
            ..Limits::default()
        }))
        .unwrap();
    first.kill().unwrap();
    rt.create(options().limits(limits)).unwrap();
    small.kill().unwrap();

    assert!(matches!(
        Runtime::builder().memory_overcommit(0.0).build(),
        Err(Error::InvalidOptions {
            option: "memory_overcommit",
            ..
        })
    ));
}

#[test]
fn limits_of_a_default_sandbox_are_the_documented_defaults() {
    let rt = runtime();
    let sb = rt
        .create(SandboxOptions::template(sandlot_tests::template()))
        .unwrap();
    let m = sb.metrics().unwrap();
    assert_eq!(m.memory_limit, 512 * MIB);
    assert_eq!(m.max_processes, 128);
    assert_eq!(m.cpu_count, 1.0);
    // tmpfs rounds to pages; the size is the disk limit.
    assert_eq!(m.disk_total, 1024 * MIB);
    assert_eq!(sh(&sb, "ulimit -n").trim(), "1024");
}
