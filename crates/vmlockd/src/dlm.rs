//! The kernel DLM back end wired into the daemon (`lock_backend = "dlm"`).
//!
//! ```text
//!  REGISTER ──► hooks.registered ──► DlmArbiter::set_vm (name, uuid → file)
//!  ACQUIRE ───► Engine ──(local file lock)──► Gate ──► DlmArbiter ──► dlm lock
//!  holder gone ► Engine::release_owner ─────► Gate ──► DlmArbiter ──► dlm unlock
//!  start (fresh, after a crash, or after a re-exec):
//!      DlmArbiter::start adopts the orphans its lock-information file lists
//!      ─► owner exited: orphan released
//!      ─► not in the engine yet (crash): lock the file again, the Gate
//!         absorbing the arbiter call (the DLM lock is already ours)
//!      ─► neither adoptable nor lockable again: the owner is killed
//!      ─► pidfd watcher per adopted owner: its death releases its locks
//! ```
//!
//! A re-exec needs nothing special: the lockspace descriptor is
//! close-on-exec, so `exec` orphans the DLM locks (still granted, nobody
//! else can take them) and the new image adopts them while it restores the
//! engine from the state file. There is no lease to lose: a node that
//! leaves the corosync membership is fenced by `dlm_controld` before the
//! other nodes' DLM recovers its locks (docs/cluster.md).

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lockspace::{ClusterArbiter, Engine};
use tracing::{error, info};
use vmlock_dlm::{AdoptedLock, DlmArbiter, DlmConfig};
use vmlock_proto::lock::Owner;

use crate::adoption::{self, Adopted, Gate};
use crate::session::ClusterHooks;

/// The running back end.
#[derive(Debug)]
pub struct DlmBackend {
    arbiter: Arc<DlmArbiter>,
    gate: Arc<Gate<DlmArbiter>>,
}

/// Joins the DLM lockspace and adopts what the lock-information file lists.
/// Fails when libdlm, the kernel DLM or dlm_controld is missing.
pub fn start(conf: &vmlock_conf::DaemonConfig, privileged: bool) -> Result<DlmBackend, String> {
    let cfg = DlmConfig::from_daemon(conf, &default_info_path(privileged));
    info!(
        lockspace = %cfg.lockspace,
        info = %cfg.info_path.display(),
        "DLM back end: starting"
    );
    let arbiter = DlmArbiter::start(cfg).map_err(|e| e.to_string())?;
    let st = arbiter.started();
    for lost in &st.lost {
        error!(
            pid = lost.owner, resource = %lost.key.name,
            "its DLM lock was lost while no daemon ran and another holder has it: killing the owner"
        );
        kill(lost.owner);
    }
    info!(
        adopted = st.adopted.len(),
        released = st.released.len(),
        lost = st.lost.len(),
        "DLM back end: serving"
    );
    let gate = Arc::new(Gate::new(arbiter.clone()));
    Ok(DlmBackend { arbiter, gate })
}

fn kill(pid: u32) {
    let Ok(fd) = i32::try_from(pid)
        .map_err(std::io::Error::other)
        .and_then(vmlock_sys::process::pidfd_open)
    else {
        return; // gone already
    };
    if let Err(e) = vmlock_sys::process::pidfd_send_signal(fd.as_fd(), libc::SIGKILL) {
        error!(pid, "cannot kill the owner of a lost DLM lock: {e}");
    }
}

fn default_info_path(privileged: bool) -> PathBuf {
    if privileged {
        return PathBuf::from(vmlock_dlm::DEFAULT_INFO_PATH);
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("vmlock/dlm-locks.json")
}

impl DlmBackend {
    /// The engine's arbiter: the gate in front of the DLM.
    pub(crate) fn arbiter(&self) -> Arc<dyn ClusterArbiter> {
        self.gate.clone()
    }

    /// The dispatcher's hooks.
    pub(crate) fn hooks(&self) -> Arc<dyn ClusterHooks> {
        Arc::new(Hooks {
            arbiter: self.arbiter.clone(),
        })
    }

    /// Takes over the adopted locks: each is locked locally unless the
    /// engine already holds it (re-exec), and its owner is watched.
    pub(crate) fn attach(&self, engine: &Arc<Engine>) {
        let mut watched = Vec::new();
        let mut owners: Vec<u32> = Vec::new();
        for lock in self.arbiter.adopted() {
            if !adoption::held_by(engine, adopted(lock)) && !self.relock(engine, lock) {
                continue;
            }
            owners.push(lock.owner);
        }
        owners.sort_unstable();
        owners.dedup();
        for pid in owners {
            match i32::try_from(pid)
                .map_err(std::io::Error::other)
                .and_then(vmlock_sys::process::pidfd_open)
            {
                Ok(fd) => watched.push((pid, fd)),
                // Gone since the arbiter checked: release now.
                Err(_) => drop(engine.release_owner(pid)),
            }
        }
        adoption::spawn_watcher(Arc::downgrade(engine), watched);
    }
}

impl DlmBackend {
    /// Takes the local file lock of an adopted DLM lock again (the previous
    /// daemon's died with it). On failure the owner runs without local
    /// protection: it is killed and the DLM lock released.
    fn relock(&self, engine: &Engine, lock: &AdoptedLock) -> bool {
        let key = &lock.key;
        if let Err(e) = adoption::relock(engine, &self.gate, adopted(lock)) {
            error!(
                pid = lock.owner, resource = %key.name,
                "adopted DLM lock cannot be taken locally ({e}): killing its owner"
            );
            kill(lock.owner);
            let _ = engine.release_owner(lock.owner);
            self.arbiter.release(key, lock.owner, true);
            return false;
        }
        info!(pid = lock.owner, resource = %key.name, shared = lock.shared, "adopted DLM lock");
        true
    }
}

/// What the dispatcher tells the back end.
#[derive(Debug)]
struct Hooks {
    arbiter: Arc<DlmArbiter>,
}

impl ClusterHooks for Hooks {
    fn registered(&self, owner: &Owner, _peer_pid: i32, _peer_pidfd: Option<&OwnedFd>) {
        let uuid = uuid::Uuid::from_bytes(owner.uuid).hyphenated().to_string();
        self.arbiter.set_vm(owner.pid, &owner.name, Some(&uuid));
    }
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
    fn a_missing_dlm_fails_the_start_with_a_clear_error() {
        // Without the dlm module (this machine's kernel has none) or
        // without libdlm3, the start fails and says which is missing.
        let misc = std::fs::read_to_string("/proc/misc").unwrap_or_default();
        if misc.contains("dlm-control") {
            return; // a DLM node: scripts/vm/dlm-test.sh covers it
        }
        let dir = tempfile::tempdir().unwrap();
        let conf = vmlock_conf::DaemonConfig {
            lock_backend: "dlm".into(),
            dlm_lock_info_file: Some(dir.path().join("i.json").display().to_string()),
            ..Default::default()
        };
        let e = start(&conf, false).unwrap_err();
        eprintln!("start without a DLM: {e}");
        let want = if vmlock_sys::dlm::available() {
            "modprobe dlm"
        } else {
            "libdlm3"
        };
        assert!(e.contains(want), "{e}");
    }
}
