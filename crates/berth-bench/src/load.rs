//! Closed-loop request load: N keep-alive HTTP/1.1 connections, each sending the same request
//! back to back for a fixed time. Written on bare hyper connections rather than a pooled
//! client so the generator, which shares the CPUs with the registry, spends as little as
//! possible per request.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
    pub method: Method,
    pub accept: String,
    /// Expected body length of a GET (checked on every answer); `None` for HEAD.
    pub body_len: Option<usize>,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Latencies of the successful requests, microseconds, sorted.
    pub latencies_us: Vec<u32>,
}

impl Outcome {
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// Quantile `q` (0..=1) in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let idx = ((self.latencies_us.len() as f64 * q).ceil() as usize)
            .clamp(1, self.latencies_us.len())
            - 1;
        self.latencies_us[idx] as f64 / 1000.0
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Sender> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One request/response; `Ok(false)` for a wrong status or body, `Err` for a broken
/// connection.
async fn one(sender: &mut Sender, t: &Target) -> Result<bool> {
    let req = Request::builder()
        .method(t.method.clone())
        .uri(&t.path)
        .header(header::HOST, &t.host)
        .header(header::ACCEPT, &t.accept)
        .header(header::USER_AGENT, "berth-bench/0.1")
        .body(Empty::<Bytes>::new())?;
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(status == StatusCode::OK && t.body_len.is_none_or(|n| body.len() == n))
}

/// Runs `conns` connections against `t` for `duration`.
pub async fn run(t: &Target, conns: usize, duration: Duration) -> Result<Outcome> {
    // Open every connection first so connection set-up is not part of the measurement.
    let mut senders = Vec::with_capacity(conns);
    for _ in 0..conns {
        senders.push(connect(t.addr).await?);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(conns);
    for mut sender in senders {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            let (mut ok, mut errors) = (0u64, 0u64);
            while Instant::now() < deadline {
                let t0 = Instant::now();
                match one(&mut sender, &t).await {
                    Ok(true) => {
                        ok += 1;
                        lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                    Ok(false) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        match connect(t.addr).await {
                            Ok(s) => sender = s,
                            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                        }
                    }
                }
            }
            (ok, errors, lat)
        }));
    }
    let mut out = Outcome::default();
    for task in tasks {
        let (ok, errors, lat) = task.await.context("load task panicked")?;
        out.ok += ok;
        out.errors += errors;
        out.latencies_us.extend(lat);
    }
    out.elapsed = start.elapsed();
    out.latencies_us.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let o = Outcome {
            ok: 100,
            errors: 0,
            elapsed: Duration::from_secs(2),
            latencies_us: (1..=100).map(|x| x * 1000).collect(),
        };
        assert_eq!(o.rps(), 50.0);
        assert_eq!(o.quantile_ms(0.99), 99.0);
        assert_eq!(o.quantile_ms(0.5), 50.0);
        assert_eq!(o.quantile_ms(1.0), 100.0);
    }
}
