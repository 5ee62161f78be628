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
//! is bounded too. Unknown names are counted exactly like known ones, so a refusal says
//! nothing about which names exist. A locked key stays locked for a whole window after its
//! last counted guess, and `Retry-After` says how long that really is.
//!
//! bcrypt is meant to be slow (about 300 ms at cost 12). Checks that miss the cache of
//! recently verified passwords take a permit from [`Limiter::checking`], half the cores, so a
//! burst of them leaves the other half to everyone else's requests.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

/// Failed logins allowed for one user name from one client address within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 10;
/// Failed logins allowed from one client address, over all user names, within the window.
pub const MAX_FAILURES_PER_ADDRESS: u32 = 100;
/// The window failures are counted in, and how long a locked key then stays locked after its
/// last counted guess.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Counted keys at most; beyond it, expired ones are dropped.
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

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    count: u32,
    last: Instant,
}

impl Window {
    /// When this key may try again, if it is locked at `now`.
    fn locked_until(&self, limit: u32, now: Instant) -> Option<Instant> {
        let until = self.last + FAILURE_WINDOW;
        (self.count >= limit && now < until).then_some(until)
    }

    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.started) >= FAILURE_WINDOW
            && now.duration_since(self.last) >= FAILURE_WINDOW
    }
}

/// The failed-login counts of one [`crate::Auth`].
#[derive(Debug)]
pub(crate) struct Limiter {
    counts: Mutex<HashMap<Key, Window>>,
    names: std::collections::hash_map::RandomState,
    checking: Semaphore,
}

impl Default for Limiter {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Limiter {
            counts: Mutex::new(HashMap::new()),
            names: std::collections::hash_map::RandomState::new(),
            checking: Semaphore::new((cores / 2).max(1)),
        }
    }
}

/// A guess being checked: counted as a failure unless [`Attempt::succeeded`] says otherwise.
#[must_use = "a guess stays counted as a failure unless it succeeded"]
pub(crate) struct Attempt<'a> {
    limiter: &'a Limiter,
    keys: Vec<Key>,
}

impl Limiter {
    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Window>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a guess from `peer` for `user` (`None`: credentials that did not even parse):
    /// the attempt, or how long until this client may try again.
    pub(crate) fn attempt(
        &self,
        peer: Option<IpAddr>,
        user: Option<&str>,
    ) -> Result<Attempt<'_>, Duration> {
        let mut keys = vec![Key::Address(peer)];
        if let Some(user) = user {
            keys.push(Key::User(peer, self.names.hash_one(user)));
        }
        let now = Instant::now();
        let mut counts = self.lock();
        if counts.len() >= MAX_KEYS {
            counts.retain(|_, w| !w.expired(now));
        }
        let locked = keys
            .iter()
            .filter_map(|k| counts.get(k).and_then(|w| w.locked_until(k.limit(), now)))
            .max();
        if let Some(until) = locked {
            return Err(until - now);
        }
        for key in &keys {
            let w = counts.entry(*key).or_insert(Window {
                started: now,
                count: 0,
                last: now,
            });
            if w.expired(now) || (w.count >= key.limit()) {
                *w = Window {
                    started: now,
                    count: 0,
                    last: now,
                };
            }
            w.count += 1;
            w.last = now;
            if w.count == key.limit() {
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

    /// A permit to run one bcrypt check; waits while half the cores are already at it.
    pub(crate) async fn checking(&self) -> Option<SemaphorePermit<'_>> {
        self.checking.acquire().await.ok()
    }
}

impl Attempt<'_> {
    /// The password was right: the guess is not counted.
    pub(crate) fn succeeded(self) {
        let mut counts = self.limiter.lock();
        for key in &self.keys {
            if let Some(w) = counts.get_mut(key) {
                w.count = w.count.saturating_sub(1);
            }
        }
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
}
