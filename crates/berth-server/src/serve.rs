//! The accept loop: hyper connections with the settings a registry needs, and graceful
//! shutdown bounded by a drain timeout.
//!
//! Not `axum::serve`, because it exposes none of hyper's connection options, and berth needs
//! one: HTTP/1 header names in canonical Title-Case (`Docker-Content-Digest`), as Distribution
//! (Go) sends them. Clients do not care, but the scripts operators wrote against `registry:2`
//! (`curl -I ... | grep Docker-Content-Digest`) do.

use std::future::Future;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` resolves, then lets connections finish their
/// requests for up to `drain` before returning.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    serve_tls(listener, app, None, shutdown, drain).await
}

/// [`serve`], over TLS when `tls` is given (see [`crate::tls`]): the handshake runs on the
/// connection's own task, bounded by a timeout, so a slow client never stalls the accept loop.
pub async fn serve_tls(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<crate::tls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .title_case_headers(true)
        .max_buf_size(128 * 1024)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // The client's address, for per-client limits (auth failures).
        let mut app = app
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        if tls.is_some() {
            // Location URLs default to https on this connection.
            app = app.layer(axum::Extension(crate::ServedOverTls));
        }
        let service = TowerToHyperService::new(app);
        let Some(tls) = &tls else {
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
            continue;
        };
        let (tls, builder, watcher) = (tls.clone(), builder.clone(), graceful.watcher());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(drain) => {
            tracing::warn!(?drain, "drain timeout elapsed; exiting with requests still in flight");
        }
    }
}
