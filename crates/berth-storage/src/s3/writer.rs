//! Appending to a segmented file: what `StorageDriver::writer` returns on S3. It buffers up to
//! `chunksize`, stores each full buffer as the next segment with at most one upload in
//! flight, so memory per upload stays at two segments whatever the blob's size.

use super::*;

/// Appends to a segmented file: buffers up to `chunksize`, then stores the buffer as the
/// segment starting at `buffer_start`, with at most one segment upload in flight.
pub(super) struct S3Writer {
    driver: S3Driver,
    path: StoragePath,
    /// What the next segment holds so far, as the chunks received.
    pub(super) buffer: Vec<Bytes>,
    pub(super) buffered: usize,
    /// Offset in the file of the buffer's first byte.
    pub(super) buffer_start: u64,
    size: u64,
    /// Whether the file has a segment in the bucket (if not, commit stores even an empty one,
    /// so the file exists).
    pub(super) has_segments: bool,
    /// Whether bytes were written since the last flush (a re-read tail alone is not news).
    dirty: bool,
    /// The short last segment (key, size) the buffer must start with, not read back yet.
    pub(super) tail: Option<(String, u64)>,
    in_flight: Option<tokio::task::JoinHandle<io::Result<()>>>,
}

impl S3Writer {
    pub(super) fn new(driver: S3Driver, path: StoragePath, buffer_start: u64, size: u64) -> Self {
        S3Writer {
            driver,
            path,
            buffer: Vec::new(),
            buffered: 0,
            buffer_start,
            size,
            has_segments: false,
            dirty: false,
            tail: None,
            in_flight: None,
        }
    }

    /// Reads back the short last segment into the buffer, before the first new byte.
    async fn load_tail(&mut self) -> Result<()> {
        let Some((key, size)) = self.tail.take() else {
            return Ok(());
        };
        let body = self
            .driver
            .get_range(&key, None)
            .await
            .map_err(|e| io_err("read tail", &self.path, e))?;
        let tail = body
            .collect()
            .await
            .map_err(|e| io_err("read tail", &self.path, io::Error::other(e)))?
            .into_bytes();
        if tail.len() as u64 != size {
            return Err(io_err(
                "read tail",
                &self.path,
                io::Error::other("tail segment changed while being read"),
            ));
        }
        self.buffered = tail.len();
        self.buffer.push(tail);
        Ok(())
    }

    async fn wait_in_flight(&mut self) -> Result<()> {
        if let Some(handle) = self.in_flight.take() {
            handle
                .await
                .unwrap_or_else(|join| Err(io::Error::other(join)))
                .map_err(|e| io_err("write segment", &self.path, e))?;
        }
        Ok(())
    }

    /// Sends the buffer as a segment, after the previous one has landed: segments are stored
    /// in order, so a crash leaves a contiguous prefix.
    async fn flush(&mut self) -> Result<()> {
        self.wait_in_flight().await?;
        let content = std::mem::take(&mut self.buffer);
        let key = self.driver.segment_key(&self.path, self.buffer_start);
        self.buffer_start += self.buffered as u64;
        self.buffered = 0;
        self.has_segments = true;
        self.dirty = false;
        let driver = self.driver.clone();
        self.in_flight = Some(tokio::spawn(async move {
            driver.put_chunks(key, content).await
        }));
        Ok(())
    }
}

#[async_trait]
impl FileWriter for S3Writer {
    async fn write(&mut self, mut chunk: Bytes) -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.load_tail().await?;
        self.size += chunk.len() as u64;
        let chunk_size = self.driver.inner.chunk_size;
        while !chunk.is_empty() {
            let room = chunk_size - self.buffered.min(chunk_size);
            let take = room.min(chunk.len());
            self.dirty = true;
            // split_to shares the chunk's allocation: no bytes are copied.
            self.buffer.push(chunk.split_to(take));
            self.buffered += take;
            if self.buffered >= chunk_size {
                self.flush().await?;
            }
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        if self.dirty || !self.has_segments {
            self.flush().await?;
        }
        self.wait_in_flight().await
    }
}
