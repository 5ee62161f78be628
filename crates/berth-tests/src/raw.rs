//! A minimal HTTP/1.1 client over a raw socket, for requests ordinary clients will not send:
//! a body streamed in timed pieces, a `Content-Length` that lies, a body that stops halfway, a
//! header of a megabyte. It keeps the connection alive between requests (one task, one
//! connection: the load test's 1,000 connections are exactly 1,000 sockets), and splits into a
//! reader and a writer so a test can read the answer while it is still sending.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// A whole response.
#[derive(Debug, Clone)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body (empty for HEAD).
    pub body: Vec<u8>,
}

impl Resp {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first error code of a JSON error body.
    pub fn error_code(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v["errors"][0]["code"].as_str().map(str::to_owned)
    }

    /// One line for assertion messages.
    pub fn describe(&self) -> String {
        let body = String::from_utf8_lossy(&self.body[..self.body.len().min(400)]).into_owned();
        format!("{} {:?} body={body:?}", self.status, self.headers)
    }

    /// True when the server said it will close the connection.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"))
    }
}

/// The reading half of a connection: a TCP connection's by default, or any byte stream's
/// (a TLS stream's read half, say) through [`Reader::new`].
pub struct Reader<R = OwnedReadHalf>(BufReader<R>);

/// A connection to the server.
pub struct Conn {
    /// Reads responses.
    pub reader: Reader,
    /// Writes requests (raw bytes).
    pub writer: OwnedWriteHalf,
    host: String,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl Conn {
    /// Connects.
    pub async fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        Ok(Conn {
            reader: Reader::new(r),
            writer: w,
            host: addr.to_string(),
        })
    }

    /// The request line and headers, with `Host` unless `headers` name their own, ending with
    /// the blank line.
    pub fn head(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut h = format!("{method} {target} HTTP/1.1\r\n");
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
            h.push_str(&format!("Host: {}\r\n", self.host));
        }
        for (n, v) in headers {
            h.push_str(n);
            h.push_str(": ");
            h.push_str(v);
            h.push_str("\r\n");
        }
        h.push_str("\r\n");
        h.into_bytes()
    }

    /// Writes raw bytes.
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes).await
    }

    /// Sends a request with a `Content-Length` body (when given, or for PUT/POST/PATCH) and
    /// reads its response.
    pub async fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Resp> {
        let len = body.len().to_string();
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if !body.is_empty() || matches!(method, "PUT" | "POST" | "PATCH") {
            all.push(("Content-Length", &len));
        }
        let mut wire = self.head(method, target, &all);
        wire.extend_from_slice(body);
        self.writer.write_all(&wire).await?;
        self.reader.response(method == "HEAD").await
    }

    /// Half-closes the connection: the server sees the end of the request stream.
    pub async fn shutdown_write(&mut self) -> io::Result<()> {
        self.writer.shutdown().await
    }
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// Reads responses from `inner` (buffered).
    pub fn new(inner: R) -> Reader<R> {
        Reader(BufReader::with_capacity(64 * 1024, inner))
    }

    async fn line(&mut self) -> io::Result<String> {
        let mut buf = Vec::new();
        let n = self.0.read_until(b'\n', &mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a complete response",
            ));
        }
        if buf.len() > 1024 * 1024 {
            return Err(bad("response line longer than 1 MiB"));
        }
        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            buf.pop();
        }
        String::from_utf8(buf).map_err(|_| bad("response head is not UTF-8"))
    }

    /// Reads the status line and headers.
    pub async fn head(&mut self) -> io::Result<(u16, Vec<(String, String)>)> {
        let status_line = self.line().await?;
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                break;
            }
            let (n, v) = line
                .split_once(':')
                .ok_or_else(|| bad(format!("bad header line {line:?}")))?;
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        Ok((status, headers))
    }

    /// Reads one response.
    pub async fn response(&mut self, head_request: bool) -> io::Result<Resp> {
        self.response_paced(head_request, usize::MAX, Duration::ZERO)
            .await
    }

    /// Reads one response, its body in pieces of at most `piece` bytes with `pause` between
    /// them: a slow client.
    pub async fn response_paced(
        &mut self,
        head_request: bool,
        piece: usize,
        pause: Duration,
    ) -> io::Result<Resp> {
        let (status, headers) = self.head().await?;
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        let no_body = head_request || status == 204 || status == 304 || status < 200;
        if no_body {
        } else if get("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
            loop {
                let size_line = self.line().await?;
                let size =
                    usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| bad(format!("bad chunk size {size_line:?}")))?;
                if size == 0 {
                    while !self.line().await?.is_empty() {}
                    break;
                }
                self.read_exact_paced(&mut body, size, piece, pause).await?;
                self.line().await?;
            }
        } else if let Some(len) = get("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| bad(format!("bad Content-Length {len:?}")))?;
            self.read_exact_paced(&mut body, len, piece, pause).await?;
        } else {
            self.0.read_to_end(&mut body).await?;
        }
        Ok(Resp {
            status,
            headers,
            body,
        })
    }

    async fn read_exact_paced(
        &mut self,
        out: &mut Vec<u8>,
        mut len: usize,
        piece: usize,
        pause: Duration,
    ) -> io::Result<()> {
        while len > 0 {
            let n = len.min(piece);
            let start = out.len();
            out.resize(start + n, 0);
            self.0.read_exact(&mut out[start..]).await?;
            len -= n;
            if len > 0 && !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        Ok(())
    }

    /// True when the server closed the connection (EOF or reset) within `wait`, false when
    /// the connection is still open.
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        self.drain_within(wait).await.1
    }

    /// Reads and discards what arrives until the server closes the connection (EOF or reset)
    /// or `wait` passes: the bytes read, and whether it was closed.
    pub async fn drain_within(&mut self, wait: Duration) -> (usize, bool) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut read = 0;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.0.read(&mut buf)).await {
                Err(_) => return (read, false),
                Ok(Ok(0)) | Ok(Err(_)) => return (read, true),
                Ok(Ok(n)) => read += n,
            }
        }
    }
}

/// `GET <path>` on a fresh blocking connection with `Connection: close`, for tests outside a
/// runtime: the status, or why there was none (10 s limits on connecting and on reading).
pub fn get_blocking(addr: SocketAddr, path: &str) -> Result<u16, String> {
    use std::io::{Read, Write};
    let limit = Duration::from_secs(10);
    let mut s = std::net::TcpStream::connect_timeout(&addr, limit).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(limit)).map_err(|e| e.to_string())?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {text:?}"))
}
