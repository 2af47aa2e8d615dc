//! The etcd back end wired into the daemon (`lock_backend = "etcd"`, cargo
//! feature `etcd`).
//!
//! ```text
//!  REGISTER ──► ClusterHooks::registered ──► Owners: pid → pidfd, VM name/uuid
//!  ACQUIRE ───► Engine ──(local file lock)──► Gate ──► EtcdArbiter ──► etcd txn
//!  holder gone ► Engine::release_owner ─────► Gate ──► EtcdArbiter ──► etcd delete
//!  lease about to lapse (watchdog thread):
//!      Fencer::fence_all ──► SIGKILL|SIGSTOP every cluster holder by pidfd,
//!                            wait until dead|stopped (bounded)
//!      Fencer::locks_lost ─► Engine::release (the local file locks)
//!  start (fresh, after a crash, or after a re-exec):
//!      EtcdArbiter::start reads its record ─► adopted locks
//!      ─► not in the engine yet (crash): lock the file again, the Gate
//!         absorbing the arbiter call (etcd already has the key)
//!      ─► pidfd watcher per adopted owner: its death releases its locks
//! ```
//!
//! The local file lock is taken as well as the etcd key (belt and braces):
//! processes on this host that use fcntl locks directly (or a virtlockd
//! beside us) still see the disk locked, and a lock that etcd grants can
//! never be held twice on one host.
//!
//! A re-exec needs nothing special: `exec` ends the arbiter's threads, the
//! lease outlives the few milliseconds of the exec, and the new image
//! adopts the record while restoring the engine from the state file.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use lockspace::{ClusterArbiter, Engine};
use tracing::{error, info, warn};
use vmlock_etcd::{AdoptedLock, Deadlines, EtcdArbiter, EtcdConfig, Fencer, LostLock};
use vmlock_proto::lock::Owner;

use crate::adoption::{self, Adopted, Gate};
use crate::fencelink::{FenceLink, LinkConfig};
use crate::session::ClusterHooks;

/// How long a fence waits for the signalled holders to die (or stop).
/// The arbiter calls us at least one second before etcd can expire the
/// lease; this leaves half of that for its own bookkeeping.
const FENCE_WAIT: Duration = Duration::from_millis(500);

/// The running back end.
#[derive(Debug)]
pub struct Cluster {
    arbiter: Arc<EtcdArbiter>,
    gate: Arc<Gate<EtcdArbiter>>,
    fencer: Arc<DaemonFencer>,
    link: Arc<FenceLink>,
}

/// Starts the arbiter: connects, adopts what the record allows, fences
/// what it must. Fails if etcd cannot be reached.
pub fn start(conf: &vmlock_conf::DaemonConfig, privileged: bool) -> Result<Cluster, String> {
    let state = default_state_path(privileged);
    let cfg =
        EtcdConfig::from_daemon(conf, &default_host_id(), &state).map_err(|e| e.to_string())?;
    if let Some(dir) = cfg.state_path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let pause = conf.on_lease_loss == "pause";
    let link = FenceLink::new(LinkConfig {
        program: helper_program(),
        socket: crate::fenced::socket_path(&cfg.state_path),
        pause,
        watchdog: conf
            .watchdog_device
            .as_ref()
            .map(|d| (PathBuf::from(d), cfg.watchdog_timeout_secs())),
    });
    let fencer = Arc::new(DaemonFencer {
        pause,
        owners: Mutex::new(HashMap::new()),
        engine: OnceLock::new(),
        link: Some(link.clone()),
    });
    info!(
        host_id = %cfg.host_id,
        endpoints = ?cfg.endpoints,
        prefix = %cfg.prefix,
        ttl_s = cfg.lease_ttl.as_secs(),
        record = %cfg.state_path.display(),
        "etcd back end: starting"
    );
    let arbiter = EtcdArbiter::start(cfg, fencer.clone()).map_err(|e| e.to_string())?;
    // No fence outside the daemon: the holders it would guard are stopped
    // here and now, and the daemon does not start (it would otherwise hold
    // locks that a frozen daemon could not protect).
    if let Err(e) = link.connected() {
        let owners: Vec<u32> = arbiter.adopted().iter().map(|l| l.owner).collect();
        fencer.fence_pids(&owners);
        arbiter.shutdown(false);
        return Err(format!("cannot start the fence helper: {e}"));
    }
    let weak = Arc::downgrade(&arbiter);
    link.set_on_lost(Box::new(move || {
        if let Some(a) = weak.upgrade() {
            a.expire();
        }
    }));
    info!(
        lease = ?arbiter.lease_id(),
        adopted = arbiter.adopted().len(),
        "etcd back end: serving"
    );
    let gate = Arc::new(Gate::new(arbiter.clone()));
    Ok(Cluster {
        arbiter,
        gate,
        fencer,
        link,
    })
}

/// The fence helper: `vmlock-fenced` beside the daemon's own program.
fn helper_program() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/sbin/vmlockd"));
    exe.with_file_name("vmlock-fenced")
}

impl Cluster {
    /// The engine's arbiter.
    pub fn arbiter(&self) -> Arc<dyn ClusterArbiter> {
        self.gate.clone()
    }

    /// The dispatcher's hooks.
    pub fn hooks(&self) -> Arc<dyn ClusterHooks> {
        Arc::new(Hooks {
            arbiter: self.arbiter.clone(),
            fencer: self.fencer.clone(),
            link: self.link.clone(),
        })
    }

    /// Connects the back end to the engine and takes over the locks the
    /// arbiter adopted: each is locked locally unless the engine already
    /// holds it (re-exec), and its owner is watched from now on.
    pub fn attach(&self, engine: &Arc<Engine>) {
        let _ = self.fencer.engine.set(Arc::downgrade(engine));
        let mut owners: Vec<u32> = Vec::new();
        for lock in self.arbiter.adopted() {
            if !adoption::held_by(engine, adopted(lock)) && !self.relock(engine, lock) {
                continue;
            }
            owners.push(lock.owner);
        }
        owners.sort_unstable();
        owners.dedup();
        let mut watched = Vec::new();
        for pid in owners {
            match self.fencer.pidfd(pid) {
                Some(fd) => watched.push((pid, fd)),
                // Gone since the arbiter checked: release now.
                None => drop(engine.release_owner(pid)),
            }
        }
        adoption::spawn_watcher(Arc::downgrade(engine), watched);
    }

    /// Takes the local file lock of an adopted cluster lock again (the
    /// previous daemon's died with it). On failure the owner runs without
    /// local protection: it is fenced and the cluster lock released.
    fn relock(&self, engine: &Engine, lock: &AdoptedLock) -> bool {
        let key = &lock.key;
        if let Err(e) = adoption::relock(engine, &self.gate, adopted(lock)) {
            error!(
                pid = lock.owner, resource = %key.name,
                "adopted cluster lock cannot be taken locally ({e}): fencing its owner"
            );
            self.fencer.fence_pids(&[lock.owner]);
            let _ = engine.release_owner(lock.owner);
            self.arbiter.release(key, lock.owner, true);
            return false;
        }
        info!(pid = lock.owner, resource = %key.name, shared = lock.shared, "adopted cluster lock");
        true
    }
}

/// What the dispatcher tells the back end.
#[derive(Debug)]
struct Hooks {
    arbiter: Arc<EtcdArbiter>,
    fencer: Arc<DaemonFencer>,
    link: Arc<FenceLink>,
}

impl ClusterHooks for Hooks {
    fn registered(&self, owner: &Owner, _peer_pid: i32, peer_pidfd: Option<&OwnedFd>) {
        let uuid = uuid::Uuid::from_bytes(owner.uuid).hyphenated().to_string();
        self.arbiter.set_vm(owner.pid, &owner.name, Some(&uuid));
        self.fencer.remember(owner.pid, peer_pidfd);
    }

    fn fence(&self) -> Option<crate::stats::FenceReport> {
        Some(self.link.status().report(vmlock_sys::clock::monotonic_ns()))
    }

    fn status(&self) -> Option<crate::stats::ClusterStatus> {
        let s = self.arbiter.status();
        Some(crate::stats::ClusterStatus {
            host_id: s.host_id,
            endpoints: s.endpoints,
            lease_id: s.lease_id,
            time_left: s.time_left,
            last_rtt: s.last_rtt,
            healthy: s.healthy,
            fences: s.fences,
            locks: s.locks,
            adopted: s.adopted,
            endpoint_health: s
                .endpoint_health
                .into_iter()
                .map(|e| crate::stats::EndpointStatus {
                    url: e.endpoint,
                    healthy: e.healthy,
                    rtt: e.rtt,
                    error: e.error,
                })
                .collect(),
        })
    }
}

/// Stops local lock holders when the lease is about to lapse.
#[derive(Debug)]
struct DaemonFencer {
    /// SIGSTOP instead of SIGKILL.
    pause: bool,
    /// Owner pid → a pidfd of that very process.
    owners: Mutex<HashMap<u32, Arc<OwnedFd>>>,
    engine: OnceLock<Weak<Engine>>,
    /// The fence helper (`None` in unit tests).
    link: Option<Arc<FenceLink>>,
}

impl DaemonFencer {
    fn table(&self) -> MutexGuard<'_, HashMap<u32, Arc<OwnedFd>>> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps a pidfd for `pid`: the connection's own when the peer
    /// registered itself, else one opened now (the owner is alive and
    /// registered at this moment, so the pidfd names that process).
    fn remember(&self, pid: u32, peer: Option<&OwnedFd>) {
        let fd = match peer.map(OwnedFd::try_clone) {
            Some(Ok(fd)) => Ok(fd),
            _ => i32::try_from(pid)
                .map_err(std::io::Error::other)
                .and_then(vmlock_sys::process::pidfd_open),
        };
        let mut t = self.table();
        // Forget owners that are gone, so the table stays small.
        t.retain(|_, fd| {
            !vmlock_sys::process::pidfd_wait(fd.as_fd(), Duration::ZERO).unwrap_or(true)
        });
        match fd {
            Ok(fd) => {
                t.insert(pid, Arc::new(fd));
            }
            Err(e) => warn!(pid, "no pidfd for lock owner (cannot fence it safely): {e}"),
        }
    }

    /// The pidfd of `pid`: the remembered one, else opened now.
    fn pidfd(&self, pid: u32) -> Option<Arc<OwnedFd>> {
        if let Some(fd) = self.table().get(&pid) {
            return Some(fd.clone());
        }
        let fd = vmlock_sys::process::pidfd_open(i32::try_from(pid).ok()?).ok()?;
        let fd = Arc::new(fd);
        self.table().insert(pid, fd.clone());
        Some(fd)
    }

    fn stop(&self, pids: &[u32], why: &str) {
        let t0 = Instant::now();
        let sig = if self.pause {
            libc::SIGSTOP
        } else {
            libc::SIGKILL
        };
        let mut sent = Vec::new();
        for &pid in pids {
            let Some(fd) = self.pidfd(pid) else {
                continue; // already gone
            };
            match vmlock_sys::process::pidfd_send_signal(fd.as_fd(), sig) {
                Ok(()) => sent.push((pid, fd)),
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => error!(pid, "cannot fence lock holder: {e}"),
            }
        }
        let until = t0 + FENCE_WAIT;
        let mut laggards = Vec::new();
        for (pid, fd) in &sent {
            if !self.settled(*pid, fd, until) {
                laggards.push(*pid);
            }
        }
        let action = if self.pause { "stopped" } else { "killed" };
        error!(
            "{why}: {action} {} lock holder(s) {:?} in {:?}{}",
            sent.len(),
            sent.iter().map(|s| s.0).collect::<Vec<_>>(),
            t0.elapsed(),
            if laggards.is_empty() {
                String::new()
            } else {
                format!("; not yet settled: {laggards:?}")
            }
        );
    }

    /// Waits until the signalled process is dead (kill) or stopped (pause).
    fn settled(&self, pid: u32, fd: &OwnedFd, until: Instant) -> bool {
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if !self.pause {
                return vmlock_sys::process::pidfd_wait(fd.as_fd(), left).unwrap_or(false);
            }
            if crate::fenced::is_stopped(pid)
                || vmlock_sys::process::pidfd_wait(fd.as_fd(), Duration::ZERO).unwrap_or(false)
            {
                return true;
            }
            if left.is_zero() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Fencer for DaemonFencer {
    fn fence_all(&self, owners: &[u32]) {
        self.stop(owners, "etcd lease about to lapse");
    }

    fn locks_lost(&self, lost: &[LostLock]) {
        let Some(engine) = self.engine.get().and_then(Weak::upgrade) else {
            return;
        };
        for l in lost {
            // NotLocked when the holder's connection already closed: fine.
            let _ = engine.release(&l.key.lockspace, &l.key.name, l.owner);
        }
        warn!("etcd lease lost: released {} local locks", lost.len());
    }

    fn fence_pids(&self, pids: &[u32]) {
        self.stop(pids, "etcd lease lapsed while no daemon renewed it");
    }

    fn resync(&self, owners: &[u32], deadlines: Option<Deadlines>) {
        if let Some(l) = &self.link {
            l.resync(owners, deadlines);
        }
    }

    fn guard(&self, owner: u32, held: bool) -> Result<(), String> {
        self.link.as_ref().map_or(Ok(()), |l| l.guard(owner, held))
    }

    fn renewed(&self, deadlines: Deadlines) {
        if let Some(l) = &self.link {
            l.renewed(deadlines);
        }
    }
}

/// The default cluster name of this host: the machine id, else the host
/// name.
fn default_host_id() -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty() && !s.contains('/'))
    };
    read("/etc/machine-id")
        .or_else(|| read("/proc/sys/kernel/hostname"))
        .unwrap_or_else(|| "localhost".to_owned())
}

fn default_state_path(privileged: bool) -> PathBuf {
    if privileged {
        return PathBuf::from(vmlock_etcd::DEFAULT_STATE_PATH);
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("vmlock/etcd-state.json")
}

fn adopted(lock: &AdoptedLock) -> Adopted<'_> {
    Adopted {
        key: &lock.key,
        owner: lock.owner,
        shared: lock.shared,
        count: lock.count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopped_state_is_read_from_proc() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(!crate::fenced::is_stopped(pid));
        let f = DaemonFencer {
            pause: true,
            owners: Mutex::new(HashMap::new()),
            engine: OnceLock::new(),
            link: None,
        };
        f.fence_pids(&[pid]);
        assert!(
            crate::fenced::is_stopped(pid),
            "SIGSTOP was delivered and waited for"
        );
        let f = DaemonFencer { pause: false, ..f };
        f.fence_all(&[pid]);
        let st = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn host_id_defaults_to_something_usable() {
        let h = default_host_id();
        assert!(!h.is_empty() && !h.contains('/'));
    }
}
