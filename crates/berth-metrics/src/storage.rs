//! `registry_storage_action_seconds{driver,action}`: how long each storage driver call takes.
//!
//! Why a wrapper: `berth-storage` must not know Prometheus, and Distribution times its
//! drivers the same way (`registry/storage/driver/base`, which every driver embeds). The
//! binary wraps whatever driver it built in a [`TimedDriver`] when metrics are on, so the
//! registry and the drivers are unchanged, and with metrics off nothing is wrapped.
//!
//! `action` is Distribution's method name where there is one (`GetContent`, `PutContent`,
//! `Reader`, `Writer`, `Stat`, `List`, `Move`, `Delete`, `URLFor`, `Walk`), else the name
//! of berth's own call (`ListStamped`, `Stamps`, `Temporaries`); `driver` is Distribution's
//! driver name (`filesystem`, `s3aws`). `Reader` and `Writer` time opening the stream, not
//! the transfer, as Distribution's.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use berth_storage::{
    ByteStream, DirStamp, FileInfo, FileWriter, Listing, Metadata, Result, StorageDriver,
    StoragePath,
};
use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::sharded::Histogram;

/// A driver call, as the `action` label names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageAction {
    /// `get` (and Distribution's `GetContent`).
    GetContent,
    /// `put` and `touch`.
    PutContent,
    /// Opening a `reader`.
    Reader,
    /// Opening a `writer`.
    Writer,
    /// `stat`
    Stat,
    /// `list`
    List,
    /// `list_stamped` (berth's).
    ListStamped,
    /// `stamps` (berth's).
    Stamps,
    /// `walk`
    Walk,
    /// `move_to`
    Move,
    /// `delete`
    Delete,
    /// `redirect_url`
    URLFor,
    /// `temporaries` (berth's).
    Temporaries,
}

impl StorageAction {
    /// Every action, in index order.
    pub const ALL: [StorageAction; 13] = [
        StorageAction::GetContent,
        StorageAction::PutContent,
        StorageAction::Reader,
        StorageAction::Writer,
        StorageAction::Stat,
        StorageAction::List,
        StorageAction::ListStamped,
        StorageAction::Stamps,
        StorageAction::Walk,
        StorageAction::Move,
        StorageAction::Delete,
        StorageAction::URLFor,
        StorageAction::Temporaries,
    ];

    /// The `action` label.
    pub fn label(self) -> &'static str {
        match self {
            StorageAction::GetContent => "GetContent",
            StorageAction::PutContent => "PutContent",
            StorageAction::Reader => "Reader",
            StorageAction::Writer => "Writer",
            StorageAction::Stat => "Stat",
            StorageAction::List => "List",
            StorageAction::ListStamped => "ListStamped",
            StorageAction::Stamps => "Stamps",
            StorageAction::Walk => "Walk",
            StorageAction::Move => "Move",
            StorageAction::Delete => "Delete",
            StorageAction::URLFor => "URLFor",
            StorageAction::Temporaries => "Temporaries",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Labels {
    driver: &'static str,
    action: &'static str,
}

/// Go's `prometheus.DefBuckets`, which Distribution's storage timer uses.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS, 1e9)
}

pub(crate) fn register(registry: &mut Registry) -> Family<Labels, Histogram> {
    let family = Family::<Labels, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
    registry.register(
        "registry_storage_action_seconds",
        "The number of seconds that the storage action takes",
        family.clone(),
    );
    family
}

/// Distribution's name for a driver (`s3` is its `s3aws`).
fn distribution_name(name: &'static str) -> &'static str {
    match name {
        "s3" => "s3aws",
        other => other,
    }
}

/// A storage driver whose every call is timed (see the module doc).
pub struct TimedDriver {
    inner: Arc<dyn StorageDriver>,
    /// By [`StorageAction`] index, resolved once.
    timers: Vec<Histogram>,
}

impl TimedDriver {
    pub(crate) fn new(inner: Arc<dyn StorageDriver>, family: &Family<Labels, Histogram>) -> Self {
        let driver = distribution_name(inner.name());
        let timers = StorageAction::ALL
            .iter()
            .map(|a| {
                family.get_or_create_owned(&Labels {
                    driver,
                    action: a.label(),
                })
            })
            .collect();
        TimedDriver { inner, timers }
    }

    fn record(&self, action: StorageAction, since: Instant) {
        self.timers[action as usize].observe(since.elapsed().as_secs_f64());
    }
}

#[async_trait]
impl StorageDriver for TimedDriver {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn get(&self, path: &StoragePath) -> Result<Bytes> {
        let t = Instant::now();
        let r = self.inner.get(path).await;
        self.record(StorageAction::GetContent, t);
        r
    }

    async fn put(&self, path: &StoragePath, content: Bytes) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.put(path, content).await;
        self.record(StorageAction::PutContent, t);
        r
    }

    async fn touch(&self, path: &StoragePath) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.touch(path).await;
        self.record(StorageAction::PutContent, t);
        r
    }

    async fn reader(
        &self,
        path: &StoragePath,
        offset: u64,
        len: Option<u64>,
    ) -> Result<ByteStream> {
        let t = Instant::now();
        let r = self.inner.reader(path, offset, len).await;
        self.record(StorageAction::Reader, t);
        r
    }

    async fn writer(&self, path: &StoragePath, append: bool) -> Result<Box<dyn FileWriter>> {
        let t = Instant::now();
        let r = self.inner.writer(path, append).await;
        self.record(StorageAction::Writer, t);
        r
    }

    async fn stat_whole(&self, path: &StoragePath) -> Result<Metadata> {
        let t = Instant::now();
        let r = self.inner.stat_whole(path).await;
        self.record(StorageAction::Stat, t);
        r
    }

    async fn move_before_delete(&self, from: &StoragePath, to: &StoragePath) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.move_before_delete(from, to).await;
        self.record(StorageAction::Move, t);
        r
    }

    async fn put_addressed(&self, path: &StoragePath, content: Bytes) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.put_addressed(path, content).await;
        self.record(StorageAction::PutContent, t);
        r
    }

    async fn publisher(&self, path: &StoragePath) -> Result<Box<dyn FileWriter>> {
        let t = Instant::now();
        let r = self.inner.publisher(path).await;
        self.record(StorageAction::Writer, t);
        r
    }

    // Distribution's actions have no names of their own for these three; they are timed
    // as the actions they replace.
    async fn create_empty(&self, path: &StoragePath) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.create_empty(path).await;
        self.record(StorageAction::Writer, t);
        r
    }

    async fn append_to(&self, path: &StoragePath) -> Result<Box<dyn FileWriter>> {
        let t = Instant::now();
        let r = self.inner.append_to(path).await;
        self.record(StorageAction::Writer, t);
        r
    }

    async fn stat(&self, path: &StoragePath) -> Result<Metadata> {
        let t = Instant::now();
        let r = self.inner.stat(path).await;
        self.record(StorageAction::Stat, t);
        r
    }

    async fn stat_file(&self, path: &StoragePath) -> Result<Metadata> {
        let t = Instant::now();
        let r = self.inner.stat_file(path).await;
        self.record(StorageAction::Stat, t);
        r
    }

    async fn list(&self, path: &StoragePath) -> Result<Vec<String>> {
        let t = Instant::now();
        let r = self.inner.list(path).await;
        self.record(StorageAction::List, t);
        r
    }

    async fn walk(&self, path: &StoragePath) -> Result<Vec<FileInfo>> {
        let t = Instant::now();
        let r = self.inner.walk(path).await;
        self.record(StorageAction::Walk, t);
        r
    }

    async fn list_stamped(&self, dirs: &[StoragePath]) -> Vec<Result<Listing>> {
        let t = Instant::now();
        let r = self.inner.list_stamped(dirs).await;
        self.record(StorageAction::ListStamped, t);
        r
    }

    async fn stamps(&self, dirs: &[StoragePath]) -> Vec<Option<DirStamp>> {
        let t = Instant::now();
        let r = self.inner.stamps(dirs).await;
        self.record(StorageAction::Stamps, t);
        r
    }

    async fn move_to(&self, from: &StoragePath, to: &StoragePath) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.move_to(from, to).await;
        self.record(StorageAction::Move, t);
        r
    }

    async fn delete(&self, path: &StoragePath) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.delete(path).await;
        self.record(StorageAction::Delete, t);
        r
    }

    async fn delete_dir(&self, path: &StoragePath) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.delete_dir(path).await;
        self.record(StorageAction::Delete, t);
        r
    }

    fn redirects(&self) -> bool {
        self.inner.redirects()
    }

    async fn redirect_url(&self, path: &StoragePath) -> Result<Option<String>> {
        let t = Instant::now();
        let r = self.inner.redirect_url(path).await;
        self.record(StorageAction::URLFor, t);
        r
    }

    async fn temporaries(&self, path: &StoragePath) -> Result<Vec<FileInfo>> {
        let t = Instant::now();
        let r = self.inner.temporaries(path).await;
        self.record(StorageAction::Temporaries, t);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_indexed_in_order() {
        for (i, a) in StorageAction::ALL.iter().enumerate() {
            assert_eq!(*a as usize, i);
        }
    }

    /// Every call of the trait reaches the wrapped driver and lands in its own series: a
    /// driver call the wrapper forgot to forward would fall back to the trait's default and
    /// skip the real driver (its stamps, its temporaries), and this would see it.
    #[tokio::test]
    async fn every_call_is_forwarded_and_timed() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let fs = berth_storage::FsDriver::new(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let metrics = crate::Metrics::new("test");
        let driver = metrics.time_storage(Arc::new(fs));
        assert_eq!(driver.name(), "filesystem");
        let p = |s: &str| StoragePath::parse(s).unwrap_or_else(|e| panic!("{e}"));
        let (a, b, d) = (p("d/a"), p("d/b"), p("d"));
        driver
            .put(&a, Bytes::from_static(b"x"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        driver.touch(&b).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(driver.get(&a).await.ok().as_deref(), Some(&b"x"[..]));
        assert!(driver.reader(&a, 0, None).await.is_ok());
        let w = driver
            .writer(&p("d/c"), false)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        w.commit().await.unwrap_or_else(|e| panic!("{e}"));
        assert!(driver.stat(&a).await.is_ok());
        assert_eq!(driver.list(&d).await.map(|l| l.len()).ok(), Some(3));
        assert_eq!(driver.walk(&d).await.map(|l| l.len()).ok(), Some(3));
        assert!(driver.list_stamped(std::slice::from_ref(&d)).await[0].is_ok());
        assert!(
            driver.stamps(std::slice::from_ref(&d)).await[0].is_some(),
            "the filesystem's stamps, not the trait's default None"
        );
        driver
            .move_to(&a, &p("d/e"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        driver.delete(&b).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(driver.redirect_url(&d).await.ok(), Some(None));
        assert!(driver.temporaries(&d).await.is_ok());

        let text = metrics.encode();
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
            .unwrap_or_else(|e| panic!("{e}"));
        for action in StorageAction::ALL {
            let count = scrape
                .samples
                .iter()
                .find(|s| {
                    s.metric == "registry_storage_action_seconds_count"
                        && s.labels.get("action") == Some(action.label())
                        && s.labels.get("driver") == Some("filesystem")
                })
                .map(|s| match s.value {
                    prometheus_parse::Value::Untyped(v) | prometheus_parse::Value::Counter(v) => v,
                    _ => -1.0,
                });
            let want = if action == StorageAction::PutContent {
                2.0
            } else {
                1.0
            };
            assert_eq!(count, Some(want), "{}:\n{text}", action.label());
        }
    }
}
