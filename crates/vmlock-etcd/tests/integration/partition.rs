//! A partitioned host fences itself before another host can take over.

use std::time::{Duration, Instant};

use lockspace::{ClusterArbiter, ResourceKey};
use vmlock_etcd::EtcdArbiter;

use crate::support::{self, FenceEvent, Proxy, Recorder};

#[test]
fn partitioned_host_fences_before_takeover() {
    let _g = support::serial();
    if !support::etcd_available() {
        return;
    }
    let ttl = 3;
    let etcd = support::start_single();
    let proxy = Proxy::start(etcd.client_port);
    let dir = tempfile::tempdir().unwrap();
    let (fa, fb) = (Recorder::new(), Recorder::new());
    let a = EtcdArbiter::start(
        support::config(vec![proxy.url()], "A", ttl, dir.path()),
        fa.clone(),
    )
    .unwrap();
    let b = EtcdArbiter::start(
        support::config(vec![etcd.url()], "B", ttl, dir.path()),
        fb.clone(),
    )
    .unwrap();
    let k = ResourceKey {
        lockspace: String::new(),
        name: "/d/vm1.img".into(),
    };
    a.acquire(&k, false, 4242).unwrap();
    std::thread::sleep(Duration::from_millis(1500)); // a few keepalives
    assert!(support::is_busy(b.acquire(&k, false, 77)));

    let cut_at = Instant::now();
    proxy.cut();
    let got = support::poll(Duration::from_secs(ttl + 4), || {
        b.acquire(&k, false, 77).ok().map(|()| Instant::now())
    });
    let b_at = got.expect("B never acquired the lock");
    let fenced_at = fa.first_fence_all().expect("A was never fenced");
    assert!(
        fenced_at < b_at,
        "A fenced {:?} after B acquired",
        fenced_at - b_at
    );
    assert!(
        b_at - cut_at <= Duration::from_secs(ttl + 2),
        "takeover took {:?}",
        b_at - cut_at
    );
    assert_fenced_once(&fa, &k, 4242);
    assert_eq!(
        a.lease_id(),
        None,
        "A cannot have a new lease while cut off"
    );
    assert!(fb.events().is_empty());
    eprintln!(
        "cut → A fenced {:?}, cut → B acquired {:?}",
        fenced_at - cut_at,
        b_at - cut_at
    );
}

/// Exactly one fence of `owner`, then the loss of `key` reported.
fn assert_fenced_once(f: &Recorder, key: &ResourceKey, owner: u32) {
    let ev = f.events();
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert!(
        matches!(&ev[0], FenceEvent::All { owners, .. } if owners == &[owner]),
        "{ev:?}"
    );
    let FenceEvent::Lost { lost, .. } = &ev[1] else {
        panic!("expected locks_lost second: {ev:?}");
    };
    assert_eq!(lost.len(), 1);
    assert_eq!(
        (&lost[0].key, lost[0].owner, lost[0].shared),
        (key, owner, false)
    );
}
