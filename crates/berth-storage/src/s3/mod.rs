//! The S3 driver: the same tree as the filesystem driver, as keys in a bucket, so a bucket
//! written by Distribution's `s3` driver is served as it is and the other way round.
//!
//! Keys are `<rootdirectory>/<path>` (Distribution's `s3Path`). Small objects (`put`, links and
//! manifests) are single PutObjects, atomic on every S3 implementation. Directories do not
//! exist on S3; a path is a directory when keys exist below it, and `list` is one
//! `ListObjectsV2` per thousand names with `/` as delimiter, so the catalog and tag lists read
//! one level at a time instead of walking the bucket.
//!
//! ## Files written by a writer: segments
//!
//! S3 objects cannot be appended to, and the parts of an unfinished multipart upload cannot be
//! read or listed by size on every implementation, yet berth's upload sessions must be
//! appendable from any replica (POST on A, PATCH on B, PUT on C) and readable (a replica that
//! did not receive the earlier chunks re-hashes them). So a file written through
//! [`StorageDriver::writer`] is stored as *segments*: ordinary objects under the sibling prefix
//! `<key>~seg/`, each named by its starting offset (20 decimal digits, so names sort by
//! offset). `~` cannot occur in a [`StoragePath`], so segment keys never collide with registry
//! paths. The state lives only in the bucket; any process can append, stat or read.
//!
//! Invariant: every segment but the last holds at least [`MIN_PART`] (5 MiB) bytes, S3's
//! minimum for a non-final multipart part. A writer flushes a segment every `chunksize` bytes;
//! when it appends to a file whose last segment is shorter than 5 MiB it reads that tail back
//! before its first new byte (at most 5 MiB, the only bytes ever read back) and rewrites it,
//! longer, under the same key.
//! Overwriting a key is atomic, and the new segment begins with the old one's bytes, so a
//! crash at any point leaves a consistent prefix of what was written.
//!
//! `move_to` turns segments into one ordinary object at the target: a single CopyObject when
//! there is one segment no larger than `multipartcopythresholdsize`, else a multipart upload
//! whose parts are server-side `UploadPartCopy`s of the segments (ranged when a segment is over
//! S3's 5 GiB part limit). No byte passes through berth, and no single-request copy ever exceeds
//! the threshold, so a 10 GiB layer moves like a 10 MiB one. At most 10,000 parts: the largest
//! blob is 10,000 × `chunksize` (97 GiB at the default 10 MiB; raise `chunksize` for more).
//!
//! Memory per upload in progress is at most two segments: the one filling and the one being
//! sent (2 × `chunksize`, 20 MiB by default). Reads stream with one GET in flight.
//!
//! With `redirect` on, [`StorageDriver::redirect_url`] hands out presigned GET URLs (20
//! minutes), so blob pulls can go from the bucket to the client without passing through berth.
//!
//! Concurrent appends to one file from two processes are not serialised (nor are they in
//! Distribution); the registry refuses a PATCH whose `Content-Range` does not start at the
//! current size, and the spec has clients send chunks in order.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::{
    ByteStream, FileInfo, FileWriter, Metadata, Result, StorageDriver, StorageError, StoragePath,
};

mod copy;
mod publish;
mod writer;

use publish::S3Publisher;
use writer::S3Writer;

const NAME: &str = "s3";
/// S3's minimum size of a multipart part other than the last.
pub const MIN_PART: u64 = 5 * 1024 * 1024;
/// S3's maximum size of one part, and of one CopyObject.
const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;
/// S3's maximum number of parts in one multipart upload.
const MAX_PARTS: usize = 10_000;
/// Range size when a segment or object over [`MAX_PART`] is copied in pieces.
const COPY_RANGE: u64 = 1024 * 1024 * 1024;
/// Part copies in flight at once during one `move_to`.
const COPY_CONCURRENCY: usize = 8;
/// What separates a file's key from its segments' prefix.
const SEGMENTS: &str = "~seg/";
/// How long a presigned blob URL stays valid.
const REDIRECT_VALIDITY: Duration = Duration::from_secs(20 * 60);
/// Chunks buffered between a segmented read's GETs and the client.
const READ_QUEUE_DEPTH: usize = 4;

/// How to reach the bucket: Distribution's `storage.s3` keys.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// `region`: the bucket's region (`garage` for Garage, anything for MinIO).
    pub region: String,
    /// `bucket`
    pub bucket: String,
    /// `regionendpoint`: the S3 endpoint, for S3-compatible servers. AWS's when `None`.
    pub endpoint: Option<String>,
    /// `accesskey` and `secretkey`; when absent the AWS environment and credential chain
    /// (environment variables, profile files, web identity, container and instance roles).
    pub credentials: Option<(String, String)>,
    /// `rootdirectory`: a key prefix for everything berth stores.
    pub root_directory: String,
    /// `forcepathstyle`: `endpoint/bucket/key` instead of `bucket.endpoint/key`.
    pub force_path_style: bool,
    /// `chunksize`: the size of the segments uploads are stored in (≥ 5 MiB).
    pub chunk_size: u64,
    /// `secure`: https (true) or http for an endpoint given without a scheme.
    pub secure: bool,
    /// `multipartcopythresholdsize`: above this, moves use multipart copy.
    pub multipart_copy_threshold: u64,
    /// Blob GETs answered with a redirect to a presigned URL (Distribution's default;
    /// `storage.redirect.disable: true` turns it off).
    pub redirect: bool,
}

impl Default for S3Options {
    /// Distribution's defaults.
    fn default() -> Self {
        S3Options {
            region: String::new(),
            bucket: String::new(),
            endpoint: None,
            credentials: None,
            root_directory: String::new(),
            force_path_style: false,
            chunk_size: 10 * 1024 * 1024,
            secure: true,
            multipart_copy_threshold: 32 * 1024 * 1024,
            redirect: true,
        }
    }
}

/// A driver over an S3 bucket.
#[derive(Clone)]
pub struct S3Driver {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    bucket: String,
    /// `rootdirectory` without surrounding slashes; empty for the bucket's root.
    prefix: String,
    chunk_size: usize,
    copy_threshold: u64,
    redirect: bool,
}

impl std::fmt::Debug for S3Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Driver")
            .field("bucket", &self.inner.bucket)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

/// One piece of a segmented file.
#[derive(Debug, Clone)]
struct Segment {
    key: String,
    offset: u64,
    size: u64,
    modified: SystemTime,
}

impl S3Driver {
    /// Connects to the bucket described by `options` and checks that it answers (HeadBucket),
    /// so a wrong endpoint, bucket or key fails at start-up.
    pub async fn new(options: S3Options) -> std::result::Result<Self, String> {
        if options.bucket.is_empty() {
            return Err("storage.s3.bucket is required".into());
        }
        if options.region.is_empty() {
            return Err("storage.s3.region is required".into());
        }
        if options.chunk_size < MIN_PART || options.chunk_size > MAX_PART {
            return Err(format!(
                "storage.s3.chunksize {} is outside S3's part sizes ({MIN_PART} to {MAX_PART})",
                options.chunk_size
            ));
        }
        // rustls with ring, as the server's TLS: no second crypto library to build.
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let region = Region::new(options.region.clone());
        let mut builder = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http_client.clone())
            .region(region.clone())
            .force_path_style(options.force_path_style)
            // Checksums only where S3 requires them: not every S3-compatible server accepts
            // the SDK's default trailing checksums, and the registry verifies digests itself.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            // A blob read waits while a slow client drains it; that is not a stalled server.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .read_timeout(Duration::from_secs(120))
                    .build(),
            );
        match &options.credentials {
            Some((access, secret)) => {
                builder = builder.credentials_provider(Credentials::new(
                    access,
                    secret,
                    None,
                    None,
                    "berth config.yml",
                ));
            }
            None => {
                let shared = aws_config::defaults(BehaviorVersion::latest())
                    .http_client(http_client)
                    .region(region)
                    .load()
                    .await;
                let Some(provider) = shared.credentials_provider() else {
                    return Err("storage.s3: no accesskey/secretkey and no AWS credentials".into());
                };
                builder = builder.credentials_provider(provider);
            }
        }
        if let Some(endpoint) = options.endpoint.as_deref().filter(|e| !e.is_empty()) {
            let url = if endpoint.contains("://") {
                endpoint.to_owned()
            } else if options.secure {
                format!("https://{endpoint}")
            } else {
                format!("http://{endpoint}")
            };
            builder = builder.endpoint_url(url);
        }
        let client = Client::from_conf(builder.build());
        // Fail at start-up, with the reason, rather than serve an empty registry.
        client
            .head_bucket()
            .bucket(&options.bucket)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "cannot reach bucket {:?}: {}",
                    options.bucket,
                    DisplayErrorContext(e)
                )
            })?;
        Ok(S3Driver {
            inner: Arc::new(Inner {
                client,
                bucket: options.bucket,
                prefix: options.root_directory.trim_matches('/').to_owned(),
                chunk_size: options.chunk_size as usize,
                copy_threshold: options.multipart_copy_threshold.min(MAX_PART),
                redirect: options.redirect,
            }),
        })
    }

    /// The object key of a path (empty for the root with no root directory).
    fn key(&self, path: &StoragePath) -> String {
        match (self.inner.prefix.is_empty(), path.as_str().is_empty()) {
            (true, _) => path.as_str().to_owned(),
            (false, true) => self.inner.prefix.clone(),
            (false, false) => format!("{}/{}", self.inner.prefix, path.as_str()),
        }
    }

    /// The prefix of every key below a directory.
    fn dir_prefix(&self, path: &StoragePath) -> String {
        let key = self.key(path);
        if key.is_empty() { key } else { key + "/" }
    }

    fn segments_prefix(&self, path: &StoragePath) -> String {
        self.key(path) + SEGMENTS
    }

    fn segment_key(&self, path: &StoragePath, offset: u64) -> String {
        format!("{}{offset:020}", self.segments_prefix(path))
    }

    /// Every key (with size and time) below `prefix`, all pages; with `delimiter`, also the
    /// common prefixes.
    async fn list_keys(
        &self,
        prefix: &str,
        delimiter: bool,
        max: Option<i32>,
    ) -> std::result::Result<(Vec<Segment>, Vec<String>), io::Error> {
        let mut objects = Vec::new();
        let mut prefixes = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut request = self
                .inner
                .client
                .list_objects_v2()
                .bucket(&self.inner.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take());
            if delimiter {
                request = request.delimiter("/");
            }
            if let Some(max) = max {
                request = request.max_keys(max);
            }
            let page = request.send().await.map_err(sdk_io)?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                objects.push(Segment {
                    key: key.to_owned(),
                    offset: 0,
                    size: object.size().unwrap_or(0).max(0) as u64,
                    modified: object
                        .last_modified()
                        .and_then(|t| SystemTime::try_from(*t).ok())
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                });
            }
            prefixes.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix().map(str::to_owned)),
            );
            match page.next_continuation_token() {
                Some(t) if max.is_none() && page.is_truncated() == Some(true) => {
                    token = Some(t.to_owned())
                }
                _ => break,
            }
        }
        Ok((objects, prefixes))
    }

    /// The segments of a file, in order, checked to be contiguous from 0. Empty when the path
    /// has none.
    async fn segments(&self, path: &StoragePath) -> Result<Vec<Segment>> {
        let prefix = self.segments_prefix(path);
        let (objects, _) = self
            .list_keys(&prefix, false, None)
            .await
            .map_err(|e| io_err("list segments", path, e))?;
        let mut segments: Vec<Segment> = objects
            .into_iter()
            .filter_map(|mut s| {
                s.offset = s.key.strip_prefix(&prefix)?.parse().ok()?;
                Some(s)
            })
            .collect();
        segments.sort_by_key(|s| s.offset);
        let mut expected = 0;
        for s in &segments {
            if s.offset != expected {
                return Err(io_err(
                    "read segments",
                    path,
                    io::Error::other(format!(
                        "segment at {} where {expected} was expected (concurrent writers?)",
                        s.offset
                    )),
                ));
            }
            expected += s.size;
        }
        Ok(segments)
    }

    /// Size and time of a plain object, `None` when there is none.
    async fn head(&self, path: &StoragePath) -> Result<Option<(u64, SystemTime)>> {
        match self
            .inner
            .client
            .head_object()
            .bucket(&self.inner.bucket)
            .key(self.key(path))
            .send()
            .await
        {
            Ok(out) => Ok(Some((
                out.content_length().unwrap_or(0).max(0) as u64,
                out.last_modified()
                    .and_then(|t| SystemTime::try_from(*t).ok())
                    .unwrap_or(SystemTime::UNIX_EPOCH),
            ))),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(io_err("head", path, sdk_io(e))),
        }
    }

    async fn delete_keys(&self, path: &StoragePath, keys: Vec<String>) -> Result<()> {
        for batch in keys.chunks(1000) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| io_err("delete", path, io::Error::other(e)))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| io_err("delete", path, io::Error::other(e)))?;
            let out = self
                .inner
                .client
                .delete_objects()
                .bucket(&self.inner.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| io_err("delete", path, sdk_io(e)))?;
            if let Some(failed) = out.errors().first() {
                return Err(io_err(
                    "delete",
                    path,
                    io::Error::other(format!(
                        "{}: {}",
                        failed.key().unwrap_or_default(),
                        failed.message().unwrap_or_default()
                    )),
                ));
            }
        }
        Ok(())
    }

    async fn put_object(&self, key: String, content: Bytes) -> io::Result<()> {
        self.put_chunks(key, vec![content]).await
    }

    /// Stores the concatenation of `chunks` as one object (see [`chunks_body`]).
    async fn put_chunks(&self, key: String, chunks: Vec<Bytes>) -> io::Result<()> {
        let (length, body) = chunks_body(chunks);
        self.inner
            .client
            .put_object()
            .bucket(&self.inner.bucket)
            .key(key)
            .content_length(length as i64)
            .body(body)
            .send()
            .await
            .map_err(sdk_io)?;
        Ok(())
    }

    async fn get_range(&self, key: &str, range: Option<(u64, u64)>) -> io::Result<SdkByteStream> {
        let mut request = self
            .inner
            .client
            .get_object()
            .bucket(&self.inner.bucket)
            .key(key);
        if let Some((start, end_inclusive)) = range {
            request = request.range(format!("bytes={start}-{end_inclusive}"));
        }
        Ok(request.send().await.map_err(sdk_io)?.body)
    }

    /// Streams `[offset, offset+len)` of a segmented file, one GET at a time.
    fn read_segments(&self, segments: Vec<Segment>, offset: u64, len: u64) -> ByteStream {
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(READ_QUEUE_DEPTH);
        let driver = self.clone();
        tokio::spawn(async move {
            let end = offset + len;
            for s in segments {
                let (seg_start, seg_end) = (s.offset, s.offset + s.size);
                if seg_end <= offset || seg_start >= end || s.size == 0 {
                    continue;
                }
                let from = offset.max(seg_start) - seg_start;
                let to = end.min(seg_end) - seg_start; // exclusive
                let mut body = match driver.get_range(&s.key, Some((from, to - 1))).await {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                let mut got = 0;
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(io::Error::other);
                    if let Ok(c) = &chunk {
                        got += c.len() as u64;
                    }
                    let failed = chunk.is_err();
                    if tx.send(chunk).await.is_err() || failed {
                        return;
                    }
                }
                if got != to - from {
                    // A segment shorter than listed: never pad, fail the stream.
                    let _ = tx
                        .send(Err(io::Error::other("segment changed while being read")))
                        .await;
                    return;
                }
            }
        });
        futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .boxed()
    }
}

/// The concatenation of `chunks` as a request body, and its length. The chunks are the
/// request bodies' own buffers, sent as they are: no copy into one large allocation (which
/// the allocator would keep after the upload), and re-sent from the start on a retry.
fn chunks_body(chunks: Vec<Bytes>) -> (u64, SdkByteStream) {
    let length: u64 = chunks.iter().map(|c| c.len() as u64).sum();
    let chunks = Arc::new(chunks);
    let body = aws_sdk_s3::primitives::SdkBody::retryable(move || {
        aws_sdk_s3::primitives::SdkBody::from_body_1_x(ChunksBody {
            chunks: chunks.clone(),
            next: 0,
            remaining: length,
        })
    });
    (length, SdkByteStream::new(body))
}

/// A request body made of shared chunks, with an exact length.
struct ChunksBody {
    chunks: Arc<Vec<Bytes>>,
    next: usize,
    remaining: u64,
}

impl http_body::Body for ChunksBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<http_body::Frame<Bytes>, Self::Error>>> {
        let Some(chunk) = self.chunks.get(self.next).cloned() else {
            return std::task::Poll::Ready(None);
        };
        self.next += 1;
        self.remaining -= chunk.len() as u64;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

fn sdk_stream(body: SdkByteStream, limit: u64) -> ByteStream {
    futures_util::stream::unfold((body, limit), |(mut body, left)| async move {
        if left == 0 {
            return None;
        }
        match body.next().await? {
            Ok(mut chunk) => {
                if chunk.len() as u64 > left {
                    chunk.truncate(left as usize);
                }
                let left = left - chunk.len() as u64;
                Some((Ok(chunk), (body, left)))
            }
            Err(e) => Some((Err(io::Error::other(e)), (body, 0))),
        }
    })
    .boxed()
}

/// The HTTP status of a failed request, if it got that far.
fn status<E>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

fn sdk_io<E: std::error::Error + Send + Sync + 'static>(
    e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> io::Error {
    let message = DisplayErrorContext(&e).to_string();
    let kind = match status(&e) {
        // A missing bucket is a broken setup, not an empty registry.
        Some(404) if message.contains("NoSuchBucket") => io::ErrorKind::Other,
        Some(404) => io::ErrorKind::NotFound,
        Some(416) => io::ErrorKind::InvalidInput,
        // The server is there but cannot serve now (Garage without its quorum while a node
        // dies, S3 throttling), after the SDK's own retries: unavailable, not broken.
        Some(500 | 502 | 503 | 504) => io::ErrorKind::ResourceBusy,
        // No answer at all, after the retries: unreachable or too slow.
        None if matches!(e, SdkError::TimeoutError(_) | SdkError::DispatchFailure(_)) => {
            io::ErrorKind::TimedOut
        }
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, message)
}

/// The metadata of a segmented file.
fn segmented(segments: &[Segment]) -> Metadata {
    Metadata {
        size: segments.iter().map(|s| s.size).sum(),
        modified: segments
            .iter()
            .map(|s| s.modified)
            .max()
            .unwrap_or(SystemTime::UNIX_EPOCH),
        is_dir: false,
    }
}

fn io_err(op: &'static str, path: &StoragePath, e: io::Error) -> StorageError {
    StorageError::from_io(NAME, op, path, e)
}

fn not_found(path: &StoragePath) -> StorageError {
    StorageError::NotFound {
        driver: NAME,
        path: path.clone(),
    }
}

#[async_trait]
impl StorageDriver for S3Driver {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn get(&self, path: &StoragePath) -> Result<Bytes> {
        if path.as_str().is_empty() {
            return Err(not_found(path));
        }
        let body = self
            .get_range(&self.key(path), None)
            .await
            .map_err(|e| io_err("get", path, e))?;
        let data = body
            .collect()
            .await
            .map_err(|e| io_err("get", path, io::Error::other(e)))?;
        Ok(data.into_bytes())
    }

    async fn put(&self, path: &StoragePath, content: Bytes) -> Result<()> {
        self.put_object(self.key(path), content)
            .await
            .map_err(|e| io_err("put", path, e))
    }

    async fn reader(
        &self,
        path: &StoragePath,
        offset: u64,
        len: Option<u64>,
    ) -> Result<ByteStream> {
        if !path.as_str().is_empty()
            && let Some(stream) = self.read_object(path, offset, len).await?
        {
            return Ok(stream);
        }
        let segments = self.segments(path).await?;
        if segments.is_empty() {
            return Err(not_found(path));
        }
        let size: u64 = segments.iter().map(|s| s.size).sum();
        let len = StorageError::read_len(NAME, path, size, offset, len)?;
        Ok(self.read_segments(segments, offset, len))
    }

    async fn create_empty(&self, path: &StoragePath) -> Result<()> {
        // An empty first segment is an empty segmented file (what an empty commit writes).
        self.put_object(self.segment_key(path, 0), Bytes::new())
            .await
            .map_err(|e| io_err("create", path, e))
    }

    async fn append_to(&self, path: &StoragePath) -> Result<Box<dyn FileWriter>> {
        // Files appended to are segmented: their segments first, a HEAD only without any.
        let segments = self.segments(path).await?;
        if !segments.is_empty() {
            return self.append_writer(path, segments).await;
        }
        match self.head(path).await? {
            Some(plain) => self.append_plain(path, plain).await,
            None => Err(not_found(path)),
        }
    }

    async fn writer(&self, path: &StoragePath, append: bool) -> Result<Box<dyn FileWriter>> {
        let plain = self.head(path).await?;
        if !append {
            let mut stale: Vec<String> = self
                .segments_keys(path)
                .await
                .map_err(|e| io_err("truncate", path, e))?;
            if plain.is_some() {
                stale.push(self.key(path));
            }
            self.delete_keys(path, stale).await?;
            return Ok(Box::new(S3Writer::new(self.clone(), path.clone(), 0, 0)));
        }
        match plain {
            Some(plain) => self.append_plain(path, plain).await,
            None => {
                let segments = self.segments(path).await?;
                self.append_writer(path, segments).await
            }
        }
    }

    async fn publisher(&self, path: &StoragePath) -> Result<Box<dyn FileWriter>> {
        Ok(Box::new(S3Publisher::new(self.clone(), path.clone())))
    }

    async fn stat_file(&self, path: &StoragePath) -> Result<Metadata> {
        match self.stat_whole(path).await {
            Err(e) if e.is_not_found() => {}
            found => return found,
        }
        let segments = self.segments(path).await?;
        if segments.is_empty() {
            return Err(not_found(path));
        }
        Ok(segmented(&segments))
    }

    async fn stat(&self, path: &StoragePath) -> Result<Metadata> {
        if !path.as_str().is_empty()
            && let Some((size, modified)) = self.head(path).await?
        {
            return Ok(Metadata {
                size,
                modified,
                is_dir: false,
            });
        }
        let dir_prefix = self.dir_prefix(path);
        let (segments, below) = tokio::join!(
            async {
                if path.as_str().is_empty() {
                    Ok(Vec::new())
                } else {
                    self.segments(path).await
                }
            },
            self.list_keys(&dir_prefix, false, Some(1))
        );
        let segments = segments?;
        if !segments.is_empty() {
            return Ok(segmented(&segments));
        }
        let (below, _) = below.map_err(|e| io_err("stat", path, e))?;
        match below.first() {
            // A directory has no time of its own on S3: that of a key below it stands in.
            Some(first) => Ok(Metadata {
                size: 0,
                modified: first.modified,
                is_dir: true,
            }),
            None => Err(not_found(path)),
        }
    }

    async fn list(&self, path: &StoragePath) -> Result<Vec<String>> {
        let prefix = self.dir_prefix(path);
        let (objects, prefixes) = self
            .list_keys(&prefix, true, None)
            .await
            .map_err(|e| io_err("list", path, e))?;
        let mut names = std::collections::BTreeSet::new();
        let children = objects
            .iter()
            .map(|o| o.key.as_str())
            .chain(prefixes.iter().map(|p| p.trim_end_matches('/')));
        for child in children {
            let Some(name) = child.strip_prefix(&prefix) else {
                continue;
            };
            // A segmented file shows as its segments' prefix.
            let name = name
                .strip_suffix(&SEGMENTS[..SEGMENTS.len() - 1])
                .unwrap_or(name);
            if path.join(name).is_ok() {
                names.insert(name.to_owned());
            }
        }
        if names.is_empty() && objects.is_empty() && prefixes.is_empty() {
            return Err(not_found(path));
        }
        Ok(names.into_iter().collect())
    }

    async fn walk(&self, path: &StoragePath) -> Result<Vec<FileInfo>> {
        let prefix = self.dir_prefix(path);
        let (objects, _) = self
            .list_keys(&prefix, false, None)
            .await
            .map_err(|e| io_err("walk", path, e))?;
        if objects.is_empty() {
            return Err(not_found(path));
        }
        let mut files: BTreeMap<String, (u64, SystemTime)> = BTreeMap::new();
        for o in objects {
            let Some(rel) = o.key.strip_prefix(&prefix) else {
                continue;
            };
            let rel = match rel.split_once(SEGMENTS) {
                Some((file, _)) => file,
                None => rel,
            };
            let entry = files
                .entry(rel.to_owned())
                .or_insert((0, SystemTime::UNIX_EPOCH));
            entry.0 += o.size;
            entry.1 = entry.1.max(o.modified);
        }
        Ok(files
            .into_iter()
            .filter_map(|(rel, (size, modified))| {
                let mut full = path.clone();
                for component in rel.split('/') {
                    full = full.join(component).ok()?;
                }
                Some(FileInfo {
                    path: full,
                    size,
                    modified,
                })
            })
            .collect())
    }

    async fn stat_whole(&self, path: &StoragePath) -> Result<Metadata> {
        match self.head(path).await? {
            Some((size, modified)) => Ok(Metadata {
                size,
                modified,
                is_dir: false,
            }),
            None => Err(not_found(path)),
        }
    }

    async fn put_addressed(&self, path: &StoragePath, content: Bytes) -> Result<()> {
        // One request either way; a HEAD first would make a new file cost two.
        self.put(path, content).await
    }

    async fn move_before_delete(&self, from: &StoragePath, to: &StoragePath) -> Result<()> {
        self.copy_file(from, to).await.map(drop)
    }

    async fn move_to(&self, from: &StoragePath, to: &StoragePath) -> Result<()> {
        let (source, plain) = self.copy_file(from, to).await?;
        let mut keys: Vec<String> = source.into_iter().map(|s| s.key).collect();
        if !plain {
            // Segments another writer may have added since they were listed go too.
            keys.extend(
                self.segments_keys(from)
                    .await
                    .map_err(|e| io_err("move", from, e))?,
            );
            keys.sort();
            keys.dedup();
        }
        self.delete_keys(from, keys).await
    }

    fn redirects(&self) -> bool {
        self.inner.redirect
    }

    async fn redirect_url(&self, path: &StoragePath) -> Result<Option<String>> {
        if !self.inner.redirect {
            return Ok(None);
        }
        // Distribution's lifetime for these URLs: long enough for a slow pull to start.
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(REDIRECT_VALIDITY)
            .map_err(|e| io_err("presign", path, io::Error::other(e)))?;
        let request = self
            .inner
            .client
            .get_object()
            .bucket(&self.inner.bucket)
            .key(self.key(path))
            .presigned(config)
            .await
            .map_err(|e| io_err("presign", path, sdk_io(e)))?;
        Ok(Some(request.uri().to_owned()))
    }

    async fn delete_dir(&self, path: &StoragePath) -> Result<()> {
        let (below, _) = self
            .list_keys(&self.dir_prefix(path), false, None)
            .await
            .map_err(|e| io_err("delete", path, e))?;
        if below.is_empty() {
            return Err(not_found(path));
        }
        self.delete_keys(path, below.into_iter().map(|o| o.key).collect())
            .await
    }

    async fn delete(&self, path: &StoragePath) -> Result<()> {
        let root = path.as_str().is_empty() && self.inner.prefix.is_empty();
        let dir_prefix = self.dir_prefix(path);
        let (plain, below, segments) = tokio::join!(
            async {
                if root {
                    Ok(None)
                } else {
                    self.head(path).await
                }
            },
            self.list_keys(&dir_prefix, false, None),
            async {
                if root {
                    Ok(Vec::new())
                } else {
                    self.segments_keys(path).await
                }
            }
        );
        let mut keys: Vec<String> = segments.map_err(|e| io_err("delete", path, e))?;
        keys.extend(
            below
                .map_err(|e| io_err("delete", path, e))?
                .0
                .into_iter()
                .map(|o| o.key),
        );
        if plain?.is_some() {
            keys.push(self.key(path));
        }
        if keys.is_empty() {
            return Err(not_found(path));
        }
        self.delete_keys(path, keys).await
    }
}

impl S3Driver {
    /// Copies a file, segmented or plain, to `to` as one object; returns its source pieces and
    /// whether it was plain. Most files moved are finished uploads, which are segmented: their
    /// segments first, a HEAD only without any (a plain object and segments of one path are
    /// copies of the same bytes, left by an append interrupted between the two).
    async fn copy_file(
        &self,
        from: &StoragePath,
        to: &StoragePath,
    ) -> Result<(Vec<Segment>, bool)> {
        let segments = self.segments(from).await?;
        let plain = segments.is_empty();
        let source = if !plain {
            segments
        } else {
            match self.head(from).await? {
                Some((size, modified)) => vec![Segment {
                    key: self.key(from),
                    offset: 0,
                    size,
                    modified,
                }],
                None => Vec::new(),
            }
        };
        if source.is_empty() {
            return Err(not_found(from));
        }
        self.copy_object(from, &source, &self.key(to)).await?;
        Ok((source, plain))
    }

    /// Appending to a plain object: it becomes the first segment, so appending never
    /// rewrites it.
    async fn append_plain(
        &self,
        path: &StoragePath,
        (size, modified): (u64, SystemTime),
    ) -> Result<Box<dyn FileWriter>> {
        let first = Segment {
            key: self.key(path),
            offset: 0,
            size,
            modified,
        };
        self.copy_object(path, &[first], &self.segment_key(path, 0))
            .await?;
        self.delete_keys(path, vec![self.key(path)]).await?;
        let segments = self.segments(path).await?;
        self.append_writer(path, segments).await
    }

    /// A writer appending after `segments`.
    async fn append_writer(
        &self,
        path: &StoragePath,
        segments: Vec<Segment>,
    ) -> Result<Box<dyn FileWriter>> {
        let size: u64 = segments.iter().map(|s| s.size).sum();
        let mut writer = S3Writer::new(self.clone(), path.clone(), size, size);
        if let Some(last) = segments.last().filter(|s| s.size < MIN_PART) {
            // The short tail is rewritten with what comes next, so it ends up at least
            // MIN_PART long (or stays the last segment). It is read back only once something
            // comes: an append of nothing (a PUT closing an upload) reads nothing.
            writer.buffer_start = last.offset;
            if last.size > 0 {
                writer.tail = Some((last.key.clone(), last.size));
            }
        }
        writer.has_segments = !segments.is_empty();
        Ok(Box::new(writer))
    }
}

impl S3Driver {
    /// Streams part of an ordinary object; `None` when there is no such object (the path may
    /// be a segmented file).
    async fn read_object(
        &self,
        path: &StoragePath,
        offset: u64,
        len: Option<u64>,
    ) -> Result<Option<ByteStream>> {
        let key = self.key(path);
        // The common case, a whole blob or its start: one ranged GET, no HEAD first.
        if offset == 0 && len != Some(0) {
            match self.get_range(&key, len.map(|l| (0, l - 1))).await {
                Ok(body) => {
                    let size = body.size_hint().1.unwrap_or(u64::MAX);
                    return Ok(Some(sdk_stream(body, len.unwrap_or(size).min(size))));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                // 416: a range of an empty object; the HEAD below sorts it out.
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {}
                Err(e) => return Err(io_err("read", path, e)),
            }
        }
        let Some((size, _)) = self.head(path).await? else {
            return Ok(None);
        };
        let len = StorageError::read_len(NAME, path, size, offset, len)?;
        if len == 0 {
            return Ok(Some(futures_util::stream::empty().boxed()));
        }
        let body = self
            .get_range(&key, Some((offset, offset + len - 1)))
            .await
            .map_err(|e| io_err("read", path, e))?;
        Ok(Some(sdk_stream(body, len)))
    }

    async fn segments_keys(&self, path: &StoragePath) -> io::Result<Vec<String>> {
        let (objects, _) = self
            .list_keys(&self.segments_prefix(path), false, None)
            .await?;
        Ok(objects.into_iter().map(|o| o.key).collect())
    }
}
