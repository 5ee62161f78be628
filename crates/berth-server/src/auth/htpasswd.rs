//! `auth.htpasswd`: users and bcrypt password hashes from an Apache htpasswd file, as
//! `htpasswd -B` writes them (`user:$2y$05$...`), the only format Distribution accepts.
//!
//! The file is re-read when it changes on disk (its modification time or size, checked at most
//! every [`RECHECK`]), so users are added or removed without a restart. A file that no longer
//! parses keeps the previous users and logs a warning, rather than locking everyone out.
//!
//! Timing: bcrypt verification compares in constant time; an unknown user is verified against a
//! dummy hash as costly as the costliest entry, so an unknown name never answers faster than
//! a known one (entries of lower cost answer faster than both: that is the file's choice).
//! Docker sends the password with every request, so a successful check is remembered for
//! [`CACHE_TTL`] under a keyed SHA-256 of user and password (the key is random per process,
//! the cache is dropped when the file changes), instead of paying bcrypt each time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use sha2::Digest as _;

/// How often the file's metadata is checked for changes.
const RECHECK: Duration = Duration::from_secs(2);
/// How long a verified user/password pair is trusted without bcrypt.
const CACHE_TTL: Duration = Duration::from_secs(60);
/// Most remembered pairs; the cache is emptied when full.
const CACHE_MAX: usize = 10_000;

/// An htpasswd file, reloaded when it changes.
pub struct Htpasswd {
    path: PathBuf,
    state: RwLock<Arc<Users>>,
    last_check: Mutex<Instant>,
    /// The file changed on disk and has not been reloaded yet.
    stale: AtomicBool,
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    key: [u8; 32],
}

impl std::fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Htpasswd")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

struct Users {
    hashes: HashMap<String, String>,
    /// Verified when the user is unknown, so that takes as long as a known user.
    dummy: String,
    stamp: Option<(SystemTime, u64)>,
    generation: u64,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Parses htpasswd text: `user:hash` lines; blank lines and `#` comments are skipped.
fn parse(text: &str) -> Result<HashMap<String, String>, String> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            return Err(format!("line {}: expected user:hash", i + 1));
        };
        if !(hash.starts_with("$2y$")
            || hash.starts_with("$2b$")
            || hash.starts_with("$2a$")
            || hash.starts_with("$2x$"))
        {
            return Err(format!(
                "line {}: the entry for {user:?} is not bcrypt (create it with htpasswd -B)",
                i + 1
            ));
        }
        users.insert(user.to_owned(), hash.to_owned());
    }
    Ok(users)
}

/// The cost of the costliest entry, so checking the dummy hash takes as long as the slowest
/// real one: timing then tells an unknown name from none of the known ones that cost most.
fn cost_of(users: &HashMap<String, String>) -> u32 {
    users
        .values()
        .filter_map(|h| h.get(4..6)?.parse().ok())
        .max()
        .unwrap_or(bcrypt::DEFAULT_COST)
        .clamp(4, 31)
}

fn load(path: &Path, generation: u64) -> Result<Users, String> {
    let before = stamp(path);
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read htpasswd file {}: {e}", path.display()))?;
    let hashes = parse(&text).map_err(|e| format!("htpasswd file {}: {e}", path.display()))?;
    let dummy = bcrypt::hash("berth-dummy-password", cost_of(&hashes))
        .map_err(|e| format!("bcrypt: {e}"))?;
    Ok(Users {
        hashes,
        dummy,
        stamp: before,
        generation,
    })
}

impl Htpasswd {
    /// Loads the file; an unreadable or invalid file is an error at start-up.
    pub fn open(path: impl Into<PathBuf>) -> Result<Htpasswd, String> {
        let path = path.into();
        let users = load(&path, 0)?;
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| format!("no randomness: {e}"))?;
        Ok(Htpasswd {
            path,
            state: RwLock::new(Arc::new(users)),
            last_check: Mutex::new(Instant::now()),
            stale: AtomicBool::new(false),
            verified: Mutex::new(HashMap::new()),
            key,
        })
    }

    fn users(&self) -> Arc<Users> {
        match self.state.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whether the file's metadata changed since it was loaded (looked at most every
    /// [`RECHECK`]; a change stays known until [`Htpasswd::maybe_reload`] reloads). A stat,
    /// cheap enough for the async path.
    fn changed_on_disk(&self) -> bool {
        if self.stale.load(Ordering::Acquire) {
            return true;
        }
        {
            let Ok(mut last) = self.last_check.lock() else {
                return false;
            };
            if last.elapsed() < RECHECK {
                return false;
            }
            *last = Instant::now();
        }
        let changed = stamp(&self.path) != self.users().stamp;
        if changed {
            self.stale.store(true, Ordering::Release);
        }
        changed
    }

    /// Re-reads the file when it changed since it was loaded. Blocking (it reads the file and
    /// hashes the stand-in password at the file's highest cost).
    fn maybe_reload(&self) {
        if !self.changed_on_disk() || !self.stale.swap(false, Ordering::AcqRel) {
            return;
        }
        let current = self.users();
        let now = stamp(&self.path);
        if now == current.stamp {
            return;
        }
        match load(&self.path, current.generation + 1) {
            Ok(users) => {
                tracing::info!(path = %self.path.display(), users = users.hashes.len(), "htpasswd file reloaded");
                if let Ok(mut s) = self.state.write() {
                    *s = Arc::new(users);
                }
                if let Ok(mut v) = self.verified.lock() {
                    v.clear();
                }
            }
            Err(e) => {
                tracing::warn!("{e}; keeping the users loaded before");
                // Do not retry a broken file on every request: remember its stamp.
                if let Ok(mut s) = self.state.write() {
                    let users = Users {
                        hashes: current.hashes.clone(),
                        dummy: current.dummy.clone(),
                        stamp: now,
                        generation: current.generation,
                    };
                    *s = Arc::new(users);
                }
            }
        }
    }

    fn cache_key(&self, generation: u64, user: &str, password: &str) -> [u8; 32] {
        let mut h = sha2::Sha256::new();
        h.update(self.key);
        h.update(generation.to_le_bytes());
        h.update((user.len() as u64).to_le_bytes());
        h.update(user.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Names `user` with `password` under the file as loaded now, for sharing one check of
    /// the same credentials; keyed, so it says nothing about the password.
    pub(crate) fn check_key(&self, user: &str, password: &str) -> [u8; 32] {
        self.cache_key(self.users().generation, user, password)
    }

    fn cached(&self, key: &[u8; 32]) -> bool {
        self.verified
            .lock()
            .is_ok_and(|v| v.get(key).is_some_and(|at| at.elapsed() < CACHE_TTL))
    }

    /// Whether `password` was verified as `user`'s within [`CACHE_TTL`], and the file has not
    /// changed since: cheap, unlike [`Htpasswd::verify`]. False says nothing (it may just not
    /// be remembered).
    pub fn remembered(&self, user: &str, password: &str) -> bool {
        !self.changed_on_disk() && self.cached(&self.check_key(user, password))
    }

    /// Whether `password` is `user`'s. Blocking (bcrypt, a reload): call from a blocking
    /// thread.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        self.maybe_reload();
        let users = self.users();
        let key = self.cache_key(users.generation, user, password);
        if self.cached(&key) {
            return true;
        }
        let (hash, known) = match users.hashes.get(user) {
            Some(h) => (h.as_str(), true),
            None => (users.dummy.as_str(), false),
        };
        let ok = bcrypt::verify(password, hash).unwrap_or(false) && known;
        if ok && let Ok(mut v) = self.verified.lock() {
            if v.len() >= CACHE_MAX {
                v.clear();
            }
            v.insert(key, Instant::now());
        }
        ok
    }

    /// Whether `user` is in the file (for tests and diagnostics, not for authentication).
    pub fn has_user(&self, user: &str) -> bool {
        self.users().hashes.contains_key(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_bcrypt_entries_and_reloads_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let alice = bcrypt::hash("secret", 4)
            .unwrap()
            .replacen("$2b$", "$2y$", 1);
        std::fs::write(&path, format!("# users\nalice:{alice}\n\n")).unwrap();
        let h = Htpasswd::open(&path).unwrap();
        assert!(h.verify("alice", "secret"));
        assert!(h.verify("alice", "secret"), "cached");
        assert!(!h.verify("alice", "Secret"));
        assert!(!h.verify("bob", "secret"));
        assert!(!h.verify("", ""));

        let bob = bcrypt::hash("pw", 4).unwrap();
        std::fs::write(&path, format!("bob:{bob}\n")).unwrap();
        *h.last_check.lock().unwrap() = Instant::now() - RECHECK;
        assert!(h.verify("bob", "pw"));
        assert!(
            !h.verify("alice", "secret"),
            "removed users are out, cache too"
        );

        // A broken file keeps the users loaded before.
        std::fs::write(&path, "carol:{SHA}abcdef\n").unwrap();
        *h.last_check.lock().unwrap() = Instant::now() - RECHECK;
        assert!(h.verify("bob", "pw"));
        assert!(!h.has_user("carol"));
    }

    #[test]
    fn the_dummy_hash_costs_as_much_as_the_costliest_entry() {
        let users = parse("cheap:$2y$04$x\ncostly:$2y$12$y\nmid:$2b$08$z\n").unwrap();
        assert_eq!(cost_of(&users), 12);
        assert_eq!(cost_of(&HashMap::new()), bcrypt::DEFAULT_COST);
    }

    #[test]
    fn non_bcrypt_entries_are_refused() {
        assert!(parse("a:$apr1$xyz$abc").is_err());
        assert!(parse("a:plain").is_err());
        assert!(parse("nocolon").is_err());
        assert_eq!(parse("a:$2y$05$x\n").unwrap().len(), 1);
    }
}
