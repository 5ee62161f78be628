//! berth in the test's own process: an `axum::Router` from `berth_server::app` served on a
//! loopback socket by the production accept loop (`berth_server::serve_with`, with its
//! timeouts, connection table and drain), not by a test-only `axum::serve`. For API tests
//! that need many servers quickly and no process boundary.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use berth_registry::{Options, Registry};
use berth_server::{HttpOptions, ServeOptions};
use tokio::sync::oneshot;

/// A server running on this process's runtime. Dropping it signals shutdown and stops the
/// accept loop's task.
pub struct Served {
    /// The bound loopback address.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    /// `http://<addr>` (`https://` is the caller's business when `options.tls` is set).
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Signals shutdown and waits until the accept loop has drained and returned.
    pub async fn shut_down(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// Serves `app` on `bind` (`127.0.0.1:0` for any free port) with `options`.
pub async fn serve_app(bind: &str, app: axum::Router, options: ServeOptions) -> Served {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .unwrap_or_else(|e| panic!("binding {bind}: {e}"));
    let addr = listener.local_addr().expect("the bound address");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(berth_server::serve_with(
        listener,
        app,
        async move {
            let _ = stopped.await;
        },
        options,
    ));
    Served {
        addr,
        stop: Some(stop),
        task,
    }
}

/// A registry over a filesystem root at `root`.
pub fn registry(root: &Path, options: Options) -> Registry {
    let driver = berth_storage::FsDriver::new(root.to_owned()).expect("a filesystem driver");
    Registry::new(Arc::new(driver), options)
}

/// berth over `root` with these registry and HTTP options, on a free loopback port, with the
/// accept loop's default limits.
pub async fn serve(root: &Path, options: Options, http: HttpOptions) -> Served {
    serve_app(
        "127.0.0.1:0",
        berth_server::app(registry(root, options), http),
        ServeOptions::default(),
    )
    .await
}
