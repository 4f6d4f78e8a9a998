//! What a template tells the runtime besides its files: the image's own
//! configuration ([`TemplateConfig`], from the OCI config) and sandlot's
//! settings ([`Settings`], `sandlot.json` beside the template).
//!
//! Settings are plain data here — numbers and strings, no runtime types —
//! so this crate stays independent of the runtime; the runtime turns them
//! into its `Limits`, deadlines and code contexts.

use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};

use crate::{Error, TemplateConfig};

/// The PATH a sandbox gets when its template does not set one (the same
/// default Docker applies to images without PATH).
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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

    /// Rejects values no runtime could honour (zero or negative limits, an
    /// interpreter without a command, …).
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |what: String| Err(Error::InvalidSettings(what));
        if self.timeout_secs == Some(0) {
            return bad("timeout_secs must be positive".into());
        }
        let limits = &self.limits;
        if let Some(cpus) = limits.cpus {
            if !(cpus.is_finite() && cpus > 0.0) {
                return bad(format!("limits.cpus must be a positive number, not {cpus}"));
            }
        }
        for (name, value) in [
            ("memory", limits.memory),
            ("pids", limits.pids),
            ("disk", limits.disk),
        ] {
            if value == Some(0) {
                return bad(format!("limits.{name} must be positive"));
            }
        }
        if let Some(start) = &self.start {
            if start.command.trim().is_empty() {
                return bad("start.command is empty".into());
            }
            if start.ready_timeout_secs == 0 {
                return bad("start.ready_timeout_secs must be positive".into());
            }
            match &start.ready {
                Some(Readiness::File(path)) if !path.starts_with('/') => {
                    return bad(format!("start.ready file {path:?} must be absolute"));
                }
                Some(Readiness::Port(0)) => return bad("start.ready port must not be 0".into()),
                Some(Readiness::Command(cmd)) if cmd.trim().is_empty() => {
                    return bad("start.ready command is empty".into());
                }
                _ => {}
            }
        }
        for (i, interp) in self.interpreters.iter().enumerate() {
            if interp.language.is_empty() {
                return bad(format!("interpreters[{i}] has no language"));
            }
            if interp.command.is_empty() || interp.command[0].is_empty() {
                return bad(format!("interpreter {:?} has no command", interp.language));
            }
            if self.interpreters[..i]
                .iter()
                .any(|other| other.language == interp.language)
            {
                return bad(format!("interpreter {:?} is listed twice", interp.language));
            }
        }
        Ok(())
    }

    /// Parses and validates settings from JSON (`sandlot.json`, the image
    /// label).
    pub fn from_json(json: &str) -> Result<Settings, Error> {
        let settings: Settings =
            serde_json::from_str(json).map_err(|e| Error::InvalidSettings(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }
}

/// The defaults a directory template gets: nothing but a PATH.
pub(crate) fn plain_config() -> TemplateConfig {
    TemplateConfig {
        env: vec![("PATH".into(), DEFAULT_PATH.into())],
        cmd: Vec::new(),
        entrypoint: Vec::new(),
        working_dir: None,
        user: "root".into(),
        shell: "/bin/sh".into(),
    }
}

/// Maps an image config onto a template config. Unset or empty fields get
/// what Docker gives them: PATH defaults, the user is root, no working dir.
pub(crate) fn from_image(image: &ImageConfiguration) -> TemplateConfig {
    let mut config = plain_config();
    let Some(c) = image.config() else {
        return config;
    };
    if let Some(env) = c.env() {
        config.env = env
            .iter()
            .map(|entry| match entry.split_once('=') {
                Some((key, value)) => (key.to_string(), value.to_string()),
                None => (entry.clone(), String::new()),
            })
            .collect();
        if !config.env.iter().any(|(key, _)| key == "PATH") {
            config.env.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
        }
    }
    config.cmd = c.cmd().clone().unwrap_or_default();
    config.entrypoint = c.entrypoint().clone().unwrap_or_default();
    config.working_dir = c.working_dir().clone().filter(|dir| !dir.is_empty());
    if let Some(user) = c.user().as_deref().filter(|user| !user.is_empty()) {
        config.user = user.to_string();
    }
    config
}

/// Settings an image carries in its [`SETTINGS_LABEL`] label.
pub(crate) fn settings_from_image(image: &ImageConfiguration) -> Result<Option<Settings>, Error> {
    let label = image
        .config()
        .as_ref()
        .and_then(|c| c.labels().as_ref())
        .and_then(|labels| labels.get(SETTINGS_LABEL));
    match label {
        Some(json) => Settings::from_json(json)
            .map(Some)
            .map_err(|e| Error::InvalidSettings(format!("image label {SETTINGS_LABEL}: {e}"))),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_through_json() {
        let settings = Settings {
            timeout_secs: Some(600),
            limits: DefaultLimits {
                cpus: Some(0.5),
                memory: Some(512 << 20),
                pids: Some(128),
                disk: Some(1 << 30),
            },
            start: Some(StartCommand {
                command: "python3 -m http.server 8000".into(),
                ready: Some(Readiness::Port(8000)),
                ready_timeout_secs: 10,
            }),
            interpreters: vec![Interpreter {
                language: "python".into(),
                command: vec!["python3".into(), "-u".into(), "-i".into()],
            }],
        };
        let json = serde_json::to_string(&settings).unwrap();
        assert!(json.contains(r#""ready":{"port":8000}"#), "{json}");
        assert_eq!(Settings::from_json(&json).unwrap(), settings);
        assert_eq!(
            settings.interpreter("python").unwrap().command[0],
            "python3"
        );
        assert_eq!(Settings::from_json("{}").unwrap(), Settings::default());
    }

    #[test]
    fn settings_reject_nonsense() {
        for json in [
            r#"{"timeout_secs":0}"#,
            r#"{"limits":{"cpus":-1}}"#,
            r#"{"limits":{"memory":0}}"#,
            r#"{"start":{"command":" "}}"#,
            r#"{"start":{"command":"x","ready":{"file":"relative"}}}"#,
            r#"{"interpreters":[{"language":"python","command":[]}]}"#,
            r#"{"interpreters":[{"language":"py","command":["a"]},{"language":"py","command":["b"]}]}"#,
            r#"{"timeout":5}"#,
        ] {
            assert!(
                matches!(Settings::from_json(json), Err(Error::InvalidSettings(_))),
                "{json} was accepted"
            );
        }
    }

    #[test]
    fn image_config_maps_onto_template_config() {
        let image: ImageConfiguration = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux",
                "config":{"Env":["LANG=C.UTF-8","EMPTY="],"Cmd":["-c","print(1)"],
                          "Entrypoint":["python3"],"WorkingDir":"/srv","User":"1000:1000",
                          "Labels":{"dev.sandlot.settings":"{\"timeout_secs\":60}"}},
                "rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        let config = from_image(&image);
        assert_eq!(config.env[0], ("PATH".into(), DEFAULT_PATH.into()));
        assert!(config.env.contains(&("EMPTY".into(), String::new())));
        assert_eq!(config.entrypoint, ["python3"]);
        assert_eq!(config.cmd, ["-c", "print(1)"]);
        assert_eq!(config.working_dir.as_deref(), Some("/srv"));
        assert_eq!(config.user, "1000:1000");
        assert_eq!(
            settings_from_image(&image).unwrap().unwrap().timeout_secs,
            Some(60)
        );

        let bare: ImageConfiguration = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        assert_eq!(from_image(&bare), plain_config());
        assert_eq!(settings_from_image(&bare).unwrap(), None);
    }
}
