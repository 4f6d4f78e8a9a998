//! `--tls-cert` / `--tls-key`: rustls with the ring provider, ALPN h2 and
//! http/1.1.

use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;
use crate::error::ServerError;

pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, ServerError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|source| ServerError::Io {
            context: format!("read {}", path.display()),
            source,
        })
    };
    let cert_pem = read(&files.cert)?;
    let key_pem = read(&files.key)?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServerError::Tls(format!("{}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(ServerError::Tls(format!(
            "{}: no PEM certificate in it",
            files.cert.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| ServerError::Tls(format!("{}: {e}", files.key.display())))?
        .ok_or_else(|| {
            ServerError::Tls(format!("{}: no PEM private key in it", files.key.display()))
        })?;
    // ring rather than aws-lc-rs: no cmake or C toolchain needed to build.
    // It lacks the post-quantum key exchange rustls now prefers.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(format!("certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
