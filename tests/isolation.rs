//! Isolation a user of a sandbox checks first: who am I, where am I, what
//! can I see, where do my writes go.

use std::fs;
use std::os::unix::fs::MetadataExt;

use sandlot::{RunOptions, SandboxOptions};
use sandlot_tests::{runtime, sandbox, sh};

#[test]
fn root_inside_is_an_unprivileged_id_range_on_the_host() {
    let rt = runtime();
    let sb = sandbox(&rt);
    assert_eq!(sh(&sb, "id -u; id -g").trim(), "0\n0");
    // The template's files look root-owned inside…
    assert_eq!(
        sh(&sb, "stat -c %u:%g /etc/passwd /usr/bin/env").trim(),
        "0:0\n0:0"
    );
    // …and root inside may change them (the change goes to the overlay).
    sh(
        &sb,
        "echo extra:x:2000:2000::/:/bin/sh >> /etc/passwd && mkdir /made-by-root && touch /tmp/f",
    );
    // On the host, what root inside created is owned by the mapped range.
    let pid = sb.info().init_pid.expect("init runs");
    for path in ["tmp/f", "made-by-root", "etc/passwd"] {
        let meta = fs::metadata(format!("/proc/{pid}/root/{path}")).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (100_000, 100_000),
            "{path} on the host"
        );
    }
    // A file owned by uid 1000 inside is 101000 on the host.
    sh(&sb, "touch /tmp/u && chown 1000:1000 /tmp/u");
    let meta = fs::metadata(format!("/proc/{pid}/root/tmp/u")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (101_000, 101_000));
}

#[test]
fn the_template_and_the_host_never_change() {
    let rt = runtime();
    let sb = sandbox(&rt);
    sh(
        &sb,
        "echo changed > /etc/hostname-probe && rm /etc/passwd && echo gone",
    );
    let other = sandbox(&rt);
    assert!(sh(&other, "cat /etc/passwd").starts_with("root:x:0:0"));
    assert_eq!(
        sh(&other, "test -e /etc/hostname-probe && echo yes || echo no").trim(),
        "no"
    );
    // The host's /usr is read-only inside.
    let result = sb
        .commands()
        .run("touch /usr/bin/sandlot-probe", RunOptions::default())
        .unwrap();
    assert!(!result.success());
    assert!(
        result.stderr_str().contains("Read-only file system"),
        "{}",
        result.stderr_str()
    );
    assert!(!std::path::Path::new("/usr/bin/sandlot-probe").exists());
}

#[test]
fn hostname_is_the_sandboxs_own() {
    let rt = runtime();
    let sb = sandbox(&rt);
    assert_eq!(sh(&sb, "hostname").trim(), sb.id());
    let named = rt
        .create(SandboxOptions::default().hostname("worker-7"))
        .unwrap();
    assert_eq!(
        sh(&named, "cat /proc/sys/kernel/hostname").trim(),
        "worker-7"
    );
    // Changing it inside is refused and the host's never changes.
    let host = nix::unistd::gethostname().unwrap();
    let result = named
        .commands()
        .run("hostname evil", RunOptions::default())
        .unwrap();
    assert!(!result.success());
    assert_eq!(nix::unistd::gethostname().unwrap(), host);
    assert_eq!(sh(&named, "hostname").trim(), "worker-7");
}

#[test]
fn pid_1_is_init_and_host_processes_are_invisible() {
    let rt = runtime();
    let sb = sandbox(&rt);
    assert_eq!(sh(&sb, "cat /proc/1/comm").trim(), "sandlot-init");
    // Only init, the shell and ls: nothing of the host.
    let pids: Vec<i32> = sh(&sb, "ls /proc")
        .split_whitespace()
        .filter_map(|name| name.parse().ok())
        .collect();
    assert!(pids.contains(&1));
    assert!(pids.len() <= 3, "processes visible inside: {pids:?}");
    assert!(sh(&sb, "echo $$").trim().parse::<i32>().unwrap() < 10);
    // The cgroup namespace shows the sandbox's own cgroup as the root.
    for line in sh(&sb, "cat /proc/self/cgroup").lines() {
        assert!(line.ends_with(":/"), "cgroup path leaks the host's: {line}");
    }
}

#[test]
fn only_loopback_is_reachable() {
    let rt = runtime();
    let sb = sandbox(&rt);
    let interfaces: Vec<String> = sh(&sb, "tail -n +3 /proc/net/dev | cut -d: -f1")
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(interfaces, vec!["lo"]);
    // Loopback is up: a server and a client inside can talk.
    let script = r#"
import socket
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
cli = socket.create_connection(srv.getsockname()); conn, _ = srv.accept()
cli.sendall(b"ping"); print(conn.recv(4).decode())
try:
    socket.create_connection(("10.1.2.3", 80), timeout=2)
    print("egress")
except OSError as e:
    print("no egress:", e.errno)
"#;
    let out = sb
        .commands()
        .run(["python3", "-c", script], RunOptions::default())
        .unwrap();
    sandlot_tests::assert_ok("python socket probe", &out);
    let text = out.stdout_str();
    assert!(text.starts_with("ping\n"), "{text}");
    assert!(
        text.contains("no egress: 101"),
        "expected ENETUNREACH: {text}"
    );
}

#[test]
fn one_sandboxs_files_are_invisible_to_another_and_to_the_host() {
    let rt = runtime();
    let a = sandbox(&rt);
    let b = sandbox(&rt);
    sh(
        &a,
        "echo secret > /tmp/secret && echo secret > /root/secret && echo x > /dev/shm/secret",
    );
    assert_eq!(
        sh(
            &b,
            "ls /tmp/secret /root/secret /dev/shm/secret 2>/dev/null | wc -l"
        )
        .trim(),
        "0"
    );
    for host_path in ["/tmp/secret", "/root/secret", "/dev/shm/secret"] {
        assert!(
            !std::path::Path::new(host_path).exists(),
            "{host_path} reached the host"
        );
    }
    // Nothing was written into the template either.
    let templates = sandlot_tests::data_dir().join("templates");
    let found = std::process::Command::new("find")
        .arg(&templates)
        .args(["-name", "secret"])
        .output()
        .unwrap();
    assert!(found.stdout.is_empty(), "a write reached the template");
}

#[test]
fn dev_holds_only_the_allowed_nodes() {
    let rt = runtime();
    let sb = sandbox(&rt);
    let mut names: Vec<String> = sh(&sb, "ls -A /dev")
        .split_whitespace()
        .map(String::from)
        .collect();
    names.sort();
    let mut expected = vec![
        "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty",
        "urandom", "zero",
    ];
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(sh(&sb, "head -c 4 /dev/zero | wc -c").trim(), "4");
    sh(&sb, "echo ok > /dev/null");
}
