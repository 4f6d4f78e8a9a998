//! Starting the monitor of a persistent sandbox: the embedded init binary,
//! executed from its sealed memfd under the name `sandlot-monitor` (its
//! other mode, `init/src/monitor`), outside the sandbox. It forks into a
//! session of its own at once, so the process started here exits at once
//! and the caller reaps it (see [`Starting::wait`]); the monitor itself is
//! nobody's child of ours and outlives us.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use sandlot_proto::monitor::MONITOR_ARGV0;

use crate::kernel::error::{KernelError, KernelResult};
use crate::kernel::init_binary;
use crate::kernel::procs::ProcId;

/// What a monitor watches.
pub(crate) struct MonitorSpec<'a> {
    /// `<state dir>/sandboxes/<id>`.
    pub dir: &'a Path,
    pub init: ProcId,
    /// The sandbox's cgroup dirs, one per hierarchy.
    pub cgroups: &'a [PathBuf],
}

/// The first process of a monitor, which forks the monitor and exits.
pub(crate) struct Starting(Child);

impl Starting {
    /// Reaps the first process (it exits as soon as the monitor runs).
    pub fn wait(mut self) {
        let _ = self.0.wait();
    }
}

/// Starts a monitor (see the module docs). Descriptors are not inherited
/// (the monitor closes everything above stdio first thing); posix_spawn is
/// used, so the cost does not grow with the host's memory.
pub(crate) fn start(spec: MonitorSpec<'_>) -> KernelResult<Starting> {
    let init = init_binary::init_fd()?;
    let child = Command::new(format!("/proc/self/fd/{init}"))
        .arg0(MONITOR_ARGV0)
        .arg(spec.dir)
        .arg(spec.init.pid.to_string())
        .arg(spec.init.start_time.to_string())
        .args(spec.cgroups)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| KernelError::io("start the sandbox's monitor", e))?;
    Ok(Starting(child))
}
