//! `vmlock`: libvirt's lock-manager API in Rust, with the `nop`, `lockd` and `sanlock` drivers
//! and the domain lifecycle of `domain_lock.c`.
//!
//! ```text
//!   vmlock::load("lockd", Some(conf)) ──► Arc<dyn LockDriver>       (registry)
//!        │ new_manager(&Domain)
//!        ▼
//!   Box<dyn LockManager> ── add_resource(Disk | Lease)
//!        │ acquire(flags, state) -> Option<OwnedFd>   release() -> state   inquire()
//!        ▼
//!   DomainLock: process_start / pause / resume, hot-plug, migration   (domain.rs)
//! ```
//!
//! # Handing the lock connection to the VM process
//!
//! With lockd, the locks of a VM live exactly as long as one daemon connection: the
//! one on which the VM process registered *itself* as owner (owner pid = its own pid)
//! and which was then restricted. libvirt makes it in the forked child right before
//! `exec(qemu)`. Do the same:
//!
//! 1. In the child process (whose pid will be the VM's pid), build a [`Domain`] with
//!    `pid = std::process::id()` and call [`DomainLock::process_start`] (or
//!    [`LockManager::acquire`] with [`AcquireFlags::restrict`]).
//! 2. The descriptor it returns ([`DomainLock::holder_fd`]) is a duplicate of the
//!    connection **without close-on-exec**; the library has already closed its own
//!    copy. Keep it open and `exec` the VM program (`std::os::unix::process::CommandExt::exec`
//!    keeps inherited descriptors). The VM never needs to use it.
//! 3. When the VM exits, the kernel closes the descriptor; the daemon then releases
//!    every lock of that pid. Closing it while the VM still runs releases the locks
//!    *and* makes the daemon kill the VM (libvirt's fencing, docs/protocol.md §5.4).
//!
//! Do not call `process_start` in a long-lived multi-threaded parent and keep the
//! descriptor there: without close-on-exec it would leak into every program the
//! parent spawns. Set close-on-exec on it (or use `take_holder_fd` and move it into
//! the child) if you must.
//!
//! Other calls (resume, pause, hot-plug) run from the manager process on short-lived
//! connections and act on behalf of the VM's pid.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod domain;
mod driver;
mod error;
pub mod lockd;
mod nop;
mod registry;
pub mod sanlock;
mod types;

pub use domain::DomainLock;
pub use driver::{LockDriver, LockManager};
pub use error::{
    LockError, Result, VIR_ERR_CONFIG_UNSUPPORTED, VIR_ERR_INTERNAL_ERROR, VIR_ERR_RESOURCE_BUSY,
};
pub use nop::{NopDriver, NopManager};
pub use registry::{Driver, LoadOptions, load, load_with};
pub use types::{AcquireFlags, Disk, Domain, Lease, Resource};
pub use uuid::Uuid;

#[cfg(test)]
mod tests;
