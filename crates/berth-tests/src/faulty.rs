//! A fault-injecting HTTP/1.1 reverse proxy for tests that put something between berth and
//! an upstream registry (the pull-through cache's suites): it forwards every request to an
//! upstream address, records what it saw (method and target, so a test can count the upstream
//! GETs of one blob), and on demand answers a status itself, stalls, cuts or corrupts a body,
//! drops a connection without answering, or stops listening altogether.
//!
//! One request per connection: the request is forwarded with `Connection: close` and the
//! answer goes back with `Connection: close`, so the end of the upstream's answer is the end
//! of its connection and the proxy never parses a body's framing. Clients (hyper, reqwest)
//! then open a connection per request, which is all a test needs, and every request is seen
//! and judged on its own. Bodies are copied in pieces of at most 64 KiB as they arrive, so a
//! blob of any size passes through in constant memory, and a client that goes away closes
//! the upstream connection too, as a real network would.
//!
//! Body offsets ([`Fault::Truncate`], [`Fault::Corrupt`], [`Fault::StallBody`]) count the
//! bytes after the response head as they travel. Registries answer blobs and manifests with
//! `Content-Length`, where those are the content's bytes. Faults that answer without the
//! upstream ([`Fault::Status`], [`Fault::Close`]) do not read a request body: meant for the
//! GETs and HEADs a pull-through cache sends, not for uploads.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// What the proxy does to a request a [`Rule`] matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status (429, 500, 503, ...) with a small registry error body, without
    /// asking the upstream.
    Status(u16),
    /// Wait this long before forwarding the request (the answer comes that much later; set
    /// it longer than the client's timeout for a timeout). The wait ends early when the
    /// client hangs up first, and the request is then never forwarded.
    Delay(Duration),
    /// Forward the response head and this many body bytes, then close the connection.
    Truncate(u64),
    /// Flip every bit of the body byte at this offset (nothing happens to a shorter body).
    Corrupt(u64),
    /// Forward `after` body bytes, then send nothing for `stall`, then the rest.
    StallBody {
        /// Body bytes forwarded before the stall.
        after: u64,
        /// How long nothing is sent.
        stall: Duration,
    },
    /// Close the connection without answering, once the request has been read.
    Close,
}

/// Which requests a [`Fault`] applies to, and how many times.
#[derive(Debug, Clone)]
pub struct Rule {
    method: Option<String>,
    path_contains: String,
    fault: Fault,
    times: Option<u64>,
}

impl Rule {
    /// `fault` for every request.
    pub fn all(fault: Fault) -> Rule {
        Rule {
            method: None,
            path_contains: String::new(),
            fault,
            times: None,
        }
    }

    /// `fault` for requests with this method (`""`: any) whose target (path and query)
    /// contains `path_contains`.
    pub fn on(method: &str, path_contains: &str, fault: Fault) -> Rule {
        Rule {
            method: (!method.is_empty()).then(|| method.to_ascii_uppercase()),
            path_contains: path_contains.to_owned(),
            fault,
            times: None,
        }
    }

    /// Only for the next `n` matching requests; the rule is then dropped.
    pub fn times(mut self, n: u64) -> Rule {
        self.times = Some(n);
        self
    }

    fn matches(&self, method: &str, target: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method) && target.contains(&self.path_contains)
    }
}

/// One request the proxy read.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Its headers as sent (names as the client spelt them).
    pub headers: Vec<(String, String)>,
    /// The fault applied to it, if any.
    pub fault: Option<Fault>,
}

impl Seen {
    /// The first value of a header, by name in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
struct Shared {
    upstream: Mutex<SocketAddr>,
    rules: Mutex<Vec<Rule>>,
    seen: Mutex<Vec<Seen>>,
    body_bytes: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Records the request and picks the first rule matching it (using up one of its times).
    fn judge(&self, method: &str, target: &str, headers: &[String]) -> Option<Fault> {
        let fault = {
            let mut rules = lock(&self.rules);
            let idx = rules.iter().position(|r| r.matches(method, target));
            idx.map(|idx| {
                let fault = rules[idx].fault.clone();
                if let Some(t) = rules[idx].times.as_mut() {
                    *t = t.saturating_sub(1);
                    if *t == 0 {
                        rules.remove(idx);
                    }
                }
                fault
            })
        };
        lock(&self.seen).push(Seen {
            method: method.to_owned(),
            target: target.to_owned(),
            headers: headers
                .iter()
                .map(|h| {
                    let (n, v) = h.split_once(':').unwrap_or((h, ""));
                    (n.trim().to_owned(), v.trim().to_owned())
                })
                .collect(),
            fault: fault.clone(),
        });
        fault
    }
}

/// The proxy: listening on `127.0.0.1:<port the kernel picked>` until dropped.
pub struct Faulty {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Faulty {
    /// Listens on a new loopback port and forwards to `upstream` (which may change later:
    /// [`Faulty::set_upstream`]; give any address when the upstream is not running yet).
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Faulty> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let faulty = Faulty {
            addr: listener.local_addr()?,
            shared: Arc::new(Shared {
                upstream: Mutex::new(upstream),
                rules: Mutex::new(Vec::new()),
                seen: Mutex::new(Vec::new()),
                body_bytes: AtomicU64::new(0),
            }),
            accept: Mutex::new(None),
        };
        faulty.serve(listener);
        Ok(faulty)
    }

    fn serve(&self, listener: TcpListener) {
        let shared = self.shared.clone();
        let task = tokio::spawn(async move {
            // Connections live in this set: aborting the accept loop closes them all.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let shared = shared.clone();
                connections.spawn(async move {
                    let _ = forward(&shared, stream).await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        if let Some(old) = lock(&self.accept).replace(task) {
            old.abort();
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Forwards to `upstream` from now on.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *lock(&self.shared.upstream) = upstream;
    }

    /// Adds a rule after the existing ones (the first matching rule applies).
    pub fn add(&self, rule: Rule) {
        lock(&self.shared.rules).push(rule);
    }

    /// Replaces every rule with this one.
    pub fn set(&self, rule: Rule) {
        *lock(&self.shared.rules) = vec![rule];
    }

    /// Removes every rule: requests are forwarded untouched.
    pub fn clear(&self) {
        lock(&self.shared.rules).clear();
    }

    /// Stops listening and closes every open connection: connections are refused
    /// (`ECONNREFUSED`) until [`Faulty::listen_again`].
    pub async fn refuse(&self) {
        let task = lock(&self.accept).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port after [`Faulty::refuse`].
    pub async fn listen_again(&self) -> std::io::Result<()> {
        self.refuse().await;
        let listener = TcpListener::bind(self.addr).await?;
        self.serve(listener);
        Ok(())
    }

    /// Every request read so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.shared.seen).clone()
    }

    /// How many requests with this method (`""`: any) had a target containing
    /// `path_contains`.
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        lock(&self.shared.seen)
            .iter()
            .filter(|s| {
                (method.is_empty() || s.method.eq_ignore_ascii_case(method))
                    && s.target.contains(path_contains)
            })
            .count()
    }

    /// Forgets the requests seen so far.
    pub fn reset_seen(&self) {
        lock(&self.shared.seen).clear();
    }

    /// Response body bytes sent to clients so far (the upstream's, after faults).
    pub fn body_bytes(&self) -> u64 {
        self.shared.body_bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Faulty {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.accept).take() {
            task.abort();
        }
    }
}

/// The most a request or response head may take.
const MAX_HEAD: usize = 64 * 1024;

fn bad(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

/// Reads until the end of a head (`\r\n\r\n`): the head, and whatever body bytes came with it.
async fn read_head(
    stream: &mut (impl AsyncReadExt + Unpin),
) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::with_capacity(4096);
    let mut piece = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(bad("head longer than 64 KiB".to_owned()));
        }
        let n = stream.read(&mut piece).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before the end of the head",
            ));
        }
        buf.extend_from_slice(&piece[..n]);
    }
}

/// The first line and the header lines of a head, the connection-scoped headers left out
/// (the proxy sets its own `Connection`).
fn split_head(head: &[u8]) -> std::io::Result<(String, Vec<String>)> {
    let text = std::str::from_utf8(head).map_err(|_| bad("head is not UTF-8".to_owned()))?;
    let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter(|l| {
            let name = l.split(':').next().unwrap_or_default().trim();
            !["connection", "keep-alive", "proxy-connection"]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n))
        })
        .map(str::to_owned)
        .collect();
    Ok((first, headers))
}

fn join_head(first: &str, headers: &[String]) -> Vec<u8> {
    let mut out = String::with_capacity(256);
    out.push_str(first);
    out.push_str("\r\n");
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

fn has_request_body(headers: &[String]) -> bool {
    headers.iter().any(|h| {
        let (name, value) = h.split_once(':').unwrap_or((h, ""));
        (name.trim().eq_ignore_ascii_case("content-length") && value.trim() != "0")
            || name.trim().eq_ignore_ascii_case("transfer-encoding")
    })
}

/// The answer to [`Fault::Status`].
fn status_answer(status: u16, head_request: bool) -> Vec<u8> {
    let (reason, code) = match status {
        429 => ("Too Many Requests", "TOOMANYREQUESTS"),
        500 => ("Internal Server Error", "UNKNOWN"),
        502 => ("Bad Gateway", "UNAVAILABLE"),
        503 => ("Service Unavailable", "UNAVAILABLE"),
        504 => ("Gateway Timeout", "UNAVAILABLE"),
        _ => ("Injected", "UNKNOWN"),
    };
    let body = format!(
        "{{\"errors\":[{{\"code\":\"{code}\",\"message\":\"injected by the test proxy\"}}]}}"
    );
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_request {
        out.push_str(&body);
    }
    out.into_bytes()
}

/// Resolves when the client hangs up (or sends anything: a request without a body has
/// nothing more to send before its answer).
async fn hung_up(client: &mut TcpStream) {
    let mut one = [0u8; 1];
    match client.peek(&mut one).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending::<()>().await,
    }
}

/// Serves one connection: one request.
async fn forward(shared: &Shared, mut client: TcpStream) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let (head, early_body) = read_head(&mut client).await?;
    let (request_line, headers) = split_head(&head)?;
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let head_request = method == "HEAD";
    let fault = shared.judge(&method, &target, &headers);
    match &fault {
        Some(Fault::Status(status)) => {
            client
                .write_all(&status_answer(*status, head_request))
                .await?;
            let _ = client.shutdown().await;
            return Ok(());
        }
        Some(Fault::Close) => return Ok(()),
        Some(Fault::Delay(wait)) => {
            if has_request_body(&headers) {
                tokio::time::sleep(*wait).await;
            } else {
                tokio::select! {
                    _ = tokio::time::sleep(*wait) => {}
                    _ = hung_up(&mut client) => return Ok(()),
                }
            }
        }
        _ => {}
    }
    let upstream_addr = *lock(&shared.upstream);
    let upstream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(upstream_addr))
        .await
        .map_err(|_| bad(format!("connecting to {upstream_addr} timed out")))??;
    upstream.set_nodelay(true)?;
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let (mut client_read, mut client_write) = client.into_split();
    upstream_write
        .write_all(&join_head(&request_line, &headers))
        .await?;
    upstream_write.write_all(&early_body).await?;
    // The rest of the request body, if any, flows on its own until the answer is complete.
    let request_body = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut upstream_write).await;
        upstream_write
    });
    let result = async {
        let (response_head, mut pending) = read_head(&mut upstream_read).await?;
        let (status_line, response_headers) = split_head(&response_head)?;
        client_write
            .write_all(&join_head(&status_line, &response_headers))
            .await?;
        let mut offset = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let mut piece = if pending.is_empty() {
                let n = upstream_read.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                buf[..n].to_vec()
            } else {
                std::mem::take(&mut pending)
            };
            let start = offset;
            let end = start + piece.len() as u64;
            match &fault {
                Some(Fault::Truncate(keep)) if end > *keep => {
                    let keep_here = keep.saturating_sub(start) as usize;
                    client_write.write_all(&piece[..keep_here]).await?;
                    shared
                        .body_bytes
                        .fetch_add(keep_here as u64, Ordering::Relaxed);
                    return Ok(());
                }
                Some(Fault::Corrupt(at)) if (start..end).contains(at) => {
                    piece[(*at - start) as usize] ^= 0xff;
                }
                Some(Fault::StallBody { after, stall }) if (start..end).contains(after) => {
                    let before = (*after - start) as usize;
                    client_write.write_all(&piece[..before]).await?;
                    client_write.flush().await?;
                    tokio::time::sleep(*stall).await;
                    client_write.write_all(&piece[before..]).await?;
                    shared
                        .body_bytes
                        .fetch_add(piece.len() as u64, Ordering::Relaxed);
                    offset = end;
                    continue;
                }
                _ => {}
            }
            client_write.write_all(&piece).await?;
            shared
                .body_bytes
                .fetch_add(piece.len() as u64, Ordering::Relaxed);
            offset = end;
        }
        let _ = client_write.shutdown().await;
        Ok::<(), std::io::Error>(())
    }
    .await;
    request_body.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream answering every request with `body` (and counting nothing).
    async fn upstream(body: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let (head, _) = read_head(&mut s).await.unwrap();
                    let head_request = head.starts_with(b"HEAD ");
                    let mut answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    if !head_request {
                        answer.extend_from_slice(body);
                    }
                    s.write_all(&answer).await.unwrap();
                    // Like a real server honouring `Connection: close`.
                    let _ = s.shutdown().await;
                });
            }
        });
        addr
    }

    async fn get(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<crate::raw::Resp> {
        let mut c = crate::raw::Conn::connect(addr).await?;
        c.request(method, path, &[], b"").await
    }

    #[tokio::test]
    async fn forwards_counts_and_injects_faults() {
        let up = upstream(b"0123456789").await;
        let f = Faulty::start(up).await.unwrap();
        let r = get(f.addr(), "GET", "/v2/a/blobs/sha256:1").await.unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"0123456789"[..]));
        assert!(r.closes(), "{}", r.describe());
        let r = get(f.addr(), "HEAD", "/v2/a/blobs/sha256:1").await.unwrap();
        assert_eq!((r.status, r.header("content-length")), (200, Some("10")));
        assert_eq!(f.count("GET", "/blobs/sha256:1"), 1);
        assert_eq!(f.count("HEAD", "/blobs/"), 1);
        assert_eq!(f.count("", "sha256:1"), 2);

        f.set(Rule::on("GET", "/blobs/", Fault::Status(429)).times(1));
        let r = get(f.addr(), "GET", "/v2/a/blobs/x").await.unwrap();
        assert_eq!(r.status, 429);
        assert_eq!(r.error_code().as_deref(), Some("TOOMANYREQUESTS"));
        assert_eq!(
            get(f.addr(), "GET", "/v2/a/blobs/x").await.unwrap().status,
            200
        );

        f.set(Rule::all(Fault::Corrupt(3)));
        let r = get(f.addr(), "GET", "/x").await.unwrap();
        assert_eq!(&r.body[..], &b"012\xcc456789"[..]);

        f.set(Rule::all(Fault::Truncate(4)));
        assert!(
            get(f.addr(), "GET", "/x").await.is_err(),
            "a cut body is an error"
        );

        f.set(Rule::all(Fault::StallBody {
            after: 5,
            stall: Duration::from_millis(300),
        }));
        let t = std::time::Instant::now();
        let r = get(f.addr(), "GET", "/x").await.unwrap();
        assert_eq!(&r.body[..], &b"0123456789"[..]);
        assert!(t.elapsed() >= Duration::from_millis(300));

        f.set(Rule::all(Fault::Delay(Duration::from_secs(30))));
        let late =
            tokio::time::timeout(Duration::from_millis(200), get(f.addr(), "GET", "/x")).await;
        assert!(late.is_err(), "the answer is delayed");

        f.set(Rule::all(Fault::Close));
        assert!(get(f.addr(), "GET", "/x").await.is_err());
        f.clear();

        f.refuse().await;
        let refused = TcpStream::connect(f.addr()).await;
        assert!(refused.is_err(), "nothing listens");
        f.listen_again().await.unwrap();
        assert_eq!(get(f.addr(), "GET", "/x").await.unwrap().status, 200);
    }
}
