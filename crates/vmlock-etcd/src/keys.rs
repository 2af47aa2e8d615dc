//! The etcd key layout and the JSON value of a lock key.
//!
//! ```text
//! <prefix>/locks/<R>/x/<host_id>/<pid>   exclusive holder (at most one)
//! <prefix>/locks/<R>/s/<host_id>/<pid>   shared holder (any number)
//!        R = hex(sha256(lockspace ‖ 0x00 ‖ name))
//! ```
//!
//! Hashing keeps keys short and free of `/` whatever the resource name is;
//! the NUL separator cannot occur in a lockspace path, so distinct
//! (lockspace, name) pairs never collide. Putting the kind in the key lets
//! each acquire be **one** transaction with **one** range compare:
//!
//! * exclusive: `create_revision(<R>/*) == 0` — nothing at all under `R`;
//! * shared: `create_revision(<R>/x/*) == 0` — no exclusive holder.
//!
//! (etcd evaluates a range compare against every key in the range, and
//! against an absent key — revision 0 — when the range is empty.) Every lock
//! key is attached to the host's lease, so a dead host's keys vanish with
//! its lease in one revision.

use lockspace::ResourceKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The prefix of every key of one resource: `<prefix>/locks/<R>/`.
pub fn resource_prefix(prefix: &str, key: &ResourceKey) -> String {
    let mut h = Sha256::new();
    h.update(key.lockspace.as_bytes());
    h.update([0u8]);
    h.update(key.name.as_bytes());
    let digest = h.finalize();
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    format!("{}/locks/{hex}/", prefix.trim_end_matches('/'))
}

/// The prefix of the exclusive holder of a resource: `<prefix>/locks/<R>/x/`.
pub fn exclusive_prefix(prefix: &str, key: &ResourceKey) -> String {
    format!("{}x/", resource_prefix(prefix, key))
}

/// The lock key of one (host, owner) for a resource.
pub fn lock_key(prefix: &str, key: &ResourceKey, shared: bool, host: &str, pid: u32) -> String {
    let kind = if shared { 's' } else { 'x' };
    format!("{}{kind}/{host}/{pid}", resource_prefix(prefix, key))
}

/// Whether a host id can be a key component.
pub fn valid_host_id(host: &str) -> bool {
    !host.is_empty() && !host.contains('/') && !host.contains('\0')
}

/// The JSON value stored under a lock key (for humans and `holders`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockValue {
    /// The holding host.
    pub host: String,
    /// The owner pid on that host.
    pub pid: u32,
    /// The owner's start time (`/proc/<pid>/stat` field 22), if known.
    #[serde(default)]
    pub start_time: Option<u64>,
    /// VM name, if the daemon told us.
    #[serde(default)]
    pub vm: Option<String>,
    /// VM UUID (hyphenated), if the daemon told us.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Shared or exclusive.
    pub shared: bool,
    /// The lockspace path.
    pub lockspace: String,
    /// The resource name.
    pub name: String,
}

/// One holder of a resource, as `holders` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The holding host.
    pub host: String,
    /// The owner pid on that host.
    pub pid: u32,
    /// VM name, if known.
    pub vm: Option<String>,
    /// VM UUID, if known.
    pub uuid: Option<String>,
    /// Shared or exclusive.
    pub shared: bool,
}

impl Holder {
    /// Decodes a lock key's value; `None` for foreign or corrupt values.
    pub fn from_value(value: &[u8]) -> Option<Holder> {
        let v: LockValue = serde_json::from_slice(value).ok()?;
        Some(Holder {
            host: v.host,
            pid: v.pid,
            vm: v.vm,
            uuid: v.uuid,
            shared: v.shared,
        })
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.shared { "shared" } else { "exclusive" };
        write!(f, "{kind} by pid {} on host {}", self.pid, self.host)?;
        match (&self.vm, &self.uuid) {
            (Some(vm), Some(uuid)) => write!(f, " (vm {vm}, uuid {uuid})"),
            (Some(vm), None) => write!(f, " (vm {vm})"),
            (None, Some(uuid)) => write!(f, " (uuid {uuid})"),
            (None, None) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rk(ls: &str, name: &str) -> ResourceKey {
        ResourceKey {
            lockspace: ls.into(),
            name: name.into(),
        }
    }

    #[test]
    fn layout() {
        let k = rk("", "/var/lib/images/a.img");
        let p = resource_prefix("/vmlock/", &k);
        assert!(p.starts_with("/vmlock/locks/"));
        assert!(p.ends_with('/'));
        assert_eq!(p.len(), "/vmlock/locks/".len() + 64 + 1);
        assert_eq!(
            lock_key("/vmlock", &k, false, "h1", 42),
            format!("{p}x/h1/42")
        );
        assert_eq!(
            lock_key("/vmlock", &k, true, "h1", 42),
            format!("{p}s/h1/42")
        );
        assert!(
            lock_key("/vmlock", &k, false, "h", 1).starts_with(&exclusive_prefix("/vmlock", &k))
        );
        assert!(
            !lock_key("/vmlock", &k, true, "h", 1).starts_with(&exclusive_prefix("/vmlock", &k))
        );
    }

    #[test]
    fn separator_prevents_collisions() {
        let a = resource_prefix("/p", &rk("/a", "b"));
        let b = resource_prefix("/p", &rk("/a/", ""));
        let c = resource_prefix("/p", &rk("", "/ab"));
        assert_ne!(a, b);
        assert_ne!(a, c);
        // sha256("\0x"), computed independently with Python's hashlib.
        assert_eq!(
            resource_prefix("/p", &rk("", "x")),
            "/p/locks/3c7e9bc930dc93f01fa69985ef242d9f9e861f3c5355aa24ce5ef4b4b8a70ccb/"
        );
    }

    #[test]
    fn host_ids() {
        assert!(valid_host_id("node-1.example"));
        assert!(!valid_host_id(""));
        assert!(!valid_host_id("a/b"));
    }

    #[test]
    fn holder_from_value() {
        let v = LockValue {
            host: "h".into(),
            pid: 7,
            start_time: Some(99),
            vm: Some("vm1".into()),
            uuid: None,
            shared: true,
            lockspace: String::new(),
            name: "/d".into(),
        };
        let h = Holder::from_value(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!((h.host.as_str(), h.pid, h.shared), ("h", 7, true));
        assert_eq!(h.to_string(), "shared by pid 7 on host h (vm vm1)");
        let v = LockValue {
            uuid: Some("c7a5fdbd-edaf-9455-926a-d65c16db1809".into()),
            ..v
        };
        let h = Holder::from_value(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(
            h.to_string(),
            "shared by pid 7 on host h (vm vm1, uuid c7a5fdbd-edaf-9455-926a-d65c16db1809)"
        );
        assert!(Holder::from_value(b"not json").is_none());
    }
}
