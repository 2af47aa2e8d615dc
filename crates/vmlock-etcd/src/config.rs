//! Arbiter configuration, and the lease timeline derived from it.
//!
//! ```text
//!   grant/keepalive sent ─┬─ reply ttl>0 ───────────── deadline ── etcd expiry
//!                         │<──────── ttl − margin ──────>│<margin>│
//! ```
//!
//! The self-fencing deadline is counted from the *send* time of the last
//! keepalive that got a positive reply, so it always falls before the time
//! the etcd leader can expire the lease (which counts from *receipt*).

use std::path::PathBuf;
use std::time::Duration;

use vmlock_conf::DaemonConfig;

/// Where the durable record lives unless configured otherwise.
pub const DEFAULT_STATE_PATH: &str = "/var/lib/vmlock/etcd-state.json";

/// Everything the etcd arbiter needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// etcd client URLs, e.g. `http://10.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Key prefix; every key lives under `<prefix>/locks/`.
    pub prefix: String,
    /// This host's name in the cluster (a path component: no `/`).
    pub host_id: String,
    /// Lease time to live (etcd's minimum is 2 s).
    pub lease_ttl: Duration,
    /// The durable record file (written atomically on every change).
    pub state_path: PathBuf,
    /// Deadline for one etcd round trip made on behalf of a caller.
    pub op_timeout: Duration,
}

impl EtcdConfig {
    /// A configuration with the defaults for everything but the basics.
    pub fn new(endpoints: Vec<String>, host_id: &str) -> EtcdConfig {
        EtcdConfig {
            endpoints,
            prefix: "/vmlock".to_owned(),
            host_id: host_id.to_owned(),
            lease_ttl: Duration::from_secs(10),
            state_path: PathBuf::from(DEFAULT_STATE_PATH),
            op_timeout: Duration::from_secs(2),
        }
    }

    /// Builds the arbiter configuration from the daemon's; `host_id` falls
    /// back to `hostname` (the caller resolves it, e.g. from `uname`).
    pub fn from_daemon(conf: &DaemonConfig, hostname: &str) -> EtcdConfig {
        let host = conf.host_id.clone().unwrap_or_else(|| hostname.to_owned());
        let mut cfg = EtcdConfig::new(conf.etcd_endpoints.clone(), &host);
        cfg.prefix = conf.etcd_prefix.clone();
        cfg.lease_ttl = Duration::from_secs(u64::from(conf.lease_ttl.max(2)));
        cfg
    }

    /// The TTL as etcd wants it: whole seconds, at least 2.
    pub fn ttl_secs(&self) -> i64 {
        i64::try_from(self.lease_ttl.as_secs().max(2)).unwrap_or(i64::MAX)
    }

    /// Safety margin between our fencing deadline and etcd's expiry:
    /// `max(1 s, ttl / 5)`.
    pub fn margin(&self) -> Duration {
        (self.lease_ttl / 5).max(Duration::from_secs(1))
    }

    /// How long the fencing deadline reaches past a send time, given the
    /// TTL the server reported (never more than the configured one).
    pub fn protected_for(&self, server_ttl_secs: i64) -> Duration {
        let server = Duration::from_secs(u64::try_from(server_ttl_secs).unwrap_or(0));
        server
            .min(self.lease_ttl.max(Duration::from_secs(2)))
            .saturating_sub(self.margin())
    }

    /// Interval between keepalives: a quarter of the TTL, at least 250 ms.
    pub fn keepalive_period(&self) -> Duration {
        (self.lease_ttl / 4).max(Duration::from_millis(250))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_is_inside_the_ttl() {
        let mut c = EtcdConfig::new(vec![], "h");
        c.lease_ttl = Duration::from_secs(10);
        assert_eq!(c.margin(), Duration::from_secs(2));
        assert_eq!(c.protected_for(10), Duration::from_secs(8));
        // A server that reports more than we asked for is not trusted.
        assert_eq!(c.protected_for(60), Duration::from_secs(8));
        assert_eq!(c.protected_for(0), Duration::ZERO);
        assert_eq!(c.protected_for(-1), Duration::ZERO);
        c.lease_ttl = Duration::from_secs(3);
        assert_eq!(c.margin(), Duration::from_secs(1));
        assert_eq!(c.protected_for(3), Duration::from_secs(2));
        assert!(c.keepalive_period() < c.protected_for(3));
    }

    #[test]
    fn from_daemon_config() {
        let mut d = DaemonConfig {
            etcd_endpoints: vec!["http://e:2379".into()],
            lease_ttl: 1,
            ..DaemonConfig::default()
        };
        let c = EtcdConfig::from_daemon(&d, "node7");
        assert_eq!(c.host_id, "node7");
        assert_eq!(c.prefix, "/vmlock");
        assert_eq!(c.ttl_secs(), 2, "etcd's minimum TTL is enforced");
        d.host_id = Some("h1".into());
        assert_eq!(EtcdConfig::from_daemon(&d, "node7").host_id, "h1");
    }
}
