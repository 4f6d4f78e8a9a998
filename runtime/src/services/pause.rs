//! Pause and resume: every process of a sandbox stopped by its cgroup's
//! freezer (v2 `cgroup.freeze`, also through the controller-less unified
//! hierarchy of a hybrid host; else the v1 freezer), and let go again.
//!
//! - `pause()`: Running/Active → Paused, then freeze. Commands are refused
//!   from the moment the state changes (`SandboxNotRunning { state:
//!   Paused }`); one that was being started at that moment starts when the
//!   sandbox resumes.
//! - `resume()`: thaw, then Paused → Active if commands are in flight,
//!   else Running.
//! - The clock: by default the sandbox's timeout and its commands' time
//!   limits keep running while it is paused — a paused sandbox can time out
//!   and be destroyed (destroy works on frozen tasks), and a command whose
//!   limit passed is killed as soon as init runs again. With
//!   `SandboxOptions::pause_clock(true)` both stand still: resume gives
//!   back the lifetime that was left at pause, and moves every command's
//!   deadline by the time spent paused.
//! - Both are idempotent: pausing a paused sandbox or resuming a running
//!   one does nothing.

use crate::engine::error::Result;
use crate::engine::lifecycle::{Reason, State};
use crate::engine::sandbox::SandboxShared;
use crate::engine::sync::lock;

/// Running/Active → Paused, then freeze (outside every lock of the
/// sandbox: the freeze may wait for the kernel). Idempotent.
pub(crate) fn pause(sandbox: &SandboxShared) -> Result<()> {
    let live = sandbox.live().ok_or_else(|| sandbox.not_running())?;
    // A persistent sandbox: one process at a time, and the state written
    // down for the others and the monitor.
    let _lock = sandbox.lock_files()?;
    match sandbox.state() {
        State::Paused => return Ok(()),
        State::Running | State::Active => {}
        _ => return Err(sandbox.not_running()),
    }
    // Either may hold by now: a command may have started or ended.
    let paused = [State::Running, State::Active]
        .into_iter()
        .any(|from| sandbox.transition_from(from, State::Paused, Reason::Paused));
    if !paused {
        return Err(sandbox.not_running());
    }
    sandbox.pause_started();
    if let Err(e) = live.cgroup.freeze() {
        unpaused(sandbox);
        return Err(e.into());
    }
    if let Err(e) = sandbox.save_lifecycle() {
        let _ = live.cgroup.thaw();
        unpaused(sandbox);
        return Err(e);
    }
    Ok(())
}

/// Thaw, then Paused → Active or Running by the commands in flight.
/// Idempotent.
pub(crate) fn resume(sandbox: &SandboxShared) -> Result<()> {
    let live = sandbox.live().ok_or_else(|| sandbox.not_running())?;
    let _lock = sandbox.lock_files()?;
    match sandbox.state() {
        State::Paused => {}
        State::Running | State::Active => return Ok(()),
        _ => return Err(sandbox.not_running()),
    }
    live.cgroup.thaw()?;
    unpaused(sandbox);
    sandbox.save_lifecycle()
}

/// Back from Paused (after a thaw, or a freeze that failed): restart the
/// clock, then Active or Running by the commands in flight.
fn unpaused(sandbox: &SandboxShared) {
    let paused_for = sandbox.pause_ended();
    if sandbox.pause_clock {
        // Every command deadline moves by the pause; the old timers find
        // the new deadline later and do nothing.
        sandbox.shift_exec_deadlines(paused_for);
    }
    // Under the executions lock: one ending now cannot slip between the
    // count and the transition.
    let execs = lock(&sandbox.execs);
    let to = if execs.active == 0 {
        State::Running
    } else {
        State::Active
    };
    sandbox.transition_from(State::Paused, to, Reason::Resumed);
}
