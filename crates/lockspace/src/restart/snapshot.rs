//! Restart state: the lockspace part of virtlockd's re-exec JSON.
//!
//! ```text
//! { "defaultLockspace": { "resources": [ R, ... ] },
//!   "lockspaces": [ { "directory": "/dir", "resources": [ R, ... ] }, ... ],
//!   "vmlockLingering": [ { "path": "/x", "fd": 17 } ]           (ours, optional)
//! R = { "name", "path", "fd", "lockHeld", "flags" (SHARED=1|AUTOCREATE=2), "owners": [pid..],
//!       "vmlockLockKind": "ofd"|"posix", "vmlockAliases": [["ls","name"]..],
//!       "vmlockIdent": [st_dev, st_ino],                                      (ours, optional)
//!       "vmlockSince": [secs..] }   (ours, optional: one per owner, when it acquired,
//!                                    0 unknown; omitted when every one is unknown)
//! ```
//!
//! libvirt ignores our `vmlock*` keys; a file written by libvirt has none,
//! and its locks are classic POSIX locks (`vmlockLockKind` defaults to
//! `posix`). [`Engine::restore`] adopts every descriptor exactly once,
//! never re-opens or re-locks a file, and reports odd entries in a
//! [`RestoreReport`] instead of failing (docs/quirks.md #20–23).
//!
//! Restoring an entry vmlockd wrote costs table inserts only: its
//! `vmlockIdent` is the identity checked when the lock was taken, and the
//! descriptor is the one it was recorded for (same process, numbers adopted
//! before anything else is opened). Entries without one (libvirt's files)
//! cost an `fstat` and a `stat` of the path, as before. A caller that
//! `fstat`s anyway passes the result ([`Adopted::ident`]); it then wins
//! over the record, and a record that disagrees makes the path be checked.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vmlock_sys::lock::LockKind;

use crate::Error;
use crate::engine::Engine;
use crate::fsops;
use crate::tables::{Key, Lingering, Owner, Resource, Tables};
use crate::types::{AcquireFlags, EngineOptions};

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
    /// The file identity `(st_dev, st_ino)` the path named when the lock
    /// was taken (ours; absent in libvirt's files).
    #[serde(
        rename = "vmlockIdent",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ident: Option<(u64, u64)>,
    /// When each of `owners` acquired it, seconds since the epoch, 0 if
    /// unknown (ours; absent in libvirt's files: every owner unknown).
    #[serde(rename = "vmlockSince", default, skip_serializing_if = "Vec::is_empty")]
    pub since: Vec<u32>,
}

impl ResourceSnap {
    /// When owner `i` acquired the resource (0: unknown, as for every
    /// owner of a file libvirt's daemon wrote).
    pub fn since_of(&self, i: usize) -> u32 {
        if self.since.len() == self.owners.len() {
            self.since.get(i).copied().unwrap_or(0)
        } else {
            0
        }
    }
}

/// A descriptor the caller of [`Engine::restore_adopted`] has taken
/// ownership of, with its `fstat` identity if already known.
#[derive(Debug)]
pub struct Adopted {
    /// The descriptor.
    pub fd: OwnedFd,
    /// `(st_dev, st_ino)` from `fstat`, or `None` to let the engine ask.
    pub ident: Option<(u64, u64)>,
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
    use serde::{Deserializer, Serializer};
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

    struct Visit;

    impl serde::de::Visitor<'_> for Visit {
        type Value = LockKind;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("\"ofd\" or \"posix\"")
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<LockKind, E> {
            match v {
                "ofd" => Ok(LockKind::Ofd),
                "posix" => Ok(LockKind::Posix),
                other => Err(E::custom(format!("unknown lock kind {other:?}"))),
            }
        }
    }

    /// Reads the string without allocating (one per lock adds up).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LockKind, D::Error> {
        d.deserialize_str(Visit)
    }
}

/// libvirt writes owners as unsigned 64-bit values of a C `pid_t`; keep the
/// low 32 bits (the `u32` the client registered).
mod pids {
    use serde::{Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[u32], s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }

    struct Visit;

    impl<'de> serde::de::Visitor<'de> for Visit {
        type Value = Vec<u32>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of pids")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Vec<u32>, A::Error> {
            let mut v = Vec::with_capacity(a.size_hint().unwrap_or(1).min(64));
            while let Some(p) = a.next_element::<u64>()? {
                v.push(p as u32);
            }
            Ok(v)
        }
    }

    /// Straight into `u32`s (no intermediate `Vec<u64>` per lock).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
        d.deserialize_seq(Visit)
    }
}

fn resource_snap(res: &Resource) -> ResourceSnap {
    ResourceSnap {
        name: res.names.first().map(|k| k.1.clone()).unwrap_or_default(),
        path: res.path().into_owned(),
        fd: res.file.as_raw_fd(),
        lock_held: res.lock_held,
        flags: AcquireFlags {
            shared: res.shared,
            autocreate: res.autocreate,
        }
        .to_wire(),
        owners: res.owners.iter().map(|o| o.pid).collect(),
        // Omitted when no owner's time is known (restored from libvirt's
        // state), as the file libvirt wrote had it.
        since: if res.owners.iter().any(|o| o.since != 0) {
            res.owners.iter().map(|o| o.since).collect()
        } else {
            Vec::new()
        },
        lock_kind: res.kind,
        aliases: res.names.iter().skip(1).map(|k| (**k).clone()).collect(),
        ident: Some(res.ident),
    }
}

impl Engine {
    /// The complete state, for re-exec. Descriptor numbers stay owned by
    /// the engine; call this with no engine call in flight (in-flight
    /// acquires are not part of the snapshot).
    pub fn snapshot(&self) -> Snapshot {
        let st = self.tables();
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
        set_inheritable(&self.tables(), inherit)
    }

    /// Rebuilds an engine from a snapshot, adopting each descriptor number
    /// through `fds` (e.g. `vmlock_sys::fd::adopt`). Nothing is re-opened
    /// or re-locked. Odd entries are reported, never fatal.
    pub fn restore(
        opts: EngineOptions,
        snap: Snapshot,
        mut fds: impl FnMut(i32) -> io::Result<OwnedFd>,
    ) -> Result<(Engine, RestoreReport), Error> {
        Engine::restore_adopted(opts, snap, |n| fds(n).map(|fd| Adopted { fd, ident: None }))
    }

    /// [`Engine::restore`] for a caller that adopted the descriptors itself
    /// and may already know their `fstat` identities (the daemon checks each
    /// inherited number with one `fstat`, see
    /// `vmlock_sys::fd::adopt_with_identity`).
    pub fn restore_adopted(
        opts: EngineOptions,
        snap: Snapshot,
        fds: impl FnMut(i32) -> io::Result<Adopted>,
    ) -> Result<(Engine, RestoreReport), Error> {
        let engine = Engine::new(opts);
        let total = std::iter::once(&snap.default)
            .chain(&snap.lockspaces)
            .map(|ls| ls.resources.len())
            .sum::<usize>();
        let mut r = Restorer {
            fds,
            seen: FdSet::default(),
            report: RestoreReport::default(),
            aliases: Vec::new(),
        };
        {
            let mut st = engine.tables();
            st.reserve(total);
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

/// One `F_SETFD` per descriptor the tables own.
pub(crate) fn set_inheritable(st: &Tables, inherit: bool) -> io::Result<()> {
    set_inheritable_share(st, inherit, 0, 1)
}

/// [`set_inheritable`] for every `of`-th descriptor starting at `share`
/// (so `of` threads can split the work).
pub(crate) fn set_inheritable_share(
    st: &Tables,
    inherit: bool,
    share: usize,
    of: usize,
) -> io::Result<()> {
    let files = st
        .resources
        .values()
        .map(|r| &r.file)
        .chain(st.lingering.iter().map(|l| &l.file))
        .skip(share)
        .step_by(of.max(1));
    for f in files {
        vmlock_sys::fd::set_cloexec(f.as_fd(), !inherit)?;
    }
    Ok(())
}

fn lockspace_snap(directory: Option<String>) -> LockspaceSnap {
    LockspaceSnap {
        directory,
        resources: Vec::new(),
    }
}

/// Descriptor numbers already taken, one bit each (numbers are small and
/// dense: a bitmap beats a hash set by a cache miss per entry).
#[derive(Debug, Default)]
struct FdSet(Vec<u64>);

impl FdSet {
    /// Adds a non-negative `fd`; false if it was there already.
    fn insert(&mut self, fd: i32) -> bool {
        let Ok(n) = usize::try_from(fd) else {
            return false;
        };
        let (word, bit) = (n / 64, 1u64 << (n % 64));
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        match self.0.get_mut(word) {
            Some(w) if *w & bit == 0 => {
                *w |= bit;
                true
            }
            _ => false,
        }
    }
}

struct Restorer<F> {
    fds: F,
    seen: FdSet,
    report: RestoreReport,
    aliases: Vec<(u64, Vec<(String, String)>)>,
}

impl<F: FnMut(i32) -> io::Result<Adopted>> Restorer<F> {
    fn problem(&mut self, p: RestoreProblem) {
        tracing::warn!(problem = ?p, "restore");
        self.report.problems.push(p);
    }

    fn directory(&mut self, st: &mut Tables, dir: Option<String>) -> String {
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

    fn lockspace(&mut self, st: &mut Tables, ls: String, resources: Vec<ResourceSnap>) {
        for snap in resources {
            self.resource(st, &ls, snap);
        }
    }

    /// Adopts one descriptor number, at most once, and learns its identity:
    /// from the caller's `fstat`, else from our own record, else `fstat`.
    fn adopt(
        &mut self,
        fd: i32,
        name: &str,
        recorded: Option<fsops::Ident>,
    ) -> Option<(File, fsops::Ident)> {
        if fd < 0 || !self.seen.insert(fd) {
            let name = name.to_owned();
            self.problem(RestoreProblem::DuplicateFd { fd, name });
            return None;
        }
        let adopted = (self.fds)(fd).and_then(|a| {
            let file = File::from(a.fd);
            match a.ident.or(recorded) {
                Some(i) => Ok((file, i)),
                None => fsops::file_ident(&file).map(|i| (file, i)),
            }
        });
        match adopted {
            Ok(pair) => Some(pair),
            Err(e) => {
                let (name, errno) = (name.to_owned(), Error::io(&e));
                self.problem(RestoreProblem::AdoptFailed { fd, name, errno });
                None
            }
        }
    }

    fn resource(&mut self, st: &mut Tables, ls: &str, snap: ResourceSnap) {
        let Some((file, ident)) = self.adopt(snap.fd, &snap.name, snap.ident) else {
            return;
        };
        let since: Vec<u32> = (0..snap.owners.len()).map(|i| snap.since_of(i)).collect();
        let ResourceSnap {
            name,
            path,
            flags,
            lock_held,
            owners,
            lock_kind,
            aliases,
            ident: recorded,
            ..
        } = snap;
        let key: Key = Arc::new((ls.to_owned(), name));
        let id = st.next_id();
        let key = match st.claim_restored(key, id) {
            Ok(key) => key,
            Err(held) => {
                let (lockspace, name) = (*held).clone();
                self.problem(RestoreProblem::DuplicateName { lockspace, name });
                st.lingering.push(Lingering { ident, path, file });
                return;
            }
        };
        // Our own entries carry the identity checked at acquire time; the
        // path is only walked again for entries that lack it (libvirt's).
        let matches = recorded == Some(ident) || fsops::stat_ident(&path).ok() == Some(ident);
        if !matches {
            let (name, path) = (key.1.clone(), path.clone());
            self.problem(RestoreProblem::IdentityMismatch { name, path });
        }
        let no_owners = owners.is_empty();
        let flags = AcquireFlags::from_wire(flags);
        let path_override =
            (!crate::names::is_derived_path(ls, &key.1, &path)).then(|| path.into_boxed_str());
        let res = Resource {
            names: smallvec::smallvec![key],
            path_override,
            file,
            ident,
            shared: flags.shared,
            autocreate: flags.autocreate && matches,
            lock_held,
            kind: lock_kind,
            owners: owners
                .iter()
                .zip(since)
                .map(|(&pid, since)| Owner { pid, via: 0, since })
                .collect(),
        };
        let dup = st.insert_claimed(id, res);
        if dup || no_owners {
            self.shape_problems(st, id, dup, no_owners);
        }
        self.report.restored += 1;
        if !aliases.is_empty() {
            self.aliases.push((id, aliases));
        }
    }

    fn shape_problems(&mut self, st: &Tables, id: u64, dup: bool, no_owners: bool) {
        let key = st.resources.get(&id).and_then(|r| r.names.first());
        let (lockspace, name) = key.map(|k| (**k).clone()).unwrap_or_default();
        if dup {
            let (lockspace, name) = (lockspace.clone(), name.clone());
            self.problem(RestoreProblem::DuplicateIdentity { lockspace, name });
        }
        if no_owners {
            self.problem(RestoreProblem::NoOwners { lockspace, name });
        }
    }

    fn lingering(&mut self, st: &mut Tables, l: LingeringSnap) {
        if let Some((file, ident)) = self.adopt(l.fd, &l.path, None) {
            let path = l.path;
            st.lingering.push(Lingering { ident, path, file });
        }
    }

    fn install_aliases(&mut self, st: &mut Tables) {
        for (id, aliases) in std::mem::take(&mut self.aliases) {
            for (lockspace, name) in aliases {
                let key: Key = Arc::new((lockspace, name));
                let free = st.has_lockspace(&key.0) && !st.names.contains_key(&key);
                match st.resources.get_mut(&id) {
                    Some(res) if free => {
                        st.names.insert(key.clone(), crate::tables::Slot::Held(id));
                        res.names.push(key);
                    }
                    _ => {
                        let (lockspace, name) = Arc::unwrap_or_clone(key);
                        self.problem(RestoreProblem::BadAlias { lockspace, name });
                    }
                }
            }
        }
    }
}
