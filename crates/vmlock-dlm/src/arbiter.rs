//! The arbiter: DLM locks per (resource, owner), the lock-information
//! file, adoption at start.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lockspace::{ClusterArbiter, Error, ResourceKey};
use tracing::{info, warn};
use vmlock_sys::dlm::{DlmError, LKF_NOQUEUE, LKF_PERSISTENT, Lockspace, Mode};

use crate::error::DlmStartError;
use crate::info::{InfoEntry, LockInfo};
use crate::names::resource_name;

/// What the arbiter needs of the DLM (the kernel's through libdlm, or a
/// stand-in in tests).
pub trait Dlm: Send + Sync + std::fmt::Debug {
    /// A new lock, `LKF_NOQUEUE | LKF_PERSISTENT`; its lock id.
    fn lock(&self, resource: &[u8], mode: Mode) -> Result<u32, DlmError>;
    /// Adopts an orphan of that name and mode; its new lock id.
    fn adopt(&self, resource: &[u8], mode: Mode) -> Result<u32, DlmError>;
    /// Releases a lock of this process.
    fn unlock(&self, lkid: u32) -> Result<(), DlmError>;
}

impl Dlm for Lockspace {
    fn lock(&self, resource: &[u8], mode: Mode) -> Result<u32, DlmError> {
        Lockspace::lock(self, resource, mode, LKF_NOQUEUE | LKF_PERSISTENT)
    }
    fn adopt(&self, resource: &[u8], mode: Mode) -> Result<u32, DlmError> {
        Lockspace::adopt(self, resource, mode)
    }
    fn unlock(&self, lkid: u32) -> Result<(), DlmError> {
        Lockspace::unlock(self, lkid)
    }
}

/// The back end's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlmConfig {
    /// The DLM lockspace (`dlm_lockspace`); every host of the cluster uses
    /// the same one.
    pub lockspace: String,
    /// The lock-information file (`dlm_lock_info_file`), one per daemon.
    pub info_path: PathBuf,
    /// How long joining the lockspace may take before the start fails.
    pub join_timeout: Duration,
}

impl DlmConfig {
    /// The settings of `virtlockd.conf`, with `default_info` when
    /// `dlm_lock_info_file` is unset.
    pub fn from_daemon(conf: &vmlock_conf::DaemonConfig, default_info: &Path) -> DlmConfig {
        DlmConfig {
            lockspace: conf.dlm_lockspace.clone(),
            info_path: conf
                .dlm_lock_info_file
                .as_ref()
                .map_or_else(|| default_info.to_owned(), PathBuf::from),
            join_timeout: Duration::from_secs(60),
        }
    }
}

/// A lock the arbiter took over at start, for the daemon to lock locally
/// and to watch its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptedLock {
    /// The resource.
    pub key: ResourceKey,
    /// The owner pid (still running).
    pub owner: u32,
    /// PR (true) or EX.
    pub shared: bool,
    /// Acquires not yet released.
    pub count: u32,
}

/// What happened at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Started {
    /// Orphans adopted for owners that still run (or locks taken again for
    /// them when the orphan was gone).
    pub adopted: Vec<AdoptedLock>,
    /// Orphans adopted and released because their owner had exited.
    pub released: Vec<(ResourceKey, u32)>,
    /// Locks of running owners that could be neither adopted nor taken
    /// again (held elsewhere now): their owners run unprotected and must
    /// be stopped.
    pub lost: Vec<AdoptedLock>,
}

#[derive(Debug, Clone)]
struct Held {
    lkid: u32,
    shared: bool,
    count: u32,
    owner_start: Option<u64>,
    /// Not granted yet (write-ahead entry).
    pending: bool,
}

#[derive(Debug, Default)]
struct Table {
    locks: BTreeMap<(ResourceKey, u32), Held>,
    vms: HashMap<u32, (String, Option<String>)>,
}

/// The DLM arbiter.
#[derive(Debug)]
pub struct DlmArbiter {
    dlm: Box<dyn Dlm>,
    cfg: DlmConfig,
    table: Mutex<Table>,
    started: Started,
}

const OWNER_CONFLICT: &str = "this owner's acquire is in progress or of the other mode";
const BUSY: &str = "the DLM lock is held in a conflicting mode";

fn cluster(key: &ResourceKey, why: impl Into<String>) -> Error {
    Error::Cluster {
        name: key.name.clone(),
        why: why.into(),
    }
}

/// The error a DLM failure of an acquire becomes on the wire: a refusal
/// (`EAGAIN` under `LKF_NOQUEUE`) is `ClusterBusy`, virtlockd's
/// RESOURCE_BUSY code as the etcd back end gives it; anything else is
/// `Cluster` naming the DLM's error.
pub(crate) fn acquire_error(key: &ResourceKey, e: &DlmError) -> Error {
    if e.is_busy() {
        return Error::ClusterBusy {
            name: key.name.clone(),
            why: BUSY.to_owned(),
        };
    }
    match e.errno() {
        Some(libc::EDEADLK) => cluster(key, format!("DLM deadlock: {e}")),
        Some(libc::ENOTCONN | libc::EUNATCH | libc::ENOENT) => cluster(
            key,
            format!("DLM: {e} (is dlm_controld running and the cluster quorate?)"),
        ),
        _ => cluster(key, format!("DLM: {e}")),
    }
}

fn mode(shared: bool) -> Mode {
    if shared { Mode::Pr } else { Mode::Ex }
}

impl DlmArbiter {
    /// Joins the lockspace (bounded by `cfg.join_timeout`) and adopts what
    /// the lock-information file lists.
    pub fn start(cfg: DlmConfig) -> Result<Arc<DlmArbiter>, DlmStartError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let name = cfg.lockspace.clone();
        std::thread::Builder::new()
            .name("vmlock-dlm-join".into())
            .spawn(move || {
                let _ = tx.send(Lockspace::open_or_create(&name));
            })
            .map_err(|e| DlmStartError::Config(format!("cannot start a thread: {e}")))?;
        let ls = match rx.recv_timeout(cfg.join_timeout) {
            Ok(Ok(ls)) => ls,
            Ok(Err(e)) => return Err(start_error(&cfg.lockspace, &e)),
            Err(_) => {
                return Err(DlmStartError::JoinTimeout {
                    lockspace: cfg.lockspace.clone(),
                    secs: cfg.join_timeout.as_secs(),
                });
            }
        };
        Self::with_dlm(cfg, Box::new(ls))
    }

    /// [`DlmArbiter::start`] on a given DLM (tests use a stand-in).
    pub fn with_dlm(cfg: DlmConfig, dlm: Box<dyn Dlm>) -> Result<Arc<DlmArbiter>, DlmStartError> {
        if let Some(dir) = cfg.info_path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| DlmStartError::Info(format!("{}: {e}", dir.display())))?;
        }
        let info =
            LockInfo::read(&cfg.info_path).map_err(|e| DlmStartError::Info(e.to_string()))?;
        if !info.dlm_lockspace.is_empty() && info.dlm_lockspace != cfg.lockspace {
            return Err(DlmStartError::Config(format!(
                "{} lists locks of DLM lockspace {:?}, not {:?}: adopt them with that lockspace first",
                cfg.info_path.display(),
                info.dlm_lockspace,
                cfg.lockspace
            )));
        }
        let mut arb = DlmArbiter {
            dlm,
            cfg,
            table: Mutex::new(Table::default()),
            started: Started::default(),
        };
        arb.adopt_all(info);
        arb.persist()
            .map_err(|e| DlmStartError::Info(e.to_string()))?;
        Ok(Arc::new(arb))
    }

    fn adopt_all(&mut self, info: LockInfo) {
        let mut started = Started::default();
        let mut table = Table::default();
        for e in info.locks {
            let key = ResourceKey {
                lockspace: e.lockspace.clone(),
                name: e.name.clone(),
            };
            let shared = e.mode == "PR";
            let res = resource_name(&key);
            let alive = same_process(e.owner, e.owner_start);
            let lock = AdoptedLock {
                key: key.clone(),
                owner: e.owner,
                shared,
                count: e.count.max(1),
            };
            match self.dlm.adopt(&res, mode(shared)) {
                Ok(lkid) if alive => {
                    info!(pid = e.owner, resource = %key.name, mode = %e.mode, "DLM: adopted orphan lock");
                    table.insert(&e, lkid, shared);
                    started.adopted.push(lock);
                }
                Ok(lkid) => {
                    match self.dlm.unlock(lkid) {
                        Ok(()) => info!(
                            pid = e.owner, resource = %key.name,
                            "DLM: released the orphan lock of an owner that exited"
                        ),
                        Err(err) => warn!(
                            pid = e.owner, resource = %key.name,
                            "DLM: cannot release the orphan of an exited owner: {err}"
                        ),
                    }
                    started.released.push((key, e.owner));
                }
                Err(err) if alive => {
                    // No orphan (the node left the cluster meanwhile, or the
                    // entry was written ahead of a lock never granted): the
                    // owner still runs, so it needs the lock again.
                    match self.dlm.lock(&res, mode(shared)) {
                        Ok(lkid) => {
                            warn!(
                                pid = e.owner, resource = %key.name,
                                "DLM: no orphan to adopt ({err}); lock taken again"
                            );
                            table.insert(&e, lkid, shared);
                            started.adopted.push(lock);
                        }
                        Err(err2) => {
                            warn!(
                                pid = e.owner, resource = %key.name,
                                "DLM: no orphan to adopt ({err}) and the lock is taken ({err2}): its owner must stop"
                            );
                            started.lost.push(lock);
                        }
                    }
                }
                Err(err) => {
                    if err.errno() != Some(libc::ENOENT) {
                        warn!(pid = e.owner, resource = %key.name, "DLM: adopting: {err}");
                    }
                }
            }
            if let Some(vm) = e.vm {
                table.vms.insert(e.owner, (vm, e.uuid));
            }
        }
        *self.table.get_mut().unwrap_or_else(|p| p.into_inner()) = table;
        self.started = started;
    }

    /// What the start adopted, released and lost.
    pub fn started(&self) -> &Started {
        &self.started
    }

    /// The orphans adopted for running owners.
    pub fn adopted(&self) -> &[AdoptedLock] {
        &self.started.adopted
    }

    /// The settings.
    pub fn config(&self) -> &DlmConfig {
        &self.cfg
    }

    /// Remembers the VM behind `pid` (written to the file with its locks).
    pub fn set_vm(&self, pid: u32, name: &str, uuid: Option<&str>) {
        let mut t = self.lock();
        t.vms
            .insert(pid, (name.to_owned(), uuid.map(str::to_owned)));
        if t.locks.keys().any(|(_, o)| *o == pid) {
            drop(t);
            self.persist_logged();
        }
    }

    /// DLM locks held (one per resource and owner).
    pub fn lock_count(&self) -> usize {
        self.lock().locks.values().filter(|h| !h.pending).count()
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn snapshot(&self) -> LockInfo {
        let t = self.lock();
        LockInfo {
            version: 1,
            dlm_lockspace: self.cfg.lockspace.clone(),
            pid: std::process::id(),
            locks: t
                .locks
                .iter()
                .map(|((key, owner), h)| {
                    let vm = t.vms.get(owner);
                    InfoEntry {
                        resource: String::from_utf8_lossy(&resource_name(key)).into_owned(),
                        mode: mode(h.shared).as_str().to_owned(),
                        lockspace: key.lockspace.clone(),
                        name: key.name.clone(),
                        owner: *owner,
                        owner_start: h.owner_start,
                        vm: vm.map(|v| v.0.clone()),
                        uuid: vm.and_then(|v| v.1.clone()),
                        count: h.count,
                    }
                })
                .collect(),
        }
    }

    fn persist(&self) -> Result<(), crate::info::InfoError> {
        // One writer at a time, so an older snapshot never lands last.
        static WRITE: Mutex<()> = Mutex::new(());
        let _w = WRITE.lock().unwrap_or_else(|p| p.into_inner());
        self.snapshot().write(&self.cfg.info_path)
    }

    fn persist_logged(&self) {
        if let Err(e) = self.persist() {
            warn!("DLM lock-information file: {e}");
        }
    }
}

impl Table {
    fn insert(&mut self, e: &InfoEntry, lkid: u32, shared: bool) {
        let key = ResourceKey {
            lockspace: e.lockspace.clone(),
            name: e.name.clone(),
        };
        self.locks.insert(
            (key, e.owner),
            Held {
                lkid,
                shared,
                count: e.count.max(1),
                owner_start: e.owner_start,
                pending: false,
            },
        );
    }
}

fn start_error(lockspace: &str, e: &DlmError) -> DlmStartError {
    match e {
        DlmError::Library(_) => DlmStartError::Library(e.to_string()),
        DlmError::BadName(m) => DlmStartError::Config(m.clone()),
        DlmError::Os { errno, .. } if *errno == libc::ENOENT || *errno == libc::ENODEV => {
            DlmStartError::NoKernel(e.to_string())
        }
        DlmError::Os { errno, .. } if *errno == libc::EPERM || *errno == libc::EACCES => {
            DlmStartError::Config(format!(
                "{e}: creating DLM lockspace {lockspace:?} needs root (CAP_SYS_ADMIN)"
            ))
        }
        DlmError::Os { .. } => DlmStartError::NoCluster {
            lockspace: lockspace.to_owned(),
            why: e.to_string(),
        },
    }
}

impl ClusterArbiter for DlmArbiter {
    fn acquire(&self, key: &ResourceKey, shared: bool, owner: u32) -> Result<(), Error> {
        let k = (key.clone(), owner);
        {
            let mut t = self.lock();
            if let Some(h) = t.locks.get_mut(&k) {
                if h.pending || h.shared != shared {
                    return Err(cluster(key, OWNER_CONFLICT));
                }
                h.count += 1;
                drop(t);
                self.persist_logged();
                return Ok(());
            }
            t.locks.insert(
                k.clone(),
                Held {
                    lkid: 0,
                    shared,
                    count: 1,
                    owner_start: proc_start_time(owner),
                    pending: true,
                },
            );
        }
        // Write-ahead: a lock the DLM grants is always in the file.
        if let Err(e) = self.persist() {
            self.lock().locks.remove(&k);
            return Err(cluster(
                key,
                format!("cannot write the DLM lock-information file: {e}"),
            ));
        }
        match self.dlm.lock(&resource_name(key), mode(shared)) {
            Ok(lkid) => {
                if let Some(h) = self.lock().locks.get_mut(&k) {
                    h.lkid = lkid;
                    h.pending = false;
                }
                Ok(())
            }
            Err(e) => {
                self.lock().locks.remove(&k);
                self.persist_logged();
                Err(acquire_error(key, &e))
            }
        }
    }

    fn release(&self, key: &ResourceKey, owner: u32, last: bool) {
        let k = (key.clone(), owner);
        let lkid = {
            let mut t = self.lock();
            let Some(h) = t.locks.get_mut(&k) else {
                return;
            };
            if h.pending {
                return;
            }
            h.count = h.count.saturating_sub(1);
            if h.count > 0 && !last {
                drop(t);
                self.persist_logged();
                return;
            }
            let lkid = h.lkid;
            t.locks.remove(&k);
            lkid
        };
        // The file first: an unlock the file still listed would be adopted
        // and kept for an owner that released it.
        self.persist_logged();
        if let Err(e) = self.dlm.unlock(lkid) {
            warn!(resource = %key.name, pid = owner, "DLM unlock failed: {e}");
        }
    }
}

/// Field 22 of `/proc/<pid>/stat` (the start time), which tells a running
/// owner from a later process that got its pid.
pub fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(22 - 3)?.parse().ok()
}

/// Whether the owner recorded as (`pid`, `start`) is still that process.
fn same_process(pid: u32, start: Option<u64>) -> bool {
    match (proc_start_time(pid), start) {
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests;
