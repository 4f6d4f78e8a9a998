//! Templates from OCI images built here with the tar crate: the tree a
//! sandbox sees, the image's config, sandlot's settings (default timeout
//! and limits, a start command and its readiness check, interpreters).

use std::fs;
use std::time::{Duration, Instant};

use serde_json::json;

use sandlot::{
    Error, Interpreter, LifecycleEvent, ListFilter, Readiness, Reason, RunOptions, Sandbox,
    SandboxOptions, Settings, StartCommand, State,
};
use sandlot_tests::oci::{layout, Layer, TempDir, TemplateGuard};
use sandlot_tests::{eventually, runtime, sh};

/// Layer 1: busybox, users, and one of each kind of entry; layer 2 deletes
/// a file, makes a directory opaque and changes a file.
fn image(dir: &std::path::Path) -> std::path::PathBuf {
    let one = Layer::default()
        .busybox()
        .dir("etc")
        .file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
        )
        .file("etc/group", "root:x:0:\napp:x:1000:\n")
        .file("etc/version", "one")
        .file("etc/motd", "to be deleted")
        .dir("opt")
        .dir("opt/app")
        .file("opt/app/old.txt", "old")
        .symlink("opt/current", "app")
        .entry(
            tar::EntryType::Regular,
            "opt/tool",
            "",
            b"#!/bin/sh\necho tool\n",
            0o755,
            0,
        )
        .hardlink("opt/tool2", "opt/tool")
        .dir("home")
        .entry(tar::EntryType::Directory, "home/app", "", b"", 0o750, 1000)
        .entry(
            tar::EntryType::Regular,
            "home/app/notes",
            "",
            b"mine",
            0o640,
            1000,
        )
        .dir("srv")
        .dir("srv/www")
        .file("srv/www/index.html", "served")
        .dir("root")
        .entry(tar::EntryType::Directory, "tmp", "", b"", 0o1777, 0);
    let two = Layer::default()
        .dir("etc")
        .file("etc/.wh.motd", "")
        .file("etc/version", "two")
        .dir("opt/app")
        .file("opt/app/.wh..wh..opq", "")
        .file("opt/app/new.txt", "new");
    layout(
        dir,
        &[one, two],
        json!({
            "Env": ["PATH=/bin", "GREETING=hello"],
            "Cmd": ["-c", "echo default $GREETING from $(pwd) as $(id -u)"],
            "Entrypoint": ["/bin/sh"],
            "WorkingDir": "/home/app",
            "User": "app",
        }),
    )
}

/// A runtime and template `name` (imported with `settings`), both gone
/// when the guard drops.
fn template(tag: &str, settings: Settings) -> TemplateGuard {
    let rt = runtime();
    let dir = TempDir::new(&format!("oci-{tag}"));
    let name = format!("test-{tag}-{}", std::process::id());
    rt.templates()
        .import_oci_with(&name, image(&dir.0), settings)
        .expect("import the test image");
    TemplateGuard { runtime: rt, name }
}

#[test]
fn an_oci_image_gives_its_tree_and_config() {
    let guard = template(
        "tree",
        Settings {
            interpreters: vec![Interpreter {
                language: "shell".into(),
                command: vec!["/bin/sh".into(), "-i".into()],
            }],
            ..Settings::default()
        },
    );
    let sb = guard
        .runtime
        .create(SandboxOptions::template(&guard.name))
        .unwrap();
    let root = RunOptions::default().user("root");
    let run = |line: &str, options: RunOptions| {
        let out = sb.commands().run(line, options).unwrap();
        assert!(out.success(), "{line}: {}", out.stderr_str());
        out.stdout_str()
    };
    // Layers stacked: upper wins, whiteout and opaque dir applied.
    assert_eq!(run("cat /etc/version", root.clone()), "two");
    assert_eq!(
        run("test -e /etc/motd || echo deleted", root.clone()),
        "deleted\n"
    );
    assert_eq!(run("ls /opt/app", root.clone()), "new.txt\n");
    assert_eq!(
        run(
            "readlink /opt/current; cat /opt/current/new.txt",
            root.clone()
        ),
        "app\nnew"
    );
    assert_eq!(
        run(
            "stat -c '%h %a' /opt/tool /opt/tool2; /opt/tool2",
            root.clone()
        ),
        "2 755\n2 755\ntool\n"
    );
    assert_eq!(
        run("stat -c '%u:%g %a' /home/app /home/app/notes", root.clone()),
        "1000:1000 750\n1000:1000 640\n"
    );

    // The image's config: Env, WorkingDir, User.
    assert_eq!(
        run(
            "echo $GREETING $PATH; pwd; id -u; id -g",
            RunOptions::default()
        ),
        "hello /bin\n/home/app\n1000\n1000\n"
    );
    // Entrypoint + Cmd is the default command.
    assert_eq!(
        sb.default_command().unwrap(),
        [
            "/bin/sh",
            "-c",
            "echo default $GREETING from $(pwd) as $(id -u)"
        ]
    );
    let out = sb.commands().run_default(RunOptions::default()).unwrap();
    assert_eq!(out.stdout_str(), "default hello from /home/app as 1000\n");

    // The files API writes as the template's user and starts relative
    // paths at its home.
    let info = sb.files().write("made-by-api", "x").unwrap();
    assert_eq!(
        (info.path.as_str(), info.uid, info.gid),
        ("/home/app/made-by-api", 1000, 1000)
    );
    assert_eq!(sb.files().read_to_string("/etc/version").unwrap(), "two");

    assert_eq!(sb.interpreters()[0].language, "shell");
    assert_eq!(sb.interpreters()[0].command, ["/bin/sh", "-i"]);
}

/// The cgroup file `name` of the sandbox whose init is `pid`, read on the
/// host: v1 (`N:controller:/path`) or the unified hierarchy (`0::/path`).
fn cgroup_value(pid: i32, controller: &str, v1: &str, v2: &str) -> String {
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        if controllers.split(',').any(|c| c == controller) {
            return fs::read_to_string(format!("/sys/fs/cgroup/{controller}{path}/{v1}"))
                .unwrap()
                .trim()
                .to_string();
        }
    }
    for root in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        let path = cgroups.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        if let Ok(value) = fs::read_to_string(format!("{root}{path}/{v2}")) {
            return value.trim().to_string();
        }
    }
    panic!("no {controller} cgroup for {pid}");
}

fn lifetime(sb: &Sandbox) -> Duration {
    let info = sb.info();
    info.end_at.duration_since(info.created_at).unwrap()
}

#[test]
fn settings_give_default_timeout_and_limits() {
    let guard = template(
        "defaults",
        Settings {
            timeout_secs: Some(2),
            limits: sandlot::DefaultLimits {
                cpus: None,
                memory: Some(96 << 20),
                pids: Some(48),
                disk: Some(8 << 20),
            },
            ..Settings::default()
        },
    );
    let rt = &guard.runtime;
    let sb = rt.create(SandboxOptions::template(&guard.name)).unwrap();
    assert_eq!(lifetime(&sb), Duration::from_secs(2));
    let pid = sb.info().init_pid.unwrap();
    assert_eq!(
        cgroup_value(pid, "memory", "memory.limit_in_bytes", "memory.max"),
        (96u64 << 20).to_string()
    );
    assert_eq!(cgroup_value(pid, "pids", "pids.max", "pids.max"), "48");
    // The writable layer is the template's size.
    let df = sh(&sb, "df -k / | tail -1");
    assert_eq!(df.split_whitespace().nth(1), Some("8192"), "{df}");
    // The template's timeout ends it.
    assert!(eventually(Duration::from_secs(10), || sb.state() == State::Destroyed));
    assert_eq!(sb.end_reason(), Some(Reason::Timeout));

    // What the caller chooses wins; the rest is still the template's.
    let sb = rt
        .create(
            SandboxOptions::template(&guard.name)
                .timeout(Duration::from_secs(60))
                .disk(16 << 20),
        )
        .unwrap();
    assert_eq!(lifetime(&sb), Duration::from_secs(60));
    let pid = sb.info().init_pid.unwrap();
    assert_eq!(
        cgroup_value(pid, "memory", "memory.limit_in_bytes", "memory.max"),
        (96u64 << 20).to_string()
    );
    assert_eq!(
        sh(&sb, "df -k / | tail -1").split_whitespace().nth(1),
        Some("16384")
    );
    let sb = rt
        .create(SandboxOptions::template(&guard.name).without_template_defaults())
        .unwrap();
    assert_eq!(lifetime(&sb), sandlot::DEFAULT_TIMEOUT);
    assert_eq!(
        cgroup_value(sb.info().init_pid.unwrap(), "pids", "pids.max", "pids.max"),
        "128"
    );
}

fn with_start(command: &str, ready: Option<Readiness>, timeout: u64) -> Settings {
    Settings {
        start: Some(StartCommand {
            command: command.into(),
            ready,
            ready_timeout_secs: timeout,
        }),
        ..Settings::default()
    }
}

#[test]
fn a_start_command_makes_create_wait_until_ready() {
    let cases = [
        (
            "file",
            with_start(
                "sleep 0.3; touch /tmp/ready; exec sleep 1000",
                Some(Readiness::File("/tmp/ready".into())),
                10,
            ),
            "test -e /tmp/ready && echo ok",
        ),
        (
            "port",
            with_start(
                "sleep 0.3; exec httpd -f -p 127.0.0.1:8000 -h /srv/www",
                Some(Readiness::Port(8000)),
                10,
            ),
            "wget -q -O - http://127.0.0.1:8000/ && echo && echo ok",
        ),
        (
            "command",
            with_start(
                "sleep 0.3; touch /tmp/flag; exec sleep 1000",
                Some(Readiness::Command("test -e /tmp/flag".into())),
                10,
            ),
            "test -e /tmp/flag && echo ok",
        ),
    ];
    for (tag, settings, check) in cases {
        let guard = template(&format!("start-{tag}"), settings);
        let started = Instant::now();
        let sb = guard
            .runtime
            .create(SandboxOptions::template(&guard.name))
            .unwrap_or_else(|e| panic!("{tag}: {e}"));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300),
            "{tag}: create returned after {took:?}"
        );
        assert!(sh(&sb, check).ends_with("ok\n"), "{tag}");
        // The start command runs on, in the background: a server that
        // runs for the sandbox's life is not activity (the sandbox is
        // Running, its idle timeout runs).
        assert_eq!(sb.state(), State::Running, "{tag}");
        assert_eq!(sb.commands().list().len(), 1, "{tag}");
    }
    // No check: ready once started.
    let guard = template("start-none", with_start("exec sleep 1000", None, 10));
    let sb = guard
        .runtime
        .create(SandboxOptions::template(&guard.name))
        .unwrap();
    assert_eq!(sb.commands().list()[0].argv[2], "exec sleep 1000");
}

fn assert_failed_cleanly(guard: &TemplateGuard, want: &[&str]) -> Duration {
    let rt = &guard.runtime;
    let events = rt.events();
    let started = Instant::now();
    let e = rt
        .create(SandboxOptions::template(&guard.name))
        .expect_err("the start command must fail the create");
    let took = started.elapsed();
    match &e {
        Error::StartFailed { template, reason } => {
            assert_eq!(template, &guard.name);
            for part in want {
                assert!(reason.contains(part), "{reason:?} lacks {part:?}");
            }
        }
        other => panic!("expected StartFailed, got {other:?}"),
    }
    // Nothing left: no sandbox in the table, and it went to Destroyed.
    assert!(rt.list(&ListFilter::all()).is_empty());
    let events: Vec<LifecycleEvent> = events.try_iter().collect();
    let last = events.last().expect("lifecycle events");
    assert_eq!(last.to, State::Destroyed);
    assert!(matches!(&last.reason, Reason::SetupFailed(m) if m.contains("start command")));
    took
}

#[test]
fn a_failing_start_command_fails_create_and_leaves_nothing() {
    let guard = template(
        "start-exits",
        with_start(
            "echo broken config >&2; exit 3",
            Some(Readiness::File("/never".into())),
            10,
        ),
    );
    assert_failed_cleanly(&guard, &["exited with status 3", "broken config"]);

    let guard = template(
        "start-slow",
        with_start("exec sleep 1000", Some(Readiness::Port(9)), 1),
    );
    let took = assert_failed_cleanly(&guard, &["not ready after 1s", "port 9"]);
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn template_settings_bounds_are_the_runtimes() {
    // The template store checks settings without depending on the runtime;
    // its bounds must be the ones `create` would apply.
    assert_eq!(
        Duration::from_secs(sandlot_rootfs::MAX_TIMEOUT_SECS),
        sandlot::MAX_TIMEOUT
    );
    assert_eq!(sandlot_rootfs::MIN_MEMORY, sandlot::MIN_MEMORY);
    assert_eq!(sandlot_rootfs::MIN_DISK, sandlot::MIN_DISK);
    assert_eq!(sandlot_rootfs::MIN_CPUS, sandlot::MIN_CPUS);
}

#[test]
fn settings_out_of_bounds_fail_create_with_a_typed_error() {
    // A sandlot.json edited by hand: create refuses the template, naming
    // the field, instead of overflowing a deadline or writing the value
    // into a cgroup.
    let guard = template("bounds", Settings::default());
    let rt = &guard.runtime;
    let file = rt
        .templates()
        .data_dir()
        .join("templates")
        .join(&guard.name)
        .join("sandlot.json");
    for (json, field) in [
        (r#"{"timeout_secs":18446744073709551615}"#, "timeout_secs"),
        (
            r#"{"start":{"command":"true","ready":{"file":"/x"},"ready_timeout_secs":18446744073709551615}}"#,
            "start.ready_timeout_secs",
        ),
        (
            r#"{"limits":{"memory":18446744073709551615}}"#,
            "limits.memory",
        ),
        (r#"{"limits":{"pids":18446744073709551615}}"#, "limits.pids"),
    ] {
        fs::write(&file, json).unwrap();
        let err = rt
            .create(SandboxOptions::template(&guard.name))
            .unwrap_err();
        match &err {
            Error::Template {
                source: sandlot_rootfs::Error::InvalidSettings { error, .. },
                ..
            } => assert_eq!(error.field, field, "{err}"),
            other => panic!("{json}: expected invalid settings, got {other}"),
        }
        assert!(err.to_string().contains(field), "{err}");
        assert!(rt.list(&ListFilter::all()).is_empty());
    }
}
