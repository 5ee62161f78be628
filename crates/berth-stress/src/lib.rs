//! Shared helpers for berth's stress tests (`tests/`): the real `berth` binary as a child
//! process with its config, port and storage root in a temporary directory; what `/proc` says
//! about it (RSS, open file descriptors); and a small HTTP/1.1 client over a raw socket that
//! can keep a connection alive, stream a body slowly, lie about `Content-Length` or stop
//! mid-body, which ordinary HTTP clients refuse to do.
//!
//! The tests drive the binary rather than the library so that memory and descriptors are the
//! process's own, a signal is a real signal, and the accept loop is the one operators run.

pub mod http;
pub mod server;

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// `len` pseudo-random bytes, the same for the same seed (xorshift64*: no dependency, and
/// blobs that do not compress or repeat).
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

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
