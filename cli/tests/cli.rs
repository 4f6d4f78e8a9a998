//! The `sandlot` command as a user runs it (root, real kernel): exit codes,
//! stdin forwarding, streaming, timeouts, limits, --stats, copy-in/out, the
//! network flags (against the fake internet of `tests/common/fakenet.rs`).

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

/// A Python one-liner that GETs `url` and prints the body, or prints the
/// exception's class name and exits 1.
fn fetch(url: &str) -> String {
    format!(
        "import urllib.request,sys\ntry: print(urllib.request.urlopen('{url}', timeout=20).read().decode())\n\
         except Exception as e: print(type(e).__name__); sys.exit(1)"
    )
}

#[test]
fn network_flags_turn_the_network_on_with_rules() {
    let _world = sandlot_tests::fakenet::FakeNet::shared();
    let dns = "--upstream-dns=203.0.113.53";
    // Off by default (the upstream alone turns nothing on).
    let off = sandlot(
        &[
            "run",
            dns,
            "--",
            "python3",
            "-c",
            &fetch("http://203.0.113.80/"),
        ],
        b"",
    );
    assert_eq!(off.status.code(), Some(1), "{}", text(&off.stderr));
    assert_eq!(text(&off.stdout).trim(), "URLError");

    let on = sandlot(
        &[
            "run",
            "--internet",
            dns,
            "--",
            "python3",
            "-c",
            &fetch("http://web.test/"),
        ],
        b"",
    );
    assert_eq!(on.status.code(), Some(0), "{}", text(&on.stderr));
    assert!(text(&on.stdout).contains("hello from 203.0.113.80:80 host=web.test"));

    let rules = [
        "run",
        "--allow-out",
        "*.pkg.test",
        "--deny-out",
        "bad.pkg.test",
        dns,
        "--",
    ];
    let allowed_fetch = fetch("http://files.pkg.test/");
    let allowed = [&rules[..], &["python3", "-c", &allowed_fetch]].concat();
    let out = sandlot(&allowed, b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("host=files.pkg.test"));
    let denied_fetch = fetch("http://bad.pkg.test/");
    let denied = [&rules[..], &["python3", "-c", &denied_fetch]].concat();
    let out = sandlot(&denied, b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout).trim(), "URLError");

    // A rule that does not parse names itself; sandlot exits 2 (usage).
    let bad = sandlot(&["run", "--allow-out", "10.0.0.1/8", "--", "true"], b"");
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("\"10.0.0.1/8\": host bits are set; did you mean 10.0.0.0/8?"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn publish_forwards_a_host_port_to_a_server_inside() {
    use std::io::{BufRead, BufReader, Read};
    require_root();
    let server = "import socket\ns=socket.socket(); s.bind(('127.0.0.1', 8000)); s.listen(1)\n\
                  print('listening', flush=True)\nc,_=s.accept(); c.sendall(b'inside:'+c.recv(64)); c.close()";
    let mut child = Command::new(env!("CARGO_BIN_EXE_sandlot"))
        .arg("--data-dir")
        .arg(data_dir())
        .args([
            "run",
            "--publish",
            "127.0.0.1:0:8000",
            "--",
            "python3",
            "-c",
            server,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sandlot");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let at: std::net::SocketAddr = line
        .trim()
        .strip_prefix("sandlot: published ")
        .and_then(|rest| rest.strip_suffix(" -> 8000"))
        .unwrap_or_else(|| panic!("unexpected stderr: {line:?}"))
        .parse()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut ready = String::new();
    stdout.read_line(&mut ready).unwrap();
    assert_eq!(ready, "listening\n");
    let mut s = std::net::TcpStream::connect(at).unwrap();
    s.write_all(b"hi").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "inside:hi");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    // The listener closed with the sandbox.
    assert!(std::net::TcpStream::connect(at).is_err());
}
