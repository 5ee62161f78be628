//! The machine's own limits, measured in the same run as the registries: what no registry on
//! this machine can beat. A ratio to Distribution means little without them: where
//! Distribution already runs near a ceiling, no registry can be several times faster there.
//!
//! - **SHA-256, one core**: every verified byte passes through one SHA-256 stream (the
//!   registry's on push, the client's on a verified pull), and SHA-256 does not parallelise
//!   within a stream. Measured on a buffer that stays in cache, so it is an upper bound.
//! - **loopback TCP**: a page-cached file sent with `sendfile` (no copy on the sending side,
//!   as Distribution serves blobs) to a reader with a 1 MiB buffer: the most any pull over
//!   loopback can reach.
//! - **durable disk write**: 16 MiB direct (`O_DIRECT`) writes of a new file, then
//!   `fdatasync`: the device's own write rate, the most a push can reach when every
//!   acknowledged byte must be on disk. (The scratch file is then rewritten through the page
//!   cache, for the loopback measurement.)

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use sha2::{Digest as _, Sha256};

use crate::report::{Better, Emitter, MB};

const CHUNK: usize = 1 << 20;

/// Measures the ceilings with `mib` MiB each, using a scratch file in `dir`.
pub fn run(dir: &Path, mib: usize, out: &Emitter) -> Result<()> {
    let bytes = (mib * CHUNK) as f64;
    let buf: Vec<u8> = (0..CHUNK).map(|i| (i * 131 % 251) as u8).collect();

    // Ceilings are upper bounds: the best of three runs.
    let secs = best_of(3, || {
        let t = Instant::now();
        let mut hasher = Sha256::new();
        for _ in 0..mib {
            hasher.update(&buf);
        }
        std::hint::black_box(hasher.finalize());
        Ok(t.elapsed().as_secs_f64())
    })?;
    emit(
        out,
        "ceiling_sha256",
        "SHA-256, one core, best of 3",
        bytes,
        secs,
    );

    let path = dir.join(format!("berth-bench-ceiling-{}.tmp", std::process::id()));
    let result = disk_and_loopback(&path, &buf, mib, bytes, out);
    let _ = std::fs::remove_file(&path);
    result
}

fn disk_and_loopback(path: &Path, buf: &[u8], mib: usize, bytes: f64, out: &Emitter) -> Result<()> {
    // Direct I/O needs an aligned buffer: take an aligned window of a larger one.
    const DIRECT: usize = 16 << 20;
    let mut big = vec![0u8; DIRECT + 4096];
    let start = big.as_ptr().align_offset(4096);
    for (i, b) in big[start..start + DIRECT].iter_mut().enumerate() {
        *b = buf[i % CHUNK];
    }
    let aligned = &big[start..start + DIRECT];
    let blocks = (mib * CHUNK).div_ceil(DIRECT);
    let t = Instant::now();
    let direct = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(path);
    match direct {
        Ok(mut f) => {
            for _ in 0..blocks {
                f.write_all(aligned)?;
            }
            f.sync_data()?;
            emit(
                out,
                "ceiling_disk",
                "durable disk write (direct, then fdatasync)",
                (blocks * DIRECT) as f64,
                t.elapsed().as_secs_f64(),
            );
        }
        // Some filesystems (tmpfs before Linux 6.6) refuse direct I/O: no disk ceiling.
        Err(e) => eprintln!(
            "  durable disk write: not measured ({}: {e})",
            path.display()
        ),
    }

    // Rewritten through the page cache, so sendfile serves it without touching the disk.
    let mut f = File::create(path)?;
    for _ in 0..mib {
        f.write_all(buf)?;
    }
    drop(f);
    let secs = best_of(3, || loopback(path, mib))?;
    emit(
        out,
        "ceiling_loopback",
        "loopback TCP (sendfile to a reader), best of 3",
        bytes,
        secs,
    );
    Ok(())
}

/// The shortest of `runs` timings.
fn best_of(runs: usize, mut f: impl FnMut() -> Result<f64>) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..runs {
        best = best.min(f()?);
    }
    Ok(best)
}

/// Seconds to send the `mib` MiB file at `path` over loopback with `sendfile` and read it.
fn loopback(path: &Path, mib: usize) -> Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let file = File::open(path)?;
    let total = (mib * CHUNK) as u64;
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        let (socket, _) = listener.accept()?;
        let mut offset = 0u64;
        while offset < total {
            let left = (total - offset).min(1 << 30) as usize;
            if rustix::fs::sendfile(&socket, &file, Some(&mut offset), left)? == 0 {
                break;
            }
        }
        Ok(())
    });
    let t = Instant::now();
    let mut socket = TcpStream::connect(addr)?;
    let mut rbuf = vec![0u8; CHUNK];
    let mut got = 0u64;
    loop {
        let n = socket.read(&mut rbuf)?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    let secs = t.elapsed().as_secs_f64();
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("sendfile thread panicked"))??;
    anyhow::ensure!(got == total, "loopback: {got} bytes, expected {total}");
    Ok(secs)
}

fn emit(out: &Emitter, id: &str, title: &str, bytes: f64, secs: f64) {
    out.emit(
        id,
        title,
        bytes / MB / secs,
        "MB/s",
        Better::Higher,
        serde_json::json!({ "bytes": bytes }),
    );
}
