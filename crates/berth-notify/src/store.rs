//! The notification log's files, as `berth_registry::layout` places them under
//! `_berth/notifications/<instance>/`: their formats, and reading a whole log back.
//!
//! - `lease`: JSON `{instance, owner, started, released, identity}`; rewritten by whoever
//!   delivers the log (its `owner`) every third of the lease duration, so its modification
//!   time, on the storage's clock, says the deliverer is alive.
//! - `events/<seq>`: JSON `{"events":[{"to":[endpoint names],"event":{...}}]}`, one per group
//!   commit, written once (atomically) and deleted once every endpoint named in it has its
//!   events.
//! - `cursors/<key>`: JSON `{endpoint, seq, index}`, an endpoint's position, written at most
//!   once a second: after a crash, at most a second of deliveries is repeated.

use std::collections::HashMap;
use std::sync::Arc;

use berth_registry::layout;
use berth_storage::{StorageDriver, StorageError};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::identity::ProcessIdentity;
use crate::queue::{Batch, Log, Pos, Record};

/// A log's lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Lease {
    /// The process that started the log.
    pub instance: uuid::Uuid,
    /// The process delivering it now.
    pub owner: uuid::Uuid,
    /// When the log was started (ms since the epoch, its writer's clock).
    pub started: u64,
    /// The owner stopped cleanly with events left: anyone may take the log at once.
    #[serde(default)]
    pub released: bool,
    /// The owner's identity, for the same-host liveness check (see `identity`).
    #[serde(default)]
    pub identity: Option<ProcessIdentity>,
}

impl Lease {
    pub fn bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

#[derive(Serialize, Deserialize)]
struct Cursor {
    endpoint: String,
    seq: u64,
    index: usize,
}

#[derive(Deserialize)]
struct StoredBatch {
    events: Vec<StoredRecord>,
}

#[derive(Deserialize)]
struct StoredRecord {
    to: Vec<String>,
    event: Box<RawValue>,
}

/// A batch file's bytes: each event with the names of the endpoints it is for.
pub(crate) fn batch_bytes(records: &[(Vec<&str>, &str)]) -> Bytes {
    let mut out = String::from("{\"events\":[");
    for (i, (to, event)) in records.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"to\":");
        out.push_str(&serde_json::to_string(to).unwrap_or_else(|_| "[]".into()));
        out.push_str(",\"event\":");
        out.push_str(event);
        out.push('}');
    }
    out.push_str("]}");
    Bytes::from(out)
}

/// Writes an endpoint's cursor into a log.
pub(crate) async fn write_cursor(
    driver: &dyn StorageDriver,
    instance: &uuid::Uuid,
    endpoint: &str,
    pos: Pos,
) -> Result<(), StorageError> {
    let cursor = Cursor {
        endpoint: endpoint.to_owned(),
        seq: pos.seq,
        index: pos.index,
    };
    let bytes = Bytes::from(serde_json::to_vec(&cursor).unwrap_or_default());
    driver
        .put(&layout::notification_cursor(instance, endpoint), bytes)
        .await
}

/// Reads a lease: `None` when there is none (or it is unreadable: treated as absent).
pub(crate) async fn read_lease(
    driver: &dyn StorageDriver,
    instance: &uuid::Uuid,
) -> Result<Option<Lease>, StorageError> {
    match driver.get(&layout::notification_lease(instance)).await {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The sequence numbers of a log's batches, in order.
pub(crate) async fn batch_seqs(
    driver: &dyn StorageDriver,
    instance: &uuid::Uuid,
) -> Result<Vec<u64>, StorageError> {
    let names = match driver.list(&layout::notification_batches(instance)).await {
        Ok(n) => n,
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut seqs: Vec<u64> = names.iter().filter_map(|n| n.parse().ok()).collect();
    seqs.sort_unstable();
    Ok(seqs)
}

/// What loading a log found besides the log itself.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// Events for endpoints no longer configured, by name: they are not delivered.
    pub unknown: HashMap<String, usize>,
    /// Batch files that could not be parsed (and were removed).
    pub unreadable: usize,
}

/// Reads log `instance` back: batches `seqs` (those not already in `into`), and each
/// endpoint's cursor, whose earlier events count as delivered.
pub(crate) async fn load(
    driver: &dyn StorageDriver,
    into: &mut Log,
    seqs: &[u64],
    endpoints: &[String],
) -> Result<Loaded, StorageError> {
    let mut loaded = Loaded::default();
    let index: HashMap<&str, usize> = endpoints
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let fresh = into.batches.is_empty();
    if fresh {
        for (e, name) in endpoints.iter().enumerate() {
            let path = layout::notification_cursor(&into.instance, name);
            match driver.get(&path).await {
                Ok(bytes) => {
                    if let Ok(c) = serde_json::from_slice::<Cursor>(&bytes) {
                        into.pos[e] = Pos {
                            seq: c.seq,
                            index: c.index,
                        };
                    }
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
    }
    for &seq in seqs {
        if into.batches.contains_key(&seq) {
            continue;
        }
        let path = layout::notification_batch(&into.instance, seq);
        let bytes = match driver.get(&path).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        let Ok(stored) = serde_json::from_slice::<StoredBatch>(&bytes) else {
            tracing::error!(%path, "unreadable notification batch removed");
            loaded.unreadable += 1;
            let _ = driver.delete(&path).await;
            continue;
        };
        let records = stored
            .events
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let mut owed = 0u64;
                for name in &r.to {
                    match index.get(name.as_str()) {
                        Some(&e) if into.pos[e] <= (Pos { seq, index: i }) => owed |= 1 << e,
                        Some(_) => {}
                        None => *loaded.unknown.entry(name.clone()).or_default() += 1,
                    }
                }
                let event: Arc<str> = Arc::from(r.event.get());
                Record {
                    owed,
                    event: (owed != 0).then_some(event),
                }
            })
            .collect();
        let batch = Batch::new(records);
        if batch.owed == 0 {
            // Everything in it was delivered before the cursor was last written.
            let _ = driver.delete(&path).await;
            continue;
        }
        into.batches.insert(seq, batch);
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_log_reads_back_as_written_and_cursors_count_as_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let driver = berth_storage::FsDriver::new(dir.path()).unwrap();
        let id = uuid::Uuid::new_v4();
        let endpoints = vec!["a".to_owned(), "b".to_owned()];
        for seq in 0..3u64 {
            let e1 = format!("{{\"n\":{}}}", seq * 2);
            let e2 = format!("{{\"n\":{}}}", seq * 2 + 1);
            let bytes = batch_bytes(&[(vec!["a", "b"], &e1), (vec!["b", "gone"], &e2)]);
            driver
                .put(&layout::notification_batch(&id, seq), bytes)
                .await
                .unwrap();
        }
        // Endpoint b has delivered up to (not including) batch 1's second event.
        write_cursor(&driver, &id, "b", Pos { seq: 1, index: 1 })
            .await
            .unwrap();
        let seqs = batch_seqs(&driver, &id).await.unwrap();
        assert_eq!(seqs, vec![0, 1, 2]);
        let mut log = Log::new(id, 0, false, 2);
        let loaded = load(&driver, &mut log, &seqs, &endpoints).await.unwrap();
        assert_eq!(loaded.unknown.get("gone"), Some(&3));
        assert_eq!(log.owed_to(0), 3);
        assert_eq!(log.owed_to(1), 3, "b: batch 1's second event, and batch 2");
        assert_eq!(log.pos[1], Pos { seq: 1, index: 1 });
        let mut q = crate::queue::Queues::new(2);
        q.insert(log);
        let mut got = Vec::new();
        while let Some(t) = q.take(1) {
            got.push(t.event.to_string());
            q.delivered(1, &t);
        }
        assert_eq!(got, ["{\"n\":3}", "{\"n\":4}", "{\"n\":5}"]);
    }
}
