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

use std::sync::Arc;
use std::time::Instant;

use crate::engine::error::Result;
use crate::engine::lifecycle::{Reason, State};
use crate::engine::sandbox::{Sandbox, SandboxShared};

impl SandboxShared {
    fn pause(self: &Arc<Self>) -> Result<()> {
        let done = self.with_live(|live| -> Result<()> {
            let cgroup = live.cgroup.as_ref().ok_or_else(|| self.not_running())?;
            match self.state() {
                State::Paused => return Ok(()),
                State::Running | State::Active => {}
                _ => return Err(self.not_running()),
            }
            // Either may hold by now: a command may have started or ended.
            let paused = [State::Running, State::Active]
                .into_iter()
                .any(|from| self.transition_from(from, State::Paused, Reason::Paused));
            if !paused {
                return Err(self.not_running());
            }
            *self.resources.paused_at.lock().unwrap() = Some(Instant::now());
            if self.resources.pause_clock {
                self.stop_clock();
            }
            if let Err(e) = cgroup.freeze() {
                self.unpaused();
                return Err(e.into());
            }
            Ok(())
        });
        done.unwrap_or_else(|| Err(self.not_running()))
    }

    fn resume(self: &Arc<Self>) -> Result<()> {
        let done = self.with_live(|live| -> Result<()> {
            let cgroup = live.cgroup.as_ref().ok_or_else(|| self.not_running())?;
            match self.state() {
                State::Paused => {}
                State::Running | State::Active => return Ok(()),
                _ => return Err(self.not_running()),
            }
            cgroup.thaw()?;
            self.unpaused();
            Ok(())
        });
        done.unwrap_or_else(|| Err(self.not_running()))
    }

    /// Back from Paused (after a thaw, or a freeze that failed): restart
    /// the clock, then Active or Running by the commands in flight.
    fn unpaused(self: &Arc<Self>) {
        let paused_at = self.resources.paused_at.lock().unwrap().take();
        let mut table = self.commands.lock().unwrap();
        if self.resources.pause_clock {
            self.restart_clock();
            let paused_for = paused_at.map(|at| at.elapsed()).unwrap_or_default();
            // Under the commands lock, so a timer firing now sees the new
            // deadline; the old timers find it later and do nothing.
            for (id, entry) in table.running.iter_mut() {
                if let Some(deadline) = entry.deadline.as_mut() {
                    *deadline += paused_for;
                    self.arm_command_timer(*id, *deadline);
                }
            }
        }
        let to = if table.running.is_empty() {
            State::Running
        } else {
            State::Active
        };
        self.transition_from(State::Paused, to, Reason::Resumed);
    }
}

impl Sandbox {
    /// Freezes every process of the sandbox (the cgroup freezer; a few
    /// milliseconds at most) and moves it to Paused. Commands are refused
    /// with `SandboxNotRunning { state: Paused }` until
    /// [`Sandbox::resume`]; one being started at that very moment starts
    /// on resume. Pausing a paused sandbox does nothing.
    ///
    /// The clock: by default the sandbox's timeout and its commands' time
    /// limits keep running while it is paused — a paused sandbox can time
    /// out and be destroyed, and a command whose limit passed is killed as
    /// soon as it runs again. With
    /// [`SandboxOptions::pause_clock`](crate::SandboxOptions::pause_clock)
    /// both stand still until resume.
    pub fn pause(&self) -> Result<()> {
        self.shared().pause()
    }

    /// Lets a paused sandbox's processes run again; state Running, or
    /// Active if commands are in flight. Resuming a running sandbox does
    /// nothing.
    pub fn resume(&self) -> Result<()> {
        self.shared().resume()
    }
}
