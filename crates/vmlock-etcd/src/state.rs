//! The arbiter's bookkeeping and the state shared by its threads.
//!
//! ```text
//! Shared ─ inner: Mutex<Inner>   lease id, deadline, held locks, cleanup lists
//!        └ writer: Mutex<u64>    last record sequence written (file I/O
//!                                happens under this lock only, never under
//!                                `inner`, so the watchdog never waits on disk)
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use etcd_client::Client;
use lockspace::ResourceKey;
use tokio::runtime::Handle;

use crate::EtcdConfig;
use crate::fence::{Fencer, LostLock};
use crate::record::{Record, RecordLock};

/// One (resource, owner) this host holds or is acquiring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    pub etcd_key: String,
    pub shared: bool,
    pub count: u32,
    pub start_time: Option<u64>,
    /// The etcd transaction has not answered yet.
    pub pending: bool,
}

/// Bookkeeping guarded by one mutex (memory only, never I/O).
#[derive(Debug)]
pub(crate) struct Inner {
    /// The lease in use; `None` after fencing until a new one is granted.
    pub lease: Option<i64>,
    /// Self-fencing deadline for `lease`.
    pub deadline: Instant,
    /// The TTL `lease` was granted with (an adopted lease may differ from
    /// the configured one).
    pub granted_ttl: i64,
    pub locks: BTreeMap<(ResourceKey, u32), Held>,
    /// Keys whose delete failed; retried by the cleanup task.
    pub orphans: BTreeSet<String>,
    /// Orphans whose delete is in flight.
    pub cleaning: BTreeSet<String>,
    /// Leases given up after fencing; revoked by the cleanup task.
    pub stale_leases: BTreeSet<i64>,
    /// VM names the daemon told us, by owner pid.
    pub vms: HashMap<u32, (String, Option<String>)>,
    /// Bumped on every change that must reach the record.
    pub seq: u64,
    /// Round trip of the last answered keepalive.
    pub last_rtt: Option<std::time::Duration>,
    /// When the last keepalive was answered.
    pub last_renewal: Option<Instant>,
    /// Times this host fenced its lock holders (lease lost).
    pub fences: u64,
}

impl Inner {
    pub fn new(lease: Option<i64>, deadline: Instant) -> Inner {
        Inner {
            lease,
            deadline,
            granted_ttl: 0,
            locks: BTreeMap::new(),
            orphans: BTreeSet::new(),
            cleaning: BTreeSet::new(),
            stale_leases: BTreeSet::new(),
            vms: HashMap::new(),
            seq: 0,
            last_rtt: None,
            last_renewal: None,
            fences: 0,
        }
    }

    /// The record as of now.
    pub fn record(&self, host_id: &str) -> Record {
        let locks = self
            .locks
            .iter()
            .map(|((key, pid), h)| RecordLock {
                key: h.etcd_key.clone(),
                lockspace: key.lockspace.clone(),
                name: key.name.clone(),
                shared: h.shared,
                pid: *pid,
                start_time: h.start_time,
                count: h.count,
            })
            .collect();
        Record {
            host_id: host_id.to_owned(),
            lease_id: self.lease,
            locks,
        }
    }

    /// Drops every lock (fencing): returns the owner pids (deduplicated)
    /// and the granted locks that were lost.
    pub fn take_all(&mut self) -> (Vec<u32>, Vec<LostLock>) {
        let locks = std::mem::take(&mut self.locks);
        let mut pids: Vec<u32> = locks.keys().map(|(_, pid)| *pid).collect();
        pids.sort_unstable();
        pids.dedup();
        let lost = locks
            .into_iter()
            .filter(|(_, h)| !h.pending)
            .map(|((key, owner), h)| LostLock {
                key,
                owner,
                shared: h.shared,
            })
            .collect();
        self.seq += 1;
        (pids, lost)
    }
}

/// Everything the arbiter's threads and tasks share.
pub(crate) struct Shared {
    pub cfg: EtcdConfig,
    pub client: Client,
    pub handle: Handle,
    pub fence: Arc<dyn Fencer>,
    pub inner: Mutex<Inner>,
    pub writer: Mutex<u64>,
    /// Orders [`Fencer::guard`] calls, each made from the bookkeeping as
    /// it is at that moment, so the fence's view ends up as the truth.
    pub guards: Mutex<()>,
    pub stop: AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("cfg", &self.cfg)
            .field("inner", &self.inner)
            .field("stop", &self.stop)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The bookkeeping; a poisoned lock is still usable (no invariant
    /// spans a panic: every update is a single map operation).
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Tells the fence whether `owner` holds any lock (pending included).
    pub fn sync_guard(&self, owner: u32) -> Result<(), String> {
        let _order = self.guards.lock().unwrap_or_else(|p| p.into_inner());
        let held = self.lock().locks.keys().any(|(_, p)| *p == owner);
        self.fence.guard(owner, held)
    }

    /// Every owner holding a lock, deduplicated.
    pub fn owners(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.lock().locks.keys().map(|(_, p)| *p).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Writes the record if nothing newer was written meanwhile.
    pub fn persist(&self) -> std::io::Result<()> {
        let mut written = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let (seq, rec) = {
            let g = self.lock();
            (g.seq, g.record(&self.cfg.host_id))
        };
        if seq < *written {
            return Ok(());
        }
        rec.save(&self.cfg.state_path)?;
        *written = seq;
        Ok(())
    }

    /// `persist`, logging instead of failing (for paths that cannot fail).
    pub fn persist_logged(&self) {
        if let Err(e) = self.persist() {
            tracing::error!(path = %self.cfg.state_path.display(), "cannot write etcd state: {e}");
        }
    }
}
