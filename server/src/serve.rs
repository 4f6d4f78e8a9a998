//! The listener: accept, TLS if configured, HTTP/1.1 or HTTP/2 per
//! connection (hyper-util's auto builder tells h2c by its preface), the
//! dispatcher as the service; SIGTERM or SIGINT stops accepting, lets
//! requests in flight finish (up to a grace period) and shuts the runtime
//! down, which destroys its sandboxes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use sandlot::Runtime;
use tokio::net::TcpListener;

use crate::config::ServerConfig;
use crate::error::ServerError;
use crate::http::Routers;
use crate::persist::Store;
use crate::state::AppState;

/// Header bytes a request may carry (HTTP/1.1 read buffer, HTTP/2 header
/// list).
const MAX_HEADERS: usize = 64 << 10;
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 4096;
/// How long requests in flight may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A bound server: [`Server::local_addr`] says where (useful with port 0),
/// [`Server::run`] serves until SIGTERM or SIGINT.
pub struct Server {
    tokio: tokio::runtime::Runtime,
    listener: TcpListener,
    state: Arc<AppState>,
}

/// Builds the runtime, binds `config.listen` and serves until SIGTERM or
/// SIGINT.
pub fn serve(config: ServerConfig) -> Result<(), ServerError> {
    Server::bind(config)?.run()
}

impl Server {
    pub fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        config.validate()?;
        let mut builder = Runtime::builder();
        if let Some(dir) = &config.data_dir {
            builder = builder.data_dir(dir);
        }
        if let Some(max) = config.max_sandboxes {
            builder = builder.max_sandboxes(max);
        }
        // The lock first: a second server on the same state dir must not
        // take over the first one's sandboxes.
        let store = match &config.state_dir {
            Some(dir) => {
                builder = builder.persistent(dir);
                Store::open(dir)?
            }
            None => Store::ephemeral(),
        };
        let runtime = builder.build()?;
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("sandlot-srv")
            .build()
            .map_err(|source| ServerError::Io {
                context: "start the async runtime".into(),
                source,
            })?;
        let addr = config.listen;
        let listener = tokio
            .block_on(TcpListener::bind(addr))
            .map_err(|source| ServerError::Listen { addr, source })?;
        let state = AppState::new(config, runtime, store)?;
        Ok(Server {
            tokio,
            listener,
            state,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        self.listener
            .local_addr()
            .map_err(|source| ServerError::Io {
                context: "the listener's address".into(),
                source,
            })
    }

    pub fn run(self) -> Result<(), ServerError> {
        let Server {
            tokio,
            listener,
            state,
        } = self;
        let tls = match &state.config.tls {
            Some(files) => Some(crate::tls::acceptor(files)?),
            None => None,
        };
        let result = tokio.block_on(accept_loop(listener, state.clone(), tls));
        // An ephemeral runtime destroys every sandbox here; a persistent one
        // lets go of them, and they live on for the next server.
        state.runtime.shutdown();
        drop(state);
        tokio.shutdown_timeout(Duration::from_secs(1));
        result
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    let mut int = match signal(SignalKind::interrupt()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<AppState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Result<(), ServerError> {
    let routers = Routers::new(state);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(MAX_HEADERS)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder
        .http2()
        .max_header_list_size(MAX_HEADERS as u32)
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let signal = shutdown_signal();
    tokio::pin!(signal);
    tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving");
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = &mut signal => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut signal => break,
        };
        let _ = stream.set_nodelay(true);
        let routers = routers.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let routers = routers.clone();
            async move { Ok::<_, Infallible>(routers.handle(request.map(Body::new)).await) }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let result = match tls {
                None => {
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(
                        Duration::from_secs(10),
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    tracing::info!("shutting down: no new connections; letting go of the sandboxes");
    // An ephemeral runtime destroys its sandboxes here, which ends every
    // command and watch stream, so the connections that carry them finish
    // instead of holding the grace. A persistent one lets go of them: they
    // live on for the next server (the code contexts' interpreters end by
    // themselves when this process's end of their pipes closes).
    let runtime = routers.state().runtime.clone();
    let _ = tokio::task::spawn_blocking(move || runtime.shutdown()).await;
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("requests still in flight after the grace period; closing them");
        }
    }
    Ok(())
}
