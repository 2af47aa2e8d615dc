//! How the lockd driver names a resource for the daemon (docs/protocol.md §7.2,
//! `virLockManagerLockDaemonAddResource`).
//!
//! ```text
//! disk, readonly                         -> not locked
//! disk, auto_disk_leases = 0             -> not locked (a writable unshared disk counts
//!                                           as "read/write disk present")
//! /dev/..., lvm_lockspace_dir, lvs ok    -> (lvm dir,  LV uuid,        AUTOCREATE)
//!    lvs fails or prints nothing         -> fall through
//! /dev/..., scsi_lockspace_dir           -> (scsi dir, scsi_id output, AUTOCREATE)
//!    scsi_id cannot run                  -> hard error; no output -> fall through
//! file_lockspace_dir                     -> (file dir, sha256hex(path), AUTOCREATE)
//! otherwise                              -> ("",       path,           0)   direct
//! + SHARED if the disk is shareable
//! lease { path, lockspace, key, 0 }      -> (path + "/" + lockspace, key, 0)
//! ```

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};
use vmlock_client::{FLAG_AUTOCREATE, FLAG_SHARED};
use vmlock_conf::LockdConfig;

use crate::error::{LockError, Result};
use crate::types::{Disk, Lease};

/// One resource as sent on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireResource {
    /// Lockspace path (`""` for the default lockspace).
    pub lockspace: String,
    /// Resource name inside it.
    pub name: String,
    /// `FLAG_SHARED` | `FLAG_AUTOCREATE`.
    pub flags: u32,
    /// How the caller named it (disk path or lease), for messages.
    pub label: String,
}

impl WireResource {
    /// The file the daemon locks for this resource.
    pub fn lease_file(&self) -> PathBuf {
        if self.lockspace.is_empty() {
            PathBuf::from(&self.name)
        } else {
            Path::new(&self.lockspace).join(&self.name)
        }
    }
}

/// The lowercase hex SHA-256 of a disk path string exactly as given (docs/quirks.md #15).
pub fn indirect_name(path: &str) -> String {
    Sha256::digest(path.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Looks up the stable ids of block devices (LVM LV UUID, SCSI id).
pub trait DeviceKeys: Debug + Send + Sync {
    /// The LV UUID of `path`, or `None` when `lvs` fails or prints nothing (libvirt
    /// then falls through to the next naming mode).
    fn lvm_uuid(&self, path: &str) -> Option<String>;

    /// The SCSI id of `path`; `Ok(None)` when the tool prints nothing or fails, `Err`
    /// when it cannot be run at all (a hard error in libvirt).
    fn scsi_id(&self, path: &str) -> io::Result<Option<String>>;
}

/// The real tools: `lvs` and `/lib/udev/scsi_id`.
#[derive(Debug, Clone)]
pub struct SystemDeviceKeys {
    /// The `lvs` binary.
    pub lvs: PathBuf,
    /// The `scsi_id` binary.
    pub scsi_id: PathBuf,
}

impl Default for SystemDeviceKeys {
    fn default() -> Self {
        let lvs = ["/usr/sbin/lvs", "/sbin/lvs"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("lvs"));
        SystemDeviceKeys {
            lvs,
            scsi_id: PathBuf::from("/lib/udev/scsi_id"),
        }
    }
}

/// Runs a tool and returns its stdout if it exited 0.
fn run_tool(cmd: &mut Command) -> io::Result<Option<String>> {
    let out = cmd.stdin(Stdio::null()).stderr(Stdio::null()).output()?;
    if !out.status.success() {
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// libvirt's trimming of tool output: skip leading spaces, cut at the first newline.
pub fn trim_tool_output(out: &str) -> Option<String> {
    let s = out.trim_start_matches([' ', '\t']);
    let s = s.split('\n').next().unwrap_or_default();
    (!s.is_empty()).then(|| s.to_owned())
}

impl DeviceKeys for SystemDeviceKeys {
    fn lvm_uuid(&self, path: &str) -> Option<String> {
        let mut cmd = Command::new(&self.lvs);
        cmd.args(["--noheadings", "--unbuffered", "--nosuffix"])
            .args(["--options", "uuid", path]);
        run_tool(&mut cmd)
            .ok()
            .flatten()
            .as_deref()
            .and_then(trim_tool_output)
    }

    fn scsi_id(&self, path: &str) -> io::Result<Option<String>> {
        let mut cmd = Command::new(&self.scsi_id);
        cmd.args(["--replace-whitespace", "--whitelisted", "--device", path]);
        Ok(run_tool(&mut cmd)?.as_deref().and_then(trim_tool_output))
    }
}

/// The wire resource for a disk, or `None` when lockd does not lock it.
pub fn disk_resource(
    config: &LockdConfig,
    disk: &Disk,
    keys: &dyn DeviceKeys,
) -> Result<Option<WireResource>> {
    if disk.readonly || !config.auto_disk_leases {
        return Ok(None);
    }
    let (lockspace, name, autocreate) = disk_name(config, &disk.path, keys)?;
    let mut flags = if autocreate { FLAG_AUTOCREATE } else { 0 };
    if disk.shared {
        flags |= FLAG_SHARED;
    }
    Ok(Some(WireResource {
        lockspace,
        name,
        flags,
        label: disk.path.clone(),
    }))
}

/// `(lockspace, name, autocreate)` for a disk path, following the modes in order.
fn disk_name(
    config: &LockdConfig,
    path: &str,
    keys: &dyn DeviceKeys,
) -> Result<(String, String, bool)> {
    let is_dev = path.starts_with("/dev");
    if let (true, Some(dir)) = (is_dev, &config.lvm_lockspace_dir)
        && let Some(uuid) = keys.lvm_uuid(path)
    {
        return Ok((dir.clone(), uuid, true));
    }
    if let (true, Some(dir)) = (is_dev, &config.scsi_lockspace_dir) {
        let id = keys.scsi_id(path).map_err(|source| LockError::Io {
            what: format!("cannot run scsi_id for {path}"),
            source,
        })?;
        if let Some(id) = id {
            return Ok((dir.clone(), id, true));
        }
    }
    if let Some(dir) = &config.file_lockspace_dir {
        return Ok((dir.clone(), indirect_name(path), true));
    }
    Ok((String::new(), path.to_owned(), false))
}

/// The wire resource for a lease, with libvirt's checks and texts.
pub fn lease_resource(lease: &Lease) -> Result<WireResource> {
    if lease.offset != 0 {
        return Err(LockError::internal(
            "Offset must be zero for this lock manager",
        ));
    }
    let (Some(path), Some(lockspace)) = (&lease.path, &lease.lockspace) else {
        return Err(LockError::internal(
            "Missing path or lockspace for lease resource",
        ));
    };
    Ok(WireResource {
        lockspace: format!("{path}/{lockspace}"),
        name: lease.key.clone(),
        flags: 0,
        label: format!("lease {} in {path}/{lockspace}", lease.key),
    })
}
