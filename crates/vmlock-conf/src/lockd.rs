//! `qemu-lockd.conf` (or `<driver>-lockd.conf`): the client plugin's config (docs/protocol.md §7.1).
//!
//! Defaults depend on whether the file exists, as in `lock_driver_lockd.c`:
//!
//! ```text
//!                          file missing    file read
//! auto_disk_leases         true            true (unless set)
//! require_lease_for_disks  true            !auto_disk_leases (unless set)
//! *_lockspace_dir          unset           unset (unless set)
//! ```
//!
//! Keys are read in libvirt's order: `auto_disk_leases`, the three directories, then
//! `require_lease_for_disks`.

use std::path::Path;

use crate::error::{ConfError, Warning};
use crate::file::read_file;
use crate::keys::{self, Key};
use crate::syntax;

/// Everything `qemu-lockd.conf` can set. `Default` is the "file missing" case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockdConfig {
    /// Lock every disk automatically; if false, only explicit `<lease>` elements.
    pub auto_disk_leases: bool,
    /// Refuse guests with writable, unshared disks but no leases.
    pub require_lease_for_disks: bool,
    /// Directory of indirect (SHA-256 named) leases for file-backed disks; unset = direct.
    pub file_lockspace_dir: Option<String>,
    /// Directory of leases for LVM volumes, named by LV UUID.
    pub lvm_lockspace_dir: Option<String>,
    /// Directory of leases for SCSI disks, named by SCSI id.
    pub scsi_lockspace_dir: Option<String>,
}

impl Default for LockdConfig {
    fn default() -> Self {
        LockdConfig {
            auto_disk_leases: true,
            require_lease_for_disks: true,
            file_lockspace_dir: None,
            lvm_lockspace_dir: None,
            scsi_lockspace_dir: None,
        }
    }
}

/// The known keys, in the order they are read.
const KEYS: &[Key<LockdConfig>] = &[
    Key::boolean("auto_disk_leases", set_auto_disk_leases),
    Key::string("file_lockspace_dir", |c, v| c.file_lockspace_dir = Some(v)),
    Key::string("lvm_lockspace_dir", |c, v| c.lvm_lockspace_dir = Some(v)),
    Key::string("scsi_lockspace_dir", |c, v| c.scsi_lockspace_dir = Some(v)),
    Key::boolean("require_lease_for_disks", |c, v| {
        c.require_lease_for_disks = v
    }),
];

/// Setting `auto_disk_leases` also resets the derived default of `require_lease_for_disks`,
/// which is read after it.
fn set_auto_disk_leases(c: &mut LockdConfig, v: bool) {
    c.auto_disk_leases = v;
    c.require_lease_for_disks = !v;
}

impl LockdConfig {
    /// The shipped `dist/qemu-lockd.conf`: every key documented and commented out.
    pub const EMBEDDED_DEFAULT: &'static str = include_str!("../../../dist/qemu-lockd.conf");

    /// The names of every key this config knows, in the order they are read.
    pub fn keys() -> impl Iterator<Item = &'static str> {
        KEYS.iter().map(|k| k.name)
    }

    /// The defaults once a file has been read: `require_lease_for_disks` follows
    /// `!auto_disk_leases`.
    pub fn file_read_defaults() -> LockdConfig {
        let mut config = LockdConfig::default();
        set_auto_disk_leases(&mut config, true);
        config
    }

    /// Parses the text of a `qemu-lockd.conf`.
    pub fn parse(text: &str) -> Result<(LockdConfig, Vec<Warning>), ConfError> {
        Self::from_file(&syntax::parse(text)?)
    }

    /// Builds the config from an already parsed file.
    pub fn from_file(file: &syntax::ConfFile) -> Result<(LockdConfig, Vec<Warning>), ConfError> {
        let mut config = LockdConfig::file_read_defaults();
        let warnings = keys::apply(file, KEYS, &mut config)?;
        Ok((config, warnings))
    }

    /// Reads and parses the file; a missing file is not an error and gives
    /// [`LockdConfig::default()`].
    pub fn load_optional(path: &Path) -> Result<(LockdConfig, Vec<Warning>), ConfError> {
        match read_file(path) {
            Ok(bytes) => Self::from_file(&syntax::parse_bytes(&bytes)?),
            Err(ConfError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok((LockdConfig::default(), Vec::new()))
            }
            Err(e) => Err(e),
        }
    }
}
