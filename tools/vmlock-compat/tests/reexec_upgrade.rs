//! Live upgrade and rollback between libvirt's virtlockd and vmlockd by
//! SIGUSR1 (docs/protocol.md §9, docs/quirks.md #20): the daemon runs through an `argv[0]`
//! symlink, the symlink is retargeted, SIGUSR1 makes the running daemon
//! exec the other binary under the same pid, and every lock, connection
//! and holder must carry on.

#[allow(dead_code)]
mod reexec_common;

use std::time::Duration;

use reexec_common::{World, real_binary};
use vmlock_testkit::Flavor;
use vmlock_testkit::reexec::{exe, send_reexec};

/// Builds the world on `from`, re-execs into `to`, checks everything.
fn switch(from: Flavor, to: Flavor) {
    let mut w = World::start(from);
    let pid = w.d.pid();
    assert_eq!(exe(pid).expect("exe"), real_binary(from));
    w.assert_all_held();
    w.link.retarget(&to.default_binary()).expect("retarget");
    let watch = send_reexec(&w.d).expect("SIGUSR1");
    let took = watch
        .wait(&w.d, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "{} -> {}: new client served {took:?} after SIGUSR1",
        from.name(),
        to.name()
    );
    w.d.assert_alive();
    assert_eq!(w.d.pid(), pid);
    assert_eq!(
        exe(pid).expect("exe"),
        real_binary(to),
        "the new image runs"
    );
    assert!(!w.d.state_file().exists(), "the state file is consumed");
    w.assert_all_held();
    if to == Flavor::Ours {
        since_unknown_after_upgrade(&w);
    }
    w.assert_release_paths();
    w.d.assert_alive();
}

/// libvirt's state has no acquire times: vmlockd lists every lock it took
/// over with `since` null (docs/inquiry.md, "Across a re-exec"), and
/// counts re-execs from this one.
fn since_unknown_after_upgrade(w: &World) {
    let ctl = |args: &[&str]| {
        let o = std::process::Command::new(vmlock_testkit::tool_binary("vmlockctl"))
            .arg("--socket")
            .arg(w.d.socket_path())
            .arg("--admin-socket")
            .arg(w.d.admin_socket_path())
            .args(args)
            .output()
            .expect("vmlockctl");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).expect("JSON")
    };
    let rows = ctl(&["list", "--json"]);
    let rows = rows.as_array().expect("array");
    assert!(!rows.is_empty(), "the locks taken over are listed");
    assert!(rows.iter().all(|r| r["since"].is_null()), "{rows:?}");
    let s = ctl(&["status", "--json"]);
    assert_eq!(s["reexecs"], 1, "{s}");
    // The daemon's start is this re-exec (libvirt kept no record of its own).
    let (started, at) = (s["started"].as_i64(), s["reexec_time"].as_i64());
    assert!(
        started
            .zip(at)
            .is_some_and(|(s0, t)| (t - 2..=t).contains(&s0)),
        "{s}"
    );
}

#[test]
fn upgrade_from_libvirt_virtlockd_to_vmlockd() {
    switch(Flavor::Theirs, Flavor::Ours);
}

#[test]
fn rollback_from_vmlockd_to_libvirt_virtlockd() {
    switch(Flavor::Ours, Flavor::Theirs);
}
