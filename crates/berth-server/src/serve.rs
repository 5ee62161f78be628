//! The accept loop: hyper connections with the settings a registry needs, the connection
//! limits of [`crate::connections`], and graceful shutdown bounded by a drain timeout.
//!
//! Not `axum::serve`, because it exposes none of hyper's connection options, and berth needs
//! one: HTTP/1 header names in canonical Title-Case (`Docker-Content-Digest`), as Distribution
//! (Go) sends them. Clients do not care, but the scripts operators wrote against `registry:2`
//! (`curl -I ... | grep Docker-Content-Digest`) do.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::connections::{Conn, Limits, Registered, Table, TrackedBody};

/// How the accept loop serves.
#[derive(Clone, Default)]
pub struct ServeOptions {
    /// Serve HTTPS (see [`crate::tls`]).
    pub tls: Option<crate::tls::TlsAcceptor>,
    /// After the shutdown signal, how long requests in flight may finish (`http.draintimeout`).
    pub drain: Duration,
    /// Connection timeouts and the connection limit.
    pub limits: Limits,
}

/// A connection told to close (idle, evicted, shutting down) gets this long to do so cleanly
/// (an HTTP/2 GOAWAY) before it is dropped, unless a request is still in flight.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The longest pause after failed accepts, which double from [`ACCEPT_BACKOFF_MIN`].
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);

/// Requests in flight on one HTTP/2 connection at most.
const MAX_STREAMS: u32 = 32;

/// Serves `app` on `listener` over plain HTTP with the default limits until `shutdown`
/// resolves, then lets connections finish their requests for up to `drain` before returning.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let options = ServeOptions {
        drain,
        ..ServeOptions::default()
    };
    serve_with(listener, app, shutdown, options).await
}

/// [`serve`] with every option: over TLS when `options.tls` is given, the handshake running
/// on the connection's own task, bounded by a timeout, so a slow client never stalls the
/// accept loop.
pub async fn serve_with(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()>,
    options: ServeOptions,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .title_case_headers(true)
        .max_buf_size(128 * 1024)
        .timer(TokioTimer::new())
        // The connection task bounds the wait for every request head (connections.rs), the
        // same way over HTTP/1 and HTTP/2.
        .header_read_timeout(None);
    // hyper's default of 200 streams would let one connection hold 200 storage handles; a
    // client pulling layers in parallel uses a handful.
    builder.http2().max_concurrent_streams(MAX_STREAMS);
    let table = Arc::new(Table::new(options.limits.max_connections));
    let (stop, stopping) = watch::channel(false);
    let mut backoff = AcceptBackoff::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = async {
                table.room().await;
                listener.accept().await
            } => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            // The client gave up before it was accepted: nothing wrong here.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                ) =>
            {
                continue;
            }
            Err(e) => {
                // Out of file handles and the like: free one if an idle connection holds it,
                // and back off instead of spinning.
                if is_out_of_handles(&e) {
                    table.evict_one();
                }
                backoff.failed(&e).await;
                continue;
            }
        };
        backoff.succeeded();
        let _ = stream.set_nodelay(true);
        let registered = table.register();
        // Over the limit now: the connection that waited on its client longest goes. Accepting
        // first means no one is closed for a client that never comes.
        table.make_room(&registered);
        // The client's address, for per-client limits (auth failures).
        let mut app = app
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        if options.tls.is_some() {
            // Location URLs default to https on this connection.
            app = app.layer(axum::Extension(crate::ServedOverTls));
        }
        let connection = Connection {
            builder: builder.clone(),
            app,
            limits: options.limits,
            stopping: stopping.clone(),
            registered,
        };
        match &options.tls {
            None => tokio::spawn(connection.serve(stream)),
            Some(tls) => tokio::spawn(connection.serve_tls(stream, tls.clone(), peer)),
        };
    }
    drop(listener);
    let _ = stop.send(true);
    tokio::select! {
        () = table.empty() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(options.drain) => {
            tracing::warn!(drain = ?options.drain, "drain timeout elapsed; exiting with requests still in flight");
        }
    }
}

fn is_out_of_handles(e: &io::Error) -> bool {
    use rustix::io::Errno;
    Errno::from_io_error(e).is_some_and(|errno| errno == Errno::MFILE || errno == Errno::NFILE)
}

/// Pauses after failed accepts, doubling up to [`ACCEPT_BACKOFF_MAX`], and logs a run of
/// failures once a second rather than once each.
#[derive(Default)]
struct AcceptBackoff {
    pause: Option<Duration>,
    failures: u64,
    logged: Option<Instant>,
}

impl AcceptBackoff {
    async fn failed(&mut self, e: &io::Error) {
        self.failures += 1;
        if self
            .logged
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            tracing::warn!(error = %e, failures = self.failures, "accept failed; backing off");
            self.logged = Some(Instant::now());
        }
        let pause = self
            .pause
            .map_or(ACCEPT_BACKOFF_MIN, |p| (p * 2).min(ACCEPT_BACKOFF_MAX));
        self.pause = Some(pause);
        tokio::time::sleep(pause).await;
    }

    fn succeeded(&mut self) {
        if self.pause.take().is_some() {
            tracing::info!(failures = self.failures, "accepting connections again");
        }
        self.failures = 0;
        self.logged = None;
    }
}

/// One accepted connection, until it has been served.
struct Connection {
    builder: Builder<TokioExecutor>,
    app: axum::Router,
    limits: Limits,
    stopping: watch::Receiver<bool>,
    registered: Registered,
}

impl Connection {
    async fn serve_tls(
        self,
        stream: TcpStream,
        tls: crate::tls::TlsAcceptor,
        peer: std::net::SocketAddr,
    ) {
        let handshake = tokio::time::timeout(self.limits.handshake_timeout, tls.accept(stream));
        let mut stopping = self.stopping.clone();
        let stream = tokio::select! {
            done = handshake => match done {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            },
            () = self.registered.conn.evicted() => return,
            _ = stopping.wait_for(|s| *s) => return,
        };
        self.serve(stream).await
    }

    /// Serves requests until the client closes, the connection stays idle past its limit,
    /// the table evicts it to make room, or the server shuts down.
    async fn serve<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let Connection {
            builder,
            app,
            limits,
            mut stopping,
            registered,
        } = self;
        let conn: Arc<Conn> = registered.conn.clone();
        let inner = TowerToHyperService::new(app);
        let counted = conn.clone();
        let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
            let in_flight = counted.request();
            let request = request.map(|body| {
                TrackedBody::request(axum::body::Body::new(body), counted.request_body())
            });
            let response = hyper::service::Service::call(&inner, request);
            async move {
                let response = response.await?;
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| TrackedBody::response(body, in_flight)),
                )
            }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        tokio::pin!(connection);
        // Once told to close: when to drop the connection if it has not closed by itself.
        let mut closing: Option<tokio::time::Instant> = None;
        let mut evicted = false;
        // While working, look again this often: a response becomes stalled without a signal.
        let recheck =
            (limits.idle_timeout.min(limits.header_timeout) / 4).max(Duration::from_millis(250));
        loop {
            let close = tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    break;
                }
                () = tokio::time::sleep(conn.time_left(&limits).unwrap_or(recheck)), if closing.is_none() => {
                    conn.time_left(&limits) == Some(Duration::ZERO)
                }
                () = conn.evicted(), if closing.is_none() => {
                    evicted = true;
                    true
                }
                _ = stopping.wait_for(|s| *s), if closing.is_none() => true,
                () = tokio::time::sleep_until(closing.unwrap_or_else(tokio::time::Instant::now)), if closing.is_some() => {
                    // A request still in flight may finish, a slow download included (the
                    // drain timeout bounds it at shutdown); an idle connection that did not
                    // close, or one whose response the client stopped taking past the limit
                    // (a graceful close cannot reach it through a full window), is dropped.
                    // Evicted, it left the table already: waiting on its client at all is enough,
                    // or a trickling client would hold a handle the table no longer counts.
                    if conn.is_idle()
                        || conn.time_left(&limits) == Some(Duration::ZERO)
                        || (evicted && conn.time_left(&limits).is_some())
                    {
                        break;
                    }
                    false
                }
            };
            if close {
                connection.as_mut().graceful_shutdown();
            }
            if close || closing.is_some() {
                closing = Some(tokio::time::Instant::now() + CLOSE_GRACE);
            }
        }
        // Leaves the table only now that the connection is closed.
        drop(registered);
    }
}
