//! The queues in memory: every log this process delivers, each endpoint's place in them, and
//! what may be deleted. No IO here; `lib.rs` writes and reads storage around these steps.
//!
//! A log is a series of batches (one per group commit), each a list of records; a record is
//! one event and the set of endpoints still owed it (a bit per endpoint). An endpoint's
//! position in a log is the next record it has not yet considered; it delivers the records
//! owed to it in log order, one at a time, and clears its bit when the endpoint answered 2xx.
//! A batch whose records are owed to nobody is deleted, wherever it is in the log, so an
//! endpoint that is down keeps only the batches holding its own undelivered events.

use std::collections::BTreeMap;
use std::sync::Arc;

/// Where an endpoint stands in a log: the next record to consider is record `index` of
/// batch `seq` (or, when that batch has no such record, the first of the next batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Pos {
    pub seq: u64,
    pub index: usize,
}

/// One event in a batch.
#[derive(Debug)]
pub(crate) struct Record {
    /// Endpoints still owed this event, one bit each.
    pub owed: u64,
    /// The event's JSON; dropped once nobody is owed it.
    pub event: Option<Arc<str>>,
}

/// One group commit.
#[derive(Debug)]
pub(crate) struct Batch {
    pub records: Vec<Record>,
    /// Records still owed to someone.
    pub owed: usize,
}

impl Batch {
    pub fn new(records: Vec<Record>) -> Batch {
        let owed = records.iter().filter(|r| r.owed != 0).count();
        Batch { records, owed }
    }
}

/// One log: this process's own, or one taken over from a process that died.
#[derive(Debug)]
pub(crate) struct Log {
    pub instance: uuid::Uuid,
    /// When the log was started (milliseconds since the epoch, the writer's clock): older
    /// logs are delivered first.
    pub started: u64,
    /// Whether this process appends to it.
    pub own: bool,
    pub batches: BTreeMap<u64, Batch>,
    /// Per endpoint.
    pub pos: Vec<Pos>,
    /// Per endpoint: the position moved since the cursor was last written.
    pub cursor_dirty: Vec<bool>,
}

impl Log {
    pub fn new(instance: uuid::Uuid, started: u64, own: bool, endpoints: usize) -> Log {
        Log {
            instance,
            started,
            own,
            batches: BTreeMap::new(),
            pos: vec![Pos::default(); endpoints],
            cursor_dirty: vec![false; endpoints],
        }
    }

    /// Events owed to endpoint `e` in this log.
    pub fn owed_to(&self, e: usize) -> usize {
        let bit = 1u64 << e;
        self.batches
            .values()
            .flat_map(|b| &b.records)
            .filter(|r| r.owed & bit != 0)
            .count()
    }
}

/// The next event an endpoint is to deliver.
#[derive(Debug, Clone)]
pub(crate) struct Taken {
    pub log: uuid::Uuid,
    pub at: Pos,
    pub event: Arc<str>,
}

/// Every log this process delivers, in delivery order: taken-over logs by age, then its own.
#[derive(Debug)]
pub(crate) struct Queues {
    pub logs: Vec<Log>,
    /// Per endpoint: events accepted and not yet delivered (including those still being
    /// committed).
    pub pending: Vec<usize>,
}

impl Queues {
    pub fn new(endpoints: usize) -> Queues {
        Queues {
            logs: Vec::new(),
            pending: vec![0; endpoints],
        }
    }

    pub fn log_mut(&mut self, instance: &uuid::Uuid) -> Option<&mut Log> {
        self.logs.iter_mut().find(|l| &l.instance == instance)
    }

    /// Adds a log in its place: by age among the taken-over ones, the own log last.
    pub fn insert(&mut self, log: Log) {
        for e in 0..self.pending.len() {
            self.pending[e] += log.owed_to(e);
        }
        let at = self
            .logs
            .iter()
            .position(|l| l.own || (!log.own && l.started > log.started))
            .unwrap_or(self.logs.len());
        self.logs.insert(at, log);
    }

    /// Forgets a log (delivered, or now delivered by another process); its owed events no
    /// longer count as pending here.
    pub fn remove(&mut self, instance: &uuid::Uuid) -> Option<Log> {
        let at = self.logs.iter().position(|l| &l.instance == instance)?;
        let log = self.logs.remove(at);
        for e in 0..self.pending.len() {
            self.pending[e] = self.pending[e].saturating_sub(log.owed_to(e));
        }
        Some(log)
    }

    /// The first event owed to endpoint `e`, in delivery order; positions move past what is
    /// not for `e`.
    pub fn take(&mut self, e: usize) -> Option<Taken> {
        let bit = 1u64 << e;
        for log in &mut self.logs {
            let pos = log.pos[e];
            for (&seq, batch) in log.batches.range(pos.seq..) {
                let from = if seq == pos.seq { pos.index } else { 0 };
                for (index, record) in batch.records.iter().enumerate().skip(from) {
                    if record.owed & bit == 0 {
                        continue;
                    }
                    let Some(event) = &record.event else { continue };
                    let at = Pos { seq, index };
                    if log.pos[e] != at {
                        log.pos[e] = at;
                        log.cursor_dirty[e] = true;
                    }
                    return Some(Taken {
                        log: log.instance,
                        at,
                        event: event.clone(),
                    });
                }
            }
            if let Some((&last, _)) = log.batches.last_key_value() {
                let end = Pos {
                    seq: last + 1,
                    index: 0,
                };
                if log.pos[e] < end {
                    log.pos[e] = end;
                    log.cursor_dirty[e] = true;
                }
            }
        }
        None
    }

    /// Endpoint `e` delivered `taken`. Returns the batches nobody is owed anything from any
    /// more, to be deleted from storage.
    pub fn delivered(&mut self, e: usize, taken: &Taken) -> Vec<(uuid::Uuid, u64)> {
        let bit = 1u64 << e;
        let Some(log) = self.logs.iter_mut().find(|l| l.instance == taken.log) else {
            return Vec::new();
        };
        let next = Pos {
            seq: taken.at.seq,
            index: taken.at.index + 1,
        };
        if log.pos[e] < next {
            log.pos[e] = next;
            log.cursor_dirty[e] = true;
        }
        let mut done = Vec::new();
        if let Some(batch) = log.batches.get_mut(&taken.at.seq)
            && let Some(record) = batch.records.get_mut(taken.at.index)
            && record.owed & bit != 0
        {
            record.owed &= !bit;
            self.pending[e] = self.pending[e].saturating_sub(1);
            if record.owed == 0 {
                record.event = None;
                batch.owed -= 1;
                if batch.owed == 0 {
                    log.batches.remove(&taken.at.seq);
                    done.push((log.instance, taken.at.seq));
                }
            }
        }
        done
    }

    /// Appends a committed batch to log `instance`. Returns false when that log is no
    /// longer here (another process took it over while the batch was being written).
    pub fn append(&mut self, instance: &uuid::Uuid, seq: u64, batch: Batch) -> bool {
        match self.log_mut(instance) {
            Some(log) => {
                log.batches.insert(seq, batch);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(owed: u64, text: &str) -> Record {
        Record {
            owed,
            event: Some(Arc::from(text)),
        }
    }

    fn own(q: &mut Queues) -> uuid::Uuid {
        let id = uuid::Uuid::new_v4();
        q.insert(Log::new(id, 100, true, 2));
        id
    }

    #[test]
    fn each_endpoint_gets_its_events_in_order_and_batches_go_when_nobody_needs_them() {
        let mut q = Queues::new(2);
        let id = own(&mut q);
        // Batch 0: a for both, b for endpoint 1 only; batch 1: c for endpoint 0 only.
        assert!(q.append(
            &id,
            0,
            Batch::new(vec![record(0b11, "a"), record(0b10, "b")])
        ));
        assert!(q.append(&id, 1, Batch::new(vec![record(0b01, "c")])));
        q.pending = vec![2, 2];
        let t = q.take(0).unwrap();
        assert_eq!(&*t.event, "a");
        // Not delivered yet: taking again gives the same event (a retry).
        assert_eq!(&*q.take(0).unwrap().event, "a");
        assert!(
            q.delivered(0, &t).is_empty(),
            "endpoint 1 still needs batch 0"
        );
        let t = q.take(0).unwrap();
        assert_eq!(&*t.event, "c");
        assert_eq!(
            q.delivered(0, &t),
            vec![(id, 1)],
            "batch 1 was for endpoint 0 only"
        );
        assert!(q.take(0).is_none());
        assert_eq!(q.pending, vec![0, 2]);
        let a = q.take(1).unwrap();
        assert_eq!(&*a.event, "a");
        assert!(q.delivered(1, &a).is_empty());
        let b = q.take(1).unwrap();
        assert_eq!(&*b.event, "b");
        assert_eq!(q.delivered(1, &b), vec![(id, 0)]);
        assert!(q.logs[0].batches.is_empty());
        assert_eq!(q.pending, vec![0, 0]);
        // A second delivery report of the same event changes nothing.
        assert!(q.delivered(1, &b).is_empty());
        assert_eq!(q.pending, vec![0, 0]);
    }

    #[test]
    fn a_down_endpoint_keeps_only_the_batches_holding_its_events() {
        let mut q = Queues::new(2);
        let id = own(&mut q);
        q.append(&id, 0, Batch::new(vec![record(0b11, "old")]));
        for seq in 1..50 {
            q.append(&id, seq, Batch::new(vec![record(0b10, "busy")]));
        }
        q.pending = vec![1, 50];
        while let Some(t) = q.take(1) {
            q.delivered(1, &t);
        }
        // Endpoint 0 never answered: only its one batch is left.
        assert_eq!(
            q.logs[0].batches.keys().copied().collect::<Vec<_>>(),
            vec![0]
        );
        assert_eq!(q.pending, vec![1, 0]);
    }

    #[test]
    fn taken_over_logs_are_delivered_first_oldest_first() {
        let mut q = Queues::new(1);
        let mine = own(&mut q);
        q.append(&mine, 0, Batch::new(vec![record(1, "new")]));
        let mut older = Log::new(uuid::Uuid::new_v4(), 10, false, 1);
        older
            .batches
            .insert(7, Batch::new(vec![record(1, "oldest")]));
        let mut old = Log::new(uuid::Uuid::new_v4(), 50, false, 1);
        old.batches.insert(3, Batch::new(vec![record(1, "old")]));
        q.pending[0] = 1;
        q.insert(old);
        q.insert(older);
        assert_eq!(q.pending[0], 3);
        let mut order = Vec::new();
        while let Some(t) = q.take(0) {
            order.push(t.event.to_string());
            q.delivered(0, &t);
        }
        assert_eq!(order, ["oldest", "old", "new"]);
        let gone = q.logs[0].instance;
        assert!(q.remove(&gone).is_some());
        assert!(!q.append(&gone, 1, Batch::new(vec![])));
    }
}
