//! Exhaustion and filesystem faults against a running vmlockd: descriptor
//! exhaustion, a full and a read-only lease directory, a lockspace
//! directory removed or swapped for a symlink, a lease file unlinked or
//! replaced behind the daemon's back, and the modes of the files it makes.
//!
//! Each test: the client that hit the fault gets a clear error, everyone
//! else is served, the sentinel's locks are never lost. Mounts are made
//! inside the daemon's private mount namespace (`nsenter -t PID -m`), so
//! they vanish with it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use vmlock_testkit::frames::{self, FLAG_AUTOCREATE, decode_reply};
use vmlock_testkit::sentinel::{self, Sentinel, kernel_holds};
use vmlock_testkit::{Daemon, DaemonSpec, Flavor, RawConn, WireError, procfs, wait_until};

const PROMPT: Duration = Duration::from_millis(500);

fn ours(spec: DaemonSpec) -> (Daemon, Sentinel, String) {
    let d = Daemon::start(spec).expect("start vmlockd");
    let s = Sentinel::take(&d).expect("sentinel");
    let ls = path(&d.dir().join("fresh-ls"));
    assert!(call(&mut d.connect(), &frames::create_lockspace(0, &ls)).is_none());
    (d, s, ls)
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Sends a call; `None` for OK, else the error.
fn call(c: &mut RawConn, frame: &[u8]) -> Option<WireError> {
    decode_reply(&c.call(frame).expect("reply")).1
}

fn owner(d: &Daemon, pid: u32) -> RawConn {
    let mut c = d.connect();
    sentinel::register(&mut c, "faulty", pid).expect("register");
    c
}

fn all_well(d: &Daemon, s: &mut Sentinel, ls: &str) {
    s.check(d).expect("sentinel locks held");
    sentinel::served(d, ls, PROMPT).expect("a fresh client is served");
}

/// Runs `script` in the daemon's mount namespace.
fn in_ns(d: &Daemon, script: &str) {
    let out = Command::new("nsenter")
        .args(["-t", &d.pid().to_string(), "-m", "sh", "-ec", script])
        .output()
        .expect("nsenter");
    assert!(out.status.success(), "{script}: {out:?}");
}

fn assert_system_error(e: Option<WireError>, text: &str) {
    let e = e.expect("an error reply");
    assert_eq!((e.code, e.domain, e.text()), (38, 51, text));
}

#[test]
fn descriptor_exhaustion_refuses_cleanly_and_recovers() {
    let tmp = tempfile::tempdir().expect("tmp");
    let wrapper = tmp.path().join("vmlockd-64");
    let text = format!(
        "#!/bin/sh\nulimit -n 64\nexec '{}' \"$@\"\n",
        vmlock_testkit::vmlockd_binary().display()
    );
    std::fs::write(&wrapper, text).expect("wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (d, mut s, ls) = ours(DaemonSpec::new(Flavor::Ours).config("").binary(&wrapper));
    let mut opener = owner(&d, 4_300_001);
    let mut fillers = Vec::new();
    for _ in 0..64 {
        let mut c = d.connect();
        c.stream()
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        if !c.barrier_is_pong() {
            break;
        }
        fillers.push(c);
    }
    assert!(
        fillers.len() < 64,
        "the daemon never ran out of descriptors"
    );
    // The opener's next lease cannot be opened: a clear error, for it only.
    let mut e = None;
    for i in 0..8 {
        e = call(
            &mut opener,
            &frames::acquire(i, &ls, &format!("l{i}"), FLAG_AUTOCREATE),
        );
        if e.is_some() {
            break;
        }
    }
    let e = e.expect("an acquire fails once descriptors run out");
    assert_eq!((e.code, e.domain), (38, 51), "{e:?}");
    assert!(e.text().ends_with(": Too many open files"), "{}", e.text());
    // A new client is refused at once, not left hanging in the backlog.
    let mut late = d.connect();
    assert!(
        late.expect_closed(Duration::from_secs(2)),
        "refused cleanly"
    );
    // Existing clients and every held lock are unaffected.
    let sx = &s.locks[1];
    let busy = call(
        &mut opener,
        &frames::acquire(20, &sx.lockspace, &sx.name, FLAG_AUTOCREATE),
    );
    assert_eq!(busy.map(|e| e.code), Some(87));
    for h in &s.locks {
        kernel_holds(&h.path, h.shared).expect("held");
    }
    assert!(fillers[0].barrier_is_pong());
    drop(fillers);
    assert!(
        wait_until(Duration::from_secs(3), || sentinel::served(&d, &ls, PROMPT)
            .is_ok()),
        "serving again once descriptors are free; log:\n{}",
        d.log_text()
    );
    assert!(
        call(
            &mut opener,
            &frames::acquire(30, &ls, "after", FLAG_AUTOCREATE)
        )
        .is_none()
    );
    all_well(&d, &mut s, &ls);
    assert!(d.log_text().contains("accept failed"), "{}", d.log_text());
}

#[test]
fn a_full_lease_directory_is_a_clear_enospc() {
    let (d, mut s, ls) = ours(DaemonSpec::new(Flavor::Ours).config(""));
    let small = path(&d.dir().join("small"));
    std::fs::create_dir(&small).expect("mkdir");
    in_ns(
        &d,
        &format!(
            "mount -t tmpfs -o size=64k,nr_inodes=8 tmpfs {small}; mkdir {small}/ls
             i=0; while touch {small}/f$i 2>/dev/null; do i=$((i+1)); done"
        ),
    );
    let mut c = owner(&d, 4_300_002);
    let lsdir = format!("{small}/ls");
    assert!(call(&mut c, &frames::create_lockspace(1, &lsdir)).is_none());
    let e = call(
        &mut c,
        &frames::acquire(2, &lsdir, "lease", FLAG_AUTOCREATE),
    );
    let msg = format!("Unable to open/create resource {lsdir}/lease: No space left on device");
    assert_system_error(e, &msg);
    all_well(&d, &mut s, &ls);
    in_ns(&d, &format!("rm {small}/f0"));
    assert!(
        call(
            &mut c,
            &frames::acquire(3, &lsdir, "lease", FLAG_AUTOCREATE)
        )
        .is_none()
    );
    assert!(call(&mut c, &frames::release(4, &lsdir, "lease", 0)).is_none());
}

#[test]
fn a_read_only_lease_directory_is_a_clear_erofs() {
    let (d, mut s, ls) = ours(DaemonSpec::new(Flavor::Ours).config(""));
    let ro = path(&d.dir().join("ro"));
    let lsdir = format!("{ro}/ls");
    std::fs::create_dir_all(&lsdir).expect("mkdir");
    let mut c = owner(&d, 4_300_003);
    assert!(call(&mut c, &frames::create_lockspace(1, &lsdir)).is_none());
    assert!(call(&mut c, &frames::acquire(2, &lsdir, "held", FLAG_AUTOCREATE)).is_none());
    in_ns(
        &d,
        &format!("mount --bind {ro} {ro}; mount -o remount,bind,ro {ro}"),
    );
    let e = call(&mut c, &frames::acquire(3, &lsdir, "new", FLAG_AUTOCREATE));
    let msg = format!("Unable to open/create resource {lsdir}/new: Read-only file system");
    assert_system_error(e, &msg);
    // Releasing a lease whose file cannot be unlinked still releases it.
    assert!(call(&mut c, &frames::release(4, &lsdir, "held", 0)).is_none());
    assert!(
        d.log_text().contains("failed to unlink lease file"),
        "{}",
        d.log_text()
    );
    all_well(&d, &mut s, &ls);
}

/// The lockspace directory is renamed away and a symlink to another
/// directory put in its place, which holds a file of the lease's name.
#[test]
fn a_lockspace_swapped_for_a_symlink_never_unlinks_the_target() {
    let (d, mut s, ls) = ours(DaemonSpec::new(Flavor::Ours).config(""));
    let dir = d.dir();
    let lsdir = path(&dir.join("swapped"));
    let mut a = owner(&d, 4_300_004);
    assert!(call(&mut a, &frames::create_lockspace(1, &lsdir)).is_none());
    assert!(call(&mut a, &frames::acquire(2, &lsdir, "L", FLAG_AUTOCREATE)).is_none());
    let victim = dir.join("victim");
    std::fs::create_dir(&victim).expect("victim dir");
    std::fs::write(victim.join("L"), b"precious").expect("victim file");
    std::fs::rename(&lsdir, dir.join("swapped.old")).expect("rename");
    std::os::unix::fs::symlink(&victim, &lsdir).expect("symlink");
    // The lock stays on the original inode, and the name stays busy.
    kernel_holds(&dir.join("swapped.old/L"), false).expect("still locked");
    let mut b = owner(&d, 4_300_005);
    let e = call(&mut b, &frames::acquire(1, &lsdir, "L", FLAG_AUTOCREATE));
    assert_eq!(e.map(|e| e.code), Some(87));
    // The release must not unlink the victim's file through the symlink.
    assert!(call(&mut a, &frames::release(3, &lsdir, "L", 0)).is_none());
    assert_eq!(
        std::fs::read(victim.join("L")).expect("victim kept"),
        b"precious"
    );
    assert!(
        kernel_holds(&dir.join("swapped.old/L"), false).is_err(),
        "released"
    );
    all_well(&d, &mut s, &ls);
}

#[test]
fn a_removed_lockspace_directory_keeps_its_locks_and_errors_clearly() {
    let (d, mut s, ls) = ours(DaemonSpec::new(Flavor::Ours).config(""));
    let lsdir = path(&d.dir().join("gone"));
    let mut a = owner(&d, 4_300_006);
    assert!(call(&mut a, &frames::create_lockspace(1, &lsdir)).is_none());
    assert!(call(&mut a, &frames::acquire(2, &lsdir, "L", FLAG_AUTOCREATE)).is_none());
    std::fs::remove_dir_all(&lsdir).expect("rm -rf");
    // The daemon still holds the (now nameless) lease open and locked.
    let held = procfs::fd_targets(d.pid())
        .iter()
        .any(|p| path(p) == format!("{lsdir}/L (deleted)"));
    assert!(held, "{:?}", procfs::fd_targets(d.pid()));
    let mut b = owner(&d, 4_300_007);
    let e = call(&mut b, &frames::acquire(1, &lsdir, "L", FLAG_AUTOCREATE));
    assert_eq!(e.map(|e| e.code), Some(87), "the name stays busy");
    let e = call(&mut b, &frames::acquire(2, &lsdir, "M", FLAG_AUTOCREATE));
    let msg = format!("Unable to open/create resource {lsdir}/M: No such file or directory");
    assert_system_error(e, &msg);
    // CREATE_LOCKSPACE (libvirt sends it when it starts) brings the
    // directory back, and new leases work again; the old lock stays.
    assert!(call(&mut b, &frames::create_lockspace(3, &lsdir)).is_none());
    assert!(std::path::Path::new(&lsdir).is_dir());
    assert!(call(&mut b, &frames::acquire(4, &lsdir, "M", FLAG_AUTOCREATE)).is_none());
    let e = call(&mut b, &frames::acquire(5, &lsdir, "L", FLAG_AUTOCREATE));
    assert_eq!(
        e.map(|e| e.code),
        Some(87),
        "still busy after the re-creation"
    );
    assert!(call(&mut b, &frames::release(6, &lsdir, "M", 0)).is_none());
    assert!(call(&mut a, &frames::release(3, &lsdir, "L", 0)).is_none());
    all_well(&d, &mut s, &ls);
}

/// A lease file unlinked, then re-created by someone else, behind the
/// daemon's back: the lock stays on the original inode, the name stays
/// busy, and the last release does not unlink the newcomer's file.
#[test]
fn a_lease_file_replaced_behind_the_daemon() {
    let (d, mut s, ls) = ours(DaemonSpec::new(Flavor::Ours).config(""));
    let mut a = owner(&d, 4_300_008);
    assert!(call(&mut a, &frames::acquire(1, &ls, "R", FLAG_AUTOCREATE)).is_none());
    let file = d.dir().join("fresh-ls/R");
    std::fs::remove_file(&file).expect("unlink");
    std::fs::write(&file, b"someone else's").expect("re-create");
    assert!(
        kernel_holds(&file, false).is_err(),
        "the new inode is not ours"
    );
    let mut b = owner(&d, 4_300_009);
    let e = call(&mut b, &frames::acquire(1, &ls, "R", FLAG_AUTOCREATE));
    assert_eq!(e.map(|e| e.code), Some(87), "the name stays busy");
    assert!(call(&mut a, &frames::release(2, &ls, "R", 0)).is_none());
    assert_eq!(std::fs::read(&file).expect("kept"), b"someone else's");
    // Now free: the next acquire locks the file the path names.
    assert!(call(&mut b, &frames::acquire(2, &ls, "R", FLAG_AUTOCREATE)).is_none());
    kernel_holds(&file, false).expect("locked");
    assert!(call(&mut b, &frames::release(3, &ls, "R", 0)).is_none());
    assert!(!file.exists(), "our own lease is unlinked on release");
    all_well(&d, &mut s, &ls);
}

#[test]
fn runtime_files_and_leases_have_safe_modes() {
    let (d, s, _ls) = ours(DaemonSpec::new(Flavor::Ours).config(""));
    let mode = |p: &Path| {
        std::fs::symlink_metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o7777
    };
    for sock in [d.socket_path(), d.admin_socket_path()] {
        assert_eq!(
            mode(&sock) & 0o077,
            0,
            "{} is reachable by others",
            sock.display()
        );
    }
    assert_eq!(mode(&d.pid_file()), 0o644);
    assert_eq!(mode(&s.locks[1].path), 0o600, "AUTOCREATE lease");
    assert_eq!(mode(&d.dir().join("fresh-ls")), 0o700, "lockspace dir");
}
