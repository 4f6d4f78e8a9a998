//! A sandbox: its shared state (owned by the runtime's table, the reactor
//! and every handle) and the public [`Sandbox`] handle.
//!
//! Lock order, to stay deadlock-free: `live` → `commands` → `status`; the
//! reactor's source table, the event bus and `metadata` are leaves. `live`
//! is held for a whole teardown, which serialises concurrent destroys: the
//! second one waits and then finds nothing left to do.

use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use sandlot_proto::{Event, Request};
use sandlot_rootfs::Template;

use crate::api::runtime::RuntimeCtx;
use crate::engine::control;
use crate::engine::error::{Error, Result};
use crate::engine::lifecycle::{LifecycleEvent, Reason, State};
use crate::engine::reactor::{Output, Reactor, Token};
use crate::engine::reaper::ReaperJob;
use crate::engine::resources::ResourceState;
use crate::kernel::cgroups::SandboxCgroup;
use crate::services::commands::{CommandEntry, CommandTable, Commands, ProcessEvent};
use crate::services::users::User;
use crate::sys::process;

/// Kernel resources of a running sandbox; taken (and closed) by destroy.
pub(crate) struct Live {
    /// init's pid in the host's pid namespace.
    pub pid: i32,
    pub pidfd: OwnedFd,
    pub control: Arc<OwnedFd>,
    /// The sandbox's root directory (`/proc/<init>/root`), `O_PATH`.
    pub root: Arc<OwnedFd>,
    /// The writable tmpfs, `O_PATH`: disk usage for metrics.
    pub rw: OwnedFd,
    pub cgroup: Option<SandboxCgroup>,
    pub control_token: Option<Token>,
    pub init_token: Option<Token>,
}

struct Status {
    state: State,
    /// Why the sandbox ended, once it has.
    end_reason: Option<Reason>,
    deadline: Instant,
    end_at: SystemTime,
    /// While paused with the pause clock: the lifetime that was left (the
    /// deadline does not apply meanwhile).
    clock_stopped: Option<Duration>,
}

pub(crate) struct SandboxShared {
    pub id: String,
    pub template_name: String,
    pub template: Arc<Template>,
    /// Replaced as a whole by `set_metadata` (a pool hands a sandbox to a
    /// new owner with the owner's metadata).
    metadata: Mutex<BTreeMap<String, String>>,
    pub env: Vec<(String, String)>,
    pub hostname: String,
    pub created_at: SystemTime,
    pub ctx: Arc<RuntimeCtx>,
    status: Mutex<Status>,
    live: Mutex<Option<Live>>,
    pub commands: Mutex<CommandTable>,
    pub resources: ResourceState,
}

/// A snapshot of a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxInfo {
    pub id: String,
    pub template: String,
    pub state: State,
    pub metadata: BTreeMap<String, String>,
    pub hostname: String,
    pub created_at: SystemTime,
    /// When the sandbox's timeout kills it.
    pub end_at: SystemTime,
    /// init's pid on the host, while it runs.
    pub init_pid: Option<i32>,
    pub commands_in_flight: usize,
}

pub(crate) struct NewSandbox {
    pub id: String,
    pub template_name: String,
    pub template: Arc<Template>,
    pub metadata: BTreeMap<String, String>,
    pub env: Vec<(String, String)>,
    pub hostname: String,
    pub timeout: Duration,
    pub resources: ResourceState,
}

impl SandboxShared {
    pub fn new(spec: NewSandbox, ctx: Arc<RuntimeCtx>) -> Arc<SandboxShared> {
        let now = SystemTime::now();
        Arc::new(SandboxShared {
            id: spec.id,
            template_name: spec.template_name,
            template: spec.template,
            metadata: Mutex::new(spec.metadata),
            env: spec.env,
            hostname: spec.hostname,
            created_at: now,
            ctx,
            status: Mutex::new(Status {
                state: State::Pending,
                end_reason: None,
                deadline: Instant::now() + spec.timeout,
                end_at: now + spec.timeout,
                clock_stopped: None,
            }),
            live: Mutex::new(None),
            commands: Mutex::new(CommandTable::default()),
            resources: spec.resources,
        })
    }

    pub fn state(&self) -> State {
        self.status.lock().unwrap().state
    }

    /// Moves to `to` if the state machine allows it and publishes the event.
    pub fn transition(&self, to: State, reason: Reason) -> Result<State, State> {
        let mut status = self.status.lock().unwrap();
        let from = status.state;
        if !from.can_become(to) {
            return Err(from);
        }
        status.state = to;
        self.publish(from, to, reason);
        Ok(from)
    }

    /// Moves `from → to` only if the sandbox is in `from` now (Running ⇄
    /// Active must not undo a pause that happened meanwhile).
    pub fn transition_from(&self, from: State, to: State, reason: Reason) -> bool {
        let mut status = self.status.lock().unwrap();
        if status.state != from || !from.can_become(to) {
            return false;
        }
        status.state = to;
        self.publish(from, to, reason);
        true
    }

    fn publish(&self, from: State, to: State, reason: Reason) {
        self.ctx.events.publish(LifecycleEvent {
            sandbox_id: self.id.clone(),
            from,
            to,
            reason,
            at: SystemTime::now(),
        });
    }

    pub fn not_running(&self) -> Error {
        Error::SandboxNotRunning {
            id: self.id.clone(),
            state: self.state(),
        }
    }

    pub fn check_accepts_commands(&self) -> Result<()> {
        if self.state().accepts_commands() {
            Ok(())
        } else {
            Err(self.not_running())
        }
    }

    /// Installs the kernel resources of a sandbox whose init said Ready.
    /// If the sandbox was destroyed while it started (runtime shutdown),
    /// the resources are released here and the caller gets the error.
    pub fn set_live(&self, mut live: Live) -> Result<()> {
        let mut slot = self.live.lock().unwrap();
        if self.state() == State::Destroyed {
            drop(slot);
            let _ = self.teardown(&mut live, false);
            return Err(self.not_running());
        }
        *slot = Some(live);
        Ok(())
    }

    /// Runs `f` on the kernel resources while the sandbox is live (holding
    /// the `live` lock: destroy waits).
    pub fn with_live<R>(&self, f: impl FnOnce(&Live) -> R) -> Option<R> {
        self.live.lock().unwrap().as_ref().map(f)
    }

    pub fn control(&self) -> Option<Arc<OwnedFd>> {
        self.live
            .lock()
            .unwrap()
            .as_ref()
            .map(|l| l.control.clone())
    }

    pub fn root(&self) -> Option<Arc<OwnedFd>> {
        self.live.lock().unwrap().as_ref().map(|l| l.root.clone())
    }

    /// A duplicate of init's pidfd: readable once the sandbox has ended
    /// (for threads that must stop with it, like a files watch).
    pub fn init_pidfd(&self) -> Option<OwnedFd> {
        let live = self.live.lock().unwrap();
        live.as_ref().and_then(|l| l.pidfd.try_clone().ok())
    }

    pub fn init_pid(&self) -> Option<i32> {
        self.live.lock().unwrap().as_ref().map(|l| l.pid)
    }

    pub fn id_count(&self) -> u32 {
        self.ctx.range.count
    }

    pub fn end_reason(&self) -> Option<Reason> {
        self.status.lock().unwrap().end_reason.clone()
    }

    pub fn deadline(&self) -> Instant {
        self.status.lock().unwrap().deadline
    }

    /// Whether the lifetime is over at `now` (never while the clock is
    /// stopped by a pause).
    pub fn deadline_due(&self, now: Instant) -> bool {
        let status = self.status.lock().unwrap();
        status.clock_stopped.is_none() && status.deadline <= now && status.state.is_live()
    }

    /// Pause with the pause clock: remember the lifetime left.
    pub fn stop_clock(&self) {
        let mut status = self.status.lock().unwrap();
        if status.clock_stopped.is_none() {
            status.clock_stopped = Some(status.deadline.saturating_duration_since(Instant::now()));
        }
    }

    /// Resume: the lifetime left runs from now; tells the reaper.
    pub fn restart_clock(self: &Arc<Self>) {
        let deadline = {
            let mut status = self.status.lock().unwrap();
            let Some(left) = status.clock_stopped.take() else {
                return;
            };
            status.deadline = Instant::now() + left;
            status.end_at = SystemTime::now() + left;
            status.deadline
        };
        let _ = self
            .ctx
            .reaper
            .send(ReaperJob::Deadline(Arc::downgrade(self), deadline));
    }

    pub fn clock_stopped(&self) -> bool {
        self.status.lock().unwrap().clock_stopped.is_some()
    }

    pub fn end_at(&self) -> SystemTime {
        self.status.lock().unwrap().end_at
    }

    /// Moves the deadline to `timeout` from now and tells the reaper.
    pub fn set_timeout(self: &Arc<Self>, timeout: Duration) -> Result<()> {
        crate::engine::options::validate_timeout(timeout)?;
        let deadline = {
            let mut status = self.status.lock().unwrap();
            if !status.state.is_live() {
                return Err(Error::SandboxNotRunning {
                    id: self.id.clone(),
                    state: status.state,
                });
            }
            status.deadline = Instant::now() + timeout;
            status.end_at = SystemTime::now() + timeout;
            if status.clock_stopped.is_some() {
                // Paused with the clock stopped: all of it is left.
                status.clock_stopped = Some(timeout);
            }
            status.deadline
        };
        let _ = self
            .ctx
            .reaper
            .send(ReaperJob::Deadline(Arc::downgrade(self), deadline));
        Ok(())
    }

    /// The environment of a command: template, then the user's identity,
    /// then the sandbox's, then the command's own (later entries win).
    pub fn command_env(&self, user: &User, extra: &[(String, String)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self.template.config.env.clone();
        let mut set = |key: &str, value: String| {
            env.retain(|(k, _)| k != key);
            env.push((key.to_string(), value));
        };
        set("HOME", user.home.clone());
        set("USER", user.name.clone());
        set("LOGNAME", user.name.clone());
        set(
            "SHELL",
            user.shell
                .clone()
                .unwrap_or_else(|| self.template.config.shell.clone()),
        );
        set("HOSTNAME", self.hostname.clone());
        set("SANDLOT_SANDBOX_ID", self.id.clone());
        for (key, value) in self.env.iter().chain(extra) {
            set(key, value.clone());
        }
        env
    }

    pub fn send_request(&self, request: &Request) -> Result<()> {
        self.send_request_with_fds(request, &[])
    }

    pub fn send_request_with_fds(&self, request: &Request, fds: &[BorrowedFd<'_>]) -> Result<()> {
        let control = self.control().ok_or_else(|| self.not_running())?;
        control::send(control.as_fd(), request, fds, false).map_err(|errno| match errno {
            Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN => self.not_running(),
            errno => Error::setup("send to init", errno),
        })
    }

    pub fn send_signal(&self, id: u64, signal: i32, group: bool) -> Result<()> {
        if !self.commands.lock().unwrap().running.contains_key(&id) {
            // Already finished: nothing left to signal.
            return Ok(());
        }
        self.send_request(&Request::Signal { id, signal, group })
    }

    /// Records a new command; the first one makes the sandbox Active.
    /// Past `max_concurrent` commands in flight: `QuotaExceeded`.
    pub fn register_command(&self, entry: CommandEntry) -> Result<u64> {
        let mut table = self.commands.lock().unwrap();
        self.check_accepts_commands()?;
        if let Some(max) = self.resources.exec.max_concurrent {
            if table.running.len() >= max {
                return Err(Error::QuotaExceeded {
                    what: "max_concurrent",
                    limit: max as u64,
                });
            }
        }
        table.next_id += 1;
        let id = table.next_id;
        table.running.insert(id, entry);
        self.resources.touch();
        if table.running.len() == 1 {
            self.transition_from(State::Running, State::Active, Reason::CommandStarted);
        }
        Ok(id)
    }

    pub fn watch_output(&self, id: u64, output: Output) -> Result<(), Errno> {
        let token = self.ctx.reactor.watch_output(output)?;
        if let Some(entry) = self.commands.lock().unwrap().running.get_mut(&id) {
            entry.outputs.push(token);
        } else {
            self.ctx.reactor.drop_output(token);
        }
        Ok(())
    }

    pub fn arm_command_timer(self: &Arc<Self>, id: u64, at: Instant) {
        self.ctx.reactor.add_timer(at, Arc::downgrade(self), id);
    }

    /// Forgets a command that never reached init.
    pub fn abandon_command(&self, id: u64) {
        if let Some(entry) = self.remove_command(id) {
            for token in entry.outputs {
                self.ctx.reactor.drop_output(token);
            }
        }
    }

    /// Removes a command; the last one makes the sandbox Running again.
    fn remove_command(&self, id: u64) -> Option<CommandEntry> {
        let mut table = self.commands.lock().unwrap();
        let entry = table.running.remove(&id)?;
        self.resources.touch();
        if table.running.is_empty() {
            self.transition_from(State::Active, State::Running, Reason::Idle);
        }
        Some(entry)
    }

    /// Reactor: a command's deadline passed.
    pub fn command_timed_out(&self, id: u64) {
        if self.clock_stopped() {
            // Paused with the clock stopped: resume re-arms the deadline.
            return;
        }
        let mut table = self.commands.lock().unwrap();
        let Some(entry) = table.running.get_mut(&id) else {
            return;
        };
        if entry.deadline.is_some_and(|d| d > Instant::now()) {
            // Moved later by a pause; a new timer is armed.
            return;
        }
        entry.timed_out = true;
        drop(table);
        if let Some(control) = self.control() {
            let kill = Request::Signal {
                id,
                signal: libc::SIGKILL,
                group: true,
            };
            let _ = control::send(control.as_fd(), &kill, &[], true);
        }
    }

    /// Reactor: an output pipe reached end-of-file.
    pub fn output_closed(&self, id: u64, token: Token) {
        if let Some(entry) = self.commands.lock().unwrap().running.get_mut(&id) {
            entry.outputs.retain(|t| *t != token);
        }
    }

    /// Reactor: one event from init; `buf` is the io thread's scratch space.
    pub fn on_event(&self, reactor: &Reactor, event: Event, buf: &mut [u8]) {
        match event {
            Event::Spawned { id, pid } => {
                let mut table = self.commands.lock().unwrap();
                if let Some(entry) = table.running.get_mut(&id) {
                    entry.pid = Some(pid);
                    if let Some(reply) = entry.spawned.take() {
                        let _ = reply.send(Ok(pid));
                    }
                }
            }
            Event::SpawnFailed { id, errno } => {
                if let Some(mut entry) = self.remove_command(id) {
                    for token in entry.outputs.drain(..) {
                        reactor.drop_output(token);
                    }
                    if let Some(reply) = entry.spawned.take() {
                        let _ = reply.send(Err(Errno::from_raw(errno)));
                    }
                }
            }
            Event::Exited {
                id, status, usage, ..
            } => {
                if let Some(entry) = self.remove_command(id) {
                    // Output written before the exit is already in the
                    // pipes: forward it, then the exit, in that order.
                    for token in &entry.outputs {
                        reactor.drain_output(*token, buf);
                    }
                    let exit = entry.exit_event(status, usage, || self.oom_kills_now());
                    let _ = entry.events.send(ProcessEvent::Exit(exit));
                }
            }
            Event::Ready { .. } | Event::SetupFailed { .. } => {}
        }
    }

    pub fn unwatch_control(&self, reactor: &Reactor) {
        let mut live = self.live.lock().unwrap();
        if let Some(live) = live.as_mut() {
            if let Some(token) = live.control_token.take() {
                reactor.remove_watch(token, live.control.as_fd());
            }
        }
    }

    pub fn unwatch_init(&self, reactor: &Reactor) {
        let mut live = self.live.lock().unwrap();
        if let Some(live) = live.as_mut() {
            if let Some(token) = live.init_token.take() {
                reactor.remove_watch(token, live.pidfd.as_fd());
            }
        }
    }

    /// Whether init still runs (its pidfd is not yet readable).
    pub fn init_alive(&self) -> bool {
        let live = self.live.lock().unwrap();
        live.as_ref()
            .is_some_and(|l| !process::pidfd_exited(l.pidfd.as_fd()))
    }

    /// Kills every process of the sandbox and releases everything it held.
    /// Idempotent: later calls wait for the first one and return Ok.
    pub fn destroy(&self, reason: Reason) -> Result<()> {
        let mut live_slot = self.live.lock().unwrap();
        let Some(mut live) = live_slot.take() else {
            // Still being built: doom it; the creator tears it down when
            // it tries to install the resources (see `set_live`).
            let mut status = self.status.lock().unwrap();
            if matches!(status.state, State::Pending | State::Starting) {
                status.end_reason = Some(reason.clone());
                let from = std::mem::replace(&mut status.state, State::Destroyed);
                self.publish(from, State::Destroyed, reason);
            }
            return Ok(());
        };
        let from = {
            let mut status = self.status.lock().unwrap();
            status.end_reason = Some(reason.clone());
            std::mem::replace(&mut status.state, State::Destroyed)
        };

        let torn_down = self.teardown(&mut live, from == State::Paused);

        // Close every descriptor (the mount namespace, the overlay and the
        // writable tmpfs go with the last reference).
        drop(live);
        drop(live_slot);
        self.ctx.table.lock().unwrap().remove(&self.id);
        self.publish(from, State::Destroyed, reason);
        torn_down
    }

    /// Kills every process of the sandbox and releases what `live` holds:
    /// the work of `destroy`, shared with a create that was doomed while
    /// it started (`set_live`).
    fn teardown(&self, live: &mut Live, paused: bool) -> Result<()> {
        // 1. SIGKILL to every task: cgroup.kill where there is one (it
        //    reaches frozen tasks too), else to init, whose death ends the
        //    whole pid namespace. Reaping init waits until every process in
        //    it is gone.
        let killed = live
            .cgroup
            .as_ref()
            .is_some_and(|c| matches!(c.kill(), Ok(true)));
        if !killed {
            let _ = process::pidfd_signal(live.pidfd.as_fd(), libc::SIGKILL);
        }
        if paused {
            // The v1 freezer holds even killed tasks until thawed (v2 lets
            // them die); they wake with SIGKILL pending and run no code.
            if let Some(cgroup) = &live.cgroup {
                let _ = cgroup.thaw();
            }
        }
        let reaped = process::reap_pidfd(live.pidfd.as_fd(), true);

        // 2. Nothing more will come from the sandbox.
        self.release_resources();
        let reactor = &self.ctx.reactor;
        if let Some(token) = live.control_token.take() {
            reactor.remove_watch(token, live.control.as_fd());
        }
        if let Some(token) = live.init_token.take() {
            reactor.remove_watch(token, live.pidfd.as_fd());
        }

        // 3. Commands in flight end with what they wrote, then their exit.
        let entries: Vec<CommandEntry> = {
            let mut table = self.commands.lock().unwrap();
            table.running.drain().map(|(_, e)| e).collect()
        };
        let mut buf = Vec::new();
        for entry in entries {
            if buf.is_empty() && !entry.outputs.is_empty() {
                buf = vec![0u8; crate::engine::reactor::READ_CHUNK];
            }
            for token in &entry.outputs {
                reactor.drain_output(*token, &mut buf);
            }
            let _ = entry
                .events
                .send(ProcessEvent::Exit(entry.destroyed_event()));
        }

        // 4. The cgroup dirs, now that no task is left in them.
        let removed = live.cgroup.take().map(SandboxCgroup::remove).transpose();
        reaped.map_err(|e| Error::setup("reap init", e))?;
        removed?;
        Ok(())
    }
}

/// A handle to a sandbox. Cheap to clone; dropping it does not destroy the
/// sandbox (its timeout or `kill` does).
#[derive(Clone)]
pub struct Sandbox {
    pub(crate) shared: Arc<SandboxShared>,
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox")
            .field("id", &self.shared.id)
            .field("state", &self.state())
            .finish()
    }
}

impl Sandbox {
    pub(crate) fn shared(&self) -> &Arc<SandboxShared> {
        &self.shared
    }

    pub fn id(&self) -> &str {
        &self.shared.id
    }

    pub fn state(&self) -> State {
        self.shared.state()
    }

    /// A copy of the sandbox's metadata.
    pub fn metadata(&self) -> BTreeMap<String, String> {
        self.shared.metadata.lock().unwrap().clone()
    }

    /// Replaces the sandbox's metadata (validated like
    /// [`SandboxOptions::metadata`](crate::SandboxOptions::metadata)).
    pub fn set_metadata(&self, metadata: BTreeMap<String, String>) -> Result<()> {
        crate::engine::options::validate_metadata(&metadata)?;
        *self.shared.metadata.lock().unwrap() = metadata;
        Ok(())
    }

    pub fn info(&self) -> SandboxInfo {
        let shared = &self.shared;
        SandboxInfo {
            id: shared.id.clone(),
            template: shared.template_name.clone(),
            state: shared.state(),
            metadata: shared.metadata.lock().unwrap().clone(),
            hostname: shared.hostname.clone(),
            created_at: shared.created_at,
            end_at: shared.end_at(),
            init_pid: shared.init_pid(),
            commands_in_flight: shared.commands.lock().unwrap().running.len(),
        }
    }

    /// Live state and init still running.
    pub fn is_alive(&self) -> bool {
        self.state().is_live() && self.shared.init_alive()
    }

    /// Why the sandbox ended (timeout, kill, init died, shutdown), once it
    /// has; `None` while it lives.
    pub fn end_reason(&self) -> Option<Reason> {
        self.shared.end_reason()
    }

    /// When the timeout will kill this sandbox.
    pub fn end_at(&self) -> SystemTime {
        self.shared.end_at()
    }

    /// Sets the remaining lifetime to `timeout` from now (longer or shorter).
    pub fn set_timeout(&self, timeout: Duration) -> Result<()> {
        self.shared.set_timeout(timeout)
    }

    /// Destroys the sandbox now. Idempotent.
    pub fn kill(&self) -> Result<()> {
        self.shared.destroy(Reason::Killed)
    }

    pub fn commands(&self) -> Commands<'_> {
        Commands { sandbox: self }
    }
}
