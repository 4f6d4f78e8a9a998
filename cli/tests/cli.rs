//! The `sandlot` command as a user runs it (root, real kernel): exit codes,
//! stdin forwarding, streaming, timeouts, limits, --stats, copy-in/out.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn require_root() {
    let euid = nix::unistd::geteuid().as_raw();
    assert_eq!(
        euid, 0,
        "the CLI tests create sandboxes and must run as root (euid is {euid}): run `sudo -E cargo test --workspace`"
    );
}

/// The tests' data dir: on the repository's own (idmap-capable) filesystem.
fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/sandlot-test-data")
}

fn sandlot(args: &[&str], stdin: &[u8]) -> Output {
    require_root();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sandlot"))
        .arg("--data-dir")
        .arg(data_dir())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sandlot");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A scratch directory removed even when the test fails.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = data_dir().join(format!("../cli-test-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn exit_codes_follow_the_command() {
    let ok = sandlot(
        &["run", "--", "sh", "-c", "echo out; echo err >&2; exit 3"],
        b"",
    );
    assert_eq!(ok.status.code(), Some(3));
    assert_eq!(text(&ok.stdout), "out\n");
    assert_eq!(text(&ok.stderr), "err\n");

    let signaled = sandlot(&["run", "--", "sh", "-c", "kill -TERM $$"], b"");
    assert_eq!(signaled.status.code(), Some(128 + libc::SIGTERM));

    let missing = sandlot(&["run", "--", "no-such-program"], b"");
    assert_eq!(missing.status.code(), Some(127));
    assert!(
        text(&missing.stderr).contains("no-such-program"),
        "{}",
        text(&missing.stderr)
    );

    let bad = sandlot(
        &["run", "--template", "no-such-template", "--", "true"],
        b"",
    );
    assert_eq!(bad.status.code(), Some(125));
    assert!(text(&bad.stderr).contains("no-such-template"));
}

#[test]
fn stdin_is_forwarded_and_the_shell_flag_joins_the_command() {
    let out = sandlot(&["run", "--", "sha256sum"], b"hello\n");
    assert!(out.status.success());
    assert!(text(&out.stdout)
        .starts_with("5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"));

    let out = sandlot(
        &[
            "run",
            "--shell",
            "--env",
            "WHO=cli",
            "--workdir",
            "/tmp",
            "--user",
            "user",
            "--",
            "echo",
            "$WHO",
            "$(pwd)",
            "$(id -u)",
        ],
        b"",
    );
    assert_eq!(text(&out.stdout), "cli /tmp 1000\n");
}

#[test]
fn timeouts_end_with_124() {
    let sandbox = sandlot(&["run", "--timeout", "500ms", "--", "sleep", "30"], b"");
    assert_eq!(sandbox.status.code(), Some(124));
    assert!(
        text(&sandbox.stderr).contains("timed out"),
        "{}",
        text(&sandbox.stderr)
    );

    let command = sandlot(
        &["run", "--exec-timeout", "300ms", "--", "sleep", "30"],
        b"",
    );
    assert_eq!(command.status.code(), Some(124));
}

#[test]
fn limits_bite_and_stats_report_them() {
    let out = sandlot(
        &[
            "run",
            "--memory",
            "64M",
            "--stats",
            "--",
            "python3",
            "-c",
            "b = bytearray(256 << 20)",
        ],
        b"",
    );
    assert_eq!(
        out.status.code(),
        Some(128 + libc::SIGKILL),
        "{}",
        text(&out.stderr)
    );
    let stderr = text(&out.stderr);
    let json = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line on stderr");
    let stats: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(stats["reason"], "oom_killed", "{json}");

    let out = sandlot(
        &[
            "run",
            "--max-output",
            "1K",
            "--",
            "head",
            "-c",
            "100000",
            "/dev/zero",
        ],
        b"",
    );
    assert_eq!(out.stdout.len(), 1024);
    assert!(out.status.success());

    let out = sandlot(
        &[
            "run",
            "--disk",
            "8M",
            "--",
            "sh",
            "-c",
            "head -c 16M /dev/zero > /tmp/fill",
        ],
        b"",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("No space left"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn files_go_in_and_come_out() {
    let dir = TempDir::new("copy");
    let input = dir.path().join("in");
    fs::create_dir_all(input.join("empty")).unwrap();
    fs::write(input.join("data.txt"), "from the host\n").unwrap();
    std::os::unix::fs::symlink("data.txt", input.join("link")).unwrap();
    let output = dir.path().join("out");

    let copy_in = format!("{}:/work", input.display());
    let copy_out = format!("/work:{}", output.display());
    let out = sandlot(
        &[
            "run",
            "--copy-in",
            &copy_in,
            "--copy-out",
            &copy_out,
            "--",
            "sh",
            "-c",
            "cat /work/data.txt && echo made inside > /work/result && chmod 750 /work/result",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "from the host\n");
    assert_eq!(
        fs::read_to_string(output.join("result")).unwrap(),
        "made inside\n"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(output.join("result"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o750
    );
    assert_eq!(
        fs::read_link(output.join("link")).unwrap(),
        Path::new("data.txt")
    );
    assert!(output.join("empty").is_dir());
}
