//! Restart state: the lockspace part of virtlockd's re-exec JSON.
//!
//! ```text
//! { "defaultLockspace": { "resources": [ R, ... ] },
//!   "lockspaces": [ { "directory": "/dir", "resources": [ R, ... ] }, ... ],
//!   "vmlockLingering": [ { "path": "/x", "fd": 17 } ]           (ours, optional)
//! R = { "name", "path", "fd", "lockHeld", "flags" (SHARED=1|AUTOCREATE=2), "owners": [pid..],
//!       "vmlockLockKind": "ofd"|"posix", "vmlockAliases": [["ls","name"]..] }   (ours, optional)
//! ```
//!
//! libvirt ignores our `vmlock*` keys; a file written by libvirt has none,
//! and its locks are classic POSIX locks (`vmlockLockKind` defaults to
//! `posix`). [`Engine::restore`] adopts every descriptor exactly once,
//! never re-opens or re-locks a file, and reports odd entries in a
//! [`RestoreReport`] instead of failing (quirks 20–23).

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use serde::{Deserialize, Serialize};
use vmlock_sys::lock::LockKind;

use crate::Error;
use crate::engine::Engine;
use crate::fsops;
use crate::state::{Key, Lingering, Owner, Resource, State};
use crate::types::{AcquireFlags, EngineOptions, ResourceInfo};

/// All lockspaces and held resources.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The default lockspace (no `directory`).
    #[serde(rename = "defaultLockspace")]
    pub default: LockspaceSnap,
    /// Every named lockspace, sorted by directory.
    pub lockspaces: Vec<LockspaceSnap>,
    /// Descriptors kept open only to protect an inherited POSIX lock (ours).
    #[serde(
        rename = "vmlockLingering",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub lingering: Vec<LingeringSnap>,
}

/// One lockspace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockspaceSnap {
    /// The directory (the lockspace path); absent for the default one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
    /// Its resources.
    pub resources: Vec<ResourceSnap>,
}

/// One held resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceSnap {
    /// The name it was acquired under.
    pub name: String,
    /// The lease file path.
    pub path: String,
    /// The descriptor number (still owned by the engine).
    pub fd: i32,
    /// Whether the lock is held.
    #[serde(rename = "lockHeld")]
    pub lock_held: bool,
    /// SHARED = 1 | AUTOCREATE = 2.
    pub flags: u32,
    /// Owner pids, one per acquire.
    #[serde(with = "pids")]
    pub owners: Vec<u32>,
    /// The lock family (absent in libvirt's files: POSIX).
    #[serde(rename = "vmlockLockKind", with = "kind", default = "kind::posix")]
    pub lock_kind: LockKind,
    /// Other `(lockspace, name)` keys naming the same file.
    #[serde(
        rename = "vmlockAliases",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub aliases: Vec<(String, String)>,
}

/// A lingering descriptor (see [`Snapshot::lingering`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LingeringSnap {
    /// The path it was opened by.
    pub path: String,
    /// The descriptor number.
    pub fd: i32,
}

/// Something odd found while restoring; none of these stops the restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreProblem {
    /// A second lockspace with the same directory: its resources were merged
    /// into the first.
    DuplicateLockspace {
        /// The directory.
        directory: String,
    },
    /// A named lockspace without a directory: merged into the default one.
    MissingDirectory,
    /// The fd number was already used by an earlier entry (or negative):
    /// this entry was skipped, the descriptor belongs to the first one.
    DuplicateFd {
        /// The descriptor number.
        fd: i32,
        /// The skipped entry's name.
        name: String,
    },
    /// The descriptor could not be adopted (not open): the entry was
    /// dropped; it held no lock.
    AdoptFailed {
        /// The descriptor number.
        fd: i32,
        /// The entry's name.
        name: String,
        /// The adoption errno.
        errno: i32,
    },
    /// The descriptor is not the file its path names now. Kept (it holds the
    /// lock), but its lease file will never be unlinked.
    IdentityMismatch {
        /// The entry's name.
        name: String,
        /// The path.
        path: String,
    },
    /// A second entry with the same (lockspace, name): its descriptor is
    /// kept open (lingering) so no lock is dropped, the entry is not restored.
    DuplicateName {
        /// The lockspace.
        lockspace: String,
        /// The name.
        name: String,
    },
    /// Two entries lock the same file (libvirt allowed aliases): both kept;
    /// the descriptor of whichever goes first lingers until the other goes.
    DuplicateIdentity {
        /// The lockspace of the later entry.
        lockspace: String,
        /// The name of the later entry.
        name: String,
    },
    /// An entry with no owners: kept (its lock stays held) but only an
    /// admin can see it.
    NoOwners {
        /// The lockspace.
        lockspace: String,
        /// The name.
        name: String,
    },
    /// An alias whose lockspace is missing or whose key is taken: dropped.
    BadAlias {
        /// The alias lockspace.
        lockspace: String,
        /// The alias name.
        name: String,
    },
}

/// What [`Engine::restore`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Resources restored.
    pub restored: usize,
    /// Odd entries, in file order.
    pub problems: Vec<RestoreProblem>,
}

mod kind {
    use serde::{Deserialize, Deserializer, Serializer};
    use vmlock_sys::lock::LockKind;

    pub fn posix() -> LockKind {
        LockKind::Posix
    }

    pub fn serialize<S: Serializer>(k: &LockKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match k {
            LockKind::Ofd => "ofd",
            LockKind::Posix => "posix",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LockKind, D::Error> {
        match String::deserialize(d)?.as_str() {
            "ofd" => Ok(LockKind::Ofd),
            "posix" => Ok(LockKind::Posix),
            other => Err(serde::de::Error::custom(format!(
                "unknown lock kind {other:?}"
            ))),
        }
    }
}

/// libvirt writes owners as unsigned 64-bit values of a C `pid_t`; keep the
/// low 32 bits (the `u32` the client registered).
mod pids {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[u32], s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
        let wide = Vec::<u64>::deserialize(d)?;
        Ok(wide.into_iter().map(|p| p as u32).collect())
    }
}

pub(crate) fn info(res: &Resource) -> ResourceInfo {
    let (lockspace, name) = res.names.first().cloned().unwrap_or_default();
    ResourceInfo {
        lockspace,
        name,
        path: res.path.clone(),
        fd: res.file.as_raw_fd(),
        shared: res.shared,
        autocreate: res.autocreate,
        lock_held: res.lock_held,
        lock_kind: res.kind,
        owners: res.owners.iter().map(|o| o.pid).collect(),
        aliases: res.names.iter().skip(1).cloned().collect(),
    }
}

fn resource_snap(res: &Resource) -> ResourceSnap {
    let i = info(res);
    ResourceSnap {
        name: i.name,
        path: i.path,
        fd: i.fd,
        lock_held: i.lock_held,
        flags: AcquireFlags {
            shared: i.shared,
            autocreate: i.autocreate,
        }
        .to_wire(),
        owners: i.owners,
        lock_kind: i.lock_kind,
        aliases: i.aliases,
    }
}

impl Engine {
    /// The complete state, for re-exec. Descriptor numbers stay owned by
    /// the engine; call this with no engine call in flight (in-flight
    /// acquires are not part of the snapshot).
    pub fn snapshot(&self) -> Snapshot {
        let st = self.state();
        let mut named: BTreeMap<String, LockspaceSnap> = st
            .named
            .iter()
            .map(|d| (d.clone(), lockspace_snap(Some(d.clone()))))
            .collect();
        let mut default = lockspace_snap(None);
        let mut ids: Vec<&u64> = st.resources.keys().collect();
        ids.sort_unstable();
        for res in ids.into_iter().filter_map(|id| st.resources.get(id)) {
            let ls = res.names.first().map(|k| k.0.as_str()).unwrap_or("");
            let target = if ls.is_empty() {
                &mut default
            } else {
                named
                    .entry(ls.to_owned())
                    .or_insert_with(|| lockspace_snap(Some(ls.to_owned())))
            };
            target.resources.push(resource_snap(res));
        }
        let lingering = st
            .lingering
            .iter()
            .map(|l| LingeringSnap {
                path: l.path.clone(),
                fd: l.file.as_raw_fd(),
            })
            .collect();
        Snapshot {
            default,
            lockspaces: named.into_values().collect(),
            lingering,
        }
    }

    /// Sets (`inherit == false`) or clears close-on-exec on every descriptor
    /// the engine owns: clear it just before `execve`, set it again if the
    /// exec failed.
    pub fn set_fds_inheritable(&self, inherit: bool) -> io::Result<()> {
        let st = self.state();
        let files = st
            .resources
            .values()
            .map(|r| &r.file)
            .chain(st.lingering.iter().map(|l| &l.file));
        for f in files {
            vmlock_sys::fd::set_cloexec(f.as_fd(), !inherit)?;
        }
        Ok(())
    }

    /// Rebuilds an engine from a snapshot, adopting each descriptor number
    /// through `fds` (the daemon passes `vmlock_sys::fd::adopt`). Nothing is
    /// re-opened or re-locked. Odd entries are reported, never fatal.
    pub fn restore(
        opts: EngineOptions,
        snap: Snapshot,
        fds: impl FnMut(i32) -> io::Result<OwnedFd>,
    ) -> Result<(Engine, RestoreReport), Error> {
        let engine = Engine::new(opts);
        let mut r = Restorer {
            fds,
            seen: HashSet::new(),
            report: RestoreReport::default(),
            aliases: Vec::new(),
        };
        {
            let mut st = engine.state();
            r.lockspace(&mut st, String::new(), snap.default.resources);
            for ls in snap.lockspaces {
                let dir = r.directory(&mut st, ls.directory);
                r.lockspace(&mut st, dir, ls.resources);
            }
            for l in snap.lingering {
                r.lingering(&mut st, l);
            }
            r.install_aliases(&mut st);
        }
        Ok((engine, r.report))
    }
}

fn lockspace_snap(directory: Option<String>) -> LockspaceSnap {
    LockspaceSnap {
        directory,
        resources: Vec::new(),
    }
}

struct Restorer<F> {
    fds: F,
    seen: HashSet<i32>,
    report: RestoreReport,
    aliases: Vec<(u64, Vec<(String, String)>)>,
}

impl<F: FnMut(i32) -> io::Result<OwnedFd>> Restorer<F> {
    fn problem(&mut self, p: RestoreProblem) {
        tracing::warn!(problem = ?p, "restore");
        self.report.problems.push(p);
    }

    fn directory(&mut self, st: &mut State, dir: Option<String>) -> String {
        match dir {
            None => {
                self.problem(RestoreProblem::MissingDirectory);
                String::new()
            }
            Some(d) if d.is_empty() => {
                self.problem(RestoreProblem::MissingDirectory);
                d
            }
            Some(d) => {
                if !st.named.insert(d.clone()) {
                    self.problem(RestoreProblem::DuplicateLockspace {
                        directory: d.clone(),
                    });
                }
                d
            }
        }
    }

    fn lockspace(&mut self, st: &mut State, ls: String, resources: Vec<ResourceSnap>) {
        for snap in resources {
            self.resource(st, &ls, snap);
        }
    }

    /// Adopts one descriptor number, at most once.
    fn adopt(&mut self, fd: i32, name: &str) -> Option<File> {
        if fd < 0 || !self.seen.insert(fd) {
            let name = name.to_owned();
            self.problem(RestoreProblem::DuplicateFd { fd, name });
            return None;
        }
        match (self.fds)(fd) {
            Ok(owned) => Some(File::from(owned)),
            Err(e) => {
                let (name, errno) = (name.to_owned(), Error::io(&e));
                self.problem(RestoreProblem::AdoptFailed { fd, name, errno });
                None
            }
        }
    }

    fn resource(&mut self, st: &mut State, ls: &str, snap: ResourceSnap) {
        let Some(file) = self.adopt(snap.fd, &snap.name) else {
            return;
        };
        let ident = match fsops::file_ident(&file) {
            Ok(i) => i,
            Err(e) => {
                let (fd, name, errno) = (snap.fd, snap.name, Error::io(&e));
                self.problem(RestoreProblem::AdoptFailed { fd, name, errno });
                return;
            }
        };
        let key: Key = (ls.to_owned(), snap.name.clone());
        if st.names.contains_key(&key) {
            let (lockspace, name) = key;
            self.problem(RestoreProblem::DuplicateName { lockspace, name });
            let path = snap.path;
            st.lingering.push(Lingering { ident, path, file });
            return;
        }
        let matches = fsops::stat_ident(&snap.path).ok() == Some(ident);
        if !matches {
            let (name, path) = (snap.name.clone(), snap.path.clone());
            self.problem(RestoreProblem::IdentityMismatch { name, path });
        }
        self.check_shape(st, &key, ident, &snap);
        let flags = AcquireFlags::from_wire(snap.flags);
        let res = Resource {
            names: vec![key],
            path: snap.path,
            file,
            ident,
            shared: flags.shared,
            autocreate: flags.autocreate && matches,
            lock_held: snap.lock_held,
            kind: snap.lock_kind,
            owners: snap
                .owners
                .iter()
                .map(|&pid| Owner { pid, via: 0 })
                .collect(),
        };
        let id = st.insert(res);
        self.report.restored += 1;
        if !snap.aliases.is_empty() {
            self.aliases.push((id, snap.aliases));
        }
    }

    fn check_shape(&mut self, st: &State, key: &Key, ident: fsops::Ident, snap: &ResourceSnap) {
        let (lockspace, name) = key.clone();
        if st.idents.get(&ident).is_some_and(|e| !e.held.is_empty()) {
            let (lockspace, name) = (lockspace.clone(), name.clone());
            self.problem(RestoreProblem::DuplicateIdentity { lockspace, name });
        }
        if snap.owners.is_empty() {
            self.problem(RestoreProblem::NoOwners { lockspace, name });
        }
    }

    fn lingering(&mut self, st: &mut State, l: LingeringSnap) {
        let Some(file) = self.adopt(l.fd, &l.path) else {
            return;
        };
        match fsops::file_ident(&file) {
            Ok(ident) => st.lingering.push(Lingering {
                ident,
                path: l.path,
                file,
            }),
            Err(e) => {
                let (fd, name, errno) = (l.fd, l.path, Error::io(&e));
                self.problem(RestoreProblem::AdoptFailed { fd, name, errno });
            }
        }
    }

    fn install_aliases(&mut self, st: &mut State) {
        for (id, aliases) in std::mem::take(&mut self.aliases) {
            for (lockspace, name) in aliases {
                let key: Key = (lockspace, name);
                let free = st.has_lockspace(&key.0) && !st.names.contains_key(&key);
                match st.resources.get_mut(&id) {
                    Some(res) if free => {
                        st.names.insert(key.clone(), crate::state::Slot::Held(id));
                        res.names.push(key);
                    }
                    _ => {
                        let (lockspace, name) = key;
                        self.problem(RestoreProblem::BadAlias { lockspace, name });
                    }
                }
            }
        }
    }
}
