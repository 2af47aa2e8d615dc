//! The domain lifecycle on top of a driver, as libvirt's `domain_lock.c` drives it.
//!
//! ```text
//! VM start (in the VM process, before exec)   process_start(paused)  Acquire(RESTRICT[|REGISTER_ONLY])
//!   -> keep the returned fd in the VM (not close-on-exec)
//! vCPUs start / resume                        process_resume(state)  Acquire(0)
//! vCPUs stop / pause                          process_pause()        Release -> state
//! manager restart with a running VM           DomainLock::attach     (no RPC)
//! hot-plug / unplug                           image_attach/detach, lease_attach/detach
//! migration  source: migrate_begin() -> cookie state (Inquire)
//!            source: migrate_handover() = pause (lockd: release before the destination acquires)
//!            dest:   process_start(true), then migrate_finish(state) = resume
//!            success: source migrate_complete() (nothing; the source VM exits)
//!            failure: dest migrate_cancel() = release; source migrate_abort(state) = resume
//! ```
//!
//! Each call builds a fresh driver session with the resources it concerns: leases
//! first, then disks, in the order given (libvirt's order).

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::driver::{LockDriver, LockManager};
use crate::error::Result;
use crate::types::{AcquireFlags, Disk, Domain, Lease, Resource};

/// A domain, its disks and leases, and the driver that locks them.
#[derive(Debug)]
pub struct DomainLock {
    driver: Arc<dyn LockDriver>,
    domain: Domain,
    disks: Vec<Disk>,
    leases: Vec<Lease>,
    holder: Option<OwnedFd>,
    state: Option<String>,
}

impl DomainLock {
    /// A domain that is not running yet.
    pub fn new(
        driver: Arc<dyn LockDriver>,
        domain: Domain,
        disks: Vec<Disk>,
        leases: Vec<Lease>,
    ) -> DomainLock {
        DomainLock {
            driver,
            domain,
            disks,
            leases,
            holder: None,
            state: None,
        }
    }

    /// A running domain after the manager restarted: no RPC; the holder connection
    /// lives on in the VM process.
    pub fn attach(
        driver: Arc<dyn LockDriver>,
        domain: Domain,
        disks: Vec<Disk>,
        leases: Vec<Lease>,
    ) -> DomainLock {
        Self::new(driver, domain, disks, leases)
    }

    /// The domain.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// Sets the VM pid (known once the VM process exists).
    pub fn set_pid(&mut self, pid: u32) {
        self.domain.pid = pid;
    }

    /// The disks currently tracked.
    pub fn disks(&self) -> &[Disk] {
        &self.disks
    }

    /// The leases currently tracked.
    pub fn leases(&self) -> &[Lease] {
        &self.leases
    }

    /// The state saved by the last pause.
    pub fn saved_state(&self) -> Option<&str> {
        self.state.as_deref()
    }

    fn session(
        &self,
        resources: impl IntoIterator<Item = Resource>,
    ) -> Result<Box<dyn LockManager>> {
        let mut m = self.driver.new_manager(&self.domain)?;
        for r in resources {
            m.add_resource(&r)?;
        }
        Ok(m)
    }

    fn all(&self) -> Vec<Resource> {
        let leases = self.leases.iter().cloned().map(Resource::Lease);
        leases
            .chain(self.disks.iter().cloned().map(Resource::Disk))
            .collect()
    }

    /// `virDomainLockProcessStart`: registers (and unless `paused`, acquires) with
    /// RESTRICT, and keeps the descriptor for the VM process ([`Self::holder_fd`]).
    pub fn process_start(&mut self, paused: bool) -> Result<()> {
        let mut m = self.session(self.all())?;
        self.holder = m.acquire(AcquireFlags::process_start(paused), None)?;
        Ok(())
    }

    /// The descriptor the VM process must keep open (inheritable, not close-on-exec).
    pub fn holder_fd(&self) -> Option<BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.holder.as_ref().map(|f| f.as_fd())
    }

    /// Takes the VM's descriptor out, e.g. to move it into the child.
    pub fn take_holder_fd(&mut self) -> Option<OwnedFd> {
        self.holder.take()
    }

    /// `virDomainLockProcessPause`: releases everything; returns (and saves) the state.
    pub fn process_pause(&mut self) -> Result<Option<String>> {
        let state = self.session(self.all())?.release()?;
        self.state = state.clone();
        Ok(state)
    }

    /// `virDomainLockProcessResume`: acquires everything with `state`.
    pub fn process_resume(&mut self, state: Option<&str>) -> Result<()> {
        self.session(self.all())?
            .acquire(AcquireFlags::default(), state)?;
        Ok(())
    }

    /// `virDomainLockProcessInquire`: the state for a migration cookie.
    pub fn process_inquire(&mut self) -> Result<Option<String>> {
        self.session(self.all())?.inquire()
    }

    /// `virDomainLockImageAttach`: locks one more disk, then tracks it.
    pub fn image_attach(&mut self, disk: Disk) -> Result<()> {
        self.session([Resource::Disk(disk.clone())])?
            .acquire(AcquireFlags::default(), None)?;
        self.disks.push(disk);
        Ok(())
    }

    /// `virDomainLockImageDetach`: unlocks the disk at `path` and stops tracking it.
    pub fn image_detach(&mut self, path: &str) -> Result<()> {
        let Some(i) = self.disks.iter().position(|d| d.path == path) else {
            return Ok(());
        };
        self.session([Resource::Disk(self.disks[i].clone())])?
            .release()?;
        self.disks.remove(i);
        Ok(())
    }

    /// `virDomainLockLeaseAttach`: locks one more lease, then tracks it.
    pub fn lease_attach(&mut self, lease: Lease) -> Result<()> {
        self.session([Resource::Lease(lease.clone())])?
            .acquire(AcquireFlags::default(), None)?;
        self.leases.push(lease);
        Ok(())
    }

    /// `virDomainLockLeaseDetach`: unlocks the lease with `key` and stops tracking it.
    pub fn lease_detach(&mut self, key: &str) -> Result<()> {
        let Some(i) = self.leases.iter().position(|l| l.key == key) else {
            return Ok(());
        };
        self.session([Resource::Lease(self.leases[i].clone())])?
            .release()?;
        self.leases.remove(i);
        Ok(())
    }

    /// Source, before migrating: the state for the cookie (lockd: always `None`).
    pub fn migrate_begin(&mut self) -> Result<Option<String>> {
        self.process_inquire()
    }

    /// Source, at the switch-over: the VM pauses and its locks are released before
    /// the destination acquires (docs/quirks.md #37: no lock is held during the handover).
    pub fn migrate_handover(&mut self) -> Result<Option<String>> {
        self.process_pause()
    }

    /// Destination, after `process_start(true)`: acquires with the cookie state.
    pub fn migrate_finish(&mut self, state: Option<&str>) -> Result<()> {
        self.process_resume(state)
    }

    /// Source, migration succeeded: nothing to release (done at handover); the source
    /// VM exits and its holder connection closes.
    pub fn migrate_complete(&mut self) -> Result<()> {
        self.holder = None;
        Ok(())
    }

    /// Destination, migration failed: releases what was acquired; the destination VM
    /// is then killed by the caller.
    pub fn migrate_cancel(&mut self) -> Result<()> {
        self.process_pause().map(drop)
    }

    /// Source, migration failed after the handover: re-acquires with the saved state.
    pub fn migrate_abort(&mut self, state: Option<&str>) -> Result<()> {
        self.process_resume(state)
    }
}
