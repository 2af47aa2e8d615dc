//! docs/quirks.md #17: named lockspaces outlive a daemon restart. libvirt creates its
//! lockspaces once, when its lock driver starts; after virtlockd is restarted
//! every lease in them fails ("Lockspace for path … does not exist") until
//! libvirtd restarts too. vmlockd remembers them beside its sockets.
//!
//! The daemon runs twice on the same `/run` (a private mount namespace with a
//! temp dir bound there), as a service restart would.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use vmlock_testkit::daemon::ns_command;
use vmlock_testkit::frames::{self, decode_reply};
use vmlock_testkit::{RawConn, vmlockd_binary, wait_until};

const AUTOCREATE: u32 = 2;

fn start(run: &Path, log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("log");
    let child = ns_command(run, &vmlockd_binary())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start vmlockd");
    let sock = run.join("libvirt/virtlockd-sock");
    assert!(
        wait_until(Duration::from_secs(10), || RawConn::connect(&sock).is_ok()),
        "vmlockd did not come up"
    );
    child
}

fn stop(mut child: Child) {
    // unshare and sh exec: the child is vmlockd itself.
    vmlock_sys::process::kill(child.id() as i32, libc::SIGTERM).expect("SIGTERM");
    let st = child.wait().expect("reaped");
    assert!(st.success(), "clean exit: {st}");
}

/// REGISTERs a fake owner and acquires `name` in `lockspace` with AUTOCREATE.
fn lease(sock: &Path, lockspace: &str, name: &str) -> Option<String> {
    let mut c = RawConn::connect(sock).expect("connect");
    let r = c
        .call(&frames::register(0, [3; 16], "vm", 1, 4_194_123, 0))
        .expect("reg");
    assert!(decode_reply(&r).1.is_none());
    let r = c
        .call(&frames::acquire(1, lockspace, name, AUTOCREATE))
        .expect("acquire");
    let err = decode_reply(&r).1.map(|e| e.text().to_owned());
    if err.is_none() {
        let r = c
            .call(&frames::release(2, lockspace, name, 0))
            .expect("release");
        assert!(decode_reply(&r).1.is_none());
    }
    err
}

#[test]
fn a_lockspace_created_before_a_restart_still_exists_after_it() {
    let tmp = tempfile::Builder::new()
        .prefix("vmlock-t")
        .tempdir_in("/tmp")
        .expect("tmp");
    let run = tmp.path().join("run");
    std::fs::create_dir(&run).expect("run");
    let ls = tmp.path().join("leases");
    let ls = ls.to_string_lossy().into_owned();
    let never = tmp.path().join("never").to_string_lossy().into_owned();
    let sock = run.join("libvirt/virtlockd-sock");

    let first = start(&run, &tmp.path().join("first.log"));
    let mut c = RawConn::connect(&sock).expect("connect");
    let r = c.call(&frames::create_lockspace(0, &ls)).expect("create");
    assert!(decode_reply(&r).1.is_none(), "lockspace created");
    drop(c);
    assert_eq!(
        lease(&sock, &ls, "disk-a"),
        None,
        "lease before the restart"
    );
    stop(first);
    let remembered = std::fs::read(run.join("libvirt/vmlockd-lockspaces")).expect("list");
    assert_eq!(remembered, format!("{ls}\0").into_bytes());

    let second = start(&run, &tmp.path().join("second.log"));
    assert_eq!(
        lease(&sock, &ls, "disk-a"),
        None,
        "lease after the restart, with no CREATE_LOCKSPACE in between"
    );
    let e = lease(&sock, &never, "disk-b").expect("an unknown lockspace still fails");
    assert!(e.contains("does not exist"), "{e}");
    stop(second);
}
