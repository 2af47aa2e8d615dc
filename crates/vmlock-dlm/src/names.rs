//! DLM resource names: the hex SHA-256 of what is locked, exactly the
//! DLM's 64-byte resource-name limit.
//!
//! In the default lockspace (`""`) the name is the disk path itself, and
//! the resource is the SHA-256 of that path, as the DLM lock driver's
//! design names disks. In a named (indirect) lockspace the lease file
//! `<lockspace>/<name>` is what is locked, and the resource is the SHA-256
//! of that path. Every host computes the same name for the same disk.

use lockspace::ResourceKey;
use sha2::{Digest, Sha256};

/// The DLM resource name of `key`: 64 lowercase hex digits.
pub fn resource_name(key: &ResourceKey) -> [u8; 64] {
    let mut h = Sha256::new();
    if key.lockspace.is_empty() {
        h.update(key.name.as_bytes());
    } else {
        h.update(key.lockspace.trim_end_matches('/').as_bytes());
        h.update(b"/");
        h.update(key.name.as_bytes());
    }
    let digest = h.finalize();
    let mut out = [0u8; 64];
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in digest.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ls: &str, name: &str) -> ResourceKey {
        ResourceKey {
            lockspace: ls.into(),
            name: name.into(),
        }
    }

    fn text(k: &ResourceKey) -> String {
        String::from_utf8(resource_name(k).to_vec()).unwrap()
    }

    #[test]
    fn default_lockspace_hashes_the_path() {
        // printf %s /var/lib/libvirt/images/a.img | sha256sum
        assert_eq!(
            text(&key("", "/var/lib/libvirt/images/a.img")),
            "17756750d91ae11b47d32396242a9e833937f02ab48569201fe29b1a94ecb520"
        );
    }

    #[test]
    fn named_lockspace_hashes_the_lease_file_path() {
        // printf %s /var/lib/libvirt/lockd/files/abc | sha256sum
        let want = "21fa469152662c2dd13ab63dc9d6b3ed7cfc394a08a6e8e8e54339da951e98d1";
        assert_eq!(text(&key("/var/lib/libvirt/lockd/files", "abc")), want);
        // A trailing slash on the lockspace names the same file.
        assert_eq!(text(&key("/var/lib/libvirt/lockd/files/", "abc")), want);
        // The default lockspace with that path as the name is the same file
        // too, so it is the same DLM resource.
        assert_eq!(text(&key("", "/var/lib/libvirt/lockd/files/abc")), want);
    }

    #[test]
    fn names_fit_the_dlm_limit_whatever_the_input() {
        let long = "x".repeat(10_000);
        let n = resource_name(&key("/ls", &long));
        assert_eq!(n.len(), vmlock_sys::dlm::RESNAME_MAXLEN);
        assert!(n.iter().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(
            resource_name(&key("/ls", "a")),
            resource_name(&key("/ls", "b"))
        );
    }
}
