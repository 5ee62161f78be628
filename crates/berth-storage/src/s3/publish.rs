//! A whole new object written in one go and published at once: what
//! `StorageDriver::publisher` returns on S3. Up to `chunksize` it is one PutObject at commit;
//! beyond, a multipart upload straight to the target key whose parts S3 keeps invisible until
//! the commit completes it. No segments, no copy and no delete afterwards, which is why a blob
//! pushed in one request costs a few requests instead of a dozen. Memory is bounded as the
//! segment writer's is: the part filling and the part being sent.

use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use super::*;

/// A multipart upload in progress at the publisher's key.
struct Multipart {
    id: String,
    parts: Vec<CompletedPart>,
    in_flight: Option<tokio::task::JoinHandle<io::Result<CompletedPart>>>,
}

pub(super) struct S3Publisher {
    driver: S3Driver,
    path: StoragePath,
    key: String,
    buffer: Vec<Bytes>,
    buffered: usize,
    size: u64,
    /// Started when the content outgrows one buffer.
    upload: Option<Multipart>,
}

impl S3Publisher {
    pub(super) fn new(driver: S3Driver, path: StoragePath) -> Self {
        let key = driver.key(&path);
        S3Publisher {
            driver,
            path,
            key,
            buffer: Vec::new(),
            buffered: 0,
            size: 0,
            upload: None,
        }
    }

    fn err(&self, e: io::Error) -> StorageError {
        io_err("publish", &self.path, e)
    }

    async fn wait_in_flight(&mut self) -> Result<()> {
        let Some(upload) = self.upload.as_mut() else {
            return Ok(());
        };
        if let Some(handle) = upload.in_flight.take() {
            let part = handle
                .await
                .unwrap_or_else(|join| Err(io::Error::other(join)))
                .map_err(|e| io_err("publish", &self.path, e))?;
            upload.parts.push(part);
        }
        Ok(())
    }

    /// Sends the buffer as the next part, after the previous one has landed (one in flight).
    async fn send_part(&mut self) -> Result<()> {
        self.wait_in_flight().await?;
        if self.upload.is_none() {
            let out = self
                .driver
                .inner
                .client
                .create_multipart_upload()
                .bucket(&self.driver.inner.bucket)
                .key(&self.key)
                .send()
                .await
                .map_err(|e| self.err(sdk_io(e)))?;
            self.upload = Some(Multipart {
                id: out.upload_id().unwrap_or_default().to_owned(),
                parts: Vec::new(),
                in_flight: None,
            });
        }
        let Some(upload) = self.upload.as_mut() else {
            return Ok(());
        };
        let number = upload.parts.len() as i32 + 1;
        if number as usize > MAX_PARTS {
            return Err(io_err(
                "publish",
                &self.path,
                io::Error::other(format!(
                    "more than S3's {MAX_PARTS} parts: raise storage.s3.chunksize"
                )),
            ));
        }
        let (length, body) = chunks_body(std::mem::take(&mut self.buffer));
        self.buffered = 0;
        let request = self
            .driver
            .inner
            .client
            .upload_part()
            .bucket(&self.driver.inner.bucket)
            .key(&self.key)
            .upload_id(&upload.id)
            .part_number(number)
            .content_length(length as i64)
            .body(body);
        upload.in_flight = Some(tokio::spawn(async move {
            let out = request.send().await.map_err(sdk_io)?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .e_tag(out.e_tag().unwrap_or_default())
                .build())
        }));
        Ok(())
    }

    async fn complete(&mut self) -> Result<()> {
        if !self.buffer.is_empty() {
            self.send_part().await?;
        }
        self.wait_in_flight().await?;
        let Some(upload) = self.upload.as_ref() else {
            return Ok(());
        };
        // The upload stays recorded until it is complete, so that a writer dropped on the way
        // (an error, or the request cancelled mid-completion) aborts it.
        let completed = self
            .driver
            .inner
            .client
            .complete_multipart_upload()
            .bucket(&self.driver.inner.bucket)
            .key(&self.key)
            .upload_id(&upload.id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(upload.parts.clone()))
                    .build(),
            )
            .send()
            .await;
        if let Err(e) = completed {
            return Err(self.err(sdk_io(e)));
        }
        self.upload = None;
        Ok(())
    }
}

#[async_trait]
impl FileWriter for S3Publisher {
    async fn write(&mut self, mut chunk: Bytes) -> Result<()> {
        self.size += chunk.len() as u64;
        let chunk_size = self.driver.inner.chunk_size;
        while !chunk.is_empty() {
            let take = (chunk_size - self.buffered.min(chunk_size)).min(chunk.len());
            self.buffer.push(chunk.split_to(take));
            self.buffered += take;
            if self.buffered >= chunk_size {
                self.send_part().await?;
            }
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        if self.upload.is_some() {
            return self.complete().await;
        }
        let buffer = std::mem::take(&mut self.buffer);
        self.driver
            .put_chunks(self.key.clone(), buffer)
            .await
            .map_err(|e| self.err(e))
    }
}

impl Drop for S3Publisher {
    /// An upload never completed is aborted, so no invisible, billed parts stay behind (a
    /// crash leaves them to the bucket's lifecycle rule for incomplete uploads, as
    /// Distribution's do).
    fn drop(&mut self) {
        let Some(upload) = self.upload.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if let Some(handle) = upload.in_flight {
            handle.abort();
        }
        let abort = self
            .driver
            .inner
            .client
            .abort_multipart_upload()
            .bucket(&self.driver.inner.bucket)
            .key(&self.key)
            .upload_id(upload.id);
        runtime.spawn(async move {
            let _ = abort.send().await;
        });
    }
}
