//! Three etcd members; killing the leader loses no lock and fences nobody.

use std::time::Duration;

use lockspace::{ClusterArbiter, ResourceKey};
use vmlock_etcd::EtcdArbiter;

use crate::support::{self, Recorder};

#[test]
fn leader_loss_keeps_locks_and_fences_nobody() {
    let _g = support::serial();
    if !support::etcd_available() {
        return;
    }
    // Long enough that an election on a loaded two-core machine (seconds,
    // not the nominal one) fits inside the renewal budget: with a 6 s TTL
    // the budget is 4.8 s from the last renewal sent, and a slow election
    // made A fence itself (correctly, but not what this test is about).
    let ttl = 10;
    let mut nodes = support::start_cluster(3);
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let dir = tempfile::tempdir().unwrap();
    let (fa, fb) = (Recorder::new(), Recorder::new());
    let a = EtcdArbiter::start(
        support::config(urls.clone(), "A", ttl, dir.path()),
        fa.clone(),
    )
    .unwrap();
    let b = EtcdArbiter::start(support::config(urls, "B", ttl, dir.path()), fb.clone()).unwrap();
    let keys: Vec<ResourceKey> = (0..5)
        .map(|i| ResourceKey {
            lockspace: "/ls".into(),
            name: format!("disk{i}"),
        })
        .collect();
    for k in &keys {
        a.acquire(k, false, 1000).unwrap();
    }
    let leader = support::poll(Duration::from_secs(10), || {
        nodes.iter().position(|n| n.is_leader())
    })
    .expect("no leader found");
    nodes[leader].kill();
    // Well past the TTL, across the election.
    std::thread::sleep(Duration::from_secs(ttl + 3));
    for k in &keys {
        let r = b.acquire(k, false, 2000);
        assert!(
            support::is_busy(r.clone()),
            "{k:?}: B's acquire gave {r:?}; A's fence events: {:?}",
            fa.events()
        );
        let h = b.holders(k).unwrap();
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!((h[0].host.as_str(), h[0].pid), ("A", 1000));
    }
    assert!(fa.events().is_empty(), "A was fenced: {:?}", fa.events());
    assert!(fb.events().is_empty(), "B was fenced: {:?}", fb.events());
    // The cluster still serves both hosts.
    a.release(&keys[0], 1000, true);
    let got = support::poll(Duration::from_secs(3), || {
        b.acquire(&keys[0], false, 2000).ok()
    });
    assert!(
        got.is_some(),
        "B could not take a released lock after failover"
    );
}
