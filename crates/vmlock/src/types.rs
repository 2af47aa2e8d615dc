//! The objects and resources of the lock-manager API (`lock_driver.h`), typed.
//!
//! ```text
//! Domain { uuid, name, id, pid, uri }           the object (VIR_LOCK_MANAGER_OBJECT_TYPE_DOMAIN)
//!   Resource::Disk  { path, shared, readonly }  type DISK = 0, flags READONLY = 1, SHARED = 2
//!   Resource::Lease { lockspace, key, path, offset }   type LEASE = 1
//! acquire flags: REGISTER_ONLY = 1, RESTRICT = 2
//! ```

use std::fmt;

use uuid::Uuid;

/// The object being locked: a domain (VM), as `domain_lock.c` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// The domain's UUID.
    pub uuid: Uuid,
    /// The domain's name.
    pub name: String,
    /// The runtime domain id; libvirt's lockd driver refuses 0.
    pub id: u32,
    /// The pid of the VM process, the owner of every lock.
    pub pid: u32,
    /// The hypervisor driver URI (`qemu:///system`); lockd ignores it.
    pub uri: Option<String>,
}

/// A disk image or block device (`<disk>`), locked by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// The path exactly as written in the domain XML (never canonicalised).
    pub path: String,
    /// `<shareable/>`: a shared (read) lock.
    pub shared: bool,
    /// `<readonly/>`: never locked by lockd.
    pub readonly: bool,
}

/// An explicit lease (`<lease>`): a key inside a lockspace at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// `<lockspace>`; `None` when the XML has none (lockd then refuses it).
    pub lockspace: Option<String>,
    /// `<key>`.
    pub key: String,
    /// `<target path=...>`.
    pub path: Option<String>,
    /// `<target offset=...>`; lockd requires 0.
    pub offset: u64,
}

/// One resource added to a lock manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// A disk.
    Disk(Disk),
    /// A lease.
    Lease(Lease),
}

impl Disk {
    /// A writable, exclusive disk.
    pub fn exclusive(path: impl Into<String>) -> Disk {
        Disk {
            path: path.into(),
            shared: false,
            readonly: false,
        }
    }

    /// A writable, shared disk.
    pub fn shared(path: impl Into<String>) -> Disk {
        Disk {
            shared: true,
            ..Disk::exclusive(path)
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Disk(d) => f.write_str(&d.path),
            Resource::Lease(l) => write!(
                f,
                "lease {} in lockspace {}",
                l.key,
                l.lockspace.as_deref().unwrap_or("(none)")
            ),
        }
    }
}

/// Flags of [`LockManager::acquire`](crate::LockManager::acquire).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AcquireFlags {
    /// `VIR_LOCK_MANAGER_ACQUIRE_RESTRICT`: restrict the connection afterwards and
    /// hand back a descriptor for the VM process.
    pub restrict: bool,
    /// `VIR_LOCK_MANAGER_ACQUIRE_REGISTER_ONLY`: register the owner but acquire nothing.
    pub register_only: bool,
}

impl AcquireFlags {
    /// What `virDomainLockProcessStart(paused)` passes.
    pub fn process_start(paused: bool) -> AcquireFlags {
        AcquireFlags {
            restrict: true,
            register_only: paused,
        }
    }
}
