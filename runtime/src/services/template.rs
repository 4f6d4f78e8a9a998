//! What a template means for its sandboxes beyond its files.
//!
//! - The image's config (`Env`, `WorkingDir`, `User`) is applied to every
//!   command by `commands` and `users`; its `Entrypoint` + `Cmd` is the
//!   sandbox's default command ([`Sandbox::default_command`],
//!   [`Commands::run_default`]; the CLI runs it when given no command).
//! - sandlot's settings (`sandlot.json`): the default timeout and limits
//!   fill in what the caller did not choose ([`with_defaults`]); the start
//!   command runs in every new sandbox and `create` returns only once its
//!   readiness check passes ([`run_start`]); interpreters are data
//!   ([`Sandbox::interpreters`]) for whoever starts code contexts.

use std::fs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sandlot_rootfs::{Readiness, Settings, StartCommand};

use crate::engine::error::{Error, Result};
use crate::engine::lifecycle::{ProcessEvent, Reason};
use crate::engine::options::SandboxOptions;
use crate::engine::sandbox::SandboxShared;
use crate::kernel::limits::MachineLimits;
use crate::services::commands::{self, Cmd, CommandHandle, CommandResult, Commands, RunOptions};
use crate::services::files::Files;

/// How much of a failed start command's output the error quotes.
const OUTPUT_TAIL: usize = 2048;

/// The longest one run of a readiness check command may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The template's default timeout and limits for every field the caller
/// did not choose (see `SandboxOptions::explicit`). A template's CPU count
/// is capped at this machine's online CPUs: a template written for a big
/// machine still starts on a small one.
pub(crate) fn with_defaults(mut options: SandboxOptions, settings: &Settings) -> SandboxOptions {
    let chosen = options.explicit;
    if let (false, Some(secs)) = (chosen.timeout, settings.timeout_secs) {
        options.timeout = Duration::from_secs(secs);
    }
    let defaults = &settings.limits;
    let limits = &mut options.limits;
    if let (false, Some(cpus)) = (chosen.cpus, defaults.cpus) {
        limits.cpus = cpus.min(MachineLimits::current().online_cpus as f64);
    }
    if let (false, Some(memory)) = (chosen.memory, defaults.memory) {
        limits.memory = memory;
    }
    if let (false, Some(pids)) = (chosen.pids, defaults.pids) {
        limits.pids = pids;
    }
    if let (false, Some(disk)) = (chosen.disk, defaults.disk) {
        limits.disk = disk;
    }
    options
}

/// Runs the template's start command, if it has one, and waits until it is
/// ready. On failure the sandbox is destroyed and the error says why.
pub(crate) fn run_start(sandbox: &Arc<SandboxShared>) -> Result<()> {
    let Some(start) = sandbox.template.settings.start.clone() else {
        return Ok(());
    };
    wait_started(sandbox, &start).inspect_err(|e| {
        let _ = sandbox.destroy(Reason::SetupFailed(e.to_string()));
    })
}

fn start_failed(sandbox: &SandboxShared, reason: String) -> Error {
    Error::StartFailed {
        template: sandbox.template_name.clone(),
        reason,
    }
}

/// The last bytes of what the command wrote, for the error.
#[derive(Default)]
struct Tail(Vec<u8>);

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.0.extend_from_slice(chunk);
        if self.0.len() > OUTPUT_TAIL {
            self.0.drain(..self.0.len() - OUTPUT_TAIL);
        }
    }

    fn quoted(&self) -> String {
        let text = String::from_utf8_lossy(&self.0);
        let text = text.trim();
        if text.is_empty() {
            String::new()
        } else {
            format!("; its output ends with: {text}")
        }
    }
}

fn wait_started(sandbox: &Arc<SandboxShared>, start: &StartCommand) -> Result<()> {
    let timeout = Duration::from_secs(start.ready_timeout_secs);
    let deadline = Instant::now().checked_add(timeout).ok_or_else(|| {
        start_failed(
            sandbox,
            format!("ready timeout of {timeout:?} is out of range"),
        )
    })?;
    let handle: CommandHandle =
        commands::spawn_start_command(sandbox, Cmd::Shell(start.command.clone())).map_err(|e| {
            start_failed(sandbox, format!("{:?} did not start: {e}", start.command))
        })?;
    let Some(ready) = &start.ready else {
        // No check: started is ready. Dropping the handle lets the
        // command run on; its output is discarded from now on.
        return Ok(());
    };
    let mut tail = Tail::default();
    let mut exit = None;
    let mut pause = Duration::from_millis(2);
    loop {
        for event in handle.events().try_iter() {
            match event {
                ProcessEvent::Stdout(chunk) | ProcessEvent::Stderr(chunk) => tail.push(&chunk),
                ProcessEvent::Exit(e) => exit = Some(e),
            }
        }
        if is_ready(sandbox, ready, deadline)? {
            return Ok(());
        }
        if let Some(exit) = exit {
            // A command that finished (a setup script) may still have made
            // itself ready: the check above ran after its exit.
            return Err(start_failed(
                sandbox,
                format!(
                    "{:?} exited with status {} before it was ready ({}){}",
                    start.command,
                    exit.shell_code(),
                    describe(ready),
                    tail.quoted()
                ),
            ));
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(start_failed(
                sandbox,
                format!(
                    "{:?} was not ready after {timeout:?} ({}){}",
                    start.command,
                    describe(ready),
                    tail.quoted()
                ),
            ));
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn describe(ready: &Readiness) -> String {
    match ready {
        Readiness::File(path) => format!("waiting for file {path}"),
        Readiness::Port(port) => format!("waiting for a listener on port {port}"),
        Readiness::Command(cmd) => format!("waiting for {cmd:?} to succeed"),
    }
}

fn is_ready(sandbox: &Arc<SandboxShared>, ready: &Readiness, deadline: Instant) -> Result<bool> {
    match ready {
        Readiness::File(path) => Files::new(sandbox).exists(path),
        Readiness::Port(port) => {
            let pid = sandbox.init_pid().ok_or_else(|| sandbox.not_running())?;
            Ok(listening(pid, *port))
        }
        Readiness::Command(cmd) => {
            let left = deadline.saturating_duration_since(Instant::now());
            let options =
                RunOptions::default().timeout(left.clamp(Duration::from_millis(1), CHECK_TIMEOUT));
            let result: CommandResult = commands::run(sandbox, Cmd::from(cmd.as_str()), options)?;
            Ok(result.success())
        }
    }
}

/// Whether a TCP socket listens on `port` in the network namespace of
/// `pid` — read from the host's /proc/<pid>/net/tcp{,6}, which show that
/// process's namespace: no process has to enter the sandbox to check.
fn listening(pid: i32, port: u16) -> bool {
    ["tcp", "tcp6"].iter().any(|table| {
        fs::read_to_string(format!("/proc/{pid}/net/{table}"))
            .map(|text| listens_in_table(&text, port))
            .unwrap_or(false)
    })
}

/// Parses a /proc/net/tcp table: `sl local_address rem_address st …` with
/// addresses as `HEXADDR:HEXPORT`; state `0A` is LISTEN.
fn listens_in_table(text: &str, port: u16) -> bool {
    text.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1);
        let state = fields.nth(1);
        let local_port = local
            .and_then(|l| l.rsplit_once(':'))
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        local_port == Some(port) && state == Some("0A")
    })
}

/// The template's default command: its image's `Entrypoint` followed by
/// its `Cmd`; `None` when the image has neither.
pub(crate) fn default_command(sandbox: &SandboxShared) -> Option<Vec<String>> {
    let config = &sandbox.template.config;
    let argv: Vec<String> = config
        .entrypoint
        .iter()
        .chain(&config.cmd)
        .cloned()
        .collect();
    (!argv.is_empty()).then_some(argv)
}

impl Commands<'_> {
    fn default_cmd(&self) -> Result<Cmd> {
        default_command(self.sandbox).map(Cmd::Argv).ok_or_else(|| {
            Error::invalid(
                "command",
                format!(
                    "template {:?} has no default command (no Entrypoint or Cmd)",
                    self.sandbox.template_name
                ),
            )
        })
    }

    /// Runs the template's default command
    /// ([`Sandbox::default_command`](crate::Sandbox::default_command)) to
    /// completion.
    pub fn run_default(&self, options: RunOptions) -> Result<CommandResult> {
        self.run(self.default_cmd()?, options)
    }

    /// Starts the template's default command.
    pub fn spawn_default(&self, options: RunOptions) -> Result<CommandHandle> {
        self.spawn(self.default_cmd()?, options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandlot_rootfs::DefaultLimits;

    #[test]
    fn template_defaults_fill_only_what_the_caller_left() {
        let settings = Settings {
            timeout_secs: Some(42),
            limits: DefaultLimits {
                cpus: Some(1000.0),
                memory: Some(64 << 20),
                pids: Some(7),
                disk: Some(8 << 20),
            },
            ..Settings::default()
        };
        let applied = with_defaults(SandboxOptions::default(), &settings);
        assert_eq!(applied.timeout, Duration::from_secs(42));
        assert_eq!(applied.limits.memory, 64 << 20);
        assert_eq!(applied.limits.pids, 7);
        assert_eq!(applied.limits.disk, 8 << 20);
        assert_eq!(
            applied.limits.cpus,
            MachineLimits::current().online_cpus as f64
        );

        let chosen = SandboxOptions::default()
            .timeout(Duration::from_secs(5))
            .disk(2 << 20);
        let applied = with_defaults(chosen, &settings);
        assert_eq!(applied.timeout, Duration::from_secs(5));
        assert_eq!(applied.limits.disk, 2 << 20);
        assert_eq!(
            applied.limits.memory,
            64 << 20,
            "not chosen: the template's"
        );

        let all = SandboxOptions::default().limits(crate::kernel::limits::Limits::default());
        let applied = with_defaults(all, &settings);
        assert_eq!(applied.limits, crate::kernel::limits::Limits::default());
        assert_eq!(applied.timeout, Duration::from_secs(42));
    }

    #[test]
    fn listeners_are_found_in_proc_net_tcp() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
   1: 0100007F:1F41 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n";
        assert!(listens_in_table(table, 8000));
        assert!(!listens_in_table(table, 8001), "established, not listening");
        assert!(!listens_in_table(table, 80));
    }
}
