//! The static driver registry: `load("nop" | "lockd" | "sanlock", config)` picks a driver at run
//! time, as libvirt's `lock_manager = "..."` in `qemu.conf` does.
//!
//! ```text
//! name      Driver      status
//! nop       Nop         built in: succeeds, locks nothing
//! lockd     Lockd       built in: virtlockd/vmlockd wire protocol
//! sanlock   Sanlock     built in: disk-paxos leases through the sanlock daemon
//!                       (libsanlock_client.so.1 loaded at run time; USES_STATE)
//! ```
//!
//! Cluster-wide locking does not need a driver of its own: the `lockd`
//! driver talks to vmlockd, whose etcd back end holds every lock cluster-wide.
//!
//! Adding a driver: implement [`LockDriver`](crate::LockDriver) in a module, add a
//! variant here, and construct it in [`load_with`].

use std::path::PathBuf;
use std::sync::Arc;

use crate::driver::LockDriver;
use crate::error::{LockError, Result};
use crate::lockd::LockdDriver;
use crate::nop::NopDriver;
use crate::sanlock::SanlockDriver;

/// Every driver name the registry knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Driver {
    /// `nop`.
    Nop,
    /// `lockd`.
    Lockd,
    /// `sanlock`.
    Sanlock,
}

impl Driver {
    /// All registry entries.
    pub const ALL: [Driver; 3] = [Driver::Nop, Driver::Lockd, Driver::Sanlock];

    /// The name used in configuration.
    pub fn name(self) -> &'static str {
        match self {
            Driver::Nop => "nop",
            Driver::Lockd => "lockd",
            Driver::Sanlock => "sanlock",
        }
    }

    /// The entry for `name`.
    pub fn from_name(name: &str) -> Option<Driver> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }
}

/// Options of [`load_with`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The driver's config file (`/etc/libvirt/qemu-lockd.conf`); `None` or a missing
    /// file means libvirt's defaults.
    pub config: Option<PathBuf>,
    /// The daemon socket; `None` means the one `lockd.so` uses.
    pub socket: Option<PathBuf>,
}

/// Loads and initialises the driver called `name` with its config file.
pub fn load(name: &str, config_path: Option<&std::path::Path>) -> Result<Arc<dyn LockDriver>> {
    load_with(
        name,
        &LoadOptions {
            config: config_path.map(PathBuf::from),
            socket: None,
        },
    )
}

/// Loads and initialises the driver called `name`.
pub fn load_with(name: &str, options: &LoadOptions) -> Result<Arc<dyn LockDriver>> {
    let driver = Driver::from_name(name).ok_or_else(|| LockError::UnknownDriver(name.into()))?;
    match driver {
        Driver::Nop => Ok(Arc::new(NopDriver)),
        Driver::Lockd => Ok(Arc::new(LockdDriver::load(
            options.config.as_deref(),
            options.socket.clone(),
        )?)),
        Driver::Sanlock => Ok(Arc::new(SanlockDriver::load(options.config.as_deref())?)),
    }
}
