//! libvirt-style configuration files: the `key = value` syntax and the typed configs of
//! the daemon (`virtlockd.conf`) and of the client plugin (`qemu-lockd.conf`).
//!
//! ```text
//!   bytes ──syntax::parse──▶ ConfFile { entries } ──key table──▶ DaemonConfig / LockdConfig
//!                                 (syntax errors)       (type / range errors, warnings)
//! ```
//!
//! * [`syntax`] follows libvirt's `virconf.c` exactly, error messages included.
//! * The typed layer follows `virConfGetValue*`: first entry of a key wins, bools are the
//!   integers 0 and 1, unsigned keys refuse negative numbers, unknown keys are ignored
//!   (reported as [`Warning`]s).
//! * [`keys`] exposes the typed getters for other files (e.g. `qemu.conf`).
//!
//! This crate is pure: it reads no environment and no command line; only the `load*`
//! functions touch the file system.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod daemon;
mod error;
mod fuzzing;
pub mod keys;
mod lockd;
mod sanlock;
pub mod syntax;

use std::io::Read;
use std::path::Path;

pub use daemon::{DaemonConfig, LockKindSetting};
pub use error::{ConfError, Warning};
#[doc(hidden)]
pub use fuzzing::fuzz_entry_parse_config;
pub use lockd::LockdConfig;
pub use sanlock::{DEFAULT_DISK_LEASE_DIR, SanlockConfig};

/// Largest config file read, as libvirt's `MAX_CONFIG_FILE_SIZE` (10 MiB).
pub const MAX_CONFIG_FILE_SIZE: u64 = 10 * 1024 * 1024;

/// Reads a whole config file, refusing files over [`MAX_CONFIG_FILE_SIZE`].
pub fn read_file(path: &Path) -> Result<Vec<u8>, ConfError> {
    let io_err = |source| ConfError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > MAX_CONFIG_FILE_SIZE {
        let msg = format!("file is larger than {MAX_CONFIG_FILE_SIZE} bytes");
        return Err(io_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            msg,
        )));
    }
    Ok(bytes)
}
