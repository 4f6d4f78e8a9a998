//! The bounds of every settings value and the error that names a field
//! outside them. The numbers match the runtime's own (`MAX_TIMEOUT`,
//! `limits::MIN_*`); `tests/templates.rs` checks that they agree.

use std::fmt;

/// The longest default lifetime a template may give its sandboxes, in
/// seconds: 30 days, the runtime's own `MAX_TIMEOUT`.
pub const MAX_TIMEOUT_SECS: u64 = 30 * 24 * 3600;

/// The longest a start command's readiness check may take, in seconds.
/// `create` blocks its caller that long; an hour is already generous for a
/// server to come up.
pub const MAX_READY_TIMEOUT_SECS: u64 = 3600;

/// The smallest CPU share: a CFS quota of 1 ms per 100 ms period (the
/// runtime's `limits::MIN_CPUS`).
pub const MIN_CPUS: f64 = 0.01;

/// The most CPUs a template may ask for: the kernel's own limit on the
/// number of CPUs (`CONFIG_NR_CPUS` at most 8192). The runtime caps a
/// template's count at the machine's online CPUs anyway.
pub const MAX_CPUS: f64 = 8192.0;

/// The smallest memory limit (the runtime's `limits::MIN_MEMORY`).
pub const MIN_MEMORY: u64 = 4 << 20;

/// The smallest writable layer (the runtime's `limits::MIN_DISK`).
pub const MIN_DISK: u64 = 1 << 20;

/// The largest memory and disk limits: 1 PiB, beyond any one machine, and
/// far enough below `u64::MAX` that sums over many sandboxes stay exact.
pub const MAX_BYTES: u64 = 1 << 50;

/// The most processes a template may allow: the kernel's `PID_MAX_LIMIT`
/// on 64-bit machines (the runtime also checks this machine's `pid_max`).
pub const MAX_PIDS: u64 = 4 << 20;

/// The longest command, path or interpreter argument: the kernel refuses
/// longer single arguments to execve (`MAX_ARG_STRLEN`).
pub const MAX_STRING: usize = 128 * 1024;

/// The most interpreters a template may list, and arguments per command.
pub const MAX_INTERPRETERS: usize = 64;
pub const MAX_ARGS: usize = 1024;

/// The largest settings document read (`sandlot.json`, the image label).
pub const MAX_SETTINGS_JSON: usize = 1 << 20;

/// Why template settings were refused: the field, as a path into the JSON
/// document (`limits.memory`, `start.ready_timeout_secs`,
/// `interpreters[1].command`), and what is wrong with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    /// Empty when the document as a whole is wrong (not JSON, too large).
    pub field: String,
    pub problem: SettingsProblem,
}

/// What is wrong with a settings field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingsProblem {
    /// Not what the field holds: a wrong type, an unknown field, a number
    /// that does not fit, a JSON syntax error (the parser's words).
    Syntax(String),
    /// Below the smallest value that can work.
    BelowMin { value: String, min: String },
    /// Above the largest value accepted.
    AboveMax { value: String, max: String },
    /// Anything else, in words (empty, not absolute, listed twice, …).
    Invalid(String),
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        match &self.problem {
            SettingsProblem::Syntax(what) | SettingsProblem::Invalid(what) => f.write_str(what),
            SettingsProblem::BelowMin { value, min } => {
                write!(f, "{value} is below the minimum of {min}")
            }
            SettingsProblem::AboveMax { value, max } => {
                write!(f, "{value} is above the maximum of {max}")
            }
        }
    }
}

impl std::error::Error for SettingsError {}

/// Checks one field at a time; the first bad one is the error.
pub(super) struct Check;

impl Check {
    pub(super) fn fail(
        field: impl Into<String>,
        problem: SettingsProblem,
    ) -> Result<(), SettingsError> {
        Err(SettingsError {
            field: field.into(),
            problem,
        })
    }

    pub(super) fn invalid(
        field: impl Into<String>,
        what: impl Into<String>,
    ) -> Result<(), SettingsError> {
        Self::fail(field, SettingsProblem::Invalid(what.into()))
    }

    /// `min..=max`, both shown with a unit.
    pub(super) fn range(
        field: &str,
        value: u64,
        min: u64,
        max: u64,
        show: impl Fn(u64) -> String,
    ) -> Result<(), SettingsError> {
        if value < min {
            return Self::fail(
                field,
                SettingsProblem::BelowMin {
                    value: value.to_string(),
                    min: show(min),
                },
            );
        }
        if value > max {
            return Self::fail(
                field,
                SettingsProblem::AboveMax {
                    value: value.to_string(),
                    max: show(max),
                },
            );
        }
        Ok(())
    }

    /// Text that becomes a command, argument or path: not empty (unless
    /// allowed), no NUL byte, at most [`MAX_STRING`] bytes.
    pub(super) fn text(field: &str, value: &str, may_be_empty: bool) -> Result<(), SettingsError> {
        if !may_be_empty && value.trim().is_empty() {
            return Self::invalid(field, "is empty");
        }
        if value.contains('\0') {
            return Self::invalid(field, "contains a NUL byte");
        }
        if value.len() > MAX_STRING {
            return Self::fail(
                field,
                SettingsProblem::AboveMax {
                    value: format!("{} bytes", value.len()),
                    max: format!("{MAX_STRING} bytes"),
                },
            );
        }
        Ok(())
    }

    pub(super) fn count(field: &str, len: usize, max: usize) -> Result<(), SettingsError> {
        if len > max {
            return Self::fail(
                field,
                SettingsProblem::AboveMax {
                    value: format!("{len} entries"),
                    max: format!("{max}"),
                },
            );
        }
        Ok(())
    }
}

pub(super) fn secs(n: u64) -> String {
    format!("{n} s")
}

pub(super) fn bytes(n: u64) -> String {
    format!("{n} bytes")
}
