//! The daemon's side of lease loss: stopping local lock holders.
//!
//! The arbiter decides *when* (its watchdog, see [`crate::lease`]); the
//! daemon decides *how* (SIGKILL or SIGSTOP through pidfds, per
//! `on_lease_loss`) because only it knows the processes.

use std::time::Instant;

use lockspace::ResourceKey;

/// The fencing timeline of one lease renewal (see `docs/cluster.md`):
/// `daemon < helper < watchdog < etcd expiry`, each a fraction of the
/// margin apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// The arbiter's own watchdog thread fences at this instant
    /// (`send + ttl − margin`).
    pub daemon: Instant,
    /// A fence helper outside the daemon fences here (`daemon + margin/4`).
    pub helper: Instant,
    /// A kernel watchdog must have fired by here (`daemon + margin/2`).
    pub watchdog: Instant,
}

/// One lock this host no longer holds in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostLock {
    /// The resource.
    pub key: ResourceKey,
    /// The local owner pid.
    pub owner: u32,
    /// Shared or exclusive.
    pub shared: bool,
}

/// Implemented by the daemon.
///
/// The methods are called from the arbiter's watchdog thread (or from
/// [`crate::EtcdArbiter::start`]), possibly before `start` has returned
/// (an adopted lease may already be past its deadline), and must **finish
/// their work before returning**: the arbiter relies on `fence_all` having
/// stopped every holder before the lease can expire in etcd, which leaves
/// it `margin` (≥ 1 s) of time. Fence exactly the pids given: with several
/// arbiters (shards) each passes only its own holders.
pub trait Fencer: Send + Sync + std::fmt::Debug {
    /// The lease is about to expire: stop every local process holding a
    /// cluster lock (`owners`: their pids, deduplicated). Called strictly
    /// before etcd can hand the locks to another host.
    fn fence_all(&self, owners: &[u32]);

    /// After `fence_all`: the locks that were dropped from the arbiter's
    /// bookkeeping, so the daemon can release them locally. Releasing them
    /// through the engine calls the arbiter again; that is a no-op.
    fn locks_lost(&self, lost: &[LostLock]);

    /// At start, after a crash: these owners held locks under a lease that
    /// expired while nobody renewed it; they are running unprotected.
    fn fence_pids(&self, pids: &[u32]);

    /// The set of owners to fence, and the deadlines, as of the end of
    /// start-up (adoption): replaces whatever an earlier daemon left with a
    /// fence outside the process. `deadlines` is `None` without a lease.
    fn resync(&self, owners: &[u32], deadlines: Option<Deadlines>) {
        let _ = (owners, deadlines);
    }

    /// `owner` holds (`held`) or no longer holds any cluster lock here.
    /// Called with `true` before its first acquire reaches etcd (an error
    /// refuses the acquire) and with `false` before its last key is deleted
    /// in etcd, so a fence outside the daemon never misses a holder and
    /// never stops a process whose locks were released.
    fn guard(&self, owner: u32, held: bool) -> Result<(), String> {
        let _ = (owner, held);
        Ok(())
    }

    /// A lease renewal (or a new grant) succeeded: the new deadlines.
    /// Called on a blocking thread; calls may overlap and arrive out of
    /// order (keep the latest deadlines).
    fn renewed(&self, deadlines: Deadlines) {
        let _ = deadlines;
    }
}
