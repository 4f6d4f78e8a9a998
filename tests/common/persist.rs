//! Helpers for the persistence tests: a state dir of their own (ended and
//! removed with its guard, failed test or not), the monitors watching it,
//! and a host process to SIGKILL.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sandlot::{ListFilter, Runtime};

use crate::{data_dir, require_root};

/// A fresh state dir; dropping it destroys every sandbox still in it and
/// removes it.
pub struct StateDir {
    pub path: PathBuf,
}

impl StateDir {
    pub fn new(name: &str) -> StateDir {
        require_root();
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/sandlot-test-state")
            .join(format!("{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        StateDir { path }
    }

    /// A persistent runtime on this state dir.
    pub fn runtime(&self) -> Runtime {
        Runtime::builder()
            .data_dir(data_dir())
            .persistent(&self.path)
            .build()
            .expect("build a persistent runtime")
    }

    /// Ids of the sandbox directories in it now.
    pub fn sandbox_dirs(&self) -> Vec<String> {
        fs::read_dir(self.path.join("sandboxes"))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Pids of the monitors watching sandboxes of this state dir.
    pub fn monitors(&self) -> Vec<i32> {
        monitors_under(&self.path)
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if self.path.exists() {
            if let Ok(rt) = Runtime::builder()
                .data_dir(data_dir())
                .persistent(&self.path)
                .build()
            {
                for info in rt.list(&ListFilter::all()) {
                    if let Ok(sandbox) = rt.connect(&info.id) {
                        let _ = sandbox.kill();
                    }
                }
            }
            crate::eventually(Duration::from_secs(5), || {
                monitors_under(&self.path).is_empty()
            });
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Processes started as `sandlot-monitor <dir under path> …`.
pub fn monitors_under(path: &Path) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let mut args = cmdline.split(|b| *b == 0);
        if args.next() == Some(b"sandlot-monitor".as_slice())
            && args.next().is_some_and(|dir| {
                Path::new(std::str::from_utf8(dir).unwrap_or("")).starts_with(path)
            })
            && crate::process_exists(pid)
        {
            found.push(pid);
        }
    }
    found
}

/// `sandlot-test-persist-host`: a process that creates persistent
/// sandboxes and waits to be killed.
pub struct PersistHost {
    child: Child,
    /// (id, init pid) of each sandbox it made.
    pub sandboxes: Vec<(String, i32)>,
    /// What it prints after `ready` (the exec loop's lines).
    pub lines: Option<std::io::Lines<BufReader<std::process::ChildStdout>>>,
}

impl PersistHost {
    /// `bin`: `env!("CARGO_BIN_EXE_sandlot-test-persist-host")` of the test.
    pub fn start(
        bin: &str,
        state: &StateDir,
        count: usize,
        timeout: Option<Duration>,
    ) -> PersistHost {
        PersistHost::start_with(bin, state, count, timeout, false)
    }

    /// With `exec_loop`, it runs commands in its sandboxes until one fails
    /// (see the binary's docs); its lines are in [`PersistHost::lines`].
    pub fn start_with(
        bin: &str,
        state: &StateDir,
        count: usize,
        timeout: Option<Duration>,
        exec_loop: bool,
    ) -> PersistHost {
        let mut cmd = Command::new(bin);
        if exec_loop {
            cmd.env("SANDLOT_TEST_EXEC_LOOP", "1");
        }
        cmd.arg(data_dir())
            .arg(&state.path)
            .arg(count.to_string())
            .stdout(Stdio::piped());
        if let Some(timeout) = timeout {
            cmd.arg(timeout.as_millis().to_string());
        }
        let mut child = cmd.spawn().expect("start the persist host");
        let mut sandboxes = Vec::new();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for line in lines.by_ref() {
            let line = line.expect("read the persist host's output");
            if line == "ready" {
                break;
            }
            let mut fields = line.split_whitespace();
            let id = fields.next().unwrap().to_string();
            let pid = fields.next().unwrap().parse().unwrap();
            sandboxes.push((id, pid));
        }
        assert_eq!(
            sandboxes.len(),
            count,
            "the persist host made too few sandboxes"
        );
        PersistHost {
            child,
            sandboxes,
            lines: Some(lines),
        }
    }

    /// Waits for it to exit by itself.
    pub fn wait(mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let end = std::time::Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, and reap it.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for PersistHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A busybox template with a start command, imported for one test and
/// removed when the guard drops.
pub struct BusyboxTemplate {
    runtime: Runtime,
    pub name: String,
    _dir: crate::oci::TempDir,
}

impl BusyboxTemplate {
    pub fn new(tag: &str, start: sandlot::StartCommand) -> BusyboxTemplate {
        let runtime = crate::runtime();
        let dir = crate::oci::TempDir::new(&format!("busybox-{tag}"));
        let image = crate::oci::layout(
            &dir.0,
            &[crate::oci::Layer::default()
                .busybox()
                .dir("tmp")
                .dir("root")
                .dir("etc")
                .file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
                .file("etc/group", "root:x:0:\n")],
            serde_json::json!({ "Env": ["PATH=/bin"] }),
        );
        let name = format!("busybox-{tag}-{}", std::process::id());
        let settings = sandlot::Settings {
            start: Some(start),
            ..sandlot::Settings::default()
        };
        runtime
            .templates()
            .import_oci_with(&name, image, settings)
            .expect("import the busybox template");
        BusyboxTemplate {
            runtime,
            name,
            _dir: dir,
        }
    }

    /// Its start command fails (`exit 3` before it is ready): every create
    /// of it fails with `StartFailed`.
    pub fn failing(tag: &str) -> BusyboxTemplate {
        BusyboxTemplate::new(
            tag,
            sandlot::StartCommand {
                command: "echo cannot start; exit 3".into(),
                ready: Some(sandlot::Readiness::File("/tmp/never".into())),
                ready_timeout_secs: 10,
            },
        )
    }
}

impl Drop for BusyboxTemplate {
    fn drop(&mut self) {
        let _ = self.runtime.templates().remove(&self.name);
    }
}
