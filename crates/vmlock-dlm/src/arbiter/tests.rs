//! The arbiter against a stand-in with the kernel DLM's rules for what
//! matters here: EX conflicts with everything, PR with EX; `NOQUEUE`
//! refuses with `EAGAIN`; a persistent lock of a process that ends becomes
//! an orphan that still conflicts; `LKF_ORPHAN` adopts one of that name and
//! mode (`ENOENT` when none, `EAGAIN` when only the other mode exists).
//! The guest test (`scripts/vm/dlm-test.sh`) checks the same on the real
//! kernel DLM.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::*;

#[derive(Debug, Clone)]
struct FakeLock {
    name: Vec<u8>,
    mode: Mode,
    /// The "process" holding it; `None`: an orphan.
    proc_id: Option<u32>,
}

#[derive(Debug, Default)]
struct Kernel {
    next: u32,
    locks: BTreeMap<u32, FakeLock>,
    /// Errno every lock call fails with (dlm_controld gone, ...).
    fail_with: Option<i32>,
}

#[derive(Debug, Clone)]
struct FakeDlm {
    kernel: Arc<Mutex<Kernel>>,
    proc_id: u32,
}

impl FakeDlm {
    fn new(kernel: &Arc<Mutex<Kernel>>, proc_id: u32) -> FakeDlm {
        FakeDlm {
            kernel: kernel.clone(),
            proc_id,
        }
    }
}

fn os(errno: i32) -> DlmError {
    DlmError::Os { op: "fake", errno }
}

fn conflicts(a: Mode, b: Mode) -> bool {
    !(a == Mode::Pr && b == Mode::Pr)
}

/// The "process" ends: its persistent locks become orphans.
fn kill(kernel: &Arc<Mutex<Kernel>>, proc_id: u32) {
    for l in kernel.lock().unwrap().locks.values_mut() {
        if l.proc_id == Some(proc_id) {
            l.proc_id = None;
        }
    }
}

fn held(kernel: &Arc<Mutex<Kernel>>) -> usize {
    kernel.lock().unwrap().locks.len()
}

fn orphans(kernel: &Arc<Mutex<Kernel>>) -> usize {
    kernel
        .lock()
        .unwrap()
        .locks
        .values()
        .filter(|l| l.proc_id.is_none())
        .count()
}

impl Dlm for FakeDlm {
    fn lock(&self, resource: &[u8], mode: Mode) -> Result<u32, DlmError> {
        let mut k = self.kernel.lock().unwrap();
        if let Some(e) = k.fail_with {
            return Err(os(e));
        }
        if k.locks
            .values()
            .any(|l| l.name == resource && conflicts(l.mode, mode))
        {
            return Err(os(libc::EAGAIN));
        }
        k.next += 1;
        let id = k.next;
        k.locks.insert(
            id,
            FakeLock {
                name: resource.to_vec(),
                mode,
                proc_id: Some(self.proc_id),
            },
        );
        Ok(id)
    }

    fn adopt(&self, resource: &[u8], mode: Mode) -> Result<u32, DlmError> {
        let mut k = self.kernel.lock().unwrap();
        let mut other_mode = false;
        for (id, l) in k.locks.iter_mut() {
            if l.proc_id.is_some() || l.name != resource {
                continue;
            }
            if l.mode != mode {
                other_mode = true;
                continue;
            }
            l.proc_id = Some(self.proc_id);
            return Ok(*id);
        }
        Err(os(if other_mode {
            libc::EAGAIN
        } else {
            libc::ENOENT
        }))
    }

    fn unlock(&self, lkid: u32) -> Result<(), DlmError> {
        let mut k = self.kernel.lock().unwrap();
        match k.locks.get(&lkid) {
            Some(l) if l.proc_id == Some(self.proc_id) => {
                k.locks.remove(&lkid);
                Ok(())
            }
            _ => Err(os(libc::EINVAL)),
        }
    }
}

fn key(name: &str) -> ResourceKey {
    ResourceKey {
        lockspace: String::new(),
        name: name.into(),
    }
}

fn cfg(dir: &Path, file: &str) -> DlmConfig {
    DlmConfig {
        lockspace: "vmlock".into(),
        info_path: dir.join(file),
        join_timeout: Duration::from_secs(5),
    }
}

fn arbiter(kernel: &Arc<Mutex<Kernel>>, proc_id: u32, c: &DlmConfig) -> Arc<DlmArbiter> {
    DlmArbiter::with_dlm(c.clone(), Box::new(FakeDlm::new(kernel, proc_id))).unwrap()
}

/// A process that lives until the guard drops (a VM stand-in).
struct Vm(std::process::Child);

impl Vm {
    fn start() -> Vm {
        Vm(std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap())
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
    fn stop(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn exclusive_and_shared_across_two_daemons() {
    let dir = tempfile::tempdir().unwrap();
    let k = Arc::new(Mutex::new(Kernel::default()));
    let a = arbiter(&k, 1, &cfg(dir.path(), "a.json"));
    let b = arbiter(&k, 2, &cfg(dir.path(), "b.json"));
    a.acquire(&key("/d/x"), false, 100).unwrap();
    let e = b.acquire(&key("/d/x"), false, 200).unwrap_err();
    // The refusal is the etcd back end's: ClusterBusy, RESOURCE_BUSY.
    assert_eq!(e.kind(), lockspace::ErrorKind::ClusterBusy, "{e}");
    assert!(
        e.to_string()
            .starts_with("Lockspace resource '/d/x' is locked by another host"),
        "{e}"
    );
    let e = b.acquire(&key("/d/x"), true, 200).unwrap_err();
    assert_eq!(e.kind(), lockspace::ErrorKind::ClusterBusy);
    // A refused acquire leaves nothing behind: not in the file either.
    assert_eq!(b.lock_count(), 0);
    assert!(
        LockInfo::read(&dir.path().join("b.json"))
            .unwrap()
            .locks
            .is_empty()
    );
    a.release(&key("/d/x"), 100, true);
    b.acquire(&key("/d/x"), true, 200).unwrap();
    a.acquire(&key("/d/x"), true, 100).unwrap();
    assert_eq!(held(&k), 2, "two PR locks");
    assert!(a.acquire(&key("/d/y"), false, 100).is_ok());
    assert_eq!(
        b.acquire(&key("/d/y"), true, 200).unwrap_err().kind(),
        lockspace::ErrorKind::ClusterBusy
    );
}

#[test]
fn repeated_acquires_count_and_the_last_release_unlocks() {
    let dir = tempfile::tempdir().unwrap();
    let k = Arc::new(Mutex::new(Kernel::default()));
    let a = arbiter(&k, 1, &cfg(dir.path(), "a.json"));
    a.acquire(&key("/d/x"), true, 100).unwrap();
    a.acquire(&key("/d/x"), true, 100).unwrap();
    assert_eq!(held(&k), 1);
    // The other mode for the same owner is refused (it holds PR).
    assert_eq!(
        a.acquire(&key("/d/x"), false, 100).unwrap_err().kind(),
        lockspace::ErrorKind::Cluster
    );
    let info = LockInfo::read(&dir.path().join("a.json")).unwrap();
    assert_eq!(info.locks.len(), 1);
    assert_eq!(info.locks[0].count, 2);
    assert_eq!(info.locks[0].mode, "PR");
    assert_eq!(info.dlm_lockspace, "vmlock");
    a.release(&key("/d/x"), 100, false);
    assert_eq!(held(&k), 1);
    a.release(&key("/d/x"), 100, false);
    assert_eq!(held(&k), 0);
    assert!(
        LockInfo::read(&dir.path().join("a.json"))
            .unwrap()
            .locks
            .is_empty()
    );
}

#[test]
fn dlm_failures_become_cluster_errors_naming_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let k = Arc::new(Mutex::new(Kernel::default()));
    let a = arbiter(&k, 1, &cfg(dir.path(), "a.json"));
    for (errno, want) in [
        (libc::EDEADLK, "deadlock"),
        (libc::ENOTCONN, "dlm_controld"),
        (libc::EIO, "DLM: "),
    ] {
        k.lock().unwrap().fail_with = Some(errno);
        let e = a.acquire(&key("/d/x"), false, 100).unwrap_err();
        assert_eq!(e.kind(), lockspace::ErrorKind::Cluster, "{e}");
        let text = e.to_string();
        assert!(
            text.starts_with("Cluster lock manager failed for resource '/d/x'")
                && text.contains(want),
            "{text}"
        );
    }
    assert_eq!(a.lock_count(), 0);
    k.lock().unwrap().fail_with = None;
    a.acquire(&key("/d/x"), false, 100).unwrap();
}

#[test]
fn a_restarted_daemon_adopts_orphans_of_running_vms_and_releases_the_dead() {
    let dir = tempfile::tempdir().unwrap();
    let k = Arc::new(Mutex::new(Kernel::default()));
    let c = cfg(dir.path(), "a.json");
    let alive = Vm::start();
    let dying = Vm::start();
    let a = arbiter(&k, 1, &c);
    a.set_vm(alive.pid(), "vm-alive", Some("uuid-1"));
    a.acquire(&key("/d/alive"), false, alive.pid()).unwrap();
    a.acquire(&key("/d/shared"), true, alive.pid()).unwrap();
    a.acquire(&key("/d/dying"), false, dying.pid()).unwrap();
    let other = arbiter(&k, 2, &cfg(dir.path(), "b.json"));
    // The daemon is killed: its locks are orphans, still held.
    kill(&k, 1);
    drop(a);
    assert_eq!(orphans(&k), 3);
    assert_eq!(
        other
            .acquire(&key("/d/alive"), false, 7)
            .unwrap_err()
            .kind(),
        lockspace::ErrorKind::ClusterBusy
    );
    assert_eq!(
        other.acquire(&key("/d/dying"), true, 7).unwrap_err().kind(),
        lockspace::ErrorKind::ClusterBusy
    );
    // A VM dies while no daemon runs.
    dying.stop();
    let a2 = arbiter(&k, 3, &c);
    let st = a2.started();
    let mut adopted: Vec<_> = st.adopted.iter().map(|l| l.key.name.as_str()).collect();
    adopted.sort_unstable();
    assert_eq!(adopted, ["/d/alive", "/d/shared"]);
    assert!(st.adopted.iter().all(|l| l.owner == alive.pid()));
    assert!(st.adopted.iter().any(|l| l.shared));
    assert_eq!(st.released.len(), 1);
    assert_eq!(st.released[0].0.name, "/d/dying");
    assert!(st.lost.is_empty());
    assert_eq!(orphans(&k), 0);
    assert_eq!(held(&k), 2);
    // The dead VM's disk is free for the other daemon; the live one's not.
    other.acquire(&key("/d/dying"), false, 7).unwrap();
    assert!(other.acquire(&key("/d/alive"), true, 7).is_err());
    // The adopted lock is this daemon's now: its release unlocks it.
    a2.release(&key("/d/alive"), alive.pid(), true);
    other.acquire(&key("/d/alive"), true, 7).unwrap();
    // The file was rewritten with what is held, the VM's name kept.
    let info = LockInfo::read(&c.info_path).unwrap();
    assert_eq!(info.locks.len(), 1);
    assert_eq!(info.locks[0].vm.as_deref(), Some("vm-alive"));
    assert_eq!(info.locks[0].uuid.as_deref(), Some("uuid-1"));
}

#[test]
fn a_running_vm_whose_orphan_is_gone_gets_its_lock_again_or_is_reported_lost() {
    let dir = tempfile::tempdir().unwrap();
    let k = Arc::new(Mutex::new(Kernel::default()));
    let c = cfg(dir.path(), "a.json");
    let vm = Vm::start();
    let a = arbiter(&k, 1, &c);
    a.acquire(&key("/d/x"), false, vm.pid()).unwrap();
    a.acquire(&key("/d/y"), false, vm.pid()).unwrap();
    drop(a);
    // The node left and rejoined the cluster: every orphan is gone, and
    // meanwhile another host took /d/y.
    k.lock().unwrap().locks.clear();
    let other = arbiter(&k, 2, &cfg(dir.path(), "b.json"));
    other.acquire(&key("/d/y"), false, 9).unwrap();
    let a2 = arbiter(&k, 3, &c);
    let st = a2.started();
    assert_eq!(st.adopted.len(), 1);
    assert_eq!(st.adopted[0].key.name, "/d/x");
    assert_eq!(st.lost.len(), 1);
    assert_eq!(st.lost[0].key.name, "/d/y");
    assert_eq!(a2.lock_count(), 1);
    assert!(other.acquire(&key("/d/x"), true, 9).is_err());
}

#[test]
fn a_recycled_pid_is_not_the_vm() {
    let dir = tempfile::tempdir().unwrap();
    let k = Arc::new(Mutex::new(Kernel::default()));
    let c = cfg(dir.path(), "a.json");
    // Our own pid, recorded with a start time it never had.
    let me = std::process::id();
    let info = LockInfo {
        version: 1,
        dlm_lockspace: "vmlock".into(),
        pid: 1,
        locks: vec![InfoEntry {
            resource: String::from_utf8(resource_name(&key("/d/x")).to_vec()).unwrap(),
            mode: "EX".into(),
            lockspace: String::new(),
            name: "/d/x".into(),
            owner: me,
            owner_start: Some(proc_start_time(me).unwrap() + 1),
            vm: None,
            uuid: None,
            count: 1,
        }],
    };
    info.write(&c.info_path).unwrap();
    FakeDlm::new(&k, 1)
        .lock(&resource_name(&key("/d/x")), Mode::Ex)
        .unwrap();
    kill(&k, 1);
    let a = arbiter(&k, 2, &c);
    assert!(a.adopted().is_empty());
    assert_eq!(a.started().released.len(), 1);
    assert_eq!(held(&k), 0);
}

#[test]
fn a_file_of_another_lockspace_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let k = Arc::new(Mutex::new(Kernel::default()));
    let c = cfg(dir.path(), "a.json");
    LockInfo {
        version: 1,
        dlm_lockspace: "other".into(),
        pid: 1,
        locks: Vec::new(),
    }
    .write(&c.info_path)
    .unwrap();
    let e = DlmArbiter::with_dlm(c, Box::new(FakeDlm::new(&k, 1))).unwrap_err();
    assert!(e.to_string().contains("\"other\""), "{e}");
}

#[test]
fn start_errors_say_what_to_fix() {
    for errno in [libc::ENOENT, libc::ENODEV] {
        let e = start_error("vmlock", &os(errno)).to_string();
        assert!(e.contains("modprobe dlm"), "{e}");
    }
    let e = start_error("vmlock", &os(libc::EUNATCH)).to_string();
    assert!(e.contains("dlm_controld"), "{e}");
    let e = start_error("vmlock", &os(libc::EPERM)).to_string();
    assert!(e.contains("root"), "{e}");
    let e = start_error("vmlock", &DlmError::Library("dlopen: x".into())).to_string();
    assert!(e.contains("libdlm3"), "{e}");
}
