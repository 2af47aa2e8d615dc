//! What the cluster back ends (etcd, DLM) share about the locks they adopt
//! at start: taking each one's local file lock again without asking the
//! cluster a second time ([`Gate`], [`relock`]), and releasing an adopted
//! owner's locks when it exits ([`spawn_watcher`]), since no connection of
//! it to this daemon will close to do that.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use lockspace::{AcquireFlags, ClusterArbiter, Engine, Error, ResourceKey};
use tracing::{error, info, warn};

/// The engine's arbiter: the back end's own, except that the acquires the
/// adoption replays locally are already held cluster-wide and pass through.
#[derive(Debug)]
pub(crate) struct Gate<A> {
    inner: Arc<A>,
    /// (resource, owner) → local acquires still to let through.
    absorb: Mutex<BTreeMap<(ResourceKey, u32), u32>>,
}

impl<A> Gate<A> {
    /// A gate in front of `inner` that lets nothing through yet.
    pub(crate) fn new(inner: Arc<A>) -> Gate<A> {
        Gate {
            inner,
            absorb: Mutex::new(BTreeMap::new()),
        }
    }

    fn table(&self) -> MutexGuard<'_, BTreeMap<(ResourceKey, u32), u32>> {
        self.absorb.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<A: ClusterArbiter> ClusterArbiter for Gate<A> {
    fn acquire(&self, key: &ResourceKey, shared: bool, owner: u32) -> Result<(), Error> {
        {
            let mut t = self.table();
            let k = (key.clone(), owner);
            if let Some(n) = t.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    t.remove(&k);
                }
                return Ok(());
            }
        }
        self.inner.acquire(key, shared, owner)
    }

    fn release(&self, key: &ResourceKey, owner: u32, last: bool) {
        self.inner.release(key, owner, last);
    }
}

/// One adopted cluster lock, as both back ends describe it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Adopted<'a> {
    /// The resource.
    pub key: &'a ResourceKey,
    /// The owner's pid.
    pub owner: u32,
    /// Shared or exclusive.
    pub shared: bool,
    /// How many times the owner holds it (at least once).
    pub count: u32,
}

/// Whether the engine already holds `lock` for its owner (after a re-exec
/// the restored engine does; after a crash it does not).
pub(crate) fn held_by(engine: &Engine, lock: Adopted<'_>) -> bool {
    engine
        .inspect(&lock.key.lockspace, &lock.key.name)
        .is_some_and(|i| i.owners.contains(&lock.owner))
}

/// Takes the local file lock of an adopted lock again (the previous
/// daemon's died with it), `count` times, the gate absorbing the arbiter
/// calls. On failure nothing of it is left in the engine's count for this
/// attempt and the error says why; the caller stops the owner (it would
/// run without local protection) and releases the cluster lock.
pub(crate) fn relock<A>(engine: &Engine, gate: &Gate<A>, lock: Adopted<'_>) -> Result<(), Error> {
    let key = lock.key;
    if !engine.has_lockspace(&key.lockspace)
        && let Err(e) = engine.create_lockspace(&key.lockspace)
    {
        warn!(lockspace = %key.lockspace, "adopting: cannot open the lockspace: {e}");
    }
    let flags = AcquireFlags {
        shared: lock.shared,
        autocreate: !key.lockspace.is_empty(),
    };
    gate.table()
        .insert((key.clone(), lock.owner), lock.count.max(1));
    for _ in 0..lock.count.max(1) {
        if let Err(e) = engine.acquire(&key.lockspace, &key.name, lock.owner, flags) {
            gate.table().remove(&(key.clone(), lock.owner));
            return Err(e);
        }
    }
    Ok(())
}

/// Releases everything of an adopted owner when it exits. One thread polls
/// every adopted owner's pidfd; it ends with the last of them (or with the
/// engine).
pub(crate) fn spawn_watcher<F>(engine: Weak<Engine>, mut owners: Vec<(u32, F)>)
where
    F: AsFd + Send + 'static,
{
    if owners.is_empty() {
        return;
    }
    let job = move || {
        while !owners.is_empty() {
            let fds: Vec<_> = owners.iter().map(|(_, fd)| fd.as_fd()).collect();
            let gone = match vmlock_sys::process::pidfd_wait_any(&fds, Duration::from_secs(5)) {
                Ok(g) => g,
                Err(e) => {
                    error!("watching adopted lock owners: {e}");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            };
            drop(fds);
            let Some(engine) = engine.upgrade() else {
                return;
            };
            // Highest index first, so swap_remove leaves the rest valid.
            for i in gone.into_iter().rev() {
                let (pid, _) = owners.swap_remove(i);
                if let Ok(n) = engine.release_owner(pid) {
                    info!(pid, "adopted lock owner exited: released {n} resources");
                }
            }
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("vmlock-adopted".into())
        .spawn(job)
    {
        error!("cannot watch adopted lock owners: {e}");
    }
}
