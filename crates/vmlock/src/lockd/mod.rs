//! The `lockd` driver: the client of virtlockd's protocol, behaving as libvirt's
//! `lock_driver_lockd.c` (docs/protocol.md §7).
//!
//! ```text
//! init      for dir in [file, lvm, scsi]_lockspace_dir (only if auto_disk_leases):
//!               connect; CREATE_LOCKSPACE(dir) (serial 0, no REGISTER); close
//! acquire   [local check: no resources + r/w disks + require_lease_for_disks -> error 67]
//!           connect; REGISTER(owner); [dup fd, no CLOEXEC, if RESTRICT];
//!           ACQUIRE x N (unless REGISTER_ONLY; first error aborts, no rollback);
//!           [RESTRICT]; close our fd
//! release   connect; REGISTER(owner); RELEASE x N (flags 0); close   -> state None
//! inquire   no RPC                                                   -> state None
//! ```
//!
//! Every operation opens a new connection (serials from 0) and closes it; only the
//! duplicated, restricted descriptor outlives an operation, in the VM process.

mod manager;
pub mod naming;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vmlock_client::{Client, default_socket_path};
use vmlock_conf::LockdConfig;

use crate::error::{LockError, Result};

pub use naming::{DeviceKeys, SystemDeviceKeys, WireResource, indirect_name};

/// The lockd driver: a config, a socket path and a device-key lookup.
#[derive(Debug, Clone)]
pub struct LockdDriver {
    config: Arc<LockdConfig>,
    socket: PathBuf,
    keys: Arc<dyn DeviceKeys>,
}

impl LockdDriver {
    /// A driver for `config` talking to `socket`, without running init.
    pub fn new(config: LockdConfig, socket: PathBuf) -> LockdDriver {
        LockdDriver {
            config: Arc::new(config),
            socket,
            keys: Arc::new(SystemDeviceKeys::default()),
        }
    }

    /// `drvInit`: reads `config_path` (a missing file gives libvirt's defaults), then
    /// creates the configured lockspaces. `socket` defaults to what `lockd.so` uses.
    pub fn load(config_path: Option<&Path>, socket: Option<PathBuf>) -> Result<LockdDriver> {
        let config = match config_path {
            Some(p) => LockdConfig::load_optional(p).map_err(LockError::Config)?.0,
            None => LockdConfig::default(),
        };
        let driver = LockdDriver::new(config, socket.unwrap_or_else(default_socket_path));
        driver.init()?;
        Ok(driver)
    }

    /// Replaces the LVM/SCSI id lookup (tests, or other tool locations).
    pub fn with_device_keys(mut self, keys: Arc<dyn DeviceKeys>) -> LockdDriver {
        self.keys = keys;
        self
    }

    /// The config in use.
    pub fn config(&self) -> &LockdConfig {
        &self.config
    }

    /// The daemon socket in use.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The lockspace directories init creates, in libvirt's order.
    pub fn lockspace_dirs(&self) -> Vec<&str> {
        if !self.config.auto_disk_leases {
            return Vec::new();
        }
        [
            &self.config.file_lockspace_dir,
            &self.config.lvm_lockspace_dir,
            &self.config.scsi_lockspace_dir,
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect()
    }

    /// CREATE_LOCKSPACE for each configured directory, one connection each.
    pub fn init(&self) -> Result<()> {
        for dir in self.lockspace_dirs() {
            let mut client = self.connect()?;
            client.create_lockspace(dir)?;
        }
        Ok(())
    }

    fn connect(&self) -> Result<Client> {
        Ok(Client::connect(&self.socket)?)
    }
}
