//! `kill -9` of vmlockd, then a restart over its leftovers.
//!
//! What must hold (and is documented in docs/reliability-soak.md):
//! * the kernel drops every lock the daemon held (OFD locks die with their
//!   last descriptor, i.e. with the process): other processes can lock the
//!   disks and lease files at once;
//! * the holders (VMs) are *not* killed: nobody is left to do it, so they
//!   keep running, unprotected;
//! * a new vmlockd starts cleanly over a stale pid file, a stale re-exec
//!   state file (`/run/virtlockd-restart-exec.json`, docs/protocol.md §9.2) and stale
//!   socket files, and knows nothing of the old locks; it does remember
//!   the lockspaces libvirt created (docs/quirks.md #17).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use vmlock_testkit::daemon::ns_command;
use vmlock_testkit::hold::RegisteredHolder;
use vmlock_testkit::reexec::busy_for_other_process;
use vmlock_testkit::{
    Daemon, DaemonSpec, Flavor, RawConn, decode_reply, frames, vmlockd_binary, wait_until,
};

const SIGKILL: i32 = 9;
const FIXTURE: &str =
    include_str!("../../../crates/vmlockd/tests/fixtures/virtlockd-9.0-restart-state.json");

/// A `vmlock-hold --register` process: registered as itself, holding one lock.
type Holder = RegisteredHolder;

fn holder(sock: &Path, lockspace: &str, name: &str, extra: &[&str]) -> Holder {
    RegisteredHolder::start(sock, lockspace, name, extra, &String::new)
}

/// A vmlockd started by hand on an existing run dir.
struct Restarted {
    child: Child,
    log: PathBuf,
}

impl Restarted {
    fn start(run_dir: &Path, log: PathBuf) -> Restarted {
        let out = fs::File::create(&log).expect("log");
        let child = ns_command(run_dir, &vmlockd_binary())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("spawn vmlockd");
        let r = Restarted { child, log };
        let sock = run_dir.join("libvirt/virtlockd-sock");
        let up = wait_until(Duration::from_secs(15), || RawConn::connect(&sock).is_ok());
        assert!(up, "restarted vmlockd did not listen: {}", r.log_text());
        r
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ok(c: &mut RawConn, frame: &[u8]) -> Result<(), String> {
    let reply = c.call(frame).map_err(|e| e.to_string())?;
    match decode_reply(&reply) {
        (_, None) => Ok(()),
        (_, Some(e)) => Err(format!("{} {}", e.code, e.text())),
    }
}

fn registered(sock: &Path) -> RawConn {
    let mut c = RawConn::connect(sock).expect("connect");
    ok(
        &mut c,
        &frames::register(1, *b"restart-test-uid", "probe", 1, 5_000_123, 0),
    )
    .expect("register");
    c
}

/// A vmlockd with two holders: one on a direct disk, one on an
/// AUTOCREATE lease file in a named lockspace.
struct World {
    d: Daemon,
    disk: PathBuf,
    leases: String,
    lease: PathBuf,
    holders: [Holder; 2],
}

fn world() -> World {
    let d = Daemon::start(DaemonSpec::new(Flavor::Ours)).expect("start vmlockd");
    let disk = d.dir().join("disk1");
    fs::write(&disk, b"disk").expect("disk");
    let leases = d.dir().join("leases").to_string_lossy().into_owned();
    ok(&mut d.connect(), &frames::create_lockspace(1, &leases)).expect("lockspace");
    let sock = d.socket_path();
    let h1 = holder(&sock, "", &disk.to_string_lossy(), &[]);
    let h2 = holder(&sock, &leases, "lease1", &["--autocreate"]);
    let lease = Path::new(&leases).join("lease1");
    assert!(
        busy_for_other_process(&disk).expect("probe"),
        "vmlockd holds the disk"
    );
    assert!(
        busy_for_other_process(&lease).expect("probe"),
        "vmlockd holds the lease"
    );
    World {
        d,
        disk,
        leases,
        lease,
        holders: [h1, h2],
    }
}

/// SIGKILLs the daemon and checks what the kernel and the holders do.
fn kill_daemon(w: &mut World) {
    w.d.signal(SIGKILL).expect("kill -9");
    let status = w.d.wait_exit(Duration::from_secs(5));
    assert!(status.is_some(), "vmlockd survived SIGKILL");
    // The kernel released both locks with the daemon's descriptors.
    let disk_busy = busy_for_other_process(&w.disk).expect("probe");
    assert!(!disk_busy, "disk still locked after kill -9");
    assert!(
        w.lease.exists(),
        "the lease file stays behind (nobody unlinked it)"
    );
    let lease_busy = busy_for_other_process(&w.lease).expect("probe");
    assert!(!lease_busy, "lease still locked after kill -9");
    // Nobody kills the holders: they run on, unprotected.
    std::thread::sleep(Duration::from_millis(500));
    let alive = w.holders.iter_mut().all(Holder::alive);
    assert!(alive, "holders must keep running after the daemon died");
}

/// Checks the leftovers and plants a stale state file, as a kill during a
/// re-exec would leave it (magic = the dead daemon's pid).
fn plant_stale_state(d: &Daemon) {
    let files = [d.pid_file(), d.socket_path(), d.admin_socket_path()];
    for f in &files {
        assert!(f.exists(), "{} left behind", f.display());
    }
    let magic = format!("\"magic\": \"{}\"", d.pid());
    let stale = FIXTURE.replace("\"magic\": \"30590\"", &magic);
    assert_ne!(stale, FIXTURE, "fixture's magic not found");
    fs::write(d.state_file(), &stale).expect("stale state");
}

#[test]
fn sigkill_frees_locks_keeps_holders_and_a_restart_is_clean() {
    let mut w = world();
    let old_pid = w.d.pid();
    kill_daemon(&mut w);
    plant_stale_state(&w.d);

    let (d, sock) = (&w.d, w.d.socket_path());
    let r = Restarted::start(&d.run_dir(), d.root().join("restart.log"));
    assert!(
        registered(&sock).barrier_is_pong(),
        "restarted daemon answers PING"
    );
    let new_pid = r.child.id();
    assert_ne!(new_pid, old_pid);
    let pid_text = fs::read_to_string(d.pid_file()).expect("pid file");
    assert_eq!(pid_text.trim(), new_pid.to_string(), "pid file rewritten");
    assert!(!d.state_file().exists(), "stale state file consumed");
    let log = r.log_text();
    assert!(log.contains("starting fresh"), "log: {log}");

    // A fresh start knows no old lock: another owner gets the disk while
    // the old holder still runs. It does remember the lockspaces libvirt
    // created (docs/quirks.md #17), so a lease in one needs no CREATE_LOCKSPACE first.
    let mut c = registered(&sock);
    let disk = w.disk.to_string_lossy();
    ok(&mut c, &frames::acquire(2, "", &disk, 0)).expect("disk is free for a new owner");
    let auto = frames::FLAG_AUTOCREATE;
    ok(&mut c, &frames::acquire(3, &w.leases, "lease1", auto))
        .expect("the lockspace is remembered and the stale lease file reused");
    ok(&mut c, &frames::create_lockspace(4, &w.leases)).expect("creating it again is OK");
    let held = busy_for_other_process(&w.lease).expect("probe");
    assert!(held, "new daemon holds the lease");
    let alive = w.holders[0].alive();
    assert!(alive, "the old holder is still running, now without a lock");
}
