//! A crashed daemon's successor adopts live owners' locks within the TTL,
//! and fences owners whose lease ran out.

use std::process::{Child, Command};
use std::time::Duration;

use lockspace::{ClusterArbiter, ResourceKey};
use vmlock_etcd::EtcdArbiter;

use crate::support::{self, Recorder};

fn rk(name: &str) -> ResourceKey {
    ResourceKey {
        lockspace: String::new(),
        name: name.into(),
    }
}

struct Owner(Child);

impl Owner {
    fn spawn() -> Owner {
        Owner(Command::new("sleep").arg("120").spawn().unwrap())
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn restart_within_ttl_adopts_live_owners_and_releases_dead_ones() {
    let _g = support::serial();
    if !support::etcd_available() {
        return;
    }
    let ttl = 4;
    let etcd = support::start_single();
    let dir = tempfile::tempdir().unwrap();
    let cfg_a = support::config(vec![etcd.url()], "A", ttl, dir.path());
    let b = EtcdArbiter::start(
        support::config(vec![etcd.url()], "B", ttl, dir.path()),
        Recorder::new(),
    )
    .unwrap();
    let (alive, mut dead) = (Owner::spawn(), Owner::spawn());
    let a = EtcdArbiter::start(cfg_a.clone(), Recorder::new()).unwrap();
    let lease = a.lease_id();
    a.acquire(&rk("/d/alive"), false, alive.pid()).unwrap();
    a.acquire(&rk("/d/alive-shared"), true, alive.pid())
        .unwrap();
    a.acquire(&rk("/d/alive-shared"), true, alive.pid())
        .unwrap();
    a.acquire(&rk("/d/dead"), false, dead.pid()).unwrap();
    dead.kill();
    drop(a); // a crash: the lease is not revoked

    let fence = Recorder::new();
    let a2 = EtcdArbiter::start(cfg_a, fence.clone()).unwrap();
    assert_eq!(a2.lease_id(), lease, "the live lease is reused");
    let mut adopted: Vec<_> = a2
        .adopted()
        .iter()
        .map(|l| (l.key.name.as_str(), l.owner, l.shared, l.count))
        .collect();
    adopted.sort();
    assert_eq!(
        adopted,
        vec![
            ("/d/alive", alive.pid(), false, 1),
            ("/d/alive-shared", alive.pid(), true, 2)
        ]
    );
    // The dead owner's key is deleted by the successor.
    let freed = support::poll(Duration::from_secs(3), || {
        b.acquire(&rk("/d/dead"), false, 9).ok()
    });
    assert!(freed.is_some(), "the dead owner's lock was not released");
    // The adopted lock stays held past the original TTL: A2 renews the lease.
    std::thread::sleep(Duration::from_secs(ttl + 1));
    assert!(support::is_busy(b.acquire(&rk("/d/alive"), false, 9)));
    assert!(support::is_busy(b.acquire(
        &rk("/d/alive-shared"),
        false,
        9
    )));
    assert!(fence.events().is_empty(), "{:?}", fence.events());
    // Adopted counts are honoured: two releases free the shared one.
    a2.release(&rk("/d/alive-shared"), alive.pid(), false);
    assert!(support::is_busy(b.acquire(
        &rk("/d/alive-shared"),
        false,
        9
    )));
    a2.release(&rk("/d/alive-shared"), alive.pid(), true);
    b.acquire(&rk("/d/alive-shared"), false, 9).unwrap();
}

#[test]
fn restart_after_ttl_fences_still_running_owners() {
    let _g = support::serial();
    if !support::etcd_available() {
        return;
    }
    let ttl = 3;
    let etcd = support::start_single();
    let dir = tempfile::tempdir().unwrap();
    let cfg_a = support::config(vec![etcd.url()], "A", ttl, dir.path());
    let b = EtcdArbiter::start(
        support::config(vec![etcd.url()], "B", ttl, dir.path()),
        Recorder::new(),
    )
    .unwrap();
    let (alive, mut dead) = (Owner::spawn(), Owner::spawn());
    let a = EtcdArbiter::start(cfg_a.clone(), Recorder::new()).unwrap();
    a.acquire(&rk("/d/vm"), false, alive.pid()).unwrap();
    a.acquire(&rk("/d/vm2"), false, dead.pid()).unwrap();
    dead.kill();
    drop(a);
    // The lease runs out; B takes the lock meanwhile.
    let took = support::poll(Duration::from_secs(ttl + 3), || {
        b.acquire(&rk("/d/vm"), false, 9).ok()
    });
    assert!(took.is_some(), "the lease never expired");

    let fence = Recorder::new();
    let a2 = EtcdArbiter::start(cfg_a, fence.clone()).unwrap();
    assert!(a2.adopted().is_empty());
    assert_eq!(
        fence.fenced_pids(),
        vec![alive.pid()],
        "only the running owner is fenced"
    );
    assert!(a2.lease_id().is_some(), "a fresh lease is granted");
    let rec = vmlock_etcd::record::Record::load(&dir.path().join("A-state.json")).unwrap();
    assert!(rec.locks.is_empty());
    assert_eq!(rec.lease_id, a2.lease_id());
}
