//! What `serve` is told: the flags of `sandlot serve` (issue 12), parsed
//! here without clap so that the CLI crate keeps clap to itself and maps
//! its own flags onto [`ServerConfig`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::error::ServerError;

/// The default `--listen`: loopback only, port 3000 (the SDK's debug URL).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";

/// The default `--state-dir`: the CLI's too, so `sandlot ls` shows the
/// server's sandboxes.
pub const DEFAULT_STATE_DIR: &str = "/run/sandlot";

/// The code interpreter SDK's default template, mapped to sandlot's
/// code-interpreter template unless `--template-alias` says otherwise.
pub const CODE_INTERPRETER_ALIAS: (&str, &str) = ("code-interpreter-v1", "code-interpreter");

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The key every control-plane request must carry in `X-API-Key`.
    /// `None` refuses to start unless `insecure_no_api_key` is set.
    pub api_key: Option<String>,
    /// Serve without an API key (every key accepted). For tests on
    /// loopback only; `serve` refuses it on a non-loopback address.
    pub insecure_no_api_key: bool,
    /// `--tls-cert` and `--tls-key`: PEM files; both or neither.
    pub tls: Option<TlsFiles>,
    /// `--domain D`: `api.D` is the control plane and `PORT-ID.D` a
    /// sandbox's port, by the Host header.
    pub domain: Option<String>,
    /// `--template-alias NAME=TEMPLATE`: the SDK's template names mapped to
    /// sandlot templates (`code-interpreter-v1` → `code-interpreter` by
    /// default).
    pub template_aliases: BTreeMap<String, String>,
    /// The runtime's data dir (templates); the library's default if unset.
    pub data_dir: Option<PathBuf>,
    /// Sandboxes alive at once (the library's quota); unlimited if unset.
    pub max_sandboxes: Option<usize>,
    /// What a create that says nothing about the network gets
    /// (`--default-network internet|off`): the internet (public
    /// addresses over TCP, DNS through sandlot's resolver), as the
    /// reference gives, or loopback only.
    pub default_internet: bool,
    /// Where sandboxes are kept so that they outlive the server (a restart,
    /// SIGKILL included, takes them over); `None` (`--ephemeral`): they end
    /// with it.
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let mut template_aliases = BTreeMap::new();
        template_aliases.insert(
            CODE_INTERPRETER_ALIAS.0.to_string(),
            CODE_INTERPRETER_ALIAS.1.to_string(),
        );
        ServerConfig {
            listen: DEFAULT_LISTEN.parse().unwrap(),
            api_key: None,
            insecure_no_api_key: false,
            tls: None,
            domain: None,
            template_aliases,
            data_dir: None,
            max_sandboxes: None,
            default_internet: true,
            state_dir: Some(PathBuf::from(DEFAULT_STATE_DIR)),
        }
    }
}

pub const USAGE: &str = "usage: sandlot-server [--listen ADDR:PORT] (--api-key KEY | --api-key-file FILE | --insecure-no-api-key)
                      [--tls-cert FILE --tls-key FILE] [--domain DOMAIN]
                      [--template-alias NAME=TEMPLATE]... [--data-dir DIR] [--max-sandboxes N]
                      [--default-network internet|off] [--state-dir DIR | --ephemeral]
The API key may also come from SANDLOT_API_KEY.";

impl ServerConfig {
    /// Parses `sandlot serve`'s flags (without the program name).
    pub fn from_args<I, S>(args: I) -> Result<ServerConfig, ServerError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut config = ServerConfig::default();
        let mut args = args.into_iter().map(Into::into);
        let (mut cert, mut key) = (None, None);
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => {
                    (flag.to_string(), Some(value.to_string()))
                }
                _ => (arg.clone(), None),
            };
            let mut value = |name: &str| -> Result<String, ServerError> {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| ServerError::config(format!("{name} needs a value")))
            };
            match flag.as_str() {
                "--listen" => {
                    let v = value("--listen")?;
                    config.listen = v.parse().map_err(|_| {
                        ServerError::config(format!("--listen {v:?} is not ADDRESS:PORT"))
                    })?;
                }
                "--api-key" => config.api_key = Some(value("--api-key")?),
                "--api-key-file" => {
                    let path = value("--api-key-file")?;
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| ServerError::config(format!("--api-key-file {path}: {e}")))?;
                    config.api_key = Some(text.trim().to_string());
                }
                "--insecure-no-api-key" => config.insecure_no_api_key = true,
                "--tls-cert" => cert = Some(PathBuf::from(value("--tls-cert")?)),
                "--tls-key" => key = Some(PathBuf::from(value("--tls-key")?)),
                "--domain" => config.domain = Some(value("--domain")?),
                "--template-alias" => {
                    let v = value("--template-alias")?;
                    let (name, template) = v
                        .split_once('=')
                        .filter(|(n, t)| !n.is_empty() && !t.is_empty())
                        .ok_or_else(|| {
                            ServerError::config(format!(
                                "--template-alias {v:?} is not NAME=TEMPLATE"
                            ))
                        })?;
                    config
                        .template_aliases
                        .insert(name.to_string(), template.to_string());
                }
                "--data-dir" => config.data_dir = Some(PathBuf::from(value("--data-dir")?)),
                "--max-sandboxes" => {
                    let v = value("--max-sandboxes")?;
                    config.max_sandboxes = Some(v.parse().map_err(|_| {
                        ServerError::config(format!("--max-sandboxes {v:?} is not a number"))
                    })?);
                }
                "--default-network" => {
                    config.default_internet = parse_default_network(&value("--default-network")?)?
                }
                "--state-dir" => config.state_dir = Some(PathBuf::from(value("--state-dir")?)),
                "--ephemeral" => config.state_dir = None,
                "-h" | "--help" => return Err(ServerError::config(USAGE)),
                other => {
                    return Err(ServerError::config(format!(
                        "unknown argument {other:?}\n{USAGE}"
                    )))
                }
            }
        }
        config.tls = match (cert, key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => return Err(ServerError::config("--tls-cert and --tls-key go together")),
        };
        if config.api_key.is_none() {
            config.api_key = std::env::var("SANDLOT_API_KEY")
                .ok()
                .filter(|k| !k.is_empty());
        }
        Ok(config)
    }

    /// Checks what parsing alone cannot.
    pub fn validate(&self) -> Result<(), ServerError> {
        match (&self.api_key, self.insecure_no_api_key) {
            (Some(key), _) if key.is_empty() => {
                return Err(ServerError::config("the API key is empty"))
            }
            (None, false) => {
                return Err(ServerError::config(
                    "no API key: pass --api-key, --api-key-file or SANDLOT_API_KEY",
                ))
            }
            (None, true) if !self.listen.ip().is_loopback() => {
                return Err(ServerError::config(format!(
                    "--insecure-no-api-key is only allowed on a loopback address, not {}",
                    self.listen
                )))
            }
            _ => {}
        }
        if let Some(domain) = &self.domain {
            if domain.is_empty() || domain.starts_with('.') || domain.contains(['/', ':']) {
                return Err(ServerError::config(format!(
                    "--domain {domain:?} is not a domain name"
                )));
            }
        }
        Ok(())
    }

    /// The sandlot template an SDK template name stands for.
    pub fn resolve_template<'a>(&'a self, requested: &'a str) -> &'a str {
        self.template_aliases
            .get(requested)
            .map(String::as_str)
            .unwrap_or(requested)
    }
}

/// `--default-network`: `internet` or `off`.
pub fn parse_default_network(value: &str) -> Result<bool, ServerError> {
    match value {
        "internet" => Ok(true),
        "off" => Ok(false),
        other => Err(ServerError::config(format!(
            "--default-network {other:?} is not `internet` or `off`"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn flags_as_the_issue_names_them() {
        let config = ServerConfig::from_args([
            "--listen",
            "127.0.0.1:4000",
            "--api-key=k1",
            "--domain",
            "sandbox.test",
            "--template-alias",
            "base=mybase",
        ])
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(config.api_key.as_deref(), Some("k1"));
        assert_eq!(config.domain.as_deref(), Some("sandbox.test"));
        assert_eq!(config.resolve_template("base"), "mybase");
        assert_eq!(
            config.resolve_template("code-interpreter-v1"),
            "code-interpreter"
        );
        assert_eq!(config.resolve_template("other"), "other");
        assert_eq!(
            config.state_dir.as_deref(),
            Some(Path::new(DEFAULT_STATE_DIR))
        );
        assert!(config.default_internet);
        config.validate().unwrap();
        let config =
            ServerConfig::from_args(["--state-dir", "/tmp/s", "--default-network", "off"]).unwrap();
        assert_eq!(config.state_dir.as_deref(), Some(Path::new("/tmp/s")));
        assert!(!config.default_internet);
        assert_eq!(
            ServerConfig::from_args(["--ephemeral"]).unwrap().state_dir,
            None
        );
    }

    #[test]
    fn bad_flags_are_named() {
        for (args, needle) in [
            (vec!["--listen", "nowhere"], "--listen"),
            (vec!["--tls-cert", "a.pem"], "--tls-key"),
            (vec!["--template-alias", "x"], "NAME=TEMPLATE"),
            (vec!["--bogus"], "--bogus"),
            (vec!["--api-key"], "needs a value"),
            (vec!["--default-network", "on"], "--default-network"),
        ] {
            let err = ServerConfig::from_args(args).unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should name {needle}");
        }
    }

    #[test]
    fn no_key_is_refused_unless_insecure_on_loopback() {
        let mut config = ServerConfig::default();
        assert!(config.validate().is_err());
        config.insecure_no_api_key = true;
        config.validate().unwrap();
        config.listen = "0.0.0.0:3000".parse().unwrap();
        assert!(config.validate().is_err());
    }
}
