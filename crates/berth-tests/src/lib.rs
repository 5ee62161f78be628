//! berth's test kit, and the black-box suites that use it.
//!
//! `src/` is the kit every test crate of the workspace shares, so that starting berth,
//! generating content and talking to it are written once:
//! - [`process`]: the real `berth` binary as a child process. It listens on port 0 and the kit
//!   learns the bound address from berth's own "listening" log line, so no test races another
//!   for a port;
//! - [`in_process`]: a berth built from the library crates and served on a loopback socket by
//!   the production accept loop (`berth_server::serve_with`), for tests that need no process;
//! - [`client`]: a registry client whose failures say whether the connection died or berth
//!   answered something unexpected;
//! - [`raw`]: HTTP/1.1 over a raw socket, for requests ordinary clients refuse to send;
//! - [`content`]: deterministic content, digests, media types and manifests;
//! - [`faulty`]: a fault-injecting HTTP/1.1 proxy to put between berth and an upstream
//!   registry (counts requests; answers 429/5xx, stalls, cuts or corrupts bodies, refuses);
//! - [`disk`]: a checker of the storage tree for half-written blobs and dangling links.
//!
//! `tests/` are the suites that drive the binary rather than the library, so that memory and
//! descriptors are the process's own, a signal or a SIGKILL is real, a full disk is a real
//! `ENOSPC`, and the accept loop is the one operators run: load, oversized and lying requests,
//! shutdown, hostile networks, crashes, races, online GC, config fuzzing.

pub mod client;
pub mod content;
pub mod disk;
pub mod faulty;
pub mod in_process;
pub mod process;
pub mod raw;

pub use content::{Desc, content, hex_of, image_manifest, sha256, sha512};

/// Raises this process's soft `RLIMIT_NOFILE` to at least `want` (up to the hard limit, which
/// root may raise too). Children started afterwards inherit it. Returns the soft limit now in
/// force.
pub fn raise_nofile(want: u64) -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let current = getrlimit(Resource::Nofile);
    let soft = current.current.unwrap_or(u64::MAX);
    if soft >= want {
        return soft;
    }
    let hard = current.maximum.unwrap_or(u64::MAX);
    let attempt = Rlimit {
        current: Some(want),
        maximum: Some(hard.max(want)),
    };
    if setrlimit(Resource::Nofile, attempt).is_err() {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            },
        );
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs one test's body on its own two-thread runtime, after any other test of the same test
/// binary that runs this way has finished: for tests that measure time on a shared machine.
pub fn serially<F: std::future::Future>(test: F) -> F::Output {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(test)
}
