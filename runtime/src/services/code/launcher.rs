//! How a context's interpreter is started and signalled: the one thing the
//! engine leaves to its caller. [`HostLauncher`] runs it as a host process
//! (tests, benchmarks, tools); a sandbox launcher runs it inside a sandbox
//! through init, with the same descriptors.

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::engine::error::Error;
use crate::engine::sync::lock;

/// Everything needed to start a driver.
#[derive(Debug)]
pub struct LaunchRequest {
    /// The interpreter (looked up in PATH) and its arguments.
    pub argv: Vec<String>,
    /// Added to (or replacing in) the launcher's environment.
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    /// Who runs it (a name or `uid[:gid]`); `None` is the launcher's
    /// default (a sandbox's template user).
    pub user: Option<String>,
    /// fd 0: `None` is /dev/null.
    pub stdin: Option<OwnedFd>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// More descriptors, each placed at the given number.
    pub extra: Vec<(OwnedFd, RawFd)>,
}

/// Why a driver could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The interpreter is not installed where the driver runs.
    #[error("program {program:?} not found")]
    NotFound { program: String },
    #[error("cannot start {program:?}: {source}")]
    Failed {
        program: String,
        #[source]
        source: io::Error,
    },
    /// The place to run it refused (a sandbox that is not running, a
    /// quota, a bad user or directory).
    #[error(transparent)]
    Sandbox(#[from] Error),
}

/// Held while a cell runs (see [`Launcher::cell_started`]).
pub type CellGuard = Box<dyn std::any::Any + Send>;

/// How a driver process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverExit {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for DriverExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DriverExit::Code(code) => write!(f, "exit status {code}"),
            DriverExit::Signal(sig) => write!(f, "signal {sig}"),
        }
    }
}

/// A started driver. The launcher puts it in a process group of its own,
/// so that an interrupt reaches what the cell runs in the foreground (as
/// Ctrl-C in a terminal does) and a kill leaves none of its children.
pub trait DriverProcess: Send + Sync {
    fn pid(&self) -> u32;
    /// SIGINT to the driver's process group.
    fn interrupt(&self) -> io::Result<()>;
    /// SIGKILL to the driver's process group.
    fn kill(&self) -> io::Result<()>;
    /// Waits for the driver itself to end (call after `kill`, or once its
    /// message pipe reached end-of-file).
    fn wait(&self) -> io::Result<DriverExit>;
}

/// Starts drivers.
pub trait Launcher: Send + Sync {
    fn launch(&self, request: LaunchRequest) -> Result<Box<dyn DriverProcess>, LaunchError>;

    /// A cell is about to run; what this returns is dropped when it has
    /// ended (a sandbox counts a running cell as activity). An error
    /// refuses the cell (a paused or ended sandbox).
    fn cell_started(&self) -> Result<Option<CellGuard>, LaunchError> {
        Ok(None)
    }
}

/// Runs drivers as plain host processes (`std::process::Command`), each in
/// a new process group. No isolation at all: for tests, benchmarks and
/// trusted code.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostLauncher;

impl Launcher for HostLauncher {
    fn launch(&self, request: LaunchRequest) -> Result<Box<dyn DriverProcess>, LaunchError> {
        let program = request.argv.first().cloned().unwrap_or_default();
        let failed = |source: io::Error| LaunchError::Failed {
            program: program.clone(),
            source,
        };
        if let Some(user) = &request.user {
            return Err(failed(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("the host launcher runs drivers as the calling user, not {user:?}"),
            )));
        }
        // Looked up here, not left to the spawn: the descriptors placed at
        // fixed numbers below (in the child, before exec) may land on the
        // pipe through which std reports a failed exec, and the failure
        // would then look like an interpreter that exited at once.
        let path = request
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var("PATH").ok())
            .unwrap_or_default();
        if !executable_exists(&program, &path) {
            return Err(LaunchError::NotFound {
                program: program.clone(),
            });
        }
        let mut cmd = Command::new(&program);
        cmd.args(&request.argv[1..])
            .envs(request.env.iter().map(|(k, v)| (k, v)))
            .stdin(request.stdin.map_or_else(Stdio::null, Stdio::from))
            .stdout(Stdio::from(request.stdout))
            .stderr(Stdio::from(request.stderr))
            .process_group(0);
        if let Some(cwd) = &request.cwd {
            cmd.current_dir(cwd);
        }
        crate::sys::command::map_fds(&mut cmd, request.extra).map_err(|e| failed(e.into()))?;
        let child = cmd.spawn().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => LaunchError::NotFound {
                program: program.clone(),
            },
            _ => failed(e),
        })?;
        Ok(Box::new(HostDriver {
            pid: child.id(),
            child: Mutex::new(Some(child)),
            status: Mutex::new(None),
        }))
    }
}

/// Whether `program` names an executable file: as a path when it has a
/// slash, else in one of `path`'s directories.
fn executable_exists(program: &str, path: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return executable(std::path::Path::new(program));
    }
    !program.is_empty()
        && path
            .split(':')
            .filter(|dir| !dir.is_empty())
            .any(|dir| executable(&std::path::Path::new(dir).join(program)))
}

struct HostDriver {
    pid: u32,
    /// Taken once reaped: from then on the group id may be reused and no
    /// signal is sent.
    child: Mutex<Option<Child>>,
    status: Mutex<Option<DriverExit>>,
}

impl HostDriver {
    fn signal(&self, signal: Signal) -> io::Result<()> {
        // The lock keeps `wait` from reaping (and the id from being reused)
        // while the signal is sent.
        let child = lock(&self.child);
        if child.is_none() {
            return Ok(());
        }
        let pgid = Pid::from_raw(self.pid as i32);
        match killpg(pgid, signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl DriverProcess for HostDriver {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn interrupt(&self) -> io::Result<()> {
        self.signal(Signal::SIGINT)
    }

    fn kill(&self) -> io::Result<()> {
        self.signal(Signal::SIGKILL)
    }

    fn wait(&self) -> io::Result<DriverExit> {
        let mut slot = lock(&self.child);
        if let Some(mut child) = slot.take() {
            use std::os::unix::process::ExitStatusExt;
            let status = child.wait()?;
            let exit = match (status.code(), status.signal()) {
                (Some(code), _) => DriverExit::Code(code),
                (None, Some(sig)) => DriverExit::Signal(sig),
                (None, None) => DriverExit::Code(-1),
            };
            *lock(&self.status) = Some(exit);
        }
        Ok(lock(&self.status).unwrap_or(DriverExit::Code(-1)))
    }
}

impl Drop for HostDriver {
    fn drop(&mut self) {
        // Never leave a process or a zombie behind.
        if self.child.lock().map(|c| c.is_some()).unwrap_or(false) {
            let _ = self.kill();
            let _ = self.wait();
        }
    }
}
