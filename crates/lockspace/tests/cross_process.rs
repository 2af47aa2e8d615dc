//! Conflicts with a second *process* holding classic POSIX locks (as a C
//! virtlockd on another host would), and the reverse.
//!
//! The helper is this test binary itself, re-run with `LOCKSPACE_HELPER`
//! set: it takes (or probes) a POSIX lock on byte 0, prints the outcome and,
//! when holding, waits for its stdin to close.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::process::{Child, ChildStdout, Command, Stdio};

use lockspace::{AcquireFlags, Engine, EngineOptions, ErrorKind, LockKind};
use vmlock_sys::lock::{self, LockType};

const ENV: &str = "LOCKSPACE_HELPER";

/// The helper's body; a no-op in a normal test run.
#[test]
fn helper_entry() {
    let Ok(spec) = std::env::var(ENV) else { return };
    let (mode, path) = spec.split_once(':').expect("mode:path");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let ty = if mode.ends_with('r') {
        LockType::Shared
    } else {
        LockType::Exclusive
    };
    let got = lock::try_lock(f.as_fd(), LockKind::Posix, ty).expect("fcntl");
    println!("HELPER:{}", if got { "LOCKED" } else { "BUSY" });
    std::io::stdout().flush().expect("flush");
    if mode.starts_with("hold") {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    }
}

struct Helper {
    child: Child,
    _out: BufReader<ChildStdout>,
    locked: bool,
}

impl Helper {
    /// `mode`: hold-w, hold-r, probe-w, probe-r.
    fn run(mode: &str, path: &str) -> Helper {
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .args(["helper_entry", "--exact", "--nocapture", "--test-threads=1"])
            .env(ENV, format!("{mode}:{path}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn helper");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        let locked = loop {
            line.clear();
            assert!(
                out.read_line(&mut line).expect("read") > 0,
                "helper exited early"
            );
            // libtest prefixes the line with "test helper_entry ... ".
            if let Some((_, r)) = line.trim().split_once("HELPER:") {
                break r == "LOCKED";
            }
        };
        Helper {
            child,
            _out: out,
            locked,
        }
    }

    fn probe(mode: &str, path: &str) -> bool {
        let h = Helper::run(mode, path);
        let locked = h.locked;
        drop(h);
        locked
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn fixture() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = dir.path().join("disk").to_str().expect("utf8").to_owned();
    std::fs::write(&disk, b"img").expect("disk");
    (dir, disk)
}

const SHARED: AcquireFlags = AcquireFlags {
    shared: true,
    autocreate: false,
};

#[test]
fn a_foreign_posix_write_lock_makes_every_acquire_busy() {
    let (_d, disk) = fixture();
    let e = Engine::new(EngineOptions::default());
    let h = Helper::run("hold-w", &disk);
    assert!(h.locked);
    for flags in [AcquireFlags::EXCLUSIVE, SHARED] {
        let err = e.acquire("", &disk, 1, flags).expect_err("busy");
        assert_eq!(err.kind(), ErrorKind::Busy);
    }
    assert_eq!(e.stats().resources, 0);
    drop(h);
    e.acquire("", &disk, 1, AcquireFlags::EXCLUSIVE)
        .expect("free now");
}

#[test]
fn a_foreign_posix_read_lock_admits_shared_only() {
    let (_d, disk) = fixture();
    let e = Engine::new(EngineOptions::default());
    let h = Helper::run("hold-r", &disk);
    assert!(h.locked);
    let err = e
        .acquire("", &disk, 1, AcquireFlags::EXCLUSIVE)
        .expect_err("busy");
    assert_eq!(err.kind(), ErrorKind::Busy);
    e.acquire("", &disk, 1, SHARED).expect("shared");
}

#[test]
fn the_engines_ofd_locks_exclude_a_foreign_posix_lock() {
    let (_d, disk) = fixture();
    let e = Engine::new(EngineOptions::default());
    e.acquire("", &disk, 1, AcquireFlags::EXCLUSIVE)
        .expect("acquire");
    assert!(!Helper::probe("probe-r", &disk));
    e.release("", &disk, 1).expect("release");
    assert!(Helper::probe("probe-w", &disk));
    e.acquire("", &disk, 1, SHARED).expect("shared");
    assert!(!Helper::probe("probe-w", &disk));
    assert!(Helper::probe("probe-r", &disk));
}

#[test]
fn posix_kind_engine_excludes_a_foreign_process_too() {
    let (_d, disk) = fixture();
    let opts = EngineOptions {
        lock_kind: LockKind::Posix,
        ..EngineOptions::default()
    };
    let e = Engine::new(opts);
    e.acquire("", &disk, 1, AcquireFlags::EXCLUSIVE)
        .expect("acquire");
    assert_eq!(
        e.inspect("", &disk).expect("held").lock_kind,
        LockKind::Posix
    );
    assert!(!Helper::probe("probe-r", &disk));
}

#[test]
fn a_shared_lease_read_by_another_host_is_not_unlinked() {
    let (d, _disk) = fixture();
    let ls = d.path().join("ls").to_str().expect("utf8").to_owned();
    let e = Engine::new(EngineOptions::default());
    e.create_lockspace(&ls).expect("lockspace");
    let flags = AcquireFlags {
        shared: true,
        autocreate: true,
    };
    e.acquire(&ls, "lease", 1, flags).expect("acquire");
    let lease = format!("{ls}/lease");
    let h = Helper::run("hold-r", &lease);
    assert!(h.locked);
    e.release(&ls, "lease", 1).expect("release");
    assert!(
        std::path::Path::new(&lease).exists(),
        "upgrade failed, so the file stays"
    );
    drop(h);
    e.acquire(&ls, "lease", 2, flags).expect("again");
    e.release(&ls, "lease", 2).expect("release");
    assert!(
        !std::path::Path::new(&lease).exists(),
        "sole reader unlinks"
    );
}
