//! The driver interface, mirroring libvirt's `virLockDriver` table (`lock_driver.h`).
//!
//! ```text
//! drvInit        -> registry::load / LockDriver construction
//! drvNew         -> LockDriver::new_manager(&Domain)
//! drvAddResource -> LockManager::add_resource(&Resource)
//! drvAcquire     -> LockManager::acquire(flags, state) -> Option<OwnedFd>
//! drvRelease     -> LockManager::release() -> state
//! drvInquire     -> LockManager::inquire() -> state
//! drvFree        -> Drop
//! ```
//!
//! State strings are opaque to callers: whatever `release`/`inquire` return goes into
//! the migration cookie and comes back to `acquire`. Drivers that keep no state
//! ([`LockDriver::uses_state`] false) always return `None`.

use std::fmt::Debug;
use std::os::fd::OwnedFd;

use crate::error::Result;
use crate::types::{AcquireFlags, Domain, Resource};

/// A loaded lock driver (one per hypervisor driver, like a libvirt plugin).
pub trait LockDriver: Debug + Send + Sync {
    /// The name it was loaded under (`nop`, `lockd`).
    fn name(&self) -> &'static str;

    /// Whether release/inquire produce state strings (`VIR_LOCK_MANAGER_USES_STATE`).
    fn uses_state(&self) -> bool {
        false
    }

    /// Starts a session for one domain (`drvNew`), checking its parameters.
    fn new_manager(&self, domain: &Domain) -> Result<Box<dyn LockManager>>;
}

/// The locks of one domain, as one driver manages them.
pub trait LockManager: Debug + Send {
    /// Adds a disk or lease (`drvAddResource`). May fail on parameters the driver
    /// refuses, or (lockd) on naming lookups.
    fn add_resource(&mut self, resource: &Resource) -> Result<()>;

    /// Acquires every added resource for the domain (`drvAcquire`).
    ///
    /// Returns a descriptor for the VM process when the driver has one to give (lockd:
    /// the restricted daemon connection, without close-on-exec, when
    /// [`AcquireFlags::restrict`] is set). The caller keeps it open in the VM
    /// process; closing it releases the locks (and, with lockd, gets the process
    /// killed if any were held).
    fn acquire(&mut self, flags: AcquireFlags, state: Option<&str>) -> Result<Option<OwnedFd>>;

    /// Releases every added resource (`drvRelease`) and returns the state to resume
    /// with.
    fn release(&mut self) -> Result<Option<String>>;

    /// The current state without changing anything (`drvInquire`).
    fn inquire(&mut self) -> Result<Option<String>>;
}
