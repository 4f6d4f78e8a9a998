//! The long-lived sandbox commands as a user runs them, each invocation a
//! new process working on one state dir: create, exec, ls, inspect, stop,
//! kill, pause, resume, set-timeout, cp, stats.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

fn require_root() {
    let euid = nix::unistd::geteuid().as_raw();
    assert_eq!(
        euid, 0,
        "the CLI tests create sandboxes and must run as root (euid is {euid}): run `sudo -E cargo test --workspace`"
    );
}

/// A state dir of the test's own; what is left in it is killed on drop.
struct State(PathBuf);

impl State {
    fn new(tag: &str) -> State {
        require_root();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../target/cli-state-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        State(dir)
    }

    fn sandlot(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sandlot"))
            .arg("--data-dir")
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/sandlot-test-data"))
            .env("SANDLOT_STATE_DIR", &self.0)
            .args(args)
            .output()
            .expect("run sandlot")
    }

    /// Runs it and expects success; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.sandlot(args);
        assert!(
            out.status.success(),
            "sandlot {args:?}: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for State {
    fn drop(&mut self) {
        let listed = self.sandlot(&["ls", "--json"]);
        if let Ok(all) = serde_json::from_slice::<serde_json::Value>(&listed.stdout) {
            for info in all.as_array().into_iter().flatten() {
                if let Some(id) = info["id"].as_str() {
                    let _ = self.sandlot(&["kill", id]);
                }
            }
        }
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn a_sandbox_lives_across_invocations_and_every_command_works_on_it() {
    let state = State::new("life");
    let id = state
        .ok(&[
            "create",
            "--metadata",
            "user=u1",
            "--idle-timeout",
            "10m",
            "--timeout",
            "5m",
        ])
        .trim()
        .to_string();
    assert_eq!(id.len(), 16, "create prints the id: {id:?}");

    // exec: output and exit codes as `run`.
    let out = state.sandlot(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let killed = state.sandlot(&["exec", &id, "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(killed.status.code(), Some(128 + libc::SIGTERM));
    assert_eq!(
        state
            .sandlot(&["exec", &id, "--", "no-such-program"])
            .status
            .code(),
        Some(127)
    );
    let env = state.ok(&[
        "exec",
        &id,
        "-e",
        "WHO=cli",
        "-w",
        "/tmp",
        "-u",
        "user",
        "--",
        "sh",
        "-c",
        "echo $WHO $(pwd) $(id -u)",
    ]);
    assert_eq!(env, "cli /tmp 1000\n");
    // Files written by one invocation are there for the next.
    state.ok(&["exec", &id, "--", "sh", "-c", "echo kept > /tmp/kept"]);
    assert_eq!(state.ok(&["exec", &id, "--", "cat", "/tmp/kept"]), "kept\n");
    // --tty: the command's stdio is a terminal of the sandbox's own devpts
    // (even when this side has none); its exit code comes back.
    let tty = state.sandlot(&[
        "exec",
        &id,
        "--tty",
        "--",
        "sh",
        "-c",
        "test -t 0 && test -t 1 && tty; exit 4",
    ]);
    assert_eq!(tty.status.code(), Some(4), "{tty:?}");
    assert!(
        String::from_utf8_lossy(&tty.stdout).starts_with("/dev/pts/"),
        "{tty:?}"
    );

    // ls and inspect.
    let table = state.ok(&["ls"]);
    assert!(table.contains(&id) && table.contains("user=u1"), "{table}");
    assert!(
        state.ok(&["ls", "--metadata", "user=u2"]).lines().count() == 1,
        "only the header"
    );
    let listed = json(&state.ok(&["ls", "--json", "--state", "running"]));
    assert_eq!(listed[0]["id"], id.as_str());
    let info = json(&state.ok(&["inspect", &id]));
    for field in [
        "id",
        "state",
        "template",
        "metadata",
        "limits",
        "created_at",
        "end_at",
        "idle_timeout",
        "end_reason",
    ] {
        assert!(info.get(field).is_some(), "inspect has no {field}: {info}");
    }
    assert_eq!(info["state"], "running");
    assert_eq!(info["metadata"]["user"], "u1");
    assert_eq!(info["idle_timeout"], 600.0);
    assert!(info["end_reason"].is_null());

    // set-timeout moves the end; nothing else does.
    let end = info["end_at"].clone();
    assert_eq!(json(&state.ok(&["inspect", &id]))["end_at"], end);
    state.ok(&["set-timeout", &id, "1h"]);
    assert_ne!(json(&state.ok(&["inspect", &id]))["end_at"], end);

    // cp both ways.
    let host = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../target/cli-cp-{}", std::process::id()));
    fs::create_dir_all(&host).unwrap();
    fs::write(host.join("in.txt"), "to the sandbox\n").unwrap();
    state.ok(&[
        "cp",
        host.join("in.txt").to_str().unwrap(),
        &format!("{id}:/tmp/"),
    ]);
    assert_eq!(
        state.ok(&["exec", &id, "--", "cat", "/tmp/in.txt"]),
        "to the sandbox\n"
    );
    state.ok(&[
        "cp",
        &format!("{id}:/tmp/kept"),
        host.join("out.txt").to_str().unwrap(),
    ]);
    assert_eq!(fs::read_to_string(host.join("out.txt")).unwrap(), "kept\n");
    let _ = fs::remove_dir_all(&host);

    // stats.
    let stats = json(&state.ok(&["stats", &id, "--json"]));
    assert!(stats["memory_bytes"].as_u64().unwrap() > 0);
    assert!(stats["processes"].as_u64().unwrap() >= 1);

    // pause: exec is refused at once, naming the state; resume.
    state.ok(&["pause", &id]);
    assert_eq!(json(&state.ok(&["inspect", &id]))["state"], "paused");
    let started = std::time::Instant::now();
    let refused = state.sandlot(&["exec", &id, "--", "true"]);
    assert_eq!(refused.status.code(), Some(125));
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("paused") && why.contains("resume"), "{why}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "exec on a paused sandbox waited"
    );
    state.ok(&["resume", &id]);
    assert_eq!(state.ok(&["exec", &id, "--", "echo", "back"]), "back\n");

    // stop: gone, with its reason in `ls --all` and `inspect`.
    state.ok(&["stop", &id, "--grace", "1s"]);
    assert!(!state.ok(&["ls"]).contains(&id));
    assert!(state.ok(&["ls", "--all"]).contains("stopped"));
    let ended = json(&state.ok(&["inspect", &id]));
    assert_eq!(ended["state"], "destroyed");
    assert_eq!(ended["end_reason"], "stopped");
}

#[test]
fn an_unknown_id_is_an_error_naming_it_with_status_125() {
    let state = State::new("unknown");
    for args in [
        vec!["exec", "0123456789abcdef", "--", "true"],
        vec!["inspect", "0123456789abcdef"],
        vec!["stop", "0123456789abcdef"],
        vec!["kill", "0123456789abcdef"],
        vec!["pause", "0123456789abcdef"],
        vec!["resume", "0123456789abcdef"],
        vec!["set-timeout", "0123456789abcdef", "1m"],
        vec!["stats", "0123456789abcdef"],
        vec!["cp", "0123456789abcdef:/etc/passwd", "/tmp/x"],
        vec!["inspect", "../../etc"],
    ] {
        let out = state.sandlot(&args);
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        let why = String::from_utf8_lossy(&out.stderr);
        let id = args
            .iter()
            .find(|a| a.contains("0123") || a.contains(".."))
            .unwrap();
        let id = id.split(':').next().unwrap();
        assert!(
            why.contains(id) && why.contains("not found"),
            "{args:?}: {why}"
        );
    }
}

#[test]
fn kill_ends_a_sandbox_at_once() {
    let state = State::new("kill");
    let id = state.ok(&["create"]).trim().to_string();
    let pid = json(&state.ok(&["inspect", &id]))["init_pid"]
        .as_i64()
        .unwrap();
    state.ok(&["kill", &id]);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists() || {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.contains(") Z ")
        }
    );
    assert_eq!(json(&state.ok(&["inspect", &id]))["end_reason"], "killed");
}
