//! sandlot's own per-template settings (`sandlot.json` beside the
//! template, or an image label): plain data here — numbers and strings, no
//! runtime types — so this crate stays independent of the runtime, which
//! turns them into its `Limits`, deadlines and code contexts.
//!
//! Settings are hostile input as much as an image is: every number is
//! checked against a bound ([`bounds`]) before anything computes with it,
//! and errors name the field.

mod bounds;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use bounds::*;
use bounds::{bytes, secs, Check};

use crate::Error;

/// An image config label holding [`Settings`] as JSON. An image built for
/// sandlot (scripts/build-template.sh does this) carries its interpreters
/// with it; settings given at import time take precedence.
pub const SETTINGS_LABEL: &str = "dev.sandlot.settings";

/// sandlot's own per-template settings, stored as `sandlot.json` in the
/// template's directory. Every field is optional: the runtime's defaults
/// apply to what is unset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Default sandbox lifetime in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    #[serde(skip_serializing_if = "DefaultLimits::is_empty")]
    pub limits: DefaultLimits,
    /// Run in every new sandbox before it counts as ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<StartCommand>,
    /// Code interpreters the template offers, by language.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub interpreters: Vec<Interpreter>,
}

/// Default resource limits of a template's sandboxes, as plain numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DefaultLimits {
    /// CPUs (fractions allowed: 0.5 is half a core).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Maximum number of processes and threads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// Writable disk (the upper layer) in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<u64>,
}

impl DefaultLimits {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A command started in every new sandbox of the template (a server, say),
/// and how to tell that it is ready.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartCommand {
    /// Run with the template's shell (`shell -c command`).
    pub command: String,
    /// Without a check the sandbox is ready as soon as the command started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<Readiness>,
    /// How long the readiness check may take before creation fails.
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout_secs: u64,
}

fn default_ready_timeout() -> u64 {
    30
}

/// When a start command counts as ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Readiness {
    /// This path exists inside the sandbox.
    File(String),
    /// Something accepts TCP connections on this port on the sandbox's
    /// loopback.
    Port(u16),
    /// This shell command exits 0.
    Command(String),
}

/// A code interpreter: the runtime starts `command` for a stateful code
/// context of `language` (e.g. `python` → `["python3", "-u", "-i"]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interpreter {
    pub language: String,
    pub command: Vec<String>,
}

impl Settings {
    /// The interpreter offered for `language`, if any.
    pub fn interpreter(&self, language: &str) -> Option<&Interpreter> {
        self.interpreters.iter().find(|i| i.language == language)
    }

    /// Rejects values no runtime could honour: every number within its
    /// bounds (the constants of this module, which match the runtime's),
    /// every command and path usable. The error names the field.
    pub fn validate(&self) -> Result<(), Error> {
        self.check().map_err(Error::settings)
    }

    fn check(&self) -> Result<(), SettingsError> {
        if let Some(timeout) = self.timeout_secs {
            Check::range("timeout_secs", timeout, 1, MAX_TIMEOUT_SECS, secs)?;
        }
        self.limits.check()?;
        if let Some(start) = &self.start {
            start.check()?;
        }
        Check::count("interpreters", self.interpreters.len(), MAX_INTERPRETERS)?;
        for (i, interp) in self.interpreters.iter().enumerate() {
            let field = format!("interpreters[{i}]");
            Check::text(&format!("{field}.language"), &interp.language, false)?;
            if interp.language.len() > 64 || interp.language.chars().any(char::is_control) {
                Check::invalid(
                    format!("{field}.language"),
                    "must be a short name without control characters",
                )?;
            }
            if interp.command.is_empty() {
                Check::invalid(format!("{field}.command"), "is empty")?;
            }
            Check::count(&format!("{field}.command"), interp.command.len(), MAX_ARGS)?;
            for (j, arg) in interp.command.iter().enumerate() {
                Check::text(&format!("{field}.command[{j}]"), arg, j > 0)?;
            }
            if self.interpreters[..i]
                .iter()
                .any(|other| other.language == interp.language)
            {
                Check::invalid(
                    format!("{field}.language"),
                    format!("{:?} is listed twice", interp.language),
                )?;
            }
        }
        Ok(())
    }

    /// Parses and validates settings from JSON (`sandlot.json`, the image
    /// label). Errors name the field, for syntax errors too.
    pub fn from_json(json: &str) -> Result<Settings, Error> {
        Self::parse(json).map_err(Error::settings)
    }

    pub(crate) fn parse(json: &str) -> Result<Settings, SettingsError> {
        if json.len() > MAX_SETTINGS_JSON {
            return Err(SettingsError {
                field: String::new(),
                problem: SettingsProblem::AboveMax {
                    value: format!("a document of {} bytes", json.len()),
                    max: format!("{MAX_SETTINGS_JSON} bytes"),
                },
            });
        }
        let syntax = |field: String, e: &serde_json::Error| SettingsError {
            field,
            problem: SettingsProblem::Syntax(e.to_string()),
        };
        let mut de = serde_json::Deserializer::from_str(json);
        let settings: Settings = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { String::new() } else { path };
            syntax(field, e.inner())
        })?;
        de.end().map_err(|e| syntax(String::new(), &e))?;
        settings.check()?;
        Ok(settings)
    }
}

impl DefaultLimits {
    fn check(&self) -> Result<(), SettingsError> {
        if let Some(cpus) = self.cpus {
            if !(cpus.is_finite() && (MIN_CPUS..=MAX_CPUS).contains(&cpus)) {
                let problem = if cpus.is_finite() && cpus > MAX_CPUS {
                    SettingsProblem::AboveMax {
                        value: cpus.to_string(),
                        max: MAX_CPUS.to_string(),
                    }
                } else {
                    SettingsProblem::BelowMin {
                        value: cpus.to_string(),
                        min: MIN_CPUS.to_string(),
                    }
                };
                Check::fail("limits.cpus", problem)?;
            }
        }
        if let Some(memory) = self.memory {
            Check::range("limits.memory", memory, MIN_MEMORY, MAX_BYTES, bytes)?;
        }
        if let Some(pids) = self.pids {
            Check::range("limits.pids", pids, 1, MAX_PIDS, |n| n.to_string())?;
        }
        if let Some(disk) = self.disk {
            Check::range("limits.disk", disk, MIN_DISK, MAX_BYTES, bytes)?;
        }
        Ok(())
    }
}

impl StartCommand {
    fn check(&self) -> Result<(), SettingsError> {
        Check::text("start.command", &self.command, false)?;
        Check::range(
            "start.ready_timeout_secs",
            self.ready_timeout_secs,
            1,
            MAX_READY_TIMEOUT_SECS,
            secs,
        )?;
        match &self.ready {
            Some(Readiness::File(path)) => {
                Check::text("start.ready.file", path, false)?;
                if !path.starts_with('/') {
                    Check::invalid("start.ready.file", format!("{path:?} is not absolute"))?;
                }
                if path.len() > 4096 {
                    Check::invalid("start.ready.file", "is longer than PATH_MAX (4096)")?;
                }
            }
            Some(Readiness::Port(port)) => {
                Check::range("start.ready.port", u64::from(*port), 1, 65535, |n| {
                    n.to_string()
                })?;
            }
            Some(Readiness::Command(cmd)) => Check::text("start.ready.command", cmd, false)?,
            None => {}
        }
        Ok(())
    }
}
