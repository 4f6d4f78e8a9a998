//! The unmodified E2B SDKs against a real sandlot-server on loopback (root,
//! real kernel): the pytest suites in `sdk/python` with the pinned Python
//! SDKs, the node smoke test in `sdk/js` with the pinned npm SDK, and a
//! shutdown that leaves no sandbox behind.
//!
//! The SDKs are installed by `server/tests/sdk/install.sh` (CI runs it);
//! without them these tests fail saying so.
//!
//! Each server gets a state dir of its own (servers of one state dir
//! exclude each other), removed at the end with whatever sandboxes a
//! failed test left in it.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn sdk_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk")
}

fn require_root() {
    let euid = nix::unistd::geteuid().as_raw();
    assert_eq!(
        euid, 0,
        "the server's SDK tests create sandboxes (user namespaces, cgroups, mounts) and must \
         run as root (euid is {euid}): run `sudo -E cargo test -p sandlot-server --test sdk`"
    );
}

fn require_sdks() {
    let dir = sdk_dir();
    let missing: Vec<&str> = [".venv/bin/python", "node_modules/e2b/package.json"]
        .into_iter()
        .filter(|p| !dir.join(p).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "the pinned E2B SDKs are not installed ({} missing): run `{}`",
        missing.join(", "),
        dir.join("install.sh").display()
    );
}

/// A state dir for test servers; when dropped, every sandbox still in it
/// is killed (through the library, as a runtime that only attaches) and
/// the directory removed.
struct StateDir(PathBuf);

impl StateDir {
    fn new() -> StateDir {
        let dir = std::env::temp_dir().join(format!("sandlot-server-state-{:016x}", rand_u64()));
        StateDir(dir)
    }

    /// Sandboxes alive in it (a state dir that cannot be opened fails the
    /// test: it must not read as "none left").
    fn live(&self) -> Vec<String> {
        sandlot::Runtime::builder()
            .persistent(&self.0)
            .attach_only()
            .build()
            .unwrap_or_else(|e| panic!("attach to {}: {e}", self.0.display()))
            .list(&sandlot::ListFilter::all())
            .into_iter()
            .map(|i| i.id)
            .collect()
    }

    fn attach(&self) -> Option<sandlot::Runtime> {
        if !self.0.exists() {
            return None;
        }
        sandlot::Runtime::builder()
            .persistent(&self.0)
            .attach_only()
            .build()
            .ok()
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if let Some(runtime) = self.attach() {
            for info in runtime.list(&sandlot::ListFilter::all()) {
                if let Ok(sandbox) = runtime.connect(&info.id) {
                    let _ = sandbox.kill();
                }
            }
            runtime.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A sandlot-server child on 127.0.0.1 with a random API key; stopped
/// (SIGTERM, then SIGKILL after a grace) when dropped.
struct Server {
    child: Option<Child>,
    url: String,
    key: String,
    /// Its own state dir, unless it was given one (or --ephemeral).
    _state: Option<StateDir>,
}

impl Server {
    fn start() -> Server {
        Server::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Server {
        let state = StateDir::new();
        let mut server = Server::start_in(&state.0, &format!("test-{:016x}", rand_u64()), extra);
        server._state = Some(state);
        server
    }

    /// A server on `state_dir` (an earlier server's, to take its
    /// sandboxes over) with API key `key`.
    fn start_in(state_dir: &Path, key: &str, extra: &[&str]) -> Server {
        require_root();
        require_sdks();
        let key = key.to_string();
        let mut state_args: Vec<&std::ffi::OsStr> = Vec::new();
        if !extra.contains(&"--ephemeral") {
            state_args.push("--state-dir".as_ref());
            state_args.push(state_dir.as_os_str());
        }
        let data_dir =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/sandlot-server-test-data");
        let mut child = Command::new(env!("CARGO_BIN_EXE_sandlot-server"))
            .args(["--listen", "127.0.0.1:0", "--api-key", &key, "--data-dir"])
            .arg(&data_dir)
            .args(&state_args)
            .args(extra)
            .env("SANDLOT_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start sandlot-server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("sandlot-server did not say where it listens within 60 s");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from sandlot-server: {line:?}"))
            .to_string();
        Server {
            child: Some(child),
            url: format!("http://{addr}"),
            key,
            _state: None,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn sdk_command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(sdk_dir())
            .env("E2B_API_KEY", &self.key)
            .env("E2B_API_URL", &self.url)
            .env("E2B_SANDBOX_URL", &self.url)
            .env("SANDLOT_SERVER_PID", self.pid().to_string())
            .env_remove("E2B_DOMAIN")
            .env_remove("E2B_DEBUG")
            .stdin(Stdio::null());
        command
    }

    /// SIGKILL and wait: the server has no chance to do anything.
    fn kill_hard(&mut self) {
        let mut child = self.child.take().expect("already stopped");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM and wait: the exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("already stopped");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("sandlot-server did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}

fn rand_u64() -> u64 {
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    u64::from_le_bytes(bytes)
}

fn run(mut command: Command, what: &str) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("run {what}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Shown with --nocapture, and always when the assertion below fails.
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    output
}

/// Pids of the sandboxes' inits: the server's children named sandlot-init.
fn inits_of(server_pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        if field("Name:").as_deref() == Some("sandlot-init")
            && field("PPid:").as_deref() == Some(&server_pid.to_string())
        {
            out.push(pid);
        }
    }
    out
}

#[test]
fn python_sdk_suites() {
    // --domain: `get_host(port)` names PORT-ID.sandlot.test, which the
    // network tests send as the Host header.
    let server = Server::start_with(&["--domain", "sandlot.test"]);
    let mut pytest = server.sdk_command(&sdk_dir().join(".venv/bin/python"));
    pytest
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "python"])
        .env("SANDLOT_DOMAIN", "sandlot.test");
    run(pytest, "the Python SDK suites (pytest)");
}

#[test]
fn javascript_sdk_smoke() {
    let server = Server::start();
    let mut node = server.sdk_command(Path::new("node"));
    node.args(["--test", "js/"]);
    run(node, "the JavaScript SDK smoke test (node --test)");
}

/// An ephemeral server (`--ephemeral`) stopped with SIGTERM destroys the
/// sandboxes it still has and exits 0.
#[test]
fn an_ephemeral_server_destroys_every_sandbox_at_shutdown() {
    let mut server = Server::start_with(&["--ephemeral"]);
    let mut create = server.sdk_command(&sdk_dir().join(".venv/bin/python"));
    create.args([
        "-c",
        "from e2b import Sandbox\n\
         for _ in range(3):\n    s = Sandbox.create(timeout=600)\n    s.commands.run('sleep 600', background=True)\n    print(s.sandbox_id)",
    ]);
    let out = run(create, "creating sandboxes that outlive their creator");
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(ids.len(), 3);
    let inits = inits_of(server.pid());
    assert_eq!(
        inits.len(),
        3,
        "expected one init per sandbox, found {inits:?}"
    );
    let status = server.stop();
    assert!(status.success(), "sandlot-server exited with {status}");
    for pid in inits {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .is_ok_and(|s| s.contains("sandlot-init"));
        assert!(!alive, "sandbox init {pid} outlived the server");
    }
}

/// `--tls-cert/--tls-key` and `--domain`: TLS (HTTP/1.1 and h2 by ALPN)
/// and routing by Host, driven by `sdk/tls_domain.py`.
#[test]
fn tls_and_domain_routing() {
    require_root();
    let dir = std::env::temp_dir().join(format!("sandlot-server-tls-{:016x}", rand_u64()));
    std::fs::create_dir_all(&dir).unwrap();
    struct RemoveDir(PathBuf);
    impl Drop for RemoveDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = RemoveDir(dir.clone());
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let mut openssl = Command::new("openssl");
    openssl
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=sandlot.test"])
        .args([
            "-addext",
            "subjectAltName=DNS:*.sandlot.test,DNS:api.sandlot.test",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdin(Stdio::null());
    run(openssl, "openssl (a self-signed certificate for the test)");
    let server = Server::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--domain",
        "sandlot.test",
    ]);
    let port = server.url.rsplit(':').next().unwrap().to_string();
    let mut check = server.sdk_command(&sdk_dir().join(".venv/bin/python"));
    check
        .arg("tls_domain.py")
        .env("SANDLOT_TLS_PORT", port)
        .env("SANDLOT_TLS_CA", &cert)
        .env("SANDLOT_DOMAIN", "sandlot.test");
    run(check, "TLS and domain routing (tls_domain.py)");
}

/// Python run against `server`, its stdout.
fn python(server: &Server, code: &str, what: &str) -> String {
    let mut command = server.sdk_command(&sdk_dir().join(".venv/bin/python"));
    command.args(["-c", code]);
    String::from_utf8_lossy(&run(command, what).stdout).into_owned()
}

/// The server's state dir keeps its sandboxes across restarts: SIGTERM,
/// then SIGKILL, and each time a new server takes them over — the SDK's
/// `Sandbox.connect(id)` works, files and background processes are still
/// there, the end is unchanged; a killed sandbox is "not found".
#[test]
fn sandboxes_outlive_a_restart_by_sigterm_and_by_sigkill() {
    let state = StateDir::new();
    let key = format!("test-{:016x}", rand_u64());
    let mut first = Server::start_in(&state.0, &key, &[]);
    let out = python(
        &first,
        "from e2b import Sandbox\n\
         for n in range(2):\n\
         \x20   s = Sandbox.create(timeout=600, metadata={'n': str(n)}, allow_internet_access=n == 0)\n\
         \x20   s.files.write('/home/user/kept.txt', f'file {n}')\n\
         \x20   s.commands.run('while :; do echo tick; sleep 0.05; done', background=True)\n\
         \x20   print(s.sandbox_id, s.get_info().end_at.timestamp())\n\
         from e2b_code_interpreter import Sandbox as CodeSandbox\n\
         assert CodeSandbox.connect(s.sandbox_id).run_code('x = 1').error is None",
        "creating sandboxes",
    );
    let made: Vec<(String, String)> = out
        .lines()
        .map(|l| {
            let (id, end) = l.split_once(' ').unwrap();
            (id.to_string(), end.to_string())
        })
        .collect();
    assert_eq!(made.len(), 2);
    let status = first.stop();
    assert!(status.success(), "sandlot-server exited with {status}");
    let mut live = state.live();
    live.sort();
    let mut ids: Vec<String> = made.iter().map(|(id, _)| id.clone()).collect();
    ids.sort();
    assert_eq!(live, ids, "the sandboxes must outlive a SIGTERM");

    // Each new server takes them over; the check runs after SIGTERM and
    // again after SIGKILL. Code contexts are the server's: their
    // interpreters end with it (their pipes close; none is left in the
    // sandbox), and the next server starts afresh (the variable is gone).
    let check = |server: &Server| {
        let mut code = String::from(
            "from e2b import Sandbox\nfrom e2b_code_interpreter import Sandbox as CodeSandbox\n",
        );
        let last = &made[made.len() - 1].0;
        code += &format!(
            "ps = Sandbox.connect('{last}').commands.run('ps -eo args').stdout\n\
             assert 'python' not in ps, ps\n\
             c = CodeSandbox.connect('{last}')\n\
             assert c.run_code('x').error.name == 'NameError', 'fresh context'\n\
             assert c.run_code('x = 2\\nx * 21').text == '42', 'run_code'\n"
        );
        // Its network (no internet: an allow list naming nothing) is
        // served again: a name it may not reach is answered NXDOMAIN by
        // sandlot's resolver at once (never sent upstream); unserved, the
        // lookup would go unanswered (EAI_AGAIN).
        code += &format!(
            "import socket\n\
             s = Sandbox.connect('{last}')\n\
             s.files.write('/tmp/dns.py', 'import socket\\ntry:\\n    socket.getaddrinfo(\"example.com\", 80)\\n    print(\"resolved\")\\nexcept socket.gaierror as e:\\n    print(e.errno)\\n')\n\
             r = s.commands.run('python3 /tmp/dns.py', timeout=60).stdout.strip()\n\
             assert r == str(socket.EAI_NONAME), 'DNS after a take-over: ' + r\n"
        );
        for (id, end) in &made {
            code += &format!(
                "s = Sandbox.connect('{id}')\n\
                 assert s.files.read('/home/user/kept.txt').startswith('file '), 'file'\n\
                 assert 'echo tick' in s.commands.run('ps -eo args').stdout, 'a printing background command'\n\
                 assert s.commands.run('echo $((20+22))').stdout == '42\\n', 'command'\n\
                 assert abs(s.get_info().end_at.timestamp() - {end}) < 1, 'end_at'\n\
                 assert len(Sandbox.list(query=None).next_items()) == 2, 'list'\n"
            );
        }
        python(server, &code, "connecting after a restart");
    };
    let mut second = Server::start_in(&state.0, &key, &[]);
    check(&second);
    second.kill_hard();
    assert_eq!(
        state.live().len(),
        2,
        "the sandboxes must outlive a SIGKILL"
    );
    let third = Server::start_in(&state.0, &key, &[]);
    check(&third);

    let (gone, kept) = (&made[0].0, &made[1].0);
    python(
        &third,
        &format!(
            "from e2b import Sandbox\n\
             from e2b.exceptions import NotFoundException\n\
             s = Sandbox.connect('{gone}')\n\
             s.kill()\n\
             assert not s.is_running()\n\
             try:\n\
             \x20   Sandbox.connect('{gone}')\n\
             \x20   raise AssertionError('a killed sandbox must be not found')\n\
             except NotFoundException as e:\n\
             \x20   assert 'not found' in str(e), str(e)\n\
             Sandbox.connect('{kept}').kill()"
        ),
        "killing after a restart",
    );
    assert!(state.live().is_empty());
}
