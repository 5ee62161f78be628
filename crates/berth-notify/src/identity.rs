//! Whether the process that wrote a lease is certainly dead, without waiting the lease out.
//!
//! A lease records the kernel's boot id, the pid namespace, the pid and the process's start
//! time (Linux `/proc`). A reader that runs under the same boot and in the same pid
//! namespace sees the same `/proc/<pid>`: if that pid is gone, or belongs to a process that
//! started at another time, the writer is dead. That is what lets a berth restarted on the
//! same host (or in the same container) take over its previous life's queue at once, while a
//! replica elsewhere (another boot id or namespace) waits for the lease to expire. Elsewhere
//! than Linux there is no identity and only the lease's age counts.

use serde::{Deserialize, Serialize};

/// Who a process is, as far as its own kernel can tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProcessIdentity {
    /// `/proc/sys/kernel/random/boot_id`
    pub boot: String,
    /// The target of `/proc/self/ns/pid`, e.g. `pid:[4026531836]`.
    pub pidns: String,
    /// The process id in that namespace.
    pub pid: u32,
    /// Start time in clock ticks after boot (`/proc/<pid>/stat`, field 22).
    pub start: u64,
}

impl ProcessIdentity {
    /// This process's identity; `None` where `/proc` does not say.
    pub(crate) fn current() -> Option<Self> {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let pidns = std::fs::read_link("/proc/self/ns/pid").ok()?;
        let pid = std::process::id();
        Some(ProcessIdentity {
            boot: boot.trim().to_owned(),
            pidns: pidns.to_string_lossy().into_owned(),
            pid,
            start: start_time(pid)?,
        })
    }

    /// True when `other` ran in this kernel and pid namespace and is no longer running.
    /// False when it may be running, or runs where this process cannot see.
    pub(crate) fn sees_dead(&self, other: &ProcessIdentity) -> bool {
        self.boot == other.boot
            && self.pidns == other.pidns
            && *other != *self
            && start_time(other.pid) != Some(other.start)
    }
}

/// The start time of process `pid`, in clock ticks after boot.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or parentheses: count
    // fields from the last ')'. Field 3 is the first after it, so field 22 is the 20th.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_process_is_not_seen_dead_and_a_gone_one_is() {
        let Some(me) = ProcessIdentity::current() else {
            return; // no /proc here: nothing to test
        };
        assert!(!me.sees_dead(&me));
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let alive = ProcessIdentity {
            pid: child.id(),
            start: start_time(child.id()).unwrap(),
            ..me.clone()
        };
        assert!(!me.sees_dead(&alive));
        // Same pid, another start time: a reused pid, so the lease's writer is gone.
        let reused = ProcessIdentity {
            start: alive.start + 1,
            ..alive.clone()
        };
        assert!(me.sees_dead(&reused));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(me.sees_dead(&alive));
        // Another kernel or namespace: this process cannot tell.
        let elsewhere = ProcessIdentity {
            boot: "another boot".into(),
            ..alive.clone()
        };
        assert!(!me.sees_dead(&elsewhere));
        let other_ns = ProcessIdentity {
            pidns: "pid:[1]".into(),
            ..alive
        };
        assert!(!me.sees_dead(&other_ns));
    }
}
