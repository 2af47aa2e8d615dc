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
mod file;
mod fuzzing;
pub mod keys;
mod lockd;
mod sanlock;
pub mod syntax;

pub use daemon::{DaemonConfig, LockKindSetting};
pub use error::{ConfError, Warning};
pub use file::{MAX_CONFIG_FILE_SIZE, read_file};
#[doc(hidden)]
pub use fuzzing::fuzz_entry_parse_config;
pub use lockd::LockdConfig;
pub use sanlock::{DEFAULT_DISK_LEASE_DIR, SanlockConfig};
