//! `vmlockd::run`, the daemon without the process around it: it serves the
//! sockets it is given with a configuration, until its shutdown future
//! completes, and then returns with every lock released.

use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::time::Duration;

use vmlock_sys::lock::{LockKind, LockType};
use vmlock_testkit::frames;
use vmlock_testkit::{RawConn, decode_reply};

fn ok(r: &[u8]) -> bool {
    decode_reply(r).1.is_none()
}

/// Whether another open file description of `path` sees a lock on byte 0.
fn locked(path: &std::path::Path) -> bool {
    let f = std::fs::File::open(path).expect("open the disk");
    vmlock_sys::lock::query(f.as_fd(), LockKind::Ofd, LockType::Exclusive)
        .expect("F_OFD_GETLK")
        .is_some()
}

#[test]
fn run_serves_until_its_shutdown_and_releases_every_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("lock-sock");
    let admin_sock = dir.path().join("admin-sock");
    let disk = dir.path().join("disk");
    std::fs::write(&disk, b"").expect("disk");
    let disk = disk.to_str().expect("utf-8 path").to_owned();
    let listeners = vmlockd::Listeners {
        lock: UnixListener::bind(&sock).expect("bind"),
        admin: Some(UnixListener::bind(&admin_sock).expect("bind admin")),
    };
    let (conf, warnings) = vmlock_conf::DaemonConfig::parse("max_clients = 8\n").expect("config");
    assert!(warnings.is_empty(), "{warnings:?}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = std::thread::spawn(move || {
        vmlockd::run(listeners, &conf, async {
            let _ = stopped.await;
        })
    });

    // Owners with pids that are not ours: closing their connections
    // never signals this process.
    let mut a = RawConn::connect(&sock).expect("connect");
    assert!(ok(&a
        .call(&frames::register(1, [1; 16], "a", 1, 4_194_300, 0))
        .expect("register a")));
    assert!(ok(&a
        .call(&frames::acquire(2, "", &disk, 0))
        .expect("acquire")));
    assert!(
        locked(std::path::Path::new(&disk)),
        "the engine holds the lock"
    );
    let mut b = RawConn::connect(&sock).expect("connect b");
    assert!(ok(&b
        .call(&frames::register(1, [2; 16], "b", 2, 4_194_301, 0))
        .expect("register b")));
    let busy = b
        .call(&frames::acquire(2, "", &disk, 0))
        .expect("acquire b");
    assert!(!ok(&busy), "a second owner is refused while a holds it");
    // The admin socket is served too: keepalive is answered there.
    let mut adm = RawConn::connect(&admin_sock).expect("connect admin");
    assert!(adm.barrier_is_pong(), "the admin socket answers");

    stop.send(()).expect("the daemon is waiting");
    let r = daemon.join().expect("run did not panic");
    assert!(r.is_ok(), "{:?}", r.err());
    assert!(
        a.expect_closed(Duration::from_secs(30)),
        "connections are closed"
    );
    assert!(!locked(std::path::Path::new(&disk)), "every lock released");
}

#[test]
fn run_refuses_a_cluster_back_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listeners = vmlockd::Listeners {
        lock: UnixListener::bind(dir.path().join("s")).expect("bind"),
        admin: None,
    };
    let (conf, _) = vmlock_conf::DaemonConfig::parse("lock_backend = \"etcd\"\n").expect("config");
    let e = vmlockd::run(listeners, &conf, std::future::ready(())).expect_err("refused");
    assert!(e.report().contains("lock_backend"), "{}", e.report());
}
