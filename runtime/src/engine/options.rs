//! What a caller asks for when creating a sandbox, validated up front.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::engine::error::{Error, Result};
use crate::engine::network::Network;
use crate::kernel::limits::{ExecLimits, Limits};
use crate::kernel::seccomp::SeccompProfile;

/// Like the reference service: a sandbox lives 5 minutes unless told
/// otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Longer than any sane sandbox; anything above is a caller's mistake.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);

/// A sandbox's life, in one place (ARCHITECTURE.md, "Lifecycle"):
///
/// - **Lifetime**: `timeout` from creation (default 5 minutes), the hard
///   end. Only [`Sandbox::set_timeout`](crate::Sandbox::set_timeout) moves
///   it; connecting to a sandbox (`Runtime::connect`, also from another
///   process) never shortens or resets it. At the end the sandbox is
///   destroyed, or paused with [`TimeoutAction::Pause`].
/// - **Idle timeout** (`idle_timeout`, off by default): the sandbox is
///   destroyed once nothing happened in it for that long. Activity is a
///   command starting or ending, a files operation, a code cell, and
///   [`Sandbox::touch`](crate::Sandbox::touch); a command in flight is
///   activity for as long as it runs. `is_alive()`, `info()`, `list()` and
///   metrics are not activity.
/// - **Pause**: with `pause_clock` both clocks stand still while paused;
///   without, they run on (a paused sandbox may end).
/// - **Graceful stop**: [`Sandbox::stop`](crate::Sandbox::stop) — Stopping,
///   no new commands, SIGTERM to every process, up to the grace for them
///   to end, SIGKILL, teardown. [`Sandbox::kill`](crate::Sandbox::kill) is
///   immediate.
/// - **Every end has a reason** ([`Reason`](crate::Reason)): in the
///   Destroyed event, in `info()` afterwards, and in the runtime's
///   tombstones for a while (`RuntimeBuilder::tombstones`).
/// - **Persistent runtimes** (`RuntimeBuilder::persistent`): all of this
///   holds with no process of sandlot running — a monitor process per
///   sandbox enforces the lifetime and the idle timeout.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    pub template: String,
    pub timeout: Duration,
    /// Destroy the sandbox after this long without activity (see above).
    pub idle_timeout: Option<Duration>,
    /// What the end of the lifetime does: destroy (default) or pause.
    pub on_timeout: TimeoutAction,
    pub metadata: BTreeMap<String, String>,
    /// Variables every command of the sandbox starts with.
    pub env: Vec<(String, String)>,
    /// Defaults to the sandbox id.
    pub hostname: Option<String>,
    /// CPU, memory, pids, writable space, open files (see [`Limits`]).
    pub limits: Limits,
    /// The seccomp profile; `None` is the runtime's default profile.
    pub seccomp: Option<SeccompProfile>,
    /// Per-command time, output and concurrency limits (see [`ExecLimits`]).
    pub exec_limits: ExecLimits,
    /// Whether the sandbox's lifetime clock stops while it is paused (see
    /// [`Sandbox::pause`](crate::Sandbox::pause)). Default `false`: the
    /// timeout keeps running and may destroy a paused sandbox.
    pub pause_clock: bool,
    /// What the sandbox may reach beyond its own loopback (default
    /// [`Network::off`]: nothing; see [`Network`]).
    pub network: Network,
    /// Which of `timeout` and `limits` the caller chose: the template's
    /// settings (`sandlot.json`) fill in the others. The builder methods
    /// mark what they set; code that assigns the fields directly marks
    /// them here too.
    pub explicit: Explicit,
}

/// What happens when a sandbox's lifetime runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeoutAction {
    /// Destroy it (the default).
    #[default]
    Kill,
    /// Pause it, with its clock stopped, instead (the reference's
    /// `autoPause`). It keeps its files and processes, frozen, until it is
    /// resumed — which gives it its whole `timeout` again — or killed.
    Pause,
}

/// The fields of [`SandboxOptions`] a caller chose, as opposed to left at
/// their defaults for the template's settings to fill in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Explicit {
    pub timeout: bool,
    pub cpus: bool,
    pub memory: bool,
    pub pids: bool,
    pub disk: bool,
}

impl Explicit {
    /// Every field chosen: the template's settings change nothing.
    pub const ALL: Explicit = Explicit {
        timeout: true,
        cpus: true,
        memory: true,
        pids: true,
        disk: true,
    };
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            template: sandlot_rootfs::BASE_NAME.into(),
            timeout: DEFAULT_TIMEOUT,
            idle_timeout: None,
            on_timeout: TimeoutAction::Kill,
            metadata: BTreeMap::new(),
            env: Vec::new(),
            hostname: None,
            limits: Limits::default(),
            seccomp: None,
            exec_limits: ExecLimits::default(),
            pause_clock: false,
            network: Network::off(),
            explicit: Explicit::default(),
        }
    }
}

pub(crate) fn validate_timeout(timeout: Duration) -> Result<()> {
    if timeout.is_zero() {
        return Err(Error::invalid("timeout", "must be above zero"));
    }
    if timeout > MAX_TIMEOUT {
        return Err(Error::invalid(
            "timeout",
            format!("{timeout:?} exceeds the maximum of {MAX_TIMEOUT:?}"),
        ));
    }
    Ok(())
}

/// A command's (or a code cell's) time limit: above zero, at most
/// [`MAX_TIMEOUT`].
pub(crate) fn validate_command_timeout(timeout: Duration) -> Result<()> {
    if timeout.is_zero() {
        return Err(Error::invalid(
            "timeout",
            "a command timeout must be above zero",
        ));
    }
    if timeout > MAX_TIMEOUT {
        return Err(Error::invalid(
            "timeout",
            format!("a command timeout of {timeout:?} exceeds the maximum of {MAX_TIMEOUT:?}"),
        ));
    }
    Ok(())
}

pub(crate) fn validate_metadata(metadata: &BTreeMap<String, String>) -> Result<()> {
    for (key, value) in metadata {
        if key.is_empty() {
            return Err(Error::invalid("metadata", "a key is empty"));
        }
        if key.len() > 256 || value.len() > 4096 {
            return Err(Error::invalid(
                "metadata",
                format!("entry {key:?} is too long (keys up to 256 bytes, values up to 4096)"),
            ));
        }
    }
    Ok(())
}

pub(crate) fn validate_env_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains(['=', '\0']) {
        return Err(Error::invalid("env", format!("bad variable name {name:?}")));
    }
    Ok(())
}

impl SandboxOptions {
    pub fn template(name: impl Into<String>) -> Self {
        SandboxOptions {
            template: name.into(),
            ..SandboxOptions::default()
        }
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self.explicit.timeout = true;
        self
    }

    /// Destroy the sandbox after `idle` without activity (see
    /// [`SandboxOptions`]).
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = Some(idle);
        self
    }

    /// What the end of the lifetime does (default: destroy).
    pub fn on_timeout(mut self, action: TimeoutAction) -> Self {
        self.on_timeout = action;
        self
    }

    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = Some(hostname.into());
        self
    }

    /// All limits at once: none of the template's default limits apply.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self.explicit = Explicit {
            timeout: self.explicit.timeout,
            ..Explicit::ALL
        };
        self
    }

    /// Bytes of writable space (overlay upper layer, /tmp, /dev/shm).
    pub fn disk(mut self, bytes: u64) -> Self {
        self.limits.disk = bytes;
        self.explicit.disk = true;
        self
    }

    /// Ignores the template's default timeout and limits (`sandlot.json`):
    /// what these options say is what the sandbox gets.
    pub fn without_template_defaults(mut self) -> Self {
        self.explicit = Explicit::ALL;
        self
    }

    pub fn exec_limits(mut self, exec_limits: ExecLimits) -> Self {
        self.exec_limits = exec_limits;
        self
    }

    /// `true`: the timeout (and every command's time limit) stands still
    /// while the sandbox is paused.
    pub fn pause_clock(mut self, stop: bool) -> Self {
        self.pause_clock = stop;
        self
    }

    /// What the sandbox may reach: [`Network::internet`], rules
    /// ([`Network::allow_out`], [`Network::deny_out`]), an upstream
    /// resolver, a bandwidth. Default off (loopback only).
    pub fn network(mut self, network: Network) -> Self {
        self.network = network;
        self
    }

    /// Replaces the default seccomp profile for this sandbox (extend
    /// [`SeccompProfile::default`] to keep the default denials).
    pub fn seccomp(mut self, profile: SeccompProfile) -> Self {
        self.seccomp = Some(profile);
        self
    }

    pub fn validate(&self) -> Result<()> {
        if self.template.is_empty() {
            return Err(Error::invalid("template", "name is empty"));
        }
        validate_timeout(self.timeout)?;
        if let Some(idle) = self.idle_timeout {
            if idle.is_zero() || idle > MAX_TIMEOUT {
                return Err(Error::invalid(
                    "idle_timeout",
                    format!("{idle:?} is not between zero and {MAX_TIMEOUT:?}"),
                ));
            }
        }
        validate_metadata(&self.metadata)?;
        for (name, value) in &self.env {
            validate_env_name(name)?;
            if value.contains('\0') {
                return Err(Error::invalid(
                    "env",
                    format!("value of {name} contains a NUL byte"),
                ));
            }
        }
        if let Some(hostname) = &self.hostname {
            let valid = !hostname.is_empty()
                && hostname.len() <= 63
                && hostname
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !hostname.starts_with('-');
            if !valid {
                return Err(Error::invalid(
                    "hostname",
                    format!("{hostname:?} is not a hostname (1-63 letters, digits, '-')"),
                ));
            }
        }
        self.limits.validate()?;
        self.exec_limits.validate()?;
        self.network.validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let options = SandboxOptions::default();
        assert_eq!(options.timeout, Duration::from_secs(300));
        options.validate().unwrap();
    }

    #[test]
    fn bad_options_name_the_option() {
        let cases = [
            (SandboxOptions::default().timeout(Duration::ZERO), "timeout"),
            (
                SandboxOptions::default().timeout(Duration::from_secs(u64::MAX / 2)),
                "timeout",
            ),
            (SandboxOptions::default().metadata("", "x"), "metadata"),
            (SandboxOptions::default().env("A=B", "x"), "env"),
            (SandboxOptions::default().env("", "x"), "env"),
            (SandboxOptions::default().hostname("bad host"), "hostname"),
            (SandboxOptions::template(""), "template"),
            (
                SandboxOptions::default().idle_timeout(Duration::ZERO),
                "idle_timeout",
            ),
        ];
        for (options, option) in cases {
            match options.validate() {
                Err(Error::InvalidOptions { option: got, .. }) => assert_eq!(got, option),
                other => panic!("{option}: expected InvalidOptions, got {other:?}"),
            }
        }
    }
}
