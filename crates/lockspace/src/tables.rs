//! The in-memory tables, always used under the engine's one mutex.
//!
//! ```text
//! names:     (lockspace, name) -> Held(id) | Pending        every alias is a key
//! idents:    (st_dev, st_ino)  -> { held: [id..], busy: n } busy = acquires in
//!                                                           flight or fds closing
//! resources: id -> Resource { names[0] = primary key, file, owners[(pid, via)] }
//! ```
//!
//! A key is allocated once and shared (`Arc`) by the name table and its
//! resource; one name and one owner sit inline in the resource, and the
//! lease path is derived from the first name (see [`Resource::path`]).
//!
//! Nothing here performs I/O: a key or identity that is being worked on
//! outside the lock is *reserved* (`Pending` / `busy`), and any other request
//! meeting a reservation is told "busy" instead of waiting.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use foldhash::SharedSeed;
use foldhash::fast::FoldHasher;
use smallvec::SmallVec;

use vmlock_sys::lock::LockKind;

use crate::fsops::{Disposal, Ident};
use crate::types::ResourceInfo;
use crate::{Error, ResourceKey};

/// `(lockspace, name)`, shared by the name table and the resource that
/// holds it (one allocation per key instead of two copies of both strings).
pub(crate) type Key = Arc<KeyParts>;

/// A key's two strings, for lookups that need no shared copy.
pub(crate) type KeyParts = (String, String);

/// Hashes integers no client chooses freely (file identities, and owner
/// pids, which only the daemon's root-only clients name and which count
/// per owner; resource ids use [`SeqIdHasher`]) with one multiplication each: the DoS
/// resistance of the default SipHash buys nothing, and a restore of
/// thousands of locks hashes each several times. Client-chosen keys (names)
/// use the keyed [`KeyedState`].
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: spreads consecutive ids over the top bits,
        // which hashbrown uses for its control bytes.
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_i32(&mut self, n: i32) {
        self.write_u64(u64::from(n as u32));
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
}

/// A map keyed by engine-chosen integers.
pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Hashes resource ids, which the engine hands out in sequence, so that
/// consecutive ids land in consecutive buckets: the low bits (hashbrown's
/// bucket index) are the id's own, the top seven (its control tag) are
/// mixed. A restore then fills the table front to back instead of missing
/// the cache once per insert.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SeqIdHasher(u64);

impl Hasher for SeqIdHasher {
    fn finish(&self) -> u64 {
        const TAG: u64 = 0x7f << 57;
        self.0 ^ (self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) & TAG)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Resources by id (see [`SeqIdHasher`]).
pub(crate) type ResourceMap<V = Resource> = HashMap<u64, V, BuildHasherDefault<SeqIdHasher>>;

/// Hashes client-chosen names (lockspace paths, resource names) with
/// foldhash under a secret seed: a few times cheaper than SipHash for
/// short keys, and still keyed, so a client cannot aim names at one bucket
/// without knowing the seed. The seed comes from the OS through std's
/// `RandomState` (foldhash's own random state seeds from addresses and the
/// clock only).
#[derive(Debug, Clone)]
pub(crate) struct KeyedState {
    per_hasher: u64,
    shared: SharedSeed,
}

impl Default for KeyedState {
    fn default() -> Self {
        let os = std::hash::RandomState::new();
        KeyedState {
            per_hasher: os.hash_one(1u8),
            shared: SharedSeed::from_u64(os.hash_one(2u8)),
        }
    }
}

impl BuildHasher for KeyedState {
    type Hasher = FoldHasher;

    fn build_hasher(&self) -> FoldHasher {
        FoldHasher::with_seed(self.per_hasher, &self.shared)
    }
}

/// A map keyed by client-chosen strings.
pub(crate) type NameMap<K, V> = HashMap<K, V, KeyedState>;

/// One acquire by one owner pid, through the key `names[via]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    pub pid: u32,
    /// When this acquire was committed, seconds since the epoch (0:
    /// unknown, for locks restored after a re-exec). Sits in what would
    /// otherwise be padding.
    pub since: u32,
    pub via: usize,
}

/// Now, in seconds since the epoch, as [`Owner::since`] stores it.
pub(crate) fn now_secs() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

/// A resource's names: almost always one, kept inline (a second comes
/// only from a shared acquire through another path to the same file).
pub(crate) type Names = SmallVec<[Key; 1]>;

/// A resource's owners: one for an exclusive lock and for most shared
/// ones, kept inline.
pub(crate) type Owners = SmallVec<[Owner; 1]>;

/// A held lease file.
#[derive(Debug)]
pub(crate) struct Resource {
    pub names: Names,
    /// The lease file's path when it is not the one the first name gives
    /// (`lockspace/name`, or the name itself in the default lockspace):
    /// only ever from a foreign re-exec state. See [`Resource::path`].
    pub path_override: Option<Box<str>>,
    pub file: File,
    pub ident: Ident,
    pub shared: bool,
    pub autocreate: bool,
    pub lock_held: bool,
    pub kind: LockKind,
    pub owners: Owners,
}

impl Resource {
    /// What callers of the engine see of this resource.
    pub(crate) fn info(&self) -> ResourceInfo {
        let (lockspace, name) = self
            .names
            .first()
            .map(|k| (**k).clone())
            .unwrap_or_default();
        ResourceInfo {
            lockspace,
            name,
            path: self.path().into_owned(),
            fd: self.file.as_raw_fd(),
            shared: self.shared,
            autocreate: self.autocreate,
            lock_held: self.lock_held,
            lock_kind: self.kind,
            owners: self.owners.iter().map(|o| o.pid).collect(),
            since: self.owners.iter().map(|o| o.since).collect(),
            aliases: self.names.iter().skip(1).map(|k| (**k).clone()).collect(),
        }
    }

    /// The lease file's path. Not stored for resources whose path their
    /// first name gives (all of ours): a path per lock is the largest
    /// string a resource would carry.
    pub(crate) fn path(&self) -> Cow<'_, str> {
        match (&self.path_override, self.names.first()) {
            (Some(p), _) => Cow::Borrowed(p),
            (None, Some(k)) => crate::names::derived_path(&k.0, &k.1),
            (None, None) => Cow::Borrowed(""),
        }
    }

    /// The stored path, if it is not the derived one.
    pub(crate) fn path_override(&self) -> Option<&str> {
        self.path_override.as_deref()
    }

    pub(crate) fn key(&self, via: usize) -> ResourceKey {
        let (lockspace, name) = self
            .names
            .get(via)
            .or(self.names.first())
            .map(|k| (**k).clone())
            .unwrap_or_default();
        ResourceKey { lockspace, name }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Held(u64),
    Pending,
}

#[derive(Debug, Default)]
pub(crate) struct IdentEntry {
    pub held: HeldIds,
    pub busy: u32,
}

/// The resources holding one file, in the order they were entered. Almost
/// always one: the first id is kept inline, so acquiring and releasing a
/// file allocates nothing here (more than one only comes from aliases
/// libvirt allowed, restored after a re-exec).
#[derive(Debug, Default)]
pub(crate) struct HeldIds {
    first: Option<u64>,
    more: Vec<u64>,
}

impl HeldIds {
    pub(crate) fn first(&self) -> Option<&u64> {
        self.first.as_ref()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    pub(crate) fn push(&mut self, id: u64) {
        if self.first.is_none() {
            self.first = Some(id);
        } else {
            self.more.push(id);
        }
    }

    /// Removes every occurrence of `id`, keeping the order of the rest.
    pub(crate) fn remove(&mut self, id: u64) {
        self.more.retain(|&h| h != id);
        if self.first == Some(id) {
            self.first = (!self.more.is_empty()).then(|| self.more.remove(0));
        }
    }
}

/// A descriptor kept open only so that closing it cannot drop an inherited
/// POSIX lock another resource on the same file relies on.
#[derive(Debug)]
pub(crate) struct Lingering {
    pub ident: Ident,
    pub path: String,
    pub file: File,
}

/// What a request found under its key or identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// Nothing: the caller now holds a reservation.
    Reserved,
    /// A shared resource the shared request may join.
    Join(u64),
}

/// A resource that went away with its last owner; the caller disposes of
/// the file outside the lock and then calls [`Tables::unbusy`].
#[derive(Debug)]
pub(crate) struct Gone {
    pub disposal: Option<(Disposal, Ident)>,
}

#[derive(Debug, Default)]
pub(crate) struct Tables {
    pub named: HashSet<String, KeyedState>,
    pub resources: ResourceMap,
    pub names: NameMap<Key, Slot>,
    /// File identities are the kernel's numbers, not a client's choice.
    pub idents: IdMap<Ident, IdentEntry>,
    pub lingering: Vec<Lingering>,
    /// Resources held with a classic POSIX lock (restored from a re-exec,
    /// or a `Posix` engine). While there is one, closing any other
    /// descriptor of its file would drop its lock, so acquires never open a
    /// file before checking that it is not held. Back to 0 (the last such
    /// lock released), opening first is safe again.
    pub posix_held: usize,
    /// How many owner entries each pid has across all resources: answers
    /// "does this pid hold anything?" without a walk, which is the
    /// question every holder connection's close asks (and the answer is
    /// almost always no). Kept by the only places that change owners:
    /// `join`, `commit`, `insert_claimed`, `release_one`, `release_all`
    /// and `take`.
    held_by: IdMap<u32, u32>,
    next_id: u64,
}

impl Tables {
    /// Room for `n` more resources (restore knows how many are coming).
    pub(crate) fn reserve(&mut self, n: usize) {
        self.resources.reserve(n);
        self.names.reserve(n);
        self.idents.reserve(n);
    }

    /// Whether `pid` is an owner of anything.
    pub(crate) fn holds_any(&self, pid: u32) -> bool {
        self.held_by.contains_key(&pid)
    }

    fn count_owner(&mut self, pid: u32) {
        *self.held_by.entry(pid).or_insert(0) += 1;
    }

    fn uncount_owner(&mut self, pid: u32, n: u32) {
        if let Entry::Occupied(mut e) = self.held_by.entry(pid) {
            let left = e.get().saturating_sub(n);
            if left == 0 {
                e.remove();
            } else {
                *e.get_mut() = left;
            }
        }
    }

    fn count_owners(&mut self, res: &Resource) {
        for o in &res.owners {
            self.count_owner(o.pid);
        }
    }

    pub(crate) fn has_lockspace(&self, path: &str) -> bool {
        path.is_empty() || self.named.contains(path)
    }

    /// Whether an acquire may open a file before knowing it is unheld:
    /// only when every lock is an OFD lock, which closing another
    /// descriptor of the same file never drops.
    pub(crate) fn open_first(&self, kind: LockKind) -> bool {
        kind == LockKind::Ofd && self.posix_held == 0 && self.lingering.is_empty()
    }

    pub(crate) fn check_lockspace(&self, path: &str) -> Result<(), Error> {
        if self.has_lockspace(path) {
            Ok(())
        } else {
            Err(Error::NoLockspace {
                path: path.to_owned(),
            })
        }
    }

    /// Looks the key up: joinable, busy, or free (then reserved).
    pub(crate) fn claim_name(&mut self, key: &Key, shared: bool) -> Result<Found, Error> {
        // One hash of the key whatever the outcome.
        let slot = match self.names.entry(key.clone()) {
            Entry::Occupied(o) => *o.get(),
            Entry::Vacant(v) => {
                v.insert(Slot::Pending);
                return Ok(Found::Reserved);
            }
        };
        match slot {
            Slot::Held(id) => self.joinable(id, shared, &key.1),
            Slot::Pending => Err(busy(&key.1, None)),
        }
    }

    /// Looks a file identity up: joinable, busy, or free (then reserved).
    pub(crate) fn claim_ident(
        &mut self,
        ident: Ident,
        shared: bool,
        name: &str,
    ) -> Result<Found, Error> {
        let entry = self.idents.entry(ident).or_default();
        if let Some(&id) = entry.held.first() {
            return self.joinable(id, shared, name);
        }
        if entry.busy > 0 {
            return Err(busy(name, None));
        }
        entry.busy = 1;
        Ok(Found::Reserved)
    }

    fn joinable(&self, id: u64, shared: bool, name: &str) -> Result<Found, Error> {
        match self.resources.get(&id) {
            Some(res) if res.shared && shared => Ok(Found::Join(id)),
            res => Err(busy(
                name,
                res.and_then(|r| r.owners.first()).map(|o| o.pid),
            )),
        }
    }

    pub(crate) fn unreserve_name(&mut self, key: &Key) {
        if self.names.get(key) == Some(&Slot::Pending) {
            self.names.remove(key);
        }
    }

    /// Drops one reservation of `ident` (an acquire gave up, or a closed fd).
    pub(crate) fn unbusy(&mut self, ident: Ident) {
        if let Some(entry) = self.idents.get_mut(&ident) {
            entry.busy = entry.busy.saturating_sub(1);
            if entry.busy == 0 && entry.held.is_empty() {
                self.idents.remove(&ident);
            }
        }
    }

    /// Adds `owner` to shared resource `id` through `key` (which is either
    /// already one of its names, or reserved by the caller as an alias).
    /// `false` if the resource went away meanwhile.
    pub(crate) fn join(&mut self, id: u64, key: &Key, pid: u32) -> bool {
        let Some(res) = self.resources.get_mut(&id) else {
            return false;
        };
        let via = match res.names.iter().position(|k| k == key) {
            Some(via) => via,
            None => {
                if self.names.get(key) != Some(&Slot::Pending) {
                    return false;
                }
                self.names.insert(key.clone(), Slot::Held(id));
                res.names.push(key.clone());
                res.names.len() - 1
            }
        };
        res.owners.push(Owner {
            pid,
            via,
            since: now_secs(),
        });
        self.count_owner(pid);
        true
    }

    /// Records a newly locked resource whose key and identity the caller
    /// reserved; consumes both reservations.
    pub(crate) fn commit(&mut self, res: Resource) {
        let ident = res.ident;
        let id = self.next_id();
        self.posix_held += usize::from(res.kind == LockKind::Posix);
        for key in &res.names {
            // Reserved (`Pending`) by `claim_name`: set in place, no copy
            // of the key.
            match self.names.get_mut(key) {
                Some(slot) => *slot = Slot::Held(id),
                None => {
                    self.names.insert(key.clone(), Slot::Held(id));
                }
            }
        }
        let entry = self.idents.entry(ident).or_default();
        entry.held.push(id);
        entry.busy = entry.busy.saturating_sub(1);
        self.count_owners(&res);
        self.resources.insert(id, res);
    }

    /// A fresh resource id.
    pub(crate) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Restore: enters `key` as held by `id` with one hash of the key.
    /// Returns a copy of the key, or the key itself if it was taken.
    pub(crate) fn claim_restored(&mut self, key: Key, id: u64) -> Result<Key, Key> {
        match self.names.entry(key) {
            Entry::Occupied(o) => Err(o.key().clone()),
            Entry::Vacant(v) => {
                let key = v.key().clone();
                v.insert(Slot::Held(id));
                Ok(key)
            }
        }
    }

    /// Restore: inserts resource `id` whose single name the caller has
    /// already entered as `Held(id)`. Returns whether another resource
    /// already held the same file (libvirt allowed such aliases).
    pub(crate) fn insert_claimed(&mut self, id: u64, res: Resource) -> bool {
        self.posix_held += usize::from(res.kind == LockKind::Posix);
        let entry = self.idents.entry(res.ident).or_default();
        let dup = !entry.held.is_empty();
        entry.held.push(id);
        self.count_owners(&res);
        self.resources.insert(id, res);
        dup
    }

    /// RELEASE: removes one occurrence of `pid` (preferably one acquired
    /// through `key`). Returns the key the occurrence was acquired through
    /// when `want_via` (only an arbiter needs it: it costs two copies).
    pub(crate) fn release_one(
        &mut self,
        key: &KeyParts,
        pid: u32,
        want_via: bool,
    ) -> Result<(Option<ResourceKey>, Option<Gone>), Error> {
        let not_locked = || Error::NotLocked {
            name: key.1.clone(),
        };
        let Some(Slot::Held(id)) = self.names.get(key).copied() else {
            return Err(not_locked());
        };
        let res = self.resources.get_mut(&id).ok_or_else(not_locked)?;
        let here = res.names.iter().position(|k| **k == *key);
        let pos = res
            .owners
            .iter()
            .position(|o| o.pid == pid && Some(o.via) == here)
            .or_else(|| res.owners.iter().position(|o| o.pid == pid))
            .ok_or(Error::NotOwner { pid })?;
        let removed = res.owners.remove(pos);
        let via = want_via.then(|| res.key(removed.via));
        let last = res.owners.is_empty();
        self.uncount_owner(pid, 1);
        let gone = last.then(|| self.take(id));
        Ok((via, gone))
    }

    /// Removes every occurrence of `pid` everywhere. Returns the number of
    /// resources touched, one `(key, last)` per removed occurrence, and the
    /// resources that went away.
    pub(crate) fn release_all(&mut self, pid: u32) -> (usize, Vec<(ResourceKey, bool)>, Vec<Gone>) {
        let Some(&left) = self.held_by.get(&pid) else {
            return (0, Vec::new(), Vec::new());
        };
        let mut left = left;
        let mut ids: Vec<u64> = self.resources.keys().copied().collect();
        ids.sort_unstable();
        let (mut touched, mut events, mut gone) = (0, Vec::new(), Vec::new());
        for id in ids {
            let Some(res) = self.resources.get_mut(&id) else {
                continue;
            };
            let mine: Vec<usize> = res
                .owners
                .iter()
                .filter(|o| o.pid == pid)
                .map(|o| o.via)
                .collect();
            if mine.is_empty() {
                continue;
            }
            touched += 1;
            res.owners.retain(|o| o.pid != pid);
            let last = res.owners.is_empty();
            let n = mine.len();
            left = left.saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
            events.extend(
                mine.iter()
                    .enumerate()
                    .map(|(i, &via)| (res.key(via), last && i + 1 == n)),
            );
            if last {
                gone.push(self.take(id));
            }
            if left == 0 {
                break;
            }
        }
        self.held_by.remove(&pid);
        (touched, events, gone)
    }

    /// Takes resource `id` out of every table. Its file is either handed
    /// back for disposal (identity kept busy until [`Tables::unbusy`]) or,
    /// when another resource still holds the same file, parked.
    pub(crate) fn take(&mut self, id: u64) -> Gone {
        let Some(res) = self.resources.remove(&id) else {
            return Gone { disposal: None };
        };
        for o in &res.owners {
            self.uncount_owner(o.pid, 1);
        }
        if res.kind == LockKind::Posix {
            self.posix_held = self.posix_held.saturating_sub(1);
        }
        for key in &res.names {
            self.names.remove(key);
        }
        let entry = self.idents.entry(res.ident).or_default();
        entry.held.remove(id);
        if !entry.held.is_empty() {
            self.lingering.push(Lingering {
                ident: res.ident,
                path: res.path().into_owned(),
                file: res.file,
            });
            return Gone { disposal: None };
        }
        entry.busy += 1;
        let extra = self.take_lingering(res.ident);
        let disposal = Disposal {
            path: res.path().into_owned(),
            file: res.file,
            shared: res.shared,
            autocreate: res.autocreate,
            lock_held: res.lock_held,
            kind: res.kind,
            extra,
        };
        Gone {
            disposal: Some((disposal, res.ident)),
        }
    }

    fn take_lingering(&mut self, ident: Ident) -> Vec<File> {
        if self.lingering.is_empty() {
            return Vec::new();
        }
        let (mine, rest) = std::mem::take(&mut self.lingering)
            .into_iter()
            .partition(|l| l.ident == ident);
        self.lingering = rest;
        mine.into_iter().map(|l: Lingering| l.file).collect()
    }

    /// Distinct owner pids, sorted.
    pub(crate) fn owner_pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.held_by.keys().copied().collect();
        pids.sort_unstable();
        pids
    }
}

pub(crate) fn busy(name: &str, holder: Option<u32>) -> Error {
    Error::Busy {
        name: name.to_owned(),
        holder,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_get_sequential_buckets_and_mixed_tags() {
        let hash = |id: u64| BuildHasherDefault::<SeqIdHasher>::default().hash_one(id);
        let mut tags = HashSet::new();
        for id in 0..4096u64 {
            let h = hash(id);
            // The bucket index (low bits) is the id itself...
            assert_eq!(h & ((1 << 57) - 1), id);
            tags.insert(h >> 57);
        }
        // ...and the control tags (top seven bits) are spread.
        assert!(tags.len() > 100, "{} tags", tags.len());
        // A table of them still finds every one.
        let mut m = ResourceMap::default();
        for id in (0..5000u64).step_by(3) {
            m.insert(id, ());
        }
        assert!((0..5000u64).all(|id| m.contains_key(&id) == (id % 3 == 0)));
    }

    fn ids(h: &HeldIds) -> Vec<u64> {
        h.first.iter().chain(h.more.iter()).copied().collect()
    }

    #[test]
    fn held_ids_keep_their_order() {
        let mut h = HeldIds::default();
        assert!(h.is_empty() && h.first().is_none());
        for id in [7, 3, 9, 3] {
            h.push(id);
        }
        assert_eq!((h.first(), ids(&h)), (Some(&7), vec![7, 3, 9, 3]));
        h.remove(3);
        assert_eq!(ids(&h), [7, 9]);
        h.remove(7);
        assert_eq!((h.first(), ids(&h)), (Some(&9), vec![9]));
        h.remove(1);
        assert_eq!(ids(&h), [9]);
        h.remove(9);
        assert!(h.is_empty());
        h.push(4);
        assert_eq!(h.first(), Some(&4));
    }
}
