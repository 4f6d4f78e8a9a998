//! sandlot-server: E2B's API on one machine, over the sandlot library, so
//! that the unmodified E2B SDKs (Python and JavaScript, base and code
//! interpreter) run against local sandboxes.
//!
//! One listener serves HTTP/1.1 and HTTP/2 (h2c, and h2 over TLS): the
//! control plane (REST, [`control`]), each sandbox's envd (Connect and
//! `/files`, [`envd`]) and code interpreter ([`code`]), chosen per request
//! by [`http`]. The library is synchronous; handlers call it on blocking
//! threads and stream through bounded channels. PROTOCOL.md describes the
//! wire formats.
//!
//! ```no_run
//! let mut config = sandlot_server::ServerConfig::default();
//! config.api_key = Some("secret".into());
//! sandlot_server::serve(config)?;
//! # Ok::<(), sandlot_server::ServerError>(())
//! ```

#![deny(unsafe_code)]

pub mod code;
pub mod config;
pub mod connect;
pub mod control;
pub mod envd;
pub mod error;
pub mod http;
mod persist;
mod ports;
pub mod proto;
mod serve;
pub mod state;
mod tls;

pub use config::ServerConfig;
pub use error::{ApiError, ServerError};
pub use serve::{serve, Server};

/// One line per request on stderr, at the level `SANDLOT_LOG` names
/// (default `info`), for the `sandlot serve` and `sandlot-server` binaries.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SANDLOT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
}
