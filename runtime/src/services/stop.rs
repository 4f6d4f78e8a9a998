//! Graceful stop (`sandbox.stop(grace)`): the sandbox's processes get the
//! chance to finish and save what they must before it is torn down.
//!
//! 1. Stopping (an event, so an owner can save files meanwhile — the files
//!    API still works); commands are refused from here on, in every
//!    process (a persistent sandbox's lifecycle file says so).
//! 2. A paused sandbox is thawed: frozen processes could not act on the
//!    signal.
//! 3. SIGTERM to every process but init.
//! 4. Up to `grace` for every process but init to end: commands and code
//!    cells in flight, and whatever else runs (servers, daemons).
//! 5. The usual teardown (SIGKILL to what is left), reason `Stopped`.
//!
//! `kill()` stays immediate. Stopping a sandbox that is stopping already
//! (another caller, another process) signals again, waits the same way and
//! ends it.

use std::time::{Duration, Instant};

use sandlot_proto::Request;

use crate::engine::error::Result;
use crate::engine::lifecycle::{Reason, State};
use crate::engine::sandbox::SandboxShared;

/// How often the processes left are counted while waiting.
const POLL: Duration = Duration::from_millis(10);

pub(crate) fn stop(sandbox: &SandboxShared, grace: Duration) -> Result<()> {
    let live = sandbox.live().ok_or_else(|| sandbox.not_running())?;
    // 1. Stopping, written down for every process and the monitor.
    let was_paused = {
        let _lock = sandbox.lock_files()?;
        let from = sandbox.state();
        match from {
            State::Running | State::Active | State::Paused => {
                if sandbox
                    .transition(State::Stopping, Reason::Stopped)
                    .is_err()
                {
                    return Err(sandbox.not_running());
                }
                sandbox.save_lifecycle()?;
                from == State::Paused
            }
            State::Stopping => false,
            _ => return Err(sandbox.not_running()),
        }
    };
    // 2. Frozen processes cannot act on SIGTERM.
    if was_paused {
        live.cgroup.thaw()?;
    }
    // 3. SIGTERM to everything but init.
    let _ = sandbox.send_request(&Request::SignalAll {
        signal: libc::SIGTERM,
    });
    // 4. The grace: until init is alone, or the time is up.
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        match live.cgroup.procs() {
            Ok(pids) if pids.len() <= 1 => break,
            Err(_) => break, // gone meanwhile
            Ok(_) => std::thread::sleep(POLL.min(deadline - Instant::now())),
        }
    }
    // 5. SIGKILL to what is left, and the teardown.
    drop(live);
    sandbox.destroy(Reason::Stopped)
}
