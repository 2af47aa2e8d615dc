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
    w.assert_release_paths();
    w.d.assert_alive();
}

#[test]
fn upgrade_from_libvirt_virtlockd_to_vmlockd() {
    switch(Flavor::Theirs, Flavor::Ours);
}

#[test]
fn rollback_from_vmlockd_to_libvirt_virtlockd() {
    switch(Flavor::Ours, Flavor::Theirs);
}
