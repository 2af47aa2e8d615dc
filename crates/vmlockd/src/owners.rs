//! Who the owners are: what each REGISTER said (name, UUID, id, pid), by
//! owner pid, for the inquiry program and for refusals that name the holder.
//!
//! ```text
//!  session::register ──► Owners::register(owner)   name, uuid, id, pid,
//!                                                   the process's start time
//!  adopted connection (re-exec) ──► the same, from the session it carries
//!  re-exec state ──► Owners::adopt(the previous image's table)
//!  inquiry LIST / refusal ──► Owners::get(pid)
//! ```
//!
//! Entries are small and one per VM; the table is pruned of owners that
//! hold nothing and whose process is gone when it has doubled since the last
//! pruning, so it never grows with the number of VMs ever started.
//!
//! Telling a process from a later one with its recycled pid takes the start
//! time from `/proc/PID/stat`, which the kernel formats field by field: the
//! costliest step of a REGISTER. libvirt registers the same owner on every
//! connection it opens for it, so each entry also keeps a pidfd of its
//! process: while that pidfd is not readable the process has not exited,
//! the pid still names it, and a repeated REGISTER with the same name, UUID
//! and id changes nothing (one `poll`, no `/proc` read).

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use vmlock_proto::lock::Owner;

/// Fewest entries before pruning is considered.
const PRUNE_MIN: usize = 64;

/// What one REGISTER said, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerMeta {
    /// The owner's (domain's) name.
    pub name: String,
    /// Its UUID.
    pub uuid: [u8; 16],
    /// Its (domain) id.
    pub id: u32,
    /// The owner pid.
    pub pid: u32,
    /// The process's start time (`/proc/PID/stat` field 22) when it
    /// registered, if it existed: tells the same process from a later one
    /// with a recycled pid.
    pub start_time: Option<u64>,
}

impl OwnerMeta {
    /// The UUID in its usual hyphenated form.
    pub fn uuid_text(&self) -> String {
        uuid_text(&self.uuid)
    }
}

/// A UUID in its usual hyphenated form.
pub fn uuid_text(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The owner table, and whether refusals name the holder.
#[derive(Debug)]
pub struct Owners {
    table: Mutex<Table>,
    names_holder: bool,
}

#[derive(Debug, Default)]
struct Table {
    by_pid: HashMap<u32, OwnerMeta>,
    /// A pidfd of the process each entry's start time was read from, when
    /// one could be opened (see the module's notes).
    pidfds: HashMap<u32, OwnedFd>,
    prune_at: usize,
}

impl Owners {
    /// An empty table; `names_holder` is the `refusal_names_holder` setting.
    pub fn new(names_holder: bool) -> Owners {
        Owners {
            table: Mutex::new(Table {
                by_pid: HashMap::new(),
                pidfds: HashMap::new(),
                prune_at: PRUNE_MIN,
            }),
            names_holder,
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a REGISTER. `held` says whether a pid still holds locks,
    /// for pruning.
    pub fn register(&self, owner: &Owner, held: impl Fn() -> Vec<u32>) {
        if self.unchanged(owner) {
            return;
        }
        let (start_time, pidfd) = identify(owner.pid);
        let meta = OwnerMeta {
            name: owner.name.clone(),
            uuid: owner.uuid,
            id: owner.id,
            pid: owner.pid,
            start_time,
        };
        let mut t = self.table();
        t.by_pid.insert(owner.pid, meta);
        match pidfd {
            Some(fd) => t.pidfds.insert(owner.pid, fd),
            None => t.pidfds.remove(&owner.pid),
        };
        if t.by_pid.len() >= t.prune_at {
            drop(t);
            self.prune(&held());
        }
    }

    /// Forgets owners that hold nothing (`holding`: sorted pids that do)
    /// and whose process is gone or was replaced.
    pub fn prune(&self, holding: &[u32]) {
        let mut t = self.table();
        let Table { by_pid, pidfds, .. } = &mut *t;
        by_pid.retain(|pid, m| {
            let keep = holding.binary_search(pid).is_ok()
                || match pidfds.get(pid) {
                    Some(fd) => running(fd),
                    None => same_process(m),
                };
            if !keep {
                pidfds.remove(pid);
            }
            keep
        });
        t.prune_at = (t.by_pid.len() * 2).max(PRUNE_MIN);
    }

    /// Whether `owner` is recorded already, as said now, by a process that
    /// still runs: then a REGISTER has nothing to change.
    fn unchanged(&self, owner: &Owner) -> bool {
        let t = self.table();
        let (Some(m), Some(fd)) = (t.by_pid.get(&owner.pid), t.pidfds.get(&owner.pid)) else {
            return false;
        };
        m.id == owner.id && m.uuid == owner.uuid && m.name == owner.name && running(fd)
    }

    /// Every known owner, by pid (for the re-exec state).
    pub fn all(&self) -> Vec<OwnerMeta> {
        let mut v: Vec<OwnerMeta> = self.table().by_pid.values().cloned().collect();
        v.sort_unstable_by_key(|m| m.pid);
        v
    }

    /// Takes over owners the previous image knew (after a re-exec); an
    /// owner already registered here (an adopted connection) keeps its
    /// entry.
    pub fn adopt(&self, owners: Vec<OwnerMeta>) {
        let mut t = self.table();
        for m in owners {
            t.by_pid.entry(m.pid).or_insert(m);
        }
        t.prune_at = (t.by_pid.len() * 2).max(PRUNE_MIN);
    }

    /// What the owner with this pid registered as, if known.
    pub fn get(&self, pid: u32) -> Option<OwnerMeta> {
        self.table().by_pid.get(&pid).cloned()
    }

    /// How many owners are known.
    pub fn len(&self) -> usize {
        self.table().by_pid.len()
    }

    /// The text appended to a refusal naming holder `pid`: ` by domain
    /// 'web1' (uuid ..., pid 4242)`, or ` by pid 4242` if the owner never
    /// registered here. Empty when refusals keep virtlockd's text.
    pub fn refusal_suffix(&self, pid: u32) -> String {
        if !self.names_holder {
            return String::new();
        }
        match self.get(pid) {
            Some(m) => format!(
                " by domain '{}' (uuid {}, pid {pid})",
                m.name,
                m.uuid_text()
            ),
            None => format!(" by pid {pid}"),
        }
    }
}

/// The start time of the process `pid` names now, and a pidfd of that same
/// process. The pidfd is opened first and kept only if its process still
/// runs after the read: then the pid named it throughout, and the start
/// time is its own.
fn identify(pid: u32) -> (Option<u64>, Option<OwnedFd>) {
    let Ok(p) = i32::try_from(pid) else {
        return (None, None);
    };
    let fd = vmlock_sys::process::pidfd_open(p).ok();
    let start = vmlock_sys::process::start_time(p).ok();
    let fd = fd.filter(|fd| start.is_some() && running(fd));
    (start, fd)
}

/// Whether the process behind `pidfd` has not exited (a pidfd becomes
/// readable when its process exits).
fn running(pidfd: &OwnedFd) -> bool {
    !vmlock_sys::process::pidfd_wait(pidfd.as_fd(), Duration::ZERO).unwrap_or(true)
}

/// Whether the process that registered as `m` still runs (not a later
/// process with a recycled pid).
pub fn same_process(m: &OwnerMeta) -> bool {
    let Ok(pid) = i32::try_from(m.pid) else {
        return false;
    };
    match (vmlock_sys::process::start_time(pid), m.start_time) {
        (Ok(now), Some(then)) => now == then,
        (Ok(_), None) => true,
        (Err(_), _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(pid: u32, name: &str) -> Owner {
        Owner {
            uuid: [0x11; 16],
            name: name.into(),
            id: 7,
            pid,
        }
    }

    #[test]
    fn uuid_is_hyphenated() {
        let mut u = [0u8; 16];
        for (i, b) in u.iter_mut().enumerate() {
            *b = i as u8 * 17;
        }
        assert_eq!(uuid_text(&u), "00112233-4455-6677-8899-aabbccddeeff");
    }

    #[test]
    fn refusal_suffix_names_the_registered_owner() {
        let o = Owners::new(true);
        let me = std::process::id();
        o.register(&owner(me, "web1"), Vec::new);
        assert_eq!(
            o.refusal_suffix(me),
            format!(" by domain 'web1' (uuid 11111111-1111-1111-1111-111111111111, pid {me})")
        );
        assert_eq!(o.refusal_suffix(4_194_000), " by pid 4194000");
        assert_eq!(Owners::new(false).refusal_suffix(me), "");
        let m = o.get(me).expect("registered");
        assert!(m.start_time.is_some() && same_process(&m));
    }

    #[test]
    fn pruning_keeps_holders_and_live_processes() {
        let o = Owners::new(true);
        let me = std::process::id();
        o.register(&owner(me, "alive"), Vec::new);
        // Pids above the kernel's maximum never exist.
        for pid in 0..PRUNE_MIN as u32 {
            o.register(&owner(4_194_400 + pid, "gone"), || vec![4_194_400]);
        }
        assert!(o.get(me).is_some(), "a live process is kept");
        assert!(o.get(4_194_400).is_some(), "a holder is kept");
        assert!(o.get(4_194_401).is_none(), "a gone non-holder is dropped");
        assert!(o.len() < PRUNE_MIN);
    }

    #[test]
    fn a_repeated_register_is_checked_against_the_running_process() {
        let o = Owners::new(true);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        o.register(&owner(pid, "vm"), Vec::new);
        let first = o.get(pid).expect("registered");
        assert!(first.start_time.is_some());
        // The same process, the same words: nothing changes.
        o.register(&owner(pid, "vm"), Vec::new);
        assert_eq!(o.get(pid), Some(first.clone()));
        // The same process under another name: the entry follows.
        o.register(&owner(pid, "renamed"), Vec::new);
        assert_eq!(o.get(pid).map(|m| m.name), Some("renamed".to_owned()));
        // The process is gone: a REGISTER under its pid is not taken for
        // it (its start time is not carried over).
        child.kill().unwrap();
        child.wait().unwrap();
        o.register(&owner(pid, "renamed"), Vec::new);
        assert_eq!(o.get(pid).and_then(|m| m.start_time), None);
    }
}
