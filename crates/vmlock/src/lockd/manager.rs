//! One domain's session with the lockd driver: the owner, the resources in the order
//! they were added, and the acquire/release RPC sequences.

use std::os::fd::{AsFd, OwnedFd};

use vmlock_client::Client;
use vmlock_proto::lock::Owner;

use super::LockdDriver;
use super::naming::{WireResource, disk_resource, lease_resource};
use crate::driver::{LockDriver, LockManager};
use crate::error::{LockError, Result, VIR_ERR_CONFIG_UNSUPPORTED};
use crate::types::{AcquireFlags, Domain, Resource};

/// The driver's half of the lock-driver API: every domain gets a session.
impl LockDriver for LockdDriver {
    fn name(&self) -> &'static str {
        "lockd"
    }

    fn new_manager(&self, domain: &Domain) -> Result<Box<dyn LockManager>> {
        Ok(Box::new(LockdManager::new(self.clone(), domain)?))
    }
}

/// A lockd session for one domain.
#[derive(Debug)]
pub struct LockdManager {
    driver: LockdDriver,
    owner: Owner,
    resources: Vec<WireResource>,
    has_rw_disks: bool,
}

impl LockdManager {
    /// `drvNew`: checks the domain the way libvirt does (id, then name); pid 0 is
    /// accepted (libvirt only logs it).
    pub fn new(driver: LockdDriver, domain: &Domain) -> Result<LockdManager> {
        if domain.id == 0 {
            return Err(LockError::internal(
                "Missing ID parameter for domain object",
            ));
        }
        if domain.name.is_empty() {
            return Err(LockError::internal(
                "Missing name parameter for domain object",
            ));
        }
        if domain.pid == 0 {
            tracing::debug!("Missing PID parameter for domain object");
        }
        let owner = Owner {
            uuid: *domain.uuid.as_bytes(),
            name: domain.name.clone(),
            id: domain.id,
            pid: domain.pid,
        };
        Ok(LockdManager {
            driver,
            owner,
            resources: Vec::new(),
            has_rw_disks: false,
        })
    }

    /// A new connection with the owner registered.
    fn registered(&self) -> Result<Client> {
        let mut client = self.driver.connect()?;
        client.register(&self.owner)?;
        Ok(client)
    }

    fn check_leases_present(&self) -> Result<()> {
        if self.resources.is_empty()
            && self.has_rw_disks
            && self.driver.config.require_lease_for_disks
        {
            return Err(LockError::Local {
                code: VIR_ERR_CONFIG_UNSUPPORTED,
                message: "unsupported configuration: Read/write, exclusive access, disks were present, but no leases specified".into(),
            });
        }
        Ok(())
    }
}

/// A duplicate of the connection without close-on-exec, for the VM process.
fn inheritable_dup(client: &Client) -> Result<OwnedFd> {
    let io = |what: &str, source| LockError::Io {
        what: what.to_owned(),
        source,
    };
    let fd = client
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| io("cannot duplicate the lock daemon connection", e))?;
    vmlock_sys::fd::set_cloexec(fd.as_fd(), false)
        .map_err(|e| io("cannot clear close-on-exec", e))?;
    Ok(fd)
}

impl LockManager for LockdManager {
    fn add_resource(&mut self, resource: &Resource) -> Result<()> {
        match resource {
            Resource::Disk(disk) => {
                let cfg = &self.driver.config;
                if !disk.readonly && !disk.shared && !cfg.auto_disk_leases {
                    self.has_rw_disks = true;
                }
                let found = disk_resource(cfg, disk, self.driver.keys.as_ref())?;
                self.resources.extend(found);
            }
            Resource::Lease(lease) => self.resources.push(lease_resource(lease)?),
        }
        Ok(())
    }

    fn acquire(&mut self, flags: AcquireFlags, _state: Option<&str>) -> Result<Option<OwnedFd>> {
        self.check_leases_present()?;
        let mut client = self.registered()?;
        let fd = match flags.restrict {
            true => Some(inheritable_dup(&client)?),
            false => None,
        };
        if !flags.register_only {
            for r in &self.resources {
                client
                    .acquire_resource(&r.lockspace, &r.name, r.flags)
                    .map_err(|source| LockError::Resource {
                        action: "acquire",
                        resource: r.label.clone(),
                        source,
                    })?;
            }
        }
        if flags.restrict {
            client.restrict()?;
        }
        Ok(fd)
    }

    fn release(&mut self) -> Result<Option<String>> {
        let mut client = self.registered()?;
        for r in &self.resources {
            client
                .release_resource(&r.lockspace, &r.name)
                .map_err(|source| LockError::Resource {
                    action: "release",
                    resource: r.label.clone(),
                    source,
                })?;
        }
        Ok(None)
    }

    fn inquire(&mut self) -> Result<Option<String>> {
        Ok(None)
    }
}
