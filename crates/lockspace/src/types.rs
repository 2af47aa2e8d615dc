//! Small public types: acquire flags, options, the cluster hook, reports.

use std::sync::Arc;

pub use vmlock_sys::lock::LockKind;

use crate::Error;

/// Acquire flag bit: take a shared (read) lock.
pub const FLAG_SHARED: u32 = 1;
/// Acquire flag bit: create the lease file, unlink it on the last release.
pub const FLAG_AUTOCREATE: u32 = 2;

/// How a resource is acquired (libvirt's SHARED = 1, AUTOCREATE = 2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct AcquireFlags {
    /// Shared (read) lock instead of exclusive (write).
    pub shared: bool,
    /// Create the lease file if needed and unlink it on the last release
    /// (named lockspaces only).
    pub autocreate: bool,
}

impl AcquireFlags {
    /// Exclusive, no autocreate.
    pub const EXCLUSIVE: AcquireFlags = AcquireFlags {
        shared: false,
        autocreate: false,
    };

    /// Decodes the wire bits; unknown bits are ignored (the daemon rejects
    /// them before calling the engine).
    pub fn from_wire(bits: u32) -> AcquireFlags {
        AcquireFlags {
            shared: bits & FLAG_SHARED != 0,
            autocreate: bits & FLAG_AUTOCREATE != 0,
        }
    }

    /// The wire bits (also the `flags` value of the restart state file).
    pub fn to_wire(self) -> u32 {
        (if self.shared { FLAG_SHARED } else { 0 })
            | (if self.autocreate { FLAG_AUTOCREATE } else { 0 })
    }
}

/// The cluster-wide identity of a resource: libvirt's (lockspace, name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    /// The lockspace path (`""` for the default lockspace).
    pub lockspace: String,
    /// The resource name inside it.
    pub name: String,
}

/// A cluster back end consulted on every acquire and release.
///
/// Calls are made **without** the engine's table lock held, from the thread
/// that called the engine, so they may block (network round trips).
pub trait ClusterArbiter: Send + Sync + std::fmt::Debug {
    /// Called after the local file lock was taken for a new resource (or
    /// before a shared join); an `Err` undoes the local acquire and is
    /// returned to the caller.
    fn acquire(&self, key: &ResourceKey, shared: bool, owner: u32) -> Result<(), Error>;
    /// Called when an owner occurrence is released (`last`: the resource
    /// went away locally).
    fn release(&self, key: &ResourceKey, owner: u32, last: bool);
}

/// Engine construction options.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Lock family for new locks: OFD by default; `Posix` for filesystems
    /// whose OFD support is missing or not propagated to other hosts.
    pub lock_kind: LockKind,
    /// Optional cluster arbiter.
    pub arbiter: Option<Arc<dyn ClusterArbiter>>,
    /// Open lease files without close-on-exec, so that a re-exec hands them
    /// on without clearing it one descriptor at a time. Only for a process
    /// that runs no other program (vmlockd): a child would inherit every
    /// lock descriptor and keep its OFD lock alive.
    pub inherit_fds: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lock_kind: LockKind::Ofd,
            arbiter: None,
            inherit_fds: false,
        }
    }
}

/// Counters for status output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Lockspaces, the default one included.
    pub lockspaces: usize,
    /// Held resources (aliases of one file count once).
    pub resources: usize,
    /// Distinct owner pids holding something.
    pub owners: usize,
}

/// What the engine knows about one held resource (admin/CLI view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceInfo {
    /// The lockspace the resource was first acquired in.
    pub lockspace: String,
    /// The name it was first acquired under.
    pub name: String,
    /// The lease file path.
    pub path: String,
    /// The descriptor number holding the lock.
    pub fd: i32,
    /// Shared or exclusive.
    pub shared: bool,
    /// Whether the lease file is unlinked on the last release.
    pub autocreate: bool,
    /// Whether the lock is held (always true except for odd restored entries).
    pub lock_held: bool,
    /// The lock family.
    pub lock_kind: LockKind,
    /// Owner pids, one entry per acquire (duplicates possible).
    pub owners: Vec<u32>,
    /// When each of `owners` acquired it, seconds since the epoch (0:
    /// unknown, for locks carried over a re-exec).
    pub since: Vec<u32>,
    /// Other (lockspace, name) keys naming the same file.
    pub aliases: Vec<(String, String)>,
}
