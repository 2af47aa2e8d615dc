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
