//! `qemu-sanlock.conf` (or `<driver>-sanlock.conf`): the sanlock driver's
//! config, with the keys and defaults of libvirt's `sanlock.so`.
//!
//! ```text
//! key                      default                     meaning
//! auto_disk_leases         0                           a lease per disk, named by the MD5 of its path
//! disk_lease_dir           /var/lib/libvirt/sanlock    where those leases and their lockspace live
//! host_id                  0 (must be set with auto)   this host's slot in the lockspace, 1..=2000
//! require_lease_for_disks  !auto_disk_leases           refuse r/w disks that have no lease
//! io_timeout               0 (sanlock's own default)   seconds; the lockspace's I/O timeout
//! user, group              unset (no chown)            who the sanlock daemon runs as
//! ```
//!
//! Keys are read in libvirt's order, so the first error is the one libvirt
//! reports; a missing file means the defaults.

use std::path::Path;

use crate::error::{ConfError, Warning};
use crate::file::read_file;
use crate::keys::{self, Key};
use crate::syntax;

/// libvirt's default `disk_lease_dir` (`LOCALSTATEDIR/lib/libvirt/sanlock`).
pub const DEFAULT_DISK_LEASE_DIR: &str = "/var/lib/libvirt/sanlock";

/// Everything `qemu-sanlock.conf` can set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SanlockConfig {
    /// Give every disk a lease of its own automatically.
    pub auto_disk_leases: bool,
    /// Directory of the automatic leases and their lockspace file.
    pub disk_lease_dir: String,
    /// This host's id in the automatic lockspace; 0 means unset.
    pub host_id: u32,
    /// Refuse guests with writable, unshared disks but no leases.
    pub require_lease_for_disks: bool,
    /// The lockspace I/O timeout in seconds; 0 leaves sanlock's default.
    pub io_timeout: u32,
    /// The user the sanlock daemon runs as (files made here are chowned).
    pub user: Option<String>,
    /// The group the sanlock daemon runs as.
    pub group: Option<String>,
}

impl Default for SanlockConfig {
    fn default() -> Self {
        SanlockConfig {
            auto_disk_leases: false,
            disk_lease_dir: DEFAULT_DISK_LEASE_DIR.to_owned(),
            host_id: 0,
            require_lease_for_disks: true,
            io_timeout: 0,
            user: None,
            group: None,
        }
    }
}

/// The known keys, in the order libvirt reads them.
const KEYS: &[Key<SanlockConfig>] = &[
    Key::boolean("auto_disk_leases", set_auto_disk_leases),
    Key::string("disk_lease_dir", |c, v| c.disk_lease_dir = v),
    Key::uint("host_id", |c, v| c.host_id = v),
    Key::boolean("require_lease_for_disks", |c, v| {
        c.require_lease_for_disks = v
    }),
    Key::uint("io_timeout", |c, v| c.io_timeout = v),
    Key::string("user", |c, v| c.user = Some(v)),
    Key::string("group", |c, v| c.group = Some(v)),
];

/// `require_lease_for_disks` defaults to the opposite of `auto_disk_leases`,
/// which is read before it.
fn set_auto_disk_leases(c: &mut SanlockConfig, v: bool) {
    c.auto_disk_leases = v;
    c.require_lease_for_disks = !v;
}

impl SanlockConfig {
    /// The shipped `dist/qemu-sanlock.conf`: every key documented and commented out.
    pub const EMBEDDED_DEFAULT: &'static str = include_str!("../../../dist/qemu-sanlock.conf");

    /// The names of every key this config knows, in the order they are read.
    pub fn keys() -> impl Iterator<Item = &'static str> {
        KEYS.iter().map(|k| k.name)
    }

    /// Parses the text of a `qemu-sanlock.conf`.
    pub fn parse(text: &str) -> Result<(SanlockConfig, Vec<Warning>), ConfError> {
        Self::from_file(&syntax::parse(text)?)
    }

    /// Builds the config from an already parsed file.
    pub fn from_file(file: &syntax::ConfFile) -> Result<(SanlockConfig, Vec<Warning>), ConfError> {
        let mut config = SanlockConfig::default();
        let warnings = keys::apply(file, KEYS, &mut config)?;
        Ok((config, warnings))
    }

    /// Reads and parses the file; a missing file is not an error and gives
    /// [`SanlockConfig::default()`].
    pub fn load_optional(path: &Path) -> Result<(SanlockConfig, Vec<Warning>), ConfError> {
        match read_file(path) {
            Ok(bytes) => Self::from_file(&syntax::parse_bytes(&bytes)?),
            Err(ConfError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok((SanlockConfig::default(), Vec::new()))
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_file_gives_the_defaults() {
        let (c, warnings) = SanlockConfig::parse(SanlockConfig::EMBEDDED_DEFAULT).unwrap();
        assert_eq!(c, SanlockConfig::default());
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn auto_disk_leases_flips_the_lease_requirement_unless_it_is_set() {
        let (c, _) = SanlockConfig::parse("auto_disk_leases = 1\nhost_id = 7\n").unwrap();
        assert!(c.auto_disk_leases && !c.require_lease_for_disks);
        assert_eq!(c.host_id, 7);
        let (c, _) =
            SanlockConfig::parse("auto_disk_leases = 1\nrequire_lease_for_disks = 1\n").unwrap();
        assert!(c.auto_disk_leases && c.require_lease_for_disks);
    }

    #[test]
    fn every_key_is_read_with_its_type() {
        let text = "disk_lease_dir = \"/srv/leases\"\nio_timeout = 10\nuser = \"sanlock\"\ngroup = \"+6\"\n";
        let (c, _) = SanlockConfig::parse(text).unwrap();
        assert_eq!(c.disk_lease_dir, "/srv/leases");
        assert_eq!(c.io_timeout, 10);
        assert_eq!(c.user.as_deref(), Some("sanlock"));
        assert_eq!(c.group.as_deref(), Some("+6"));
        assert!(SanlockConfig::parse("host_id = \"one\"\n").is_err());
        assert!(SanlockConfig::parse("auto_disk_leases = 2\n").is_err());
        assert!(SanlockConfig::parse("io_timeout = -1\n").is_err());
    }

    #[test]
    fn a_missing_file_means_the_defaults() {
        let (c, w) =
            SanlockConfig::load_optional(Path::new("/nonexistent/qemu-sanlock.conf")).unwrap();
        assert_eq!(c, SanlockConfig::default());
        assert!(w.is_empty());
    }
}
