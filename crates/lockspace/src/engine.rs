//! The engine: lockspaces, acquire and release.
//!
//! Acquire of a key not yet held, step by step (the table lock `T` is held
//! only for the bracketed steps, never across a syscall):
//!
//! ```text
//! [T] lockspace exists? name valid? key held (join or busy) / pending (busy) / free -> reserve key
//!     stat(path) -> identity I (follows symlinks)
//! [T] I held (join or busy) / busy (busy) / free -> reserve I     (never open a held file)
//!     open; fstat == I?  else close, retry (at most 5 tries)
//!     fcntl lock byte 0 (no wait: conflict = busy)
//!     AUTOCREATE: stat(path) still I?  else close, retry
//!     arbiter.acquire (Err: unlink-if-autocreate, close, fail)
//! [T] commit: key -> Held, I -> held
//! ```
//!
//! While every lock the engine holds is an OFD lock (no `Posix` engine, no
//! classic locks restored from a re-exec), the middle steps run in the
//! cheaper order open; fstat -> I; [T] reserve I (see `open_then_claim`).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use vmlock_sys::lock::LockKind;

use crate::Error;
use crate::fsops::{self, Disposal, Ident};
use crate::names;
use crate::tables::{Found, Gone, Key, Owner, Resource, Tables};
use crate::types::{AcquireFlags, ClusterArbiter, EngineOptions, ResourceInfo, ResourceKey, Stats};

#[cfg(test)]
mod tests;

/// How often an acquire restarts when the path changes under it.
const MAX_TRIES: usize = 5;

/// The lockspace engine. `Send + Sync`: share it with an `Arc`.
#[derive(Debug)]
pub struct Engine {
    pub(crate) tables: Mutex<Tables>,
    pub(crate) kind: LockKind,
    pub(crate) arbiter: Option<Arc<dyn ClusterArbiter>>,
    pub(crate) inherit_fds: bool,
}

enum Step {
    Done,
    Retry,
}

/// Reservations taken by one acquire attempt; dropped ones are released.
struct Reservation<'a> {
    engine: &'a Engine,
    key: Option<&'a Key>,
    ident: Option<Ident>,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.key.is_none() && self.ident.is_none() {
            return;
        }
        let mut st = self.engine.tables();
        if let Some(key) = self.key.take() {
            st.unreserve_name(key);
        }
        if let Some(ident) = self.ident.take() {
            st.unbusy(ident);
        }
    }
}

fn rkey(key: &Key) -> ResourceKey {
    ResourceKey {
        lockspace: key.0.clone(),
        name: key.1.clone(),
    }
}

impl Engine {
    /// A new engine holding nothing, with only the default lockspace.
    pub fn new(opts: EngineOptions) -> Engine {
        Engine {
            tables: Mutex::new(Tables::default()),
            kind: opts.lock_kind,
            arbiter: opts.arbiter,
            inherit_fds: opts.inherit_fds,
        }
    }

    /// Whether lease files are opened without close-on-exec
    /// ([`EngineOptions::inherit_fds`]).
    pub fn inherits_fds(&self) -> bool {
        self.inherit_fds
    }

    /// The table lock; a panic elsewhere never makes the tables unusable.
    pub(crate) fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// CREATE_LOCKSPACE: idempotent; `""` (the default) always exists. A
    /// known lockspace whose directory was removed behind our back gets it
    /// back (virtlockd answers OK and leaves new leases failing with ENOENT).
    pub fn create_lockspace(&self, path: &str) -> Result<(), Error> {
        if self.has_lockspace(path) {
            if !path.is_empty() && !std::path::Path::new(path).is_dir() {
                fsops::make_lockspace_dir(path)?;
            }
            return Ok(());
        }
        fsops::make_lockspace_dir(path)?;
        self.tables().named.insert(path.to_owned());
        Ok(())
    }

    /// Makes a named lockspace known without touching its directory (so a
    /// hung filesystem cannot stall the caller): for lockspaces remembered
    /// from before a restart. True if it was not known yet.
    pub fn remember_lockspace(&self, path: &str) -> bool {
        !path.is_empty() && self.tables().named.insert(path.to_owned())
    }

    /// The named lockspaces' directories, sorted.
    pub fn lockspace_paths(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tables().named.iter().cloned().collect();
        v.sort_unstable();
        v
    }

    /// NEW: like [`Engine::create_lockspace`] but fails if the lockspace
    /// exists; a failed creation stores nothing (docs/quirks.md #18).
    pub fn new_lockspace(&self, path: &str) -> Result<(), Error> {
        let exists = || Error::LockspaceExists {
            path: path.to_owned(),
        };
        if path.is_empty() {
            return Err(Error::DefaultLockspaceExists);
        }
        if self.has_lockspace(path) {
            return Err(exists());
        }
        fsops::make_lockspace_dir(path)?;
        if self.tables().named.insert(path.to_owned()) {
            Ok(())
        } else {
            Err(exists())
        }
    }

    /// Whether the lockspace exists (`""` always does).
    pub fn has_lockspace(&self, path: &str) -> bool {
        // The default lockspace (every direct lease) needs no table lock.
        path.is_empty() || self.tables().has_lockspace(path)
    }

    /// CREATE_RESOURCE: touch the lease file (mode 0600, not locked).
    pub fn create_resource(&self, lockspace: &str, name: &str) -> Result<(), Error> {
        self.unheld_file_op(lockspace, name, fsops::touch)
    }

    /// DELETE_RESOURCE: unlink the lease file (ENOENT is fine).
    pub fn delete_resource(&self, lockspace: &str, name: &str) -> Result<(), Error> {
        self.unheld_file_op(lockspace, name, fsops::delete)
    }

    /// Runs `op(path)` with the key (and the file's identity, if it exists)
    /// reserved, after checking that neither is held.
    fn unheld_file_op(
        &self,
        lockspace: &str,
        name: &str,
        op: fn(&str) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let key: Key = Arc::new((lockspace.to_owned(), name.to_owned()));
        let path = {
            let mut st = self.tables();
            st.check_lockspace(lockspace)?;
            let path = names::resource_path(lockspace, name)?;
            // Exclusive claim: anything held is busy.
            st.claim_name(&key, false)?;
            path
        };
        let mut guard = Reservation {
            engine: self,
            key: Some(&key),
            ident: None,
        };
        if let Ok(ident) = fsops::stat_ident(&path) {
            self.tables().claim_ident(ident, false, name)?;
            guard.ident = Some(ident);
        }
        op(&path)
    }

    /// ACQUIRE_RESOURCE for `owner`. Never waits: anything held elsewhere
    /// (or being worked on by another thread) is [`Error::Busy`].
    pub fn acquire(
        &self,
        lockspace: &str,
        name: &str,
        owner: u32,
        flags: AcquireFlags,
    ) -> Result<(), Error> {
        self.acquire_owned(lockspace.to_owned(), name.to_owned(), owner, flags)
    }

    /// [`Engine::acquire`] taking the strings a decoded request already
    /// owns, which saves copying them into the table key.
    pub fn acquire_owned(
        &self,
        lockspace: String,
        name: String,
        owner: u32,
        flags: AcquireFlags,
    ) -> Result<(), Error> {
        let key: Key = Arc::new((lockspace, name));
        for _ in 0..MAX_TRIES {
            if let Step::Done = self.acquire_once(&key, owner, flags)? {
                return Ok(());
            }
        }
        Err(Error::Open {
            path: names::resource_path(&key.0, &key.1)?,
            errno: libc::EAGAIN,
            create: flags.autocreate,
        })
    }

    fn acquire_once(&self, key: &Key, owner: u32, flags: AcquireFlags) -> Result<Step, Error> {
        let (path, found, open_first) = {
            let mut st = self.tables();
            st.check_lockspace(&key.0)?;
            let path = names::resource_path(&key.0, &key.1)?;
            if flags.autocreate && key.0.is_empty() {
                return Err(Error::AutocreateInDefault {
                    name: key.1.clone(),
                });
            }
            let found = st.claim_name(key, flags.shared)?;
            (path, found, st.open_first(self.kind))
        };
        if let Found::Join(id) = found {
            return self.join(key, id, owner);
        }
        let mut guard = Reservation {
            engine: self,
            key: Some(key),
            ident: None,
        };
        // The path is built once per attempt, for the system calls only: the
        // resource derives it from its key when it needs it again.
        if open_first {
            return self.open_then_claim(&mut guard, path, owner, flags);
        }
        self.stat_then_open(&mut guard, path, owner, flags)
    }

    /// The classic order: the identity is reserved before the file is
    /// opened, so a held file is never opened a second time (closing that
    /// descriptor would drop a classic POSIX lock on it).
    fn stat_then_open(
        &self,
        guard: &mut Reservation<'_>,
        path: String,
        owner: u32,
        flags: AcquireFlags,
    ) -> Result<Step, Error> {
        let Some(key) = guard.key else {
            return Ok(Step::Retry);
        };
        let pre = fsops::stat_ident(&path).ok();
        if let Some(ident) = pre {
            // Bind first: a guard in the match scrutinee would live on
            // into `join`, which takes the lock again.
            let found = self.tables().claim_ident(ident, flags.shared, &key.1)?;
            match found {
                Found::Reserved => guard.ident = Some(ident),
                Found::Join(id) => return self.join_reserved(guard, key, id, owner),
            }
        }
        self.open_and_lock(guard, path, pre, owner, flags)
    }

    /// Joins shared resource `id` through the reserved key.
    fn join_reserved(
        &self,
        guard: &mut Reservation<'_>,
        key: &Key,
        id: u64,
        owner: u32,
    ) -> Result<Step, Error> {
        let step = self.join(key, id, owner)?;
        if let Step::Done = step {
            guard.key = None;
        }
        Ok(step)
    }

    /// The fast order, for engines holding only OFD locks: open, `fstat`,
    /// then reserve the identity. A descriptor opened on a held file is
    /// just closed again, which leaves OFD locks on other descriptions
    /// alone. One `stat` fewer per acquire, and no "path replaced between
    /// stat and open" retries. An open that fails takes the classic path,
    /// so a held file still answers busy (or joins) whatever open says.
    fn open_then_claim(
        &self,
        guard: &mut Reservation<'_>,
        path: String,
        owner: u32,
        flags: AcquireFlags,
    ) -> Result<Step, Error> {
        let Some(key) = guard.key else {
            return Ok(Step::Retry);
        };
        fsops::race_point("before_open", &path);
        let Ok(file) = fsops::open_resource(&path, flags.autocreate, self.inherit_fds) else {
            return self.stat_then_open(guard, path, owner, flags);
        };
        let ident = fsops::file_ident(&file).map_err(|e| Error::Open {
            path: path.clone(),
            errno: Error::io(&e),
            create: flags.autocreate,
        })?;
        let found = self.tables().claim_ident(ident, flags.shared, &key.1)?;
        match found {
            Found::Reserved => guard.ident = Some(ident),
            Found::Join(id) => {
                drop(file);
                return self.join_reserved(guard, key, id, owner);
            }
        }
        fsops::race_point("after_open", &path);
        self.lock_and_commit(guard, key, path, file, ident, owner, flags)
    }

    /// Steps after the reservations: open, verify, lock, re-check, commit.
    fn open_and_lock(
        &self,
        guard: &mut Reservation<'_>,
        path: String,
        pre: Option<Ident>,
        owner: u32,
        flags: AcquireFlags,
    ) -> Result<Step, Error> {
        let Some(key) = guard.key else {
            return Ok(Step::Retry);
        };
        fsops::race_point("before_open", &path);
        let file = fsops::open_resource(&path, flags.autocreate, self.inherit_fds)?;
        fsops::race_point("after_open", &path);
        let open_err = |e: std::io::Error| Error::Open {
            path: path.clone(),
            errno: Error::io(&e),
            create: flags.autocreate,
        };
        let ident = fsops::file_ident(&file).map_err(open_err)?;
        match pre {
            Some(p) if p == ident => {}
            Some(_) => return Ok(Step::Retry),
            None => {
                // The file appeared between stat and open (or was created
                // by us): reserve its identity now.
                if self.tables().claim_ident(ident, false, &key.1).is_err() {
                    return Ok(Step::Retry);
                }
                guard.ident = Some(ident);
            }
        }
        self.lock_and_commit(guard, key, path, file, ident, owner, flags)
    }

    /// Locks the opened file whose identity is reserved, re-checks an
    /// AUTOCREATE path, and commits.
    #[allow(clippy::too_many_arguments)]
    fn lock_and_commit(
        &self,
        guard: &mut Reservation<'_>,
        key: &Key,
        path: String,
        file: std::fs::File,
        ident: Ident,
        owner: u32,
        flags: AcquireFlags,
    ) -> Result<Step, Error> {
        if !fsops::lock_file(&file, &path, self.kind, flags.shared)? {
            return Err(crate::tables::busy(&key.1, None));
        }
        if flags.autocreate && fsops::stat_ident(&path).ok() != Some(ident) {
            // Another host unlinked or replaced it after our open.
            return Ok(Step::Retry);
        }
        let res = Resource {
            names: smallvec::smallvec![key.clone()],
            // `path` is the one the key gives (`names::resource_path`).
            path_override: None,
            file,
            ident,
            shared: flags.shared,
            autocreate: flags.autocreate,
            lock_held: true,
            kind: self.kind,
            owners: smallvec::smallvec![Owner {
                pid: owner,
                via: 0,
                since: crate::tables::now_secs(),
            }],
        };
        self.arbitrate_and_commit(guard, res, owner)
    }

    fn arbitrate_and_commit(
        &self,
        guard: &mut Reservation<'_>,
        res: Resource,
        owner: u32,
    ) -> Result<Step, Error> {
        if let Some(arb) = &self.arbiter
            && let Err(e) = arb.acquire(&res.key(0), res.shared, owner)
        {
            fsops::dispose(Disposal {
                path: res.path().into_owned(),
                file: res.file,
                shared: res.shared,
                autocreate: res.autocreate,
                lock_held: true,
                kind: res.kind,
                extra: Vec::new(),
            });
            return Err(e);
        }
        let mut st = self.tables();
        st.commit(res);
        guard.key = None;
        guard.ident = None;
        Ok(Step::Done)
    }

    /// Adds `owner` to shared resource `id` under `key`, asking the arbiter
    /// first. `Retry` if the resource went away meanwhile.
    fn join(&self, key: &Key, id: u64, owner: u32) -> Result<Step, Error> {
        let rk = rkey(key);
        if let Some(arb) = &self.arbiter {
            arb.acquire(&rk, true, owner)?;
        }
        if self.tables().join(id, key, owner) {
            return Ok(Step::Done);
        }
        if let Some(arb) = &self.arbiter {
            arb.release(&rk, owner, true);
        }
        Ok(Step::Retry)
    }

    /// RELEASE_RESOURCE: removes **one** occurrence of `owner`; the last
    /// owner's release unlinks an AUTOCREATE lease (see crate docs) and
    /// closes the descriptor.
    pub fn release(&self, lockspace: &str, name: &str, owner: u32) -> Result<(), Error> {
        self.release_owned(lockspace.to_owned(), name.to_owned(), owner)
    }

    /// [`Engine::release`] taking owned strings (see
    /// [`Engine::acquire_owned`]).
    pub fn release_owned(&self, lockspace: String, name: String, owner: u32) -> Result<(), Error> {
        let key = (lockspace, name);
        let (via, gone) = {
            let mut st = self.tables();
            st.check_lockspace(&key.0)?;
            st.release_one(&key, owner, self.arbiter.is_some())?
        };
        let last = gone.is_some();
        if let Some(gone) = gone {
            self.dispose(gone);
        }
        if let (Some(arb), Some(via)) = (&self.arbiter, via) {
            arb.release(&via, owner, last);
        }
        Ok(())
    }

    /// Releases **every** occurrence of `owner` in every lockspace (docs/quirks.md #5
    /// fixed) and returns the number of resources touched.
    ///
    /// Releases cannot fail today (an unlink failure is logged, as libvirt
    /// does); the `Result` leaves room for back ends that can.
    pub fn release_owner(&self, owner: u32) -> Result<usize, Error> {
        let (touched, events, gone) = self.tables().release_all(owner);
        for g in gone {
            self.dispose(g);
        }
        if let Some(arb) = &self.arbiter {
            for (key, last) in &events {
                arb.release(key, owner, *last);
            }
        }
        Ok(touched)
    }

    fn dispose(&self, gone: Gone) {
        if let Some((disposal, ident)) = gone.disposal {
            fsops::dispose(disposal);
            self.tables().unbusy(ident);
        }
    }

    /// Whether `owner` holds anything, without a walk over the table: a
    /// closing holder connection asks it first, and usually hears no.
    pub fn holds_any(&self, owner: u32) -> bool {
        self.tables().holds_any(owner)
    }

    /// Distinct owner pids currently holding something, sorted.
    pub fn owners(&self) -> Vec<u32> {
        self.tables().owner_pids()
    }

    /// How many resources are held and how many lockspaces exist (the
    /// default one included), without [`Engine::stats`]'s walk over every
    /// owner.
    pub fn counts(&self) -> (usize, usize) {
        let st = self.tables();
        (st.resources.len(), st.named.len() + 1)
    }

    /// Counters: lockspaces (default included), resources, distinct owners.
    pub fn stats(&self) -> Stats {
        let st = self.tables();
        Stats {
            lockspaces: st.named.len() + 1,
            resources: st.resources.len(),
            owners: st.owner_pids().len(),
        }
    }

    /// Every held resource (for the daemon's inquiry program), in no
    /// particular order. Walks the whole table under its lock: for
    /// operators, not the request path.
    pub fn held(&self) -> Vec<ResourceInfo> {
        let st = self.tables();
        st.resources.values().map(Resource::info).collect()
    }

    /// What is held under `(lockspace, name)` (any alias works).
    pub fn inspect(&self, lockspace: &str, name: &str) -> Option<ResourceInfo> {
        let st = self.tables();
        let key = (lockspace.to_owned(), name.to_owned());
        let crate::tables::Slot::Held(id) = st.names.get(&key)? else {
            return None;
        };
        st.resources.get(id).map(Resource::info)
    }
}
