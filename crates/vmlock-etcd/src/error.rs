//! Errors of the arbiter's own API (start, queries). The lock hook itself
//! reports through [`lockspace::Error`]'s `ClusterBusy` and `Cluster`.

use std::path::PathBuf;

/// Why the arbiter could not start or answer a query.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// A configuration value is unusable.
    #[error("invalid etcd configuration: {0}")]
    Config(String),
    /// The tokio runtime could not be built.
    #[error("cannot start the etcd client runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The durable record could not be read or written.
    #[error("etcd state file {path}: {source}")]
    Record {
        /// The record path.
        path: PathBuf,
        /// The I/O or parse error.
        #[source]
        source: std::io::Error,
    },
    /// Another live daemon owns the durable record.
    #[error(
        "etcd state file {path} is in use by {holder}: every vmlockd needs an etcd_state_file of its own"
    )]
    StateBusy {
        /// The record path.
        path: PathBuf,
        /// Who holds its lock, as its lock file says.
        holder: String,
    },
    /// The durable record belongs to another host.
    #[error(
        "etcd state file {path} was written for host_id {recorded}, not {host_id}: it may name another host's running VMs, so it is neither adopted nor overwritten (give this daemon an etcd_state_file of its own, or remove the file if {recorded} no longer runs here)"
    )]
    ForeignRecord {
        /// The record path.
        path: PathBuf,
        /// The host id in the record.
        recorded: String,
        /// Ours.
        host_id: String,
    },
    /// An etcd call failed.
    #[error("etcd {op} failed: {source}")]
    Etcd {
        /// The operation.
        op: &'static str,
        /// The client error.
        #[source]
        source: etcd_client::Error,
    },
    /// An etcd call did not answer in time.
    #[error("etcd {op} timed out after {ms} ms")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// The deadline in milliseconds.
        ms: u128,
    },
}
