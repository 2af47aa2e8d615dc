//! The daemon's side of lease loss: stopping local lock holders.
//!
//! The arbiter decides *when* (its watchdog, see [`crate::lease`]); the
//! daemon decides *how* (SIGKILL or SIGSTOP through pidfds, per
//! `on_lease_loss`) because only it knows the processes.

use lockspace::ResourceKey;

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
}
