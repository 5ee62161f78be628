//! Failed logins: how many passwords a client may try, and how much CPU trying them may take.
//!
//! A guess is counted *before* its password is checked, and the count and the check of the
//! limit are one step under one lock, so guesses sent in parallel cannot all slip in before
//! the first failure is recorded: of any number sent at once, at most the limit are checked.
//! A guess that turns out right is un-counted.
//!
//! Counts are kept per (client address, user name), so a client guessing one user's password
//! locks out only that user from that address, not everyone behind the same proxy or NAT; and
//! per address over all names, with a higher limit, so spraying many names from one address
//! is bounded too. An IPv6 client is counted by its /64, which one subscriber usually holds
//! whole. Unknown names are counted exactly like known ones, so a refusal says nothing about
//! which names exist. A key's count starts again after a [`FAILURE_WINDOW`] without a counted
//! guess; a locked key stays locked until then, and `Retry-After` says how long that is.
//!
//! bcrypt is meant to be slow (about 300 ms at cost 12). Checks that miss the cache of
//! recently verified passwords take a permit from [`Limiter::checking`], half the cores, held
//! by the blocking thread that runs the check, so a burst of them leaves the other half to
//! everyone else's requests even when their clients hang up.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// Failed logins allowed for one user name from one client address, with no pause of a
/// [`FAILURE_WINDOW`] between them.
pub const MAX_FAILURES: u32 = 10;
/// Failed logins allowed from one client address over all user names, likewise.
pub const MAX_FAILURES_PER_ADDRESS: u32 = 100;
/// A key's count starts again after this long without a counted guess; a locked key is
/// locked until then.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Counted keys beyond which expired ones are swept (at most once a second).
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Address(Option<IpAddr>),
    /// The user name is kept as a keyed hash: names are the client's, of any length.
    User(Option<IpAddr>, u64),
}

impl Key {
    fn limit(self) -> u32 {
        match self {
            Key::Address(_) => MAX_FAILURES_PER_ADDRESS,
            Key::User(..) => MAX_FAILURES,
        }
    }
}

/// Failures counted for one key since its last pause of a [`FAILURE_WINDOW`].
#[derive(Debug, Clone, Copy)]
struct Count {
    failures: u32,
    last: Instant,
}

impl Count {
    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.last) >= FAILURE_WINDOW
    }

    /// When this key may try again, if it is locked at `now`.
    fn locked_until(&self, limit: u32, now: Instant) -> Option<Instant> {
        (self.failures >= limit && !self.expired(now)).then_some(self.last + FAILURE_WINDOW)
    }
}

#[derive(Debug)]
struct Counts {
    by_key: HashMap<Key, Count>,
    swept: Instant,
}

/// The failed-login counts of one [`crate::Auth`].
#[derive(Debug)]
pub(crate) struct Limiter {
    counts: Mutex<Counts>,
    names: std::collections::hash_map::RandomState,
    checking: Arc<Semaphore>,
}

impl Default for Limiter {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Limiter {
            counts: Mutex::new(Counts {
                by_key: HashMap::new(),
                swept: Instant::now(),
            }),
            names: std::collections::hash_map::RandomState::new(),
            checking: Arc::new(Semaphore::new((cores / 2).max(1))),
        }
    }
}

/// The address a client is counted by: an IPv6 address by its /64.
fn counted_address(peer: Option<IpAddr>) -> Option<IpAddr> {
    match peer? {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            Some(IpAddr::V6(prefix.into()))
        }
        other => Some(other.to_canonical()),
    }
}

/// A guess being checked: counted as a failure unless [`Attempt::succeeded`] says otherwise.
#[must_use = "a guess stays counted as a failure unless it succeeded"]
pub(crate) struct Attempt<'a> {
    limiter: &'a Limiter,
    keys: Vec<Key>,
}

impl Limiter {
    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn keys(&self, peer: Option<IpAddr>, user: Option<&str>) -> Vec<Key> {
        let address = counted_address(peer);
        let mut keys = vec![Key::Address(address)];
        if let Some(user) = user {
            keys.push(Key::User(address, self.names.hash_one(user)));
        }
        keys
    }

    /// How long until `peer` may try again for `user`, if it is locked out now; counts nothing.
    pub(crate) fn locked(&self, peer: Option<IpAddr>, user: Option<&str>) -> Option<Duration> {
        let now = Instant::now();
        let counts = self.lock();
        self.keys(peer, user)
            .iter()
            .filter_map(|k| counts.by_key.get(k)?.locked_until(k.limit(), now))
            .max()
            .map(|until| until - now)
    }

    /// Counts a guess from `peer` for `user` (`None`: credentials that did not even parse):
    /// the attempt, or how long until this client may try again.
    pub(crate) fn attempt(
        &self,
        peer: Option<IpAddr>,
        user: Option<&str>,
    ) -> Result<Attempt<'_>, Duration> {
        let keys = self.keys(peer, user);
        let now = Instant::now();
        let mut counts = self.lock();
        // Sweep when big, but not on every guess: a map full of live keys would make each
        // guess a walk of it.
        if counts.by_key.len() >= MAX_KEYS
            && now.duration_since(counts.swept) >= Duration::from_secs(1)
        {
            counts.by_key.retain(|_, c| !c.expired(now));
            counts.swept = now;
        }
        let locked = keys
            .iter()
            .filter_map(|k| counts.by_key.get(k)?.locked_until(k.limit(), now))
            .max();
        if let Some(until) = locked {
            return Err(until - now);
        }
        for key in &keys {
            let c = counts.by_key.entry(*key).or_insert(Count {
                failures: 0,
                last: now,
            });
            if c.expired(now) {
                c.failures = 0;
            }
            c.failures += 1;
            c.last = now;
            if c.failures == key.limit() {
                tracing::warn!(
                    peer = ?peer,
                    per = if matches!(key, Key::Address(_)) { "address" } else { "user" },
                    "too many failed logins; refusing further guesses for a while"
                );
            }
        }
        drop(counts);
        Ok(Attempt {
            limiter: self,
            keys,
        })
    }

    /// A permit to run one bcrypt check; waits while half the cores are already at it. Move
    /// it into the thread that checks, so it is held as long as the check runs.
    pub(crate) async fn checking(&self) -> Option<OwnedSemaphorePermit> {
        self.checking.clone().acquire_owned().await.ok()
    }
}

impl Attempt<'_> {
    /// The password was right: the guess is not counted.
    pub(crate) fn succeeded(self) {
        let mut counts = self.limiter.lock();
        for key in &self.keys {
            if let Some(c) = counts.by_key.get_mut(key) {
                c.failures = c.failures.saturating_sub(1);
                if c.failures == 0 {
                    counts.by_key.remove(key);
                }
            }
        }
    }
}

/// Checks of one user and password in progress, so identical credentials sent in parallel
/// (a client opening several connections at once) share one bcrypt check and count once.
#[derive(Debug, Default)]
pub(crate) struct SharedChecks {
    running: Mutex<HashMap<[u8; 32], watch::Receiver<Option<bool>>>>,
}

/// Whose turn it is to check a password.
pub(crate) enum Turn<'a> {
    /// The same check is running: wait for its answer (an error: it was abandoned, try again).
    Wait(watch::Receiver<Option<bool>>),
    /// Run it, and [`Leader::finish`] with the answer.
    Run(Leader<'a>),
}

/// The one running a shared check; leaves the table when dropped, answered or not.
pub(crate) struct Leader<'a> {
    checks: &'a SharedChecks,
    key: [u8; 32],
    answer: watch::Sender<Option<bool>>,
}

impl SharedChecks {
    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 32], watch::Receiver<Option<bool>>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins the check of the credentials `key` names, or starts it.
    pub(crate) fn turn(&self, key: [u8; 32]) -> Turn<'_> {
        let mut running = self.lock();
        if let Some(rx) = running.get(&key) {
            return Turn::Wait(rx.clone());
        }
        let (answer, rx) = watch::channel(None);
        running.insert(key, rx);
        Turn::Run(Leader {
            checks: self,
            key,
            answer,
        })
    }
}

impl Leader<'_> {
    pub(crate) fn finish(self, ok: bool) {
        let _ = self.answer.send(Some(ok));
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        self.checks.lock().remove(&self.key);
    }
}

/// Seconds for `Retry-After`: the time left, rounded up, at least one.
pub(crate) fn retry_after_secs(left: Duration) -> u64 {
    (left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));
    const B: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)));

    #[test]
    fn guesses_are_counted_before_they_are_checked() {
        let limiter = Limiter::default();
        // All in flight at once: only the limit get through.
        let attempts: Vec<_> = (0..50)
            .filter_map(|_| limiter.attempt(A, Some("alice")).ok())
            .collect();
        assert_eq!(attempts.len(), MAX_FAILURES as usize);
        drop(attempts);
        let left = limiter.attempt(A, Some("alice")).err().unwrap();
        assert!(left > Duration::from_secs(59) && left <= FAILURE_WINDOW);
        assert_eq!(retry_after_secs(left), 60);
        // Another user at the same address, and the same user elsewhere, are not locked.
        limiter.attempt(A, Some("bob")).unwrap().succeeded();
        limiter.attempt(B, Some("alice")).unwrap().succeeded();
    }

    #[test]
    fn right_passwords_are_not_counted_and_the_address_has_its_own_limit() {
        let limiter = Limiter::default();
        for _ in 0..3 * MAX_FAILURES {
            limiter.attempt(A, Some("alice")).unwrap().succeeded();
        }
        let mut failed = 0;
        for i in 0.. {
            let name = format!("user{}", i / (MAX_FAILURES - 1));
            match limiter.attempt(A, Some(&name)) {
                Ok(_failure) => failed += 1,
                Err(_) => break,
            }
        }
        assert_eq!(failed, MAX_FAILURES_PER_ADDRESS);
        // Spraying names locked the address, for every name including unparsable ones.
        assert!(limiter.attempt(A, Some("carol")).is_err());
        assert!(limiter.attempt(A, None).is_err());
        assert!(limiter.attempt(B, Some("carol")).is_ok());
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64() {
        let limiter = Limiter::default();
        let host = |n: u16| {
            Some(IpAddr::V6(std::net::Ipv6Addr::new(
                0x2001, 0xdb8, 0, 1, 0, 0, 0, n,
            )))
        };
        for n in 0..MAX_FAILURES as u16 {
            let _failure = limiter.attempt(host(n), Some("alice")).unwrap();
        }
        assert!(limiter.locked(host(999), Some("alice")).is_some());
        let other = Some(IpAddr::V6(std::net::Ipv6Addr::new(
            0x2001, 0xdb8, 0, 2, 0, 0, 0, 1,
        )));
        assert!(limiter.locked(other, Some("alice")).is_none());
        // IPv4 and IPv4-mapped IPv6 are one client.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            let _failure = limiter.attempt(Some(mapped), Some("bob")).unwrap();
        }
        assert!(limiter.locked(A, Some("bob")).is_some());
    }
}
