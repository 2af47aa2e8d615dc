//! [`EtcdArbiter`]: construction, start-up adoption, queries, shutdown.
//!
//! ```text
//! start: validate ─► runtime (1 worker) ─► connect ─► read record
//!        ─► reconcile (adopt / fence lapsed owners) ─► grant lease if none
//!        ─► delete dead owners' keys ─► write record
//!        ─► spawn keepalive + cleanup tasks, watchdog thread
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use etcd_client::Client;
use lockspace::ResourceKey;
use tokio::runtime::Runtime;

use crate::adopt::{self, AdoptedLock, Adoption};
use crate::keys::{self, Holder};
use crate::record::Record;
use crate::rpc::{call, is_permission_denied};
use crate::state::{Inner, Shared};
use crate::statelock::StateLock;
use crate::{EtcdConfig, EtcdError, Fencer, lease};

/// The etcd cluster arbiter: plug it into the engine as its
/// [`lockspace::ClusterArbiter`].
#[derive(Debug)]
pub struct EtcdArbiter {
    pub(crate) sh: Arc<Shared>,
    rt: Mutex<Option<Runtime>>,
    watchdog: Mutex<Option<JoinHandle<()>>>,
    adopted: Vec<AdoptedLock>,
    /// Each endpoint's last probe (`health.rs`).
    health: Arc<crate::health::Board>,
    /// Held until the arbiter is dropped: the record is ours alone.
    _state_lock: StateLock,
}

impl EtcdArbiter {
    /// Connects, adopts what the durable record allows, and starts the
    /// lease machinery. Fails if etcd cannot be reached within
    /// `op_timeout`; in that case recorded owners that are still running
    /// are fenced first (nobody can vouch for their lease any more).
    pub fn start(cfg: EtcdConfig, fence: Arc<dyn Fencer>) -> Result<Arc<EtcdArbiter>, EtcdError> {
        validate(&cfg)?;
        // Before the record is read: it is ours alone from here on.
        let state_lock = StateLock::take(&cfg.state_path, &cfg.host_id)?;
        let record = Record::load(&cfg.state_path).map_err(|source| EtcdError::Record {
            path: cfg.state_path.clone(),
            source,
        })?;
        if !record.host_id.is_empty() && record.host_id != cfg.host_id {
            return Err(EtcdError::ForeignRecord {
                path: cfg.state_path.clone(),
                recorded: record.host_id,
                host_id: cfg.host_id,
            });
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("vmlock-etcd")
            .enable_all()
            .build()
            .map_err(EtcdError::Runtime)?;
        let prepared = connect(&cfg, &rt).and_then(|client| prepare(&cfg, &rt, client, &record));
        let (client, adoption) = match prepared {
            Ok(v) => v,
            Err(e) => {
                let lapsed = adopt::lapsed(&record).to_fence;
                if !lapsed.is_empty() {
                    fence.fence_pids(&lapsed);
                }
                rt.shutdown_background();
                return Err(e);
            }
        };
        if !adoption.to_fence.is_empty() {
            fence.fence_pids(&adoption.to_fence);
        }
        launch(cfg, rt, client, fence, adoption, state_lock)
    }

    /// The locks adopted from the previous run (the daemon re-creates its
    /// local state for them and watches their pids).
    pub fn adopted(&self) -> &[AdoptedLock] {
        &self.adopted
    }

    /// The lease in use; `None` between a fence and the next grant.
    pub fn lease_id(&self) -> Option<i64> {
        self.sh.lock().lease
    }

    /// The fencing timeline of the current lease (`None` between a fence
    /// and the next grant).
    pub fn deadlines(&self) -> Option<crate::Deadlines> {
        let g = self.sh.lock();
        g.lease.map(|_| self.sh.cfg.deadlines(g.deadline))
    }

    /// Fences now, as if the lease deadline had passed: every holder is
    /// stopped and its locks are given up (the daemon's answer to losing
    /// its fence helper for good).
    pub fn expire(&self) {
        self.sh.lock().deadline = Instant::now();
    }

    /// The lease's state, for the daemon's status and metrics.
    pub fn status(&self) -> EtcdStatus {
        let g = self.sh.lock();
        let now = std::time::Instant::now();
        let period = self.sh.cfg.keepalive_period();
        EtcdStatus {
            host_id: self.sh.cfg.host_id.clone(),
            endpoints: self.sh.cfg.endpoints.clone(),
            lease_id: g.lease,
            time_left: g.lease.map(|_| g.deadline.saturating_duration_since(now)),
            last_rtt: g.last_rtt,
            // Answered within two keepalive periods: etcd is reachable.
            healthy: g.lease.is_some()
                && g.last_renewal
                    .is_some_and(|t| now.saturating_duration_since(t) <= 2 * period),
            fences: g.fences,
            locks: g.locks.len(),
            adopted: self.adopted.len(),
            endpoint_health: self.health.snapshot(),
        }
    }

    /// Records the VM name and UUID of an owner, shown to other hosts in
    /// the lock keys it acquires from now on.
    pub fn set_vm(&self, owner: u32, vm: &str, uuid: Option<&str>) {
        let entry = (vm.to_owned(), uuid.map(str::to_owned));
        self.sh.lock().vms.insert(owner, entry);
    }

    /// Who holds a resource, cluster-wide.
    pub fn holders(&self, key: &ResourceKey) -> Result<Vec<Holder>, EtcdError> {
        crate::query::fetch(&self.sh.handle, &self.sh.cfg, &self.sh.client, key)
    }

    /// Stops the lease machinery. With `revoke`, also revokes the lease so
    /// every lock of this host is released in etcd at once (a clean stop
    /// with no VMs left). Without it the lease runs out after its TTL unless
    /// a new arbiter adopts it from the record (daemon re-exec).
    pub fn shutdown(&self, revoke: bool) {
        self.sh.stop.store(true, Ordering::SeqCst);
        if revoke && let Some(id) = self.lease_id() {
            let lc = self.sh.client.lease_client();
            let out = call(
                &self.sh.handle,
                self.sh.cfg.op_timeout,
                "revoke",
                move || {
                    let mut lc = lc.clone();
                    async move { lc.revoke(id).await }
                },
            );
            if let Err(e) = out {
                tracing::warn!("cannot revoke etcd lease {id}: {e}");
            }
        }
        let wd = self
            .watchdog
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(wd) = wd {
            let _ = wd.join();
        }
        if let Some(rt) = self.rt.lock().unwrap_or_else(|p| p.into_inner()).take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for EtcdArbiter {
    fn drop(&mut self) {
        self.shutdown(false);
    }
}

fn validate(cfg: &EtcdConfig) -> Result<(), EtcdError> {
    if cfg.endpoints.is_empty() {
        return Err(EtcdError::Config("etcd_endpoints is empty".into()));
    }
    if !keys::valid_host_id(&cfg.host_id) {
        let msg = format!(
            "host_id {:?} must be non-empty and contain no '/'",
            cfg.host_id
        );
        return Err(EtcdError::Config(msg));
    }
    Ok(())
}

fn connect(cfg: &EtcdConfig, rt: &Runtime) -> Result<Client, EtcdError> {
    let eps = cfg.endpoints.clone();
    let opts = cfg.connect_options()?;
    let client = call(rt.handle(), cfg.op_timeout, "connect", move || {
        let (eps, opts) = (eps.clone(), opts.clone());
        async move { Client::connect(eps, Some(opts)).await }
    })?;
    // The channel connects lazily: prove etcd answers before going on. The
    // probe reads a key under our prefix, the only range a least-privilege
    // etcd user is granted.
    let probe = client.kv_client();
    let key = format!("{}/locks/", cfg.prefix);
    let probed = call(rt.handle(), cfg.op_timeout, "get", move || {
        let (mut probe, key) = (probe.clone(), key.clone());
        async move { probe.get(key, None).await }
    });
    match probed {
        Err(EtcdError::Etcd { source, .. }) if is_permission_denied(&source) => {
            let user = cfg.auth.as_ref().map_or("(anonymous)", |a| a.0.as_str());
            Err(EtcdError::Config(format!(
                "etcd user {user} may not read {}/: grant it read-write on that prefix ({source})",
                cfg.prefix
            )))
        }
        Err(e) => Err(e),
        Ok(_) => Ok(client),
    }
}

/// Reconciles with the record and makes sure there is a lease.
fn prepare(
    cfg: &EtcdConfig,
    rt: &Runtime,
    client: Client,
    record: &Record,
) -> Result<(Client, Adoption), EtcdError> {
    let mut adoption = adopt::reconcile(cfg, &client, rt.handle(), record)?;
    if adoption.lease.is_none() {
        let lc = client.lease_client();
        let ttl = cfg.ttl_secs();
        let sent = Instant::now();
        let r = call(rt.handle(), cfg.op_timeout, "lease grant", move || {
            let mut lc = lc.clone();
            async move { lc.grant(ttl, None).await }
        })?;
        adoption.lease = Some((r.id(), sent + cfg.protected_for(r.ttl()), r.ttl()));
    }
    Ok((client, adoption))
}

/// Builds the shared state (dead owners' keys queued for deletion), then
/// spawns the watchdog thread and the tasks.
fn launch(
    cfg: EtcdConfig,
    rt: Runtime,
    client: Client,
    fence: Arc<dyn Fencer>,
    adoption: Adoption,
    state_lock: StateLock,
) -> Result<Arc<EtcdArbiter>, EtcdError> {
    let (lease, deadline, ttl) = adoption
        .lease
        .map_or((None, Instant::now(), 0), |(l, d, t)| (Some(l), d, t));
    let mut inner = Inner::new(lease, deadline);
    inner.granted_ttl = ttl;
    inner.locks = adoption.locks;
    inner.orphans.extend(adoption.to_delete);
    inner.seq = 1;
    let sh = Arc::new(Shared {
        cfg,
        client,
        handle: rt.handle().clone(),
        fence,
        inner: Mutex::new(inner),
        writer: Mutex::new(0),
        guards: Mutex::new(()),
        stop: AtomicBool::new(false),
    });
    sh.persist_logged();
    // The fence outside the daemon learns the adopted owners (and forgets
    // any other an earlier daemon left it) before anything else happens.
    sh.fence
        .resync(&sh.owners(), lease.map(|_| sh.cfg.deadlines(deadline)));
    let watchdog = match spawn_watchdog(&sh) {
        Ok(w) => w,
        Err(e) => {
            rt.shutdown_background();
            return Err(EtcdError::Runtime(e));
        }
    };
    rt.spawn(lease::keepalive_task(sh.clone()));
    rt.spawn(lease::cleanup_task(sh.clone()));
    let health = Arc::new(crate::health::Board::new(&sh.cfg.endpoints));
    crate::health::spawn(&sh, &health);
    Ok(Arc::new(EtcdArbiter {
        health,
        sh,
        rt: Mutex::new(Some(rt)),
        watchdog: Mutex::new(Some(watchdog)),
        adopted: adoption.adopted,
        _state_lock: state_lock,
    }))
}

fn spawn_watchdog(sh: &Arc<Shared>) -> std::io::Result<JoinHandle<()>> {
    let sh = sh.clone();
    std::thread::Builder::new()
        .name("vmlock-etcd-watchdog".into())
        .spawn(move || lease::watchdog(sh))
}

/// What [`EtcdArbiter::status`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdStatus {
    /// This host's name in the cluster.
    pub host_id: String,
    /// The etcd endpoints configured.
    pub endpoints: Vec<String>,
    /// The lease in use; `None` between a fence and the next grant.
    pub lease_id: Option<i64>,
    /// Time until this host fences itself unless a keepalive is answered.
    pub time_left: Option<std::time::Duration>,
    /// Round trip of the last answered keepalive.
    pub last_rtt: Option<std::time::Duration>,
    /// Whether a keepalive was answered within the last two periods.
    pub healthy: bool,
    /// Times this host fenced its lock holders since the arbiter started.
    pub fences: u64,
    /// Cluster locks held by this host.
    pub locks: usize,
    /// Locks adopted from the previous run.
    pub adopted: usize,
    /// Each endpoint's last probe, in configuration order.
    pub endpoint_health: Vec<crate::EndpointHealth>,
}
