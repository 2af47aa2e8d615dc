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

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
use vmlock_conf::DaemonConfig;

use crate::EtcdError;

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
    /// TLS material; `None` speaks plain HTTP/2.
    pub tls: Option<TlsFiles>,
    /// etcd password authentication: user and password.
    pub auth: Option<(String, String)>,
}

/// PEM files for TLS to etcd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA bundle for etcd's server certificates (unset: the system roots
    /// are not consulted, so set it unless etcd's certificate is signed
    /// by a CA the client was built to trust).
    pub ca: Option<PathBuf>,
    /// Client certificate, for mutual TLS.
    pub cert: Option<PathBuf>,
    /// Its private key.
    pub key: Option<PathBuf>,
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
            tls: None,
            auth: None,
        }
    }

    /// Builds the arbiter configuration from the daemon's. `host_id` falls
    /// back to `default_host` (the caller resolves it: machine id or host
    /// name), the record to `default_state`; the password file is read here.
    pub fn from_daemon(
        conf: &DaemonConfig,
        default_host: &str,
        default_state: &Path,
    ) -> Result<EtcdConfig, EtcdError> {
        let host = conf
            .host_id
            .clone()
            .unwrap_or_else(|| default_host.to_owned());
        let mut cfg = EtcdConfig::new(conf.etcd_endpoints.clone(), &host);
        cfg.prefix = conf.etcd_prefix.clone();
        cfg.lease_ttl = Duration::from_secs(u64::from(conf.lease_ttl.max(2)));
        cfg.state_path = conf
            .etcd_state_file
            .as_ref()
            .map_or_else(|| default_state.to_owned(), PathBuf::from);
        let files = TlsFiles {
            ca: conf.etcd_ca_file.as_ref().map(PathBuf::from),
            cert: conf.etcd_cert_file.as_ref().map(PathBuf::from),
            key: conf.etcd_key_file.as_ref().map(PathBuf::from),
        };
        if files.cert.is_some() != files.key.is_some() {
            let msg = "etcd_cert_file and etcd_key_file must be set together";
            return Err(EtcdError::Config(msg.into()));
        }
        if files != TlsFiles::default() {
            cfg.tls = Some(files);
        }
        cfg.auth = match (&conf.etcd_username, &conf.etcd_password_file) {
            (None, None) => None,
            (Some(user), Some(file)) => Some((user.clone(), read_password(Path::new(file))?)),
            _ => {
                let msg = "etcd_username and etcd_password_file must be set together";
                return Err(EtcdError::Config(msg.into()));
            }
        };
        Ok(cfg)
    }

    /// The client options: connect timeout, TLS and credentials. Reads
    /// the PEM files.
    pub fn connect_options(&self) -> Result<ConnectOptions, EtcdError> {
        let mut opts = ConnectOptions::new().with_connect_timeout(self.op_timeout);
        if let Some((user, password)) = &self.auth {
            // etcd's tokens expire (simple tokens after `--auth-token-ttl`,
            // 300 s by default, of disuse; every token on a member restart).
            // Keepalives carry no token, so an idle host would otherwise be
            // refused every later request: re-authenticate and retry once.
            opts = opts
                .with_user(user.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        if let Some(files) = &self.tls {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &files.ca {
                tls = tls.ca_certificate(Certificate::from_pem(read_pem(ca)?));
            }
            if let (Some(cert), Some(key)) = (&files.cert, &files.key) {
                tls = tls.identity(Identity::from_pem(read_pem(cert)?, read_pem(key)?));
            }
            opts = opts.with_tls(tls);
        }
        Ok(opts)
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

    /// The fencing timeline for a self-fencing deadline `daemon`: the
    /// helper a quarter of the margin later but at most 250 ms (its tick is
    /// 10 ms), the kernel watchdog another quarter later but at most 500 ms
    /// (what the helper allows killed processes to go). The rest of the
    /// margin is the watchdog's: 1.25 s at the default TTL (10 s).
    pub fn deadlines(&self, daemon: std::time::Instant) -> crate::Deadlines {
        let q = self.margin() / 4;
        let helper = daemon + q.min(Duration::from_millis(250));
        crate::Deadlines {
            daemon,
            helper,
            watchdog: helper + q.min(Duration::from_millis(500)),
        }
    }

    /// The kernel watchdog timeout (whole seconds, as drivers take it):
    /// `max(1, ttl/2)`. Petting stops `timeout` before the watchdog
    /// deadline; this leaves every steady-state renewal room to arrive.
    pub fn watchdog_timeout_secs(&self) -> u32 {
        u32::try_from((self.ttl_secs() / 2).max(1)).unwrap_or(u32::MAX)
    }

    /// Interval between keepalives: a quarter of the TTL, at least 250 ms.
    pub fn keepalive_period(&self) -> Duration {
        (self.lease_ttl / 4).max(Duration::from_millis(250))
    }
}

fn read_pem(path: &Path) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path).map_err(|e| EtcdError::Config(format!("{}: {e}", path.display())))
}

/// The first line of `path`, without its line end.
fn read_password(path: &Path) -> Result<String, EtcdError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| EtcdError::Config(format!("{}: {e}", path.display())))?;
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        let msg = format!("{}: the password file is empty", path.display());
        return Err(EtcdError::Config(msg));
    }
    if let Some(mode) = loose_mode(path) {
        tracing::warn!(
            "{}: the etcd password file is readable by others (mode {mode:o}); chmod 600 it",
            path.display()
        );
    }
    Ok(line.to_owned())
}

/// The file's permission bits if group or others may read or write it.
fn loose_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o066 != 0).then_some(mode)
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

    /// daemon < helper < watchdog < etcd expiry, and a steady renewal
    /// always leaves the watchdog `timeout` of room (so it keeps being
    /// petted), for the TTLs people use.
    #[test]
    fn fence_timeline_is_ordered() {
        for ttl in [2u64, 3, 5, 6, 10, 30, 60] {
            let mut c = EtcdConfig::new(vec![], "h");
            c.lease_ttl = Duration::from_secs(ttl);
            let send = std::time::Instant::now();
            let d = c.deadlines(send + c.protected_for(c.ttl_secs()));
            let expiry = send + c.lease_ttl;
            assert!(d.daemon < d.helper && d.helper < d.watchdog, "ttl {ttl}");
            assert!(expiry - d.watchdog >= c.margin() / 2, "ttl {ttl}");
            assert!(
                d.helper - d.daemon >= Duration::from_millis(250),
                "ttl {ttl}"
            );
            // Just before the next renewal is sent the deadline is one
            // period nearer; the watchdog must still be petted then.
            let room = d.watchdog - send - c.keepalive_period();
            let t = Duration::from_secs(u64::from(c.watchdog_timeout_secs()));
            assert!(room >= t, "ttl {ttl}: room {room:?} < timeout {t:?}");
        }
        let mut c = EtcdConfig::new(vec![], "h");
        // The default TTL: the watchdog's margin leaves the 1 s goal room
        // for the reset itself.
        let send = std::time::Instant::now();
        let d = c.deadlines(send + c.protected_for(c.ttl_secs()));
        assert_eq!(send + c.lease_ttl - d.watchdog, Duration::from_millis(1250));
        assert_eq!(d.helper - d.daemon, Duration::from_millis(250));
        assert_eq!(c.watchdog_timeout_secs(), 5);
        c.lease_ttl = Duration::from_secs(3);
        assert_eq!(c.watchdog_timeout_secs(), 1);
    }

    #[test]
    fn from_daemon_config() {
        let mut d = DaemonConfig {
            etcd_endpoints: vec!["http://e:2379".into()],
            lease_ttl: 1,
            ..DaemonConfig::default()
        };
        let state = Path::new("/s.json");
        let c = EtcdConfig::from_daemon(&d, "node7", state).unwrap();
        assert_eq!(c.host_id, "node7");
        assert_eq!(c.prefix, "/vmlock");
        assert_eq!(c.state_path, state);
        assert_eq!(c.ttl_secs(), 2, "etcd's minimum TTL is enforced");
        assert!(c.tls.is_none() && c.auth.is_none());
        d.host_id = Some("h1".into());
        d.etcd_state_file = Some("/other.json".into());
        let c = EtcdConfig::from_daemon(&d, "node7", state).unwrap();
        assert_eq!(
            (c.host_id.as_str(), c.state_path.as_path()),
            ("h1", Path::new("/other.json"))
        );
    }

    #[test]
    fn loose_password_file_modes_are_noticed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "x\n").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(loose_mode(&pw), None);
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(loose_mode(&pw), Some(0o644));
    }

    #[test]
    fn tls_and_auth_settings() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\nignored\n").unwrap();
        let mut d = DaemonConfig {
            etcd_username: Some("vm".into()),
            etcd_password_file: Some(pw.to_string_lossy().into_owned()),
            etcd_ca_file: Some("/ca.pem".into()),
            ..DaemonConfig::default()
        };
        let c = EtcdConfig::from_daemon(&d, "h", Path::new("/s")).unwrap();
        assert_eq!(c.auth, Some(("vm".into(), "s3cret".into())));
        assert_eq!(
            c.tls.as_ref().and_then(|t| t.ca.clone()),
            Some("/ca.pem".into())
        );
        // A missing CA file is reported when the options are built.
        let err = c.connect_options().unwrap_err().to_string();
        assert!(err.contains("/ca.pem"), "{err}");
        d.etcd_cert_file = Some("/c.pem".into());
        let err = EtcdConfig::from_daemon(&d, "h", Path::new("/s")).unwrap_err();
        assert!(err.to_string().contains("set together"), "{err}");
        d.etcd_cert_file = None;
        d.etcd_password_file = None;
        let err = EtcdConfig::from_daemon(&d, "h", Path::new("/s")).unwrap_err();
        assert!(err.to_string().contains("etcd_password_file"), "{err}");
        std::fs::write(&pw, "").unwrap();
        d.etcd_password_file = Some(pw.to_string_lossy().into_owned());
        let err = EtcdConfig::from_daemon(&d, "h", Path::new("/s")).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }
}
