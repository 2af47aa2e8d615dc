//! Test kit for vmlock: runs libvirt's `virtlockd` ("theirs") or our
//! `vmlockd` ("ours") as root in a private mount namespace whose `/run` is a
//! per-test temp dir, talks to it with raw frames, and drives libvirt's
//! `lockd.so` client plugin (via the `vmlock-plugin-run` binary).
//!
//! ```text
//! $TMP/run            bind-mounted on /run inside the daemon's namespace
//! $TMP/run/libvirt/virtlockd-sock, virtlockd-admin-sock
//! $TMP/run/virtlockd.pid, virtlockd-restart-exec.json
//! $TMP/d              scratch dir (disks, lease dirs), mode 0777
//! $TMP/daemon.log     the daemon's stdout and stderr
//! $TMP/daemon.conf    config text passed with -f
//! ```
//!
//! Frames are encoded by hand here ([`frames`]), independently of
//! `vmlock-proto`, so the suite does not share a codec with the daemon it
//! checks.

#![forbid(unsafe_code)]

pub mod ci;
pub mod conn;
pub mod corpus;
pub mod daemon;
pub mod etcd;
pub mod flavor;
pub mod frames;
pub mod hold;
pub mod procfs;
pub mod reexec;
pub mod sanlockd;
pub mod script;
pub mod sentinel;
pub mod wait;

pub use conn::RawConn;
pub use daemon::{Daemon, DaemonSpec};
pub use flavor::{Flavor, tool_binary, vmlockd_binary};
pub use frames::{Header, WireError, decode_reply};
pub use wait::wait_until;

/// The indirect lease name libvirt's lockd client uses for a disk path:
/// the lowercase hex SHA-256 of the path string exactly as written.
pub fn lease_name(disk_path: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(disk_path.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_name_is_the_sha256_of_the_path() {
        assert_eq!(lease_name("/var/lib/libvirt/images/vm1.qcow2").len(), 64,);
        assert_eq!(
            lease_name(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
