//! The `nop` driver (libvirt's built-in default): every operation succeeds and
//! nothing is locked.

use std::os::fd::OwnedFd;

use crate::driver::{LockDriver, LockManager};
use crate::error::Result;
use crate::types::{AcquireFlags, Domain, Resource};

/// The driver that locks nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NopDriver;

/// A session of [`NopDriver`]; it remembers nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NopManager;

impl LockDriver for NopDriver {
    fn name(&self) -> &'static str {
        "nop"
    }

    fn new_manager(&self, _domain: &Domain) -> Result<Box<dyn LockManager>> {
        Ok(Box::new(NopManager))
    }
}

impl LockManager for NopManager {
    fn add_resource(&mut self, _resource: &Resource) -> Result<()> {
        Ok(())
    }

    fn acquire(&mut self, _flags: AcquireFlags, _state: Option<&str>) -> Result<Option<OwnedFd>> {
        Ok(None)
    }

    fn release(&mut self) -> Result<Option<String>> {
        Ok(None)
    }

    fn inquire(&mut self) -> Result<Option<String>> {
        Ok(None)
    }
}
