//! The cluster back ends behind one hook (`lock_backend`): `"file"` has
//! none, `"etcd"` ([`crate::cluster`], cargo feature `etcd`) and `"dlm"`
//! ([`crate::dlm`]) each give the engine an arbiter, take over what they
//! adopted at start, and hear of registrations.

use std::sync::Arc;

use lockspace::{ClusterArbiter, Engine};

use crate::session::ClusterHooks;

/// What a cluster back end offers the daemon.
pub(crate) trait ClusterBackend: Send + Sync + std::fmt::Debug {
    /// The engine's arbiter.
    fn arbiter(&self) -> Arc<dyn ClusterArbiter>;
    /// Takes over the locks adopted at start, once the engine exists.
    fn attach(&self, engine: &Arc<Engine>);
    /// The dispatcher's hooks.
    fn hooks(&self) -> Arc<dyn ClusterHooks>;
}

/// The running back end.
#[derive(Debug)]
pub(crate) struct Backend(Box<dyn ClusterBackend>);

impl Backend {
    pub(crate) fn arbiter(&self) -> Arc<dyn ClusterArbiter> {
        self.0.arbiter()
    }
    pub(crate) fn attach(&self, engine: &Arc<Engine>) {
        self.0.attach(engine);
    }
    pub(crate) fn hooks(&self) -> Arc<dyn ClusterHooks> {
        self.0.hooks()
    }
}

#[cfg(feature = "etcd")]
impl ClusterBackend for crate::cluster::Cluster {
    fn arbiter(&self) -> Arc<dyn ClusterArbiter> {
        crate::cluster::Cluster::arbiter(self)
    }
    fn attach(&self, engine: &Arc<Engine>) {
        crate::cluster::Cluster::attach(self, engine);
    }
    fn hooks(&self) -> Arc<dyn ClusterHooks> {
        crate::cluster::Cluster::hooks(self)
    }
}

impl ClusterBackend for crate::dlm::DlmBackend {
    fn arbiter(&self) -> Arc<dyn ClusterArbiter> {
        crate::dlm::DlmBackend::arbiter(self)
    }
    fn attach(&self, engine: &Arc<Engine>) {
        crate::dlm::DlmBackend::attach(self, engine);
    }
    fn hooks(&self) -> Arc<dyn ClusterHooks> {
        crate::dlm::DlmBackend::hooks(self)
    }
}

/// Why the configured back end did not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// It failed to start.
    #[error("cannot start the {backend} back end")]
    Failed {
        /// "DLM" or "etcd".
        backend: &'static str,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// This build does not have it.
    #[error(
        "lock_backend = \"{0}\" needs a vmlockd built with the \"{0}\" feature (cargo build --features {0})"
    )]
    NotBuilt(String),
}

/// Starts the configured back end (before the engine: adoption may have
/// to stop holders at once). Never falls back to local locks when
/// cluster-wide ones were asked for.
pub(crate) fn start_cluster(
    conf: &vmlock_conf::DaemonConfig,
    privileged: bool,
) -> Result<Option<Backend>, StartError> {
    match conf.lock_backend.as_str() {
        "file" => Ok(None),
        "dlm" => crate::dlm::start(conf, privileged)
            .map(|b| Some(Backend(Box::new(b))))
            .map_err(|e| StartError::Failed {
                backend: "DLM",
                source: e.into(),
            }),
        #[cfg(feature = "etcd")]
        "etcd" => crate::cluster::start(conf, privileged)
            .map(|c| Some(Backend(Box::new(c))))
            .map_err(|e| StartError::Failed {
                backend: "etcd",
                source: e.into(),
            }),
        other => Err(StartError::NotBuilt(other.to_string())),
    }
}
