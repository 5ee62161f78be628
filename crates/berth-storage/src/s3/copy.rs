//! Moving a segmented file into place without a byte through berth: one CopyObject for a
//! single small segment, else a multipart upload of server-side `UploadPartCopy`s, ranged
//! where a segment is over S3's part limit (the module doc of `s3` has the why).

use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use futures_util::{StreamExt, TryStreamExt};

use super::*;

/// One part of a multipart copy: the source piece's key and size, and the inclusive byte
/// range of it (`None`: the whole piece).
type PartSource = (String, u64, Option<(u64, u64)>);

impl S3Driver {
    pub(super) fn copy_source(&self, key: &str) -> String {
        format!("{}/{}", self.inner.bucket, percent_encode(key))
    }

    /// Copies `source_key` (of `size` bytes) to `to`, server-side.
    pub(super) async fn copy_object(
        &self,
        path: &StoragePath,
        source: &[Segment],
        to: &str,
    ) -> Result<()> {
        let total: u64 = source.iter().map(|s| s.size).sum();
        if source.len() == 1 && total <= self.inner.copy_threshold {
            self.inner
                .client
                .copy_object()
                .bucket(&self.inner.bucket)
                .key(to)
                .copy_source(self.copy_source(&source[0].key))
                .send()
                .await
                .map_err(|e| io_err("copy", path, sdk_io(e)))?;
            return Ok(());
        }
        let parts: Vec<PartSource> = plan_parts(source.iter().map(|s| s.size))
            .into_iter()
            .map(|(idx, range)| (source[idx].key.clone(), source[idx].size, range))
            .collect();
        if parts.len() > MAX_PARTS {
            return Err(io_err(
                "copy",
                path,
                io::Error::other(format!(
                    "{} parts exceed S3's {MAX_PARTS}: raise storage.s3.chunksize",
                    parts.len()
                )),
            ));
        }
        let upload = self
            .inner
            .client
            .create_multipart_upload()
            .bucket(&self.inner.bucket)
            .key(to)
            .send()
            .await
            .map_err(|e| io_err("copy", path, sdk_io(e)))?;
        let upload_id = upload.upload_id().unwrap_or_default().to_owned();
        let copied: io::Result<Vec<CompletedPart>> =
            futures_util::stream::iter(parts.into_iter().enumerate())
                .map(|(idx, (key, size, range))| {
                    let upload_id = &upload_id;
                    async move {
                        let number = idx as i32 + 1;
                        if range.is_none() && size < COPY_BY_UPLOAD {
                            return self
                                .upload_part_from(&key, size, to, upload_id, number)
                                .await;
                        }
                        let mut request = self
                            .inner
                            .client
                            .upload_part_copy()
                            .bucket(&self.inner.bucket)
                            .key(to)
                            .upload_id(upload_id)
                            .part_number(number)
                            .copy_source(self.copy_source(&key));
                        if let Some((start, end)) = range {
                            request = request.copy_source_range(format!("bytes={start}-{end}"));
                        }
                        let out = request.send().await.map_err(sdk_io)?;
                        let etag = out
                            .copy_part_result()
                            .and_then(|r| r.e_tag())
                            .unwrap_or_default()
                            .to_owned();
                        Ok(CompletedPart::builder()
                            .part_number(number)
                            .e_tag(etag)
                            .build())
                    }
                })
                .buffered(COPY_CONCURRENCY)
                .try_collect()
                .await;
        let completed = match copied {
            Ok(parts) => self
                .inner
                .client
                .complete_multipart_upload()
                .bucket(&self.inner.bucket)
                .key(to)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(sdk_io)
                .map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = completed {
            // Leave no invisible, billed parts behind.
            let _ = self
                .inner
                .client
                .abort_multipart_upload()
                .bucket(&self.inner.bucket)
                .key(to)
                .upload_id(&upload_id)
                .send()
                .await;
            return Err(io_err("copy", path, e));
        }
        Ok(())
    }
}

impl S3Driver {
    /// Uploads a small object's bytes as part `number`: the copy of a piece too small to be
    /// copied server-side everywhere (Garage stores objects of a few KiB inline, and its
    /// `UploadPartCopy` refuses them as a source, "source too small").
    async fn upload_part_from(
        &self,
        key: &str,
        size: u64,
        to: &str,
        upload_id: &str,
        number: i32,
    ) -> io::Result<CompletedPart> {
        let body = self.get_range(key, None).await?;
        let bytes = body.collect().await.map_err(io::Error::other)?.into_bytes();
        if bytes.len() as u64 != size {
            return Err(io::Error::other(format!(
                "segment {key} changed size while being copied: {} bytes, {size} listed",
                bytes.len()
            )));
        }
        let out = self
            .inner
            .client
            .upload_part()
            .bucket(&self.inner.bucket)
            .key(to)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(size as i64)
            .body(SdkByteStream::from(bytes))
            .send()
            .await
            .map_err(sdk_io)?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .e_tag(out.e_tag().unwrap_or_default())
            .build())
    }
}

/// Pieces under this size are read and uploaded as parts instead of copied server-side: a
/// round trip through berth that costs less than a refused copy, and nothing for big pieces.
const COPY_BY_UPLOAD: u64 = 64 * 1024;

/// The parts of a multipart copy of pieces of these sizes, as (piece index, inclusive byte
/// range or the whole piece): each piece whole, or in [`COPY_RANGE`] ranges when it is over
/// S3's part limit, the last range folded into the one before when it would be under S3's
/// minimum.
fn plan_parts(sizes: impl Iterator<Item = u64>) -> Vec<(usize, Option<(u64, u64)>)> {
    let mut parts = Vec::new();
    for (idx, size) in sizes.enumerate() {
        if size <= MAX_PART {
            parts.push((idx, None));
            continue;
        }
        let mut start = 0;
        while start < size {
            let mut end = (start + COPY_RANGE).min(size);
            if size - end < MIN_PART {
                end = size;
            }
            parts.push((idx, Some((start, end - 1))));
            start = end;
        }
    }
    parts
}

/// Percent-encodes a key for `x-amz-copy-source`, keeping `/` and RFC 3986's unreserved set.
fn percent_encode(key: &str) -> String {
    /// Everything but RFC 3986's unreserved characters and the key's own `/`.
    const ENCODED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(key, ENCODED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_pieces_are_copied_in_ranges_within_part_limits() {
        const GIB: u64 = 1024 * 1024 * 1024;
        // Ten-MiB segments stay whole.
        assert_eq!(
            plan_parts([10 << 20, 10 << 20, 3].into_iter()),
            vec![(0, None), (1, None), (2, None)]
        );
        // A 10 GiB object plus 1 MiB: ten 1 GiB ranges, the 1 MiB tail folded into the last.
        let parts = plan_parts([10 * GIB + (1 << 20)].into_iter());
        assert_eq!(parts.len(), 10);
        assert_eq!(parts[0], (0, Some((0, GIB - 1))));
        assert_eq!(parts[9], (0, Some((9 * GIB, 10 * GIB + (1 << 20) - 1))));
        for (_, range) in &parts {
            let (start, end) = range.unwrap();
            assert!(end - start < MAX_PART && end + 1 - start >= MIN_PART);
        }
    }

    #[test]
    fn copy_source_is_encoded() {
        assert_eq!(percent_encode("a b/c~seg/0+1"), "a%20b/c~seg/0%2B1");
    }
}
