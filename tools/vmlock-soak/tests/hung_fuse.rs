//! A hung filesystem must not stall anyone else.
//!
//! A FUSE filesystem ([`hangfs`]) is mounted before the daemon starts (the
//! daemon's private mount namespace is a copy taken at its start) and used
//! as an AUTOCREATE lockspace. Once it hangs, a client acquiring a lease
//! there waits; meanwhile clients of a lockspace on a normal directory and
//! of the default lockspace are served without delay, and PING works. When
//! the filesystem answers again the waiting client gets its lease.

mod hangfs;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use vmlock_soak::client::{Client, Outcome, Target};
use vmlock_testkit::{Daemon, DaemonSpec, Flavor, RawConn, wait_until};

use hangfs::{Mounted, Unhang};

/// 100 acquire/release cycles on the healthy lockspace must finish within
/// this, while the other lockspace hangs (30–60 ms measured with a debug
/// build; the margin is for a loaded 2-core CI machine). A stall would last
/// as long as the hang.
const CYCLES_BOUND: Duration = Duration::from_millis(500);
/// And no single call may take longer than this.
const CALL_BOUND: Duration = Duration::from_millis(200);

fn lease(lockspace: &str, name: &str) -> Target {
    Target {
        disk: name.to_string(),
        lockspace: lockspace.to_string(),
        resource: name.to_string(),
        autocreate: true,
    }
}

fn client(d: &Daemon, name: &str, pid: u32) -> Client {
    Client::connect(&d.socket_path(), name, pid).expect("connect and register")
}

/// A daemon with a FUSE lockspace and a local one, both created and
/// exercised while healthy.
struct Setup {
    // Field order is drop order: unhang, stop the daemon, then unmount.
    _unhang: Unhang,
    d: Daemon,
    fs: Mounted,
    mnt: std::path::PathBuf,
    fuse_ls: String,
    local_ls: String,
    _root: tempfile::TempDir,
}

fn setup(flavor: Flavor) -> Setup {
    let root = tempfile::tempdir().expect("tempdir");
    let mnt = root.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let fs = Mounted::mount(&mnt).expect("mount the FUSE filesystem (root and /dev/fuse needed)");
    let d = Daemon::start(DaemonSpec::new(flavor)).expect("start the daemon");
    let fuse_ls = mnt.to_string_lossy().into_owned();
    let local_ls = d.dir().join("leases").to_string_lossy().into_owned();
    let mut a = client(&d, "a", 5_000_001);
    assert_eq!(a.create_lockspace(&fuse_ls), Outcome::Ok);
    assert_eq!(a.create_lockspace(&local_ls), Outcome::Ok);
    assert_eq!(a.acquire(&lease(&fuse_ls, "warm"), false), Outcome::Ok);
    assert!(
        mnt.join("warm").exists(),
        "lease file created on the FUSE mount"
    );
    assert_eq!(a.release(&lease(&fuse_ls, "warm")), Outcome::Ok);
    Setup {
        _unhang: Unhang(fs.hang.clone()),
        d,
        fs,
        mnt,
        fuse_ls,
        local_ls,
        _root: root,
    }
}

type Waiting = (
    std::thread::JoinHandle<Client>,
    mpsc::Receiver<(Outcome, Duration)>,
);

/// Hangs the filesystem and starts a client acquiring `name` on it.
fn hang_and_wait(s: &Setup, name: &str) -> Waiting {
    s.fs.hang.set(true);
    let (tx, rx) = mpsc::channel();
    let sock = s.d.socket_path();
    let t = lease(&s.fuse_ls, name);
    let hung = std::thread::spawn(move || {
        let mut b = Client::connect(&sock, "b", 5_000_002).expect("connect b");
        let start = Instant::now();
        let out = b.acquire(&t, false);
        let _ = tx.send((out, start.elapsed()));
        b
    });
    let stuck = wait_until(Duration::from_secs(5), || s.fs.hang.blocked() > 0);
    assert!(stuck, "the daemon never reached the hung filesystem");
    (hung, rx)
}

/// While the FUSE lockspace hangs, everyone else is served promptly: 100
/// acquire/release cycles on the local lockspace, one on the default
/// lockspace, a PING. Returns the time the 100 cycles took.
fn serve_others(s: &Setup) -> Duration {
    let (d, local_ls) = (&s.d, &s.local_ls);
    let mut c = client(d, "c", 5_000_003);
    let start = Instant::now();
    for i in 0..100 {
        let t = lease(local_ls, &format!("vm{}", i % 7));
        assert_eq!(c.acquire(&t, false), Outcome::Ok, "cycle {i}");
        assert_eq!(c.release(&t), Outcome::Ok, "cycle {i}");
    }
    let took = start.elapsed();
    let disk = d.dir().join("disk");
    std::fs::write(&disk, b"x").expect("disk");
    let direct = Target {
        disk: "disk".into(),
        lockspace: String::new(),
        resource: disk.to_string_lossy().into_owned(),
        autocreate: false,
    };
    assert_eq!(c.acquire(&direct, true), Outcome::Ok, "default lockspace");
    assert_eq!(c.release(&direct), Outcome::Ok);
    let mut p = RawConn::connect(&d.socket_path()).expect("connect");
    assert!(
        p.barrier_is_pong(),
        "PING answered while the filesystem hangs"
    );
    eprintln!(
        "100 cycles while hung: {took:?}, slowest call {:?}",
        c.max_latency
    );
    assert!(
        took < CYCLES_BOUND,
        "100 cycles took {took:?} while another lockspace hung"
    );
    assert!(
        c.max_latency < CALL_BOUND,
        "slowest call {:?}",
        c.max_latency
    );
    took
}

#[test]
fn a_hung_fuse_lockspace_stalls_only_its_own_clients() {
    let s = setup(Flavor::Ours);
    let (fs, mnt, fuse_ls) = (&s.fs, &s.mnt, &s.fuse_ls);
    let (hung, rx) = hang_and_wait(&s, "vm-on-hung-fs");

    let took = serve_others(&s);
    assert!(
        rx.try_recv().is_err(),
        "the hung client must still be waiting"
    );

    // The filesystem answers again: the waiting client gets its lease.
    let hung_for = Instant::now();
    fs.hang.set(false);
    let (out, waited) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("hung client finished");
    assert_eq!(out, Outcome::Ok, "acquire on the recovered filesystem");
    assert!(
        waited >= took,
        "it waited through the whole hang ({waited:?})"
    );
    eprintln!(
        "hung client served {:?} after the unhang",
        hung_for.elapsed()
    );
    let mut b = hung.join().expect("thread");
    assert!(mnt.join("vm-on-hung-fs").exists());
    assert_eq!(b.release(&lease(fuse_ls, "vm-on-hung-fs")), Outcome::Ok);
    assert!(
        !mnt.join("vm-on-hung-fs").exists(),
        "exclusive lease unlinked on release"
    );
}

/// The same scenario against libvirt's virtlockd, which runs every file
/// call on its only thread: there the healthy lockspace stalls too. This
/// shows the test above can fail, and pins the difference we claim.
#[test]
fn virtlockd_stalls_everyone_on_a_hung_fuse_lockspace() {
    let virtlockd = vmlock_testkit::flavor::VIRTLOCKD;
    if !vmlock_testkit::ci::require(
        std::path::Path::new(virtlockd).exists(),
        &format!("{virtlockd} is missing (apt-get install libvirt-daemon)"),
    ) {
        return;
    }
    let s = setup(Flavor::Theirs);
    let (hung, rx) = hang_and_wait(&s, "vm-on-hung-fs");
    let (tx2, rx2) = mpsc::channel();
    let sock = s.d.socket_path();
    let t = lease(&s.local_ls, "healthy");
    let other = std::thread::spawn(move || {
        let mut c = Client::connect(&sock, "c", 5_000_003);
        let out = c.as_mut().map(|c| c.acquire(&t, false));
        let _ = tx2.send(out.map_err(|e| e.to_string()));
    });
    let stalled = rx2.recv_timeout(Duration::from_millis(1500)).is_err();
    s.fs.hang.set(false);
    assert!(
        stalled,
        "virtlockd served a healthy lockspace during the hang?"
    );
    let (out, _) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("hung client finished");
    assert_eq!(out, Outcome::Ok);
    let late = rx2
        .recv_timeout(Duration::from_secs(10))
        .expect("stalled client finished");
    assert_eq!(late, Ok(Outcome::Ok), "served once the filesystem answered");
    let _ = (hung.join(), other.join());
}
