//! `virtlockd.conf`: the daemon's own config (docs/protocol.md §8.2), plus the vmlock-only keys.
//!
//! Keys are read in the order of [`KEYS`], which for libvirt's five keys is the order of
//! `lock_daemon_config.c`, so a file with several bad values fails on the same key as the C
//! daemon. Unknown keys are ignored with a warning; libvirt ignores them silently.

use std::path::Path;

use crate::error::{ConfError, Warning};
use crate::file::read_file;
use crate::keys::{self, Key};
use crate::syntax;

/// How the daemon takes new locks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LockKindSetting {
    /// Open file description locks (`F_OFD_SETLK`); per fd, so safe within one process.
    #[default]
    Ofd,
    /// Classic POSIX record locks (`F_SETLK`), as libvirt's virtlockd takes them.
    Posix,
}

impl LockKindSetting {
    /// The spelling in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            LockKindSetting::Ofd => "ofd",
            LockKindSetting::Posix => "posix",
        }
    }
}

/// Everything `virtlockd.conf` can set. `Default` gives the values of libvirt's code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// 1 debug, 2 info, 3 warning, 4 error; 0 leaves the default (3).
    pub log_level: u32,
    /// libvirt log filters, e.g. `"1:locking 4:object"`.
    pub log_filters: Option<String>,
    /// libvirt log outputs, e.g. `"3:syslog:virtlockd"`.
    pub log_outputs: Option<String>,
    /// Most connections on the main socket (one per running VM).
    pub max_clients: u32,
    /// Most connections on the admin socket.
    pub admin_max_clients: u32,
    /// vmlock: directory for both sockets, with their usual file names.
    pub unix_sock_dir: Option<String>,
    /// vmlock: kind of lock taken for new leases.
    pub lock_kind: LockKindSetting,
    /// vmlock: delay between SIGTERM and SIGKILL when a lock holder's connection closes.
    pub holder_kill_grace_ms: u32,
    /// vmlock: append who holds a resource to the text of a refused
    /// acquire (`refusal_names_holder = 0`: virtlockd's exact text).
    pub refusal_names_holder: bool,
    /// vmlock: serve Prometheus metrics at `HOST:PORT` or on a UNIX socket
    /// (an absolute path); off when unset.
    pub metrics_listen: Option<String>,
    /// vmlock: `"file"` (fcntl locks, like libvirt), `"etcd"` or `"dlm"`.
    pub lock_backend: String,
    /// vmlock (etcd backend): endpoints, e.g. `["http://10.0.0.1:2379"]`.
    pub etcd_endpoints: Vec<String>,
    /// vmlock (etcd backend): key prefix.
    pub etcd_prefix: String,
    /// vmlock (etcd backend): this host's name in the cluster; unset means the hostname.
    pub host_id: Option<String>,
    /// vmlock (etcd backend): lease time to live in seconds.
    pub lease_ttl: u32,
    /// vmlock (etcd backend): `"kill"` or `"pause"` the VMs when the lease is lost.
    pub on_lease_loss: String,
    /// vmlock (etcd backend): the durable record of this host's lease and
    /// locks, read back after a crash or restart (orphan adoption).
    pub etcd_state_file: Option<String>,
    /// vmlock (etcd backend): a kernel watchdog device (e.g.
    /// `/dev/watchdog`) the fence helper arms and pets only while the lease
    /// is proven, so a host frozen as a whole is reset before the lease can
    /// expire on the other hosts.
    pub watchdog_device: Option<String>,
    /// vmlock (etcd backend): PEM CA bundle that signs etcd's server
    /// certificates; setting it (or a client certificate) turns TLS on.
    pub etcd_ca_file: Option<String>,
    /// vmlock (etcd backend): PEM client certificate (mutual TLS).
    pub etcd_cert_file: Option<String>,
    /// vmlock (etcd backend): PEM private key of `etcd_cert_file`.
    pub etcd_key_file: Option<String>,
    /// vmlock (etcd backend): etcd user for password authentication.
    pub etcd_username: Option<String>,
    /// vmlock (etcd backend): file whose first line is that user's password
    /// (kept out of the config so the config can stay world-readable).
    pub etcd_password_file: Option<String>,
    /// vmlock (DLM backend): the kernel DLM lockspace every host uses.
    pub dlm_lockspace: String,
    /// vmlock (DLM backend): this daemon's lock-information file, read
    /// back at start to adopt the orphan DLM locks.
    pub dlm_lock_info_file: Option<String>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            log_level: 0,
            log_filters: None,
            log_outputs: None,
            max_clients: 1024,
            admin_max_clients: 5000,
            unix_sock_dir: None,
            lock_kind: LockKindSetting::Ofd,
            holder_kill_grace_ms: 1600,
            refusal_names_holder: true,
            metrics_listen: None,
            lock_backend: "file".to_owned(),
            etcd_endpoints: Vec::new(),
            etcd_prefix: "/vmlock".to_owned(),
            host_id: None,
            lease_ttl: 10,
            on_lease_loss: "kill".to_owned(),
            etcd_state_file: None,
            watchdog_device: None,
            etcd_ca_file: None,
            etcd_cert_file: None,
            etcd_key_file: None,
            etcd_username: None,
            etcd_password_file: None,
            dlm_lockspace: "vmlock".to_owned(),
            dlm_lock_info_file: None,
        }
    }
}

/// The known keys, in the order they are read. Add new keys here (and to
/// `dist/virtlockd.conf`, which a test checks).
const KEYS: &[Key<DaemonConfig>] = &[
    // libvirt's keys. log_level is limited to 0..=4 here; libvirt refuses other values a
    // little later, when it sets up logging ("Failed to set logging priority").
    Key::uint_in("log_level", 0, 4, |c, v| c.log_level = v),
    Key::string("log_filters", |c, v| c.log_filters = Some(v)),
    Key::string("log_outputs", |c, v| c.log_outputs = Some(v)),
    Key::uint("max_clients", |c, v| c.max_clients = v),
    Key::uint("admin_max_clients", |c, v| c.admin_max_clients = v),
    // vmlock additions.
    Key::abs_path("unix_sock_dir", |c, v| c.unix_sock_dir = Some(v)),
    Key::choice("lock_kind", &["ofd", "posix"], set_lock_kind),
    Key::uint("holder_kill_grace_ms", |c, v| c.holder_kill_grace_ms = v),
    Key::boolean("refusal_names_holder", |c, v| c.refusal_names_holder = v),
    Key::string("metrics_listen", |c, v| c.metrics_listen = Some(v)),
    Key::choice("lock_backend", &["file", "etcd", "dlm"], |c, v| {
        c.lock_backend = v.to_owned()
    }),
    Key::string_list("etcd_endpoints", |c, v| c.etcd_endpoints = v),
    Key::string("etcd_prefix", |c, v| c.etcd_prefix = v),
    Key::string("host_id", |c, v| c.host_id = Some(v)),
    Key::uint_in("lease_ttl", 1, u32::MAX, |c, v| c.lease_ttl = v),
    Key::choice("on_lease_loss", &["kill", "pause"], |c, v| {
        c.on_lease_loss = v.to_owned()
    }),
    Key::abs_path("etcd_state_file", |c, v| c.etcd_state_file = Some(v)),
    Key::abs_path("watchdog_device", |c, v| c.watchdog_device = Some(v)),
    Key::abs_path("etcd_ca_file", |c, v| c.etcd_ca_file = Some(v)),
    Key::abs_path("etcd_cert_file", |c, v| c.etcd_cert_file = Some(v)),
    Key::abs_path("etcd_key_file", |c, v| c.etcd_key_file = Some(v)),
    Key::string("etcd_username", |c, v| c.etcd_username = Some(v)),
    Key::abs_path("etcd_password_file", |c, v| c.etcd_password_file = Some(v)),
    Key::string("dlm_lockspace", |c, v| c.dlm_lockspace = v),
    Key::abs_path("dlm_lock_info_file", |c, v| c.dlm_lock_info_file = Some(v)),
];

fn set_lock_kind(c: &mut DaemonConfig, v: &str) {
    c.lock_kind = if v == "posix" {
        LockKindSetting::Posix
    } else {
        LockKindSetting::Ofd
    };
}

impl DaemonConfig {
    /// The shipped `dist/virtlockd.conf`: every key documented and commented out.
    pub const EMBEDDED_DEFAULT: &'static str = include_str!("../../../dist/virtlockd.conf");

    /// The names of every key this config knows, in the order they are read.
    pub fn keys() -> impl Iterator<Item = &'static str> {
        KEYS.iter().map(|k| k.name)
    }

    /// Parses the text of a `virtlockd.conf`.
    pub fn parse(text: &str) -> Result<(DaemonConfig, Vec<Warning>), ConfError> {
        Self::from_file(&syntax::parse(text)?)
    }

    /// Builds the config from an already parsed file.
    pub fn from_file(file: &syntax::ConfFile) -> Result<(DaemonConfig, Vec<Warning>), ConfError> {
        let mut config = DaemonConfig::default();
        let warnings = keys::apply(file, KEYS, &mut config)?;
        Ok((config, warnings))
    }

    /// Reads and parses a file that must exist (`virtlockd -f FILE`).
    pub fn load(path: &Path) -> Result<(DaemonConfig, Vec<Warning>), ConfError> {
        let bytes = read_file(path)?;
        Self::from_file(&syntax::parse_bytes(&bytes)?)
    }

    /// Like [`load`](Self::load), but a missing file gives the defaults (the implicit
    /// default path).
    pub fn load_optional(path: &Path) -> Result<(DaemonConfig, Vec<Warning>), ConfError> {
        match Self::load(path) {
            Err(ConfError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok((DaemonConfig::default(), Vec::new()))
            }
            other => other,
        }
    }
}
