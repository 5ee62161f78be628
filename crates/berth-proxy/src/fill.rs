//! Single flight for blobs: however many clients ask for an uncached blob at once, one task
//! fetches it from the upstream, and every client is fed from that one fetch as it arrives.
//!
//! The fetch runs on its own task, so a client that goes away does not stop it. It streams
//! the upstream's body into the registry's ordinary upload path (`push_blob`: written to an
//! upload session, hashed, verified, moved into the blob store, linked) and, on the way,
//! into a window of the most recent bytes kept in memory. Clients read from the window; one
//! that falls behind it waits for the fill to finish and reads the rest from storage, so
//! memory per fill is bounded by the window whatever the blob size or the clients' speeds.
//!
//! Bytes reach clients before the whole blob is verified (the point of streaming), but no
//! client ever receives a *complete* response that was not verified: each holds back its last
//! bytes until the fill has verified and stored the blob, and ends its response with an error
//! (the connection is cut short) if the digest did not match.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex};

use berth_oci::{Digest, RangeRequest, RepoName};
use berth_registry::{ByteStream, Registry};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::watch;

/// Bytes of a fill kept in memory for clients reading behind the fetch.
const WINDOW: usize = 16 * 1024 * 1024;

/// How a fill ended.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// Verified and stored.
    Stored,
    /// The upstream said it does not have it.
    NotFound,
    /// Anything else; the text says what.
    Failed(String),
}

#[derive(Default)]
struct State {
    /// The upstream's Content-Length, once its answer arrived.
    size: Option<u64>,
    /// Chunks still in the window, each with its offset in the blob.
    window: VecDeque<(u64, Bytes)>,
    window_bytes: usize,
    received: u64,
    /// Set once, when the fill ends.
    outcome: Option<Outcome>,
    /// The answer arrived (or the fill ended before one did).
    answered: bool,
}

/// One fetch in progress.
pub(crate) struct Fill {
    state: Mutex<State>,
    /// Bumped on every change; clients wait on it.
    changed: watch::Sender<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Fill {
    fn new() -> Arc<Fill> {
        Arc::new(Fill {
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
        })
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut lock(&self.state));
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The upstream answered with this size (`None`: it sent no length).
    pub(crate) fn answered(&self, size: Option<u64>) {
        self.update(|s| {
            s.size = size;
            s.answered = true;
        });
    }

    /// A chunk arrived from the upstream.
    pub(crate) fn received(&self, chunk: &Bytes) {
        self.update(|s| {
            s.window.push_back((s.received, chunk.clone()));
            s.window_bytes += chunk.len();
            s.received += chunk.len() as u64;
            while s.window_bytes > WINDOW && s.window.len() > 1 {
                if let Some((_, old)) = s.window.pop_front() {
                    s.window_bytes -= old.len();
                }
            }
        });
    }

    pub(crate) fn finish(&self, outcome: Outcome) {
        self.update(|s| {
            s.outcome = Some(outcome);
            s.answered = true;
            // Nobody reads the window of a fill that ended badly; one that ended well keeps
            // it for the clients still holding back their last bytes.
        });
    }

    /// Waits for the upstream's answer: its size (`None`: no length given), or how the fill
    /// ended if it ended first.
    pub(crate) async fn size(&self) -> Result<Option<u64>, Outcome> {
        let mut rx = self.changed.subscribe();
        loop {
            {
                let s = lock(&self.state);
                match &s.outcome {
                    Some(Outcome::Stored) | None if s.answered => return Ok(s.size),
                    Some(o @ (Outcome::NotFound | Outcome::Failed(_))) => return Err(o.clone()),
                    _ => {}
                }
            }
            if rx.changed().await.is_err() {
                return Err(Outcome::Failed("the fetch ended".into()));
            }
        }
    }

    /// Waits until the fill ends.
    pub(crate) async fn outcome(&self) -> Outcome {
        let mut rx = self.changed.subscribe();
        loop {
            if let Some(o) = &lock(&self.state).outcome {
                return o.clone();
            }
            if rx.changed().await.is_err() {
                return Outcome::Failed("the fetch ended".into());
            }
        }
    }

    /// Bytes `[start, end)` of the blob as they arrive, the last of them only once the blob is
    /// verified. A reader that falls out of the window finishes from `registry` once stored.
    pub(crate) fn stream(
        self: Arc<Fill>,
        start: u64,
        end: u64,
        registry: Registry,
        repo: RepoName,
        digest: Digest,
    ) -> ByteStream {
        let reader = Reader {
            fill: self,
            pos: start,
            end,
            registry,
            repo,
            digest,
            rest: None,
        };
        Box::pin(futures_util::stream::unfold(reader, |mut r| async move {
            r.next().await.map(|item| (item, r))
        }))
    }
}

struct Reader {
    fill: Arc<Fill>,
    pos: u64,
    end: u64,
    registry: Registry,
    repo: RepoName,
    digest: Digest,
    /// Set when the reader fell behind the window: the rest, read from storage.
    rest: Option<ByteStream>,
}

enum Step {
    Emit(Bytes),
    Fail(String),
    Wait,
    FromStorage,
    Done,
}

impl Reader {
    async fn next(&mut self) -> Option<io::Result<Bytes>> {
        if let Some(rest) = &mut self.rest {
            return rest.next().await;
        }
        let mut rx = self.fill.changed.subscribe();
        loop {
            match self.step() {
                Step::Emit(b) => {
                    self.pos += b.len() as u64;
                    return Some(Ok(b));
                }
                Step::Fail(why) => {
                    self.pos = self.end;
                    return Some(Err(io::Error::other(why)));
                }
                Step::Done => return None,
                Step::Wait => {
                    if rx.changed().await.is_err() {
                        return Some(Err(io::Error::other("the upstream fetch ended")));
                    }
                }
                Step::FromStorage => {
                    return match self.fill.outcome().await {
                        Outcome::Stored => {
                            let range = RangeRequest::From {
                                start: self.pos,
                                end: Some(self.end - 1),
                            };
                            match self
                                .registry
                                .read_blob(&self.repo, &self.digest, Some(range))
                                .await
                            {
                                Ok(read) => {
                                    let rest = self.rest.insert(read.body);
                                    rest.next().await
                                }
                                Err(e) => Some(Err(io::Error::other(e.to_string()))),
                            }
                        }
                        Outcome::NotFound => {
                            Some(Err(io::Error::other("the upstream lost the blob")))
                        }
                        Outcome::Failed(why) => Some(Err(io::Error::other(why))),
                    };
                }
            }
        }
    }

    fn step(&self) -> Step {
        if self.pos >= self.end {
            return Step::Done;
        }
        let s = lock(&self.fill.state);
        if let Some(Outcome::NotFound | Outcome::Failed(_)) = &s.outcome {
            return Step::Fail(match &s.outcome {
                Some(Outcome::Failed(why)) => why.clone(),
                _ => "the upstream lost the blob".into(),
            });
        }
        let Some((first, _)) = s.window.front() else {
            return if s.outcome.is_some() {
                Step::FromStorage
            } else {
                Step::Wait
            };
        };
        if self.pos < *first {
            return Step::FromStorage;
        }
        if self.pos >= s.received {
            return if s.outcome.is_some() {
                // Stored, yet shorter than what was asked: the size was a lie caught by the
                // verification, or the range ends past it.
                Step::Fail("the upstream sent fewer bytes than it announced".into())
            } else {
                Step::Wait
            };
        }
        let i = s
            .window
            .partition_point(|(offset, _)| *offset <= self.pos)
            .saturating_sub(1);
        let (offset, chunk) = &s.window[i];
        let from = (self.pos - offset) as usize;
        let to = chunk.len().min(from + (self.end - self.pos) as usize);
        let piece = chunk.slice(from..to);
        if self.pos + piece.len() as u64 >= self.end && s.outcome.is_none() {
            // The last bytes wait for the verdict.
            return Step::Wait;
        }
        Step::Emit(piece)
    }
}

/// Fills in progress, by repository and digest.
#[derive(Default)]
pub(crate) struct Fills {
    running: Mutex<HashMap<(RepoName, Digest), Arc<Fill>>>,
}

impl Fills {
    /// The fill for `key`, and whether the caller must start it (it was not running).
    pub(crate) fn join(&self, key: (RepoName, Digest)) -> (Arc<Fill>, bool) {
        let mut running = lock(&self.running);
        if let Some(fill) = running.get(&key) {
            return (fill.clone(), false);
        }
        let fill = Fill::new();
        running.insert(key, fill.clone());
        (fill, true)
    }

    /// The fill for `key` ended: later requests read the cache (or start a new fill).
    pub(crate) fn forget(&self, key: &(RepoName, Digest)) {
        lock(&self.running).remove(key);
    }
}
