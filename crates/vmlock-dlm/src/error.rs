//! Why the back end cannot start.

/// A start failure: the daemon refuses to run without the cluster locks it
/// was configured for.
#[derive(Debug, thiserror::Error)]
pub enum DlmStartError {
    /// A configuration value is unusable.
    #[error("invalid DLM configuration: {0}")]
    Config(String),
    /// libdlm cannot be loaded.
    #[error("{0}")]
    Library(String),
    /// The kernel DLM is not there (module not loaded, no control device).
    #[error(
        "the kernel DLM is not available ({0}): load the dlm module (modprobe dlm) and mount configfs"
    )]
    NoKernel(String),
    /// The cluster daemon is not running (or the node is not in the cluster).
    #[error(
        "cannot join DLM lockspace {lockspace:?} ({why}): is dlm_controld running, with corosync, and is the cluster quorate?"
    )]
    NoCluster {
        /// The lockspace.
        lockspace: String,
        /// The DLM's error.
        why: String,
    },
    /// Joining did not finish in time (no quorum, recovery stuck).
    #[error(
        "joining DLM lockspace {lockspace:?} did not finish in {secs} s: is the cluster quorate (corosync-quorumtool -s)?"
    )]
    JoinTimeout {
        /// The lockspace.
        lockspace: String,
        /// The time waited.
        secs: u64,
    },
    /// The lock-information file cannot be read or written.
    #[error("lock-information file: {0}")]
    Info(String),
}
