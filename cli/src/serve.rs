//! `sandlot serve`: the E2B API on this machine (the sandlot-server crate),
//! so that the unmodified E2B SDKs run against sandlot.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use sandlot_server::{Server, ServerConfig};

#[derive(Args)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, default_value = sandlot_server::config::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// The key every control-plane request must carry (X-API-Key); the
    /// SDK's E2B_API_KEY.
    #[arg(long, env = "SANDLOT_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Read the API key from this file (its first line).
    #[arg(long, conflicts_with = "api_key")]
    api_key_file: Option<PathBuf>,
    /// Accept requests without an API key (loopback addresses only).
    #[arg(long, conflicts_with_all = ["api_key", "api_key_file"])]
    insecure_no_api_key: bool,
    /// Serve TLS with this PEM certificate (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's PEM private key (with --tls-cert).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve E2B_DOMAIN addressing: api.DOMAIN is the control plane,
    /// PORT-SANDBOXID.DOMAIN a sandbox's port (by the Host header).
    #[arg(long)]
    domain: Option<String>,
    /// Map an SDK template name to a sandlot template (repeatable);
    /// code-interpreter-v1=code-interpreter is preset.
    #[arg(long = "template-alias", value_name = "NAME=TEMPLATE")]
    template_alias: Vec<String>,
    /// Sandboxes alive at once (more are refused with 429).
    #[arg(long)]
    max_sandboxes: Option<usize>,
    /// The network of a sandbox whose create says nothing about it:
    /// `internet` (public addresses, as E2B gives) or `off` (loopback only).
    #[arg(long, value_parser = ["internet", "off"], default_value = "internet")]
    default_network: String,
    /// Sandboxes end with the server. Without it they are kept in the
    /// state dir (--state-dir) and outlive it: a restart (SIGTERM or
    /// SIGKILL) takes them over.
    #[arg(long)]
    ephemeral: bool,
}

/// Runs the server until SIGTERM or SIGINT; exit 0 then, 2 for bad flags,
/// 1 for a server that failed.
pub fn serve(data_dir: &Path, state_dir: &Path, args: ServeArgs) -> ExitCode {
    sandlot_server::init_logging();
    let config = match config(data_dir, state_dir, args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("sandlot serve: {e}");
            return ExitCode::from(2);
        }
    };
    let started = Server::bind(config).and_then(|server| {
        let addr = server.local_addr()?;
        let mut stdout = std::io::stdout();
        let _ = writeln!(stdout, "listening on {addr}");
        let _ = stdout.flush();
        server.run()
    });
    match started {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sandlot serve: {e}");
            ExitCode::from(match e {
                sandlot_server::ServerError::Config(_) => 2,
                _ => 1,
            })
        }
    }
}

fn config(data_dir: &Path, state_dir: &Path, args: ServeArgs) -> Result<ServerConfig, String> {
    let mut config = ServerConfig {
        listen: args.listen,
        insecure_no_api_key: args.insecure_no_api_key,
        domain: args.domain,
        data_dir: Some(data_dir.to_path_buf()),
        max_sandboxes: args.max_sandboxes,
        default_internet: args.default_network == "internet",
        state_dir: (!args.ephemeral).then(|| state_dir.to_path_buf()),
        ..ServerConfig::default()
    };
    config.api_key = match (args.api_key, args.api_key_file) {
        (Some(key), _) => Some(key),
        (None, Some(path)) => Some(
            std::fs::read_to_string(&path)
                .map_err(|e| format!("--api-key-file {}: {e}", path.display()))?
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.tls = Some(sandlot_server::config::TlsFiles { cert, key });
    }
    for alias in args.template_alias {
        let (name, template) = alias
            .split_once('=')
            .filter(|(n, t)| !n.is_empty() && !t.is_empty())
            .ok_or_else(|| format!("--template-alias {alias:?} is not NAME=TEMPLATE"))?;
        config
            .template_aliases
            .insert(name.to_string(), template.to_string());
    }
    Ok(config)
}
