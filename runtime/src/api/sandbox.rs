//! The public handle to a sandbox: every method a user calls, each a thin
//! call into the service or engine part that does the work.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sandlot_rootfs::Interpreter;

use crate::engine::error::Result;
use crate::engine::lifecycle::{Reason, State};
use crate::engine::network::Network;
use crate::engine::sandbox::{SandboxInfo, SandboxShared};
use crate::kernel::limits::{ExecLimits, Limits};
use crate::services::code::{CellOptions, Execution, Language, SandboxCode};
use crate::services::commands::{Cmd, Command, Commands};
use crate::services::files::Files;
use crate::services::health::{self, Health};
use crate::services::metrics::{self, Metrics};
use crate::services::monitor::{MonitorTarget, Target};
use crate::services::net::service as net;
use crate::services::{pause, stop, template};

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

impl From<&Sandbox> for MonitorTarget {
    fn from(sandbox: &Sandbox) -> Self {
        MonitorTarget(Target::Sandbox(sandbox.shared.clone()))
    }
}

impl Sandbox {
    pub(crate) fn new(shared: Arc<SandboxShared>) -> Sandbox {
        Sandbox { shared }
    }

    pub fn id(&self) -> &str {
        &self.shared.id
    }

    pub fn state(&self) -> State {
        self.shared.state()
    }

    /// A copy of the sandbox's metadata.
    pub fn metadata(&self) -> BTreeMap<String, String> {
        self.shared.metadata()
    }

    /// Replaces the sandbox's metadata (validated like
    /// [`SandboxOptions::metadata`](crate::SandboxOptions::metadata)).
    pub fn set_metadata(&self, metadata: BTreeMap<String, String>) -> Result<()> {
        crate::engine::options::validate_metadata(&metadata)?;
        self.shared.set_metadata(metadata)
    }

    /// A snapshot: state, metadata, times, init's pid, commands in flight.
    /// Never waits for a teardown.
    pub fn info(&self) -> SandboxInfo {
        self.shared.info()
    }

    /// The limits the sandbox was created with (the caller's, filled in
    /// from the template's settings and the defaults).
    pub fn limits(&self) -> Limits {
        self.shared.limits.clone()
    }

    /// The per-command limits the sandbox was created with.
    pub fn exec_limits(&self) -> ExecLimits {
        self.shared.exec_limits
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

    /// Activity, as far as the idle timeout is concerned (see
    /// [`SandboxOptions`](crate::SandboxOptions)): for a client that keeps a
    /// sandbox it is not using right now.
    pub fn touch(&self) {
        self.shared.touch();
    }

    /// Sets the remaining lifetime to `timeout` from now (longer or shorter).
    pub fn set_timeout(&self, timeout: Duration) -> Result<()> {
        self.shared.set_timeout(timeout)
    }

    /// Destroys the sandbox now. Idempotent: a second call (from any
    /// thread) returns once the first one's teardown is done.
    pub fn kill(&self) -> Result<()> {
        self.shared.destroy(Reason::Killed)
    }

    /// Ends the sandbox gracefully: state Stopping (an event: an owner can
    /// still save files), no new commands, SIGTERM to every process, up to
    /// `grace` for them to end, then SIGKILL and the usual teardown, reason
    /// `Stopped`. Returns when it is gone.
    pub fn stop(&self, grace: Duration) -> Result<()> {
        stop::stop(&self.shared, grace)
    }

    /// The sandbox's commands: `run`, `spawn`, `list`, `kill_all`.
    pub fn commands(&self) -> Commands<'_> {
        Commands {
            sandbox: &self.shared,
        }
    }

    /// A command that runs `program` directly (no shell), built like
    /// `std::process::Command`: `.arg()`, `.env()`, `.current_dir()`,
    /// `.user()`, `.stdin()`, `.timeout()`, then `.output()`, `.status()`
    /// or `.spawn()`.
    pub fn command(&self, program: impl Into<String>) -> Command {
        Command::new(self.shared.clone(), Cmd::Argv(vec![program.into()]))
    }

    /// A command line for the template's shell: `sh -c LINE` (pipes,
    /// redirections and `$VARS` work; arguments added with `.arg()` are
    /// quoted for it).
    pub fn shell(&self, line: impl Into<String>) -> Command {
        Command::new(self.shared.clone(), Cmd::Shell(line.into()))
    }

    /// The sandbox's code contexts: stateful interpreters (Python,
    /// JavaScript, Bash) that keep variables between cells and return
    /// structured results — `create_context`, `run`, `list`, `interrupt`,
    /// `restart`, `remove`.
    pub fn code(&self) -> SandboxCode<'_> {
        SandboxCode {
            sandbox: &self.shared,
        }
    }

    /// Runs `code` as the next cell of the sandbox's default Python
    /// context (started on first use): `sandbox.run_code("x = 1")`, then
    /// `sandbox.run_code("x + 1")` has the main result `2`.
    pub fn run_code(&self, code: &str) -> Result<Execution> {
        self.code()
            .run_code(Language::Python, code, CellOptions::default())
    }

    /// Reads and changes the sandbox's files from the host.
    pub fn files(&self) -> Files<'_> {
        Files::new(&self.shared)
    }

    /// What the sandbox uses now. `cpu_percent` covers the time since the
    /// previous call. Cheap: no process runs, the kernel files stay open.
    /// `SandboxNotRunning` once the sandbox is gone.
    pub fn metrics(&self) -> Result<Metrics> {
        metrics::metrics(&self.shared)
    }

    /// Runs four checks and gives a verdict:
    ///
    /// - alive: the sandbox is in a live state and init runs;
    /// - responsive: init answers a trivial command (`:` through the
    ///   template's shell) within
    ///   [`RESPONSIVE_TIMEOUT`](crate::RESPONSIVE_TIMEOUT) — any answer,
    ///   even "no such program", shows init serving requests;
    /// - filesystem: the sandbox's root reads host-side through its root
    ///   fd;
    /// - resources: memory, disk and processes are each below
    ///   [`RESOURCE_LIMIT_FRACTION`](crate::RESOURCE_LIMIT_FRACTION) of
    ///   their limits (CPU is not checked: a busy CPU is work, not ill
    ///   health).
    ///
    /// **Unhealthy** if not alive or init did not answer; **Degraded** if
    /// paused, at `max_concurrent`, unreadable or near a limit; **Healthy**
    /// otherwise. Takes about the time of one command; at most 5 s when
    /// init is stuck.
    pub fn health(&self) -> Health {
        health::check(&self.shared)
    }

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
        pause::pause(&self.shared)
    }

    /// Lets a paused sandbox's processes run again; state Running, or
    /// Active if commands are in flight. Resuming a running sandbox does
    /// nothing.
    pub fn resume(&self) -> Result<()> {
        pause::resume(&self.shared)
    }

    /// Replaces the network rules (and bandwidth) of a sandbox created
    /// with a network: connections and lookups from now on follow them,
    /// open connections keep going. An agent's operator widens what it may
    /// reach as it discovers what it needs. The network cannot be turned
    /// off or on here (a sandbox created without one has only its own
    /// loopback): deny everything instead (`allow_out("0.0.0.0/32")` …),
    /// or create the sandbox with a network. The upstream resolver stays
    /// the one given at create.
    pub fn set_network(&self, network: Network) -> Result<()> {
        net::set_network(&self.shared, network)
    }

    /// The network option as created or last set.
    pub fn network(&self) -> Network {
        net::network(&self.shared)
    }

    /// Forwards TCP from a host address to a server in the sandbox
    /// listening on `port` (on 127.0.0.1, ::1 or the any-address) and
    /// returns that address: by default 127.0.0.1 (the runtime's
    /// [`NetworkConfig::expose_address`](crate::NetworkConfig)) with a
    /// port the kernel picks. Each call opens another listener; all close
    /// with the sandbox. Works whether or not the sandbox has a network;
    /// the bandwidth, if any, holds for this traffic too.
    pub fn expose_port(&self, port: u16) -> Result<SocketAddr> {
        net::expose_port(&self.shared, port, None)
    }

    /// [`Sandbox::expose_port`] on a host address of the caller's choice
    /// (`0.0.0.0:8080`, `[::1]:0`, …).
    pub fn expose_port_on(&self, port: u16, host: SocketAddr) -> Result<SocketAddr> {
        net::expose_port(&self.shared, port, Some(host))
    }

    /// The code interpreters the template offers (its settings), as data:
    /// language and the command that starts one.
    pub fn interpreters(&self) -> &[Interpreter] {
        &self.shared.template.settings.interpreters
    }

    /// The template's default command: its image's `Entrypoint` followed
    /// by its `Cmd`; `None` when the image has neither.
    pub fn default_command(&self) -> Option<Vec<String>> {
        template::default_command(&self.shared)
    }
}
