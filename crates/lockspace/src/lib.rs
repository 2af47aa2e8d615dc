//! The vmlock lockspace engine: lockspaces, resources, owners, lease files
//! and restart snapshots — virtlockd's semantics with its hazards fixed.
//!
//! # Model
//!
//! ```text
//! Engine
//!  ├─ lockspaces: ""  (default: name = absolute file path, "direct lease")
//!  │              "/var/lib/libvirt/lockd/files"  (named: path = dir + "/" + name)
//!  └─ resources:  keyed by (lockspace, name) AND by file identity (st_dev, st_ino)
//!                 { path, fd, shared?, autocreate?, owners: [pid, pid, ...] }
//! ```
//!
//! * The lock is libvirt's interop contract: byte 0, length 1, read lock for
//!   shared, write lock for exclusive. New locks are OFD locks by default
//!   ([`EngineOptions::lock_kind`]); inherited ones from a C virtlockd are
//!   classic POSIX locks and are kept as they are. Nothing ever waits: a
//!   conflict is [`Error::Busy`] at once.
//! * Aliases (`/a/b`, `/a//b`, a symlink) are one resource, keyed by
//!   (device, inode). While every lock held is an OFD lock, an acquire opens
//!   the file first and identifies it with `fstat`; a descriptor opened on a
//!   file found held is closed again, which is harmless (an OFD lock belongs
//!   to the descriptor that took it). While any classic POSIX lock is held
//!   (`lock_kind = "posix"`, or locks inherited from virtlockd) the path is
//!   `stat`ed first and a held file is **never opened a second time**
//!   (closing a second descriptor would drop the classic lock).
//!   Exclusive against anything is busy; shared joins shared.
//! * Owners are pids. Shared acquires by the same pid append it again;
//!   [`Engine::release`] removes one occurrence, [`Engine::release_owner`]
//!   every occurrence everywhere (docs/quirks.md #5 fixed).
//! * AUTOCREATE (named lockspaces only, docs/quirks.md #12) creates the lease file
//!   (`O_CREAT|O_NOFOLLOW`, 0600), re-checks after locking that the path
//!   still names the locked inode, and unlinks it on the last release
//!   (shared: only if an upgrade to a write lock succeeds).
//! * Names in named lockspaces must be one path component (docs/quirks.md #13).
//!
//! # Concurrency
//!
//! The daemon calls the engine from several threads. One `Mutex` guards the
//! tables, and it is **never held across a filesystem syscall** (open, stat,
//! fcntl, unlink and close may block on a hung NFS mount): the key and the
//! file identity are reserved as *pending* under the lock, the I/O runs
//! outside it, and the result is committed (or the reservation rolled back)
//! under the lock again. A request that meets a reservation is busy;
//! nothing waits. The methods block the calling thread for their I/O, so
//! the daemon runs them on a blocking-capable thread. A cluster
//! [`ClusterArbiter`] is likewise called without the lock.
//!
//! # Errors
//!
//! [`Error`] carries libvirt's exact detail texts; its module docs hold the
//! table mapping each [`ErrorKind`] to the wire (code, domain).

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod engine;
mod error;
mod fsops;
mod names;
pub mod restart;
mod tables;
mod types;

pub use engine::Engine;
pub use error::{Error, ErrorKind};
pub use restart::binfmt;
pub use restart::snapshot::{
    Adopted, LingeringSnap, LockspaceSnap, ResourceSnap, RestoreProblem, RestoreReport, Snapshot,
};
pub use restart::view::{LingeringView, LockspaceView, LockspacesView, SnapshotView};
pub use types::{
    AcquireFlags, ClusterArbiter, EngineOptions, FLAG_AUTOCREATE, FLAG_SHARED, LockKind,
    ResourceInfo, ResourceKey, Stats,
};
