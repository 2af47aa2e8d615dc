//! Two "hosts" (arbiters with different host ids) on one etcd.

use std::time::Duration;

use lockspace::{ClusterArbiter, Error, ResourceKey};
use vmlock_etcd::EtcdArbiter;

use crate::support::{self, Recorder};

fn rk(name: &str) -> ResourceKey {
    ResourceKey {
        lockspace: String::new(),
        name: name.into(),
    }
}

fn busy(r: Result<(), Error>) -> String {
    match r {
        Err(Error::ClusterBusy { why, .. }) => why,
        other => panic!("expected ClusterBusy, got {other:?}"),
    }
}

#[test]
fn exclusive_shared_and_release_across_hosts() {
    let _g = support::serial();
    if !support::etcd_available() {
        return;
    }
    let etcd = support::start_single();
    let dir = tempfile::tempdir().unwrap();
    let (fa, fb) = (Recorder::new(), Recorder::new());
    let a = EtcdArbiter::start(
        support::config(vec![etcd.url()], "hostA", 4, dir.path()),
        fa.clone(),
    )
    .unwrap();
    let b = EtcdArbiter::start(
        support::config(vec![etcd.url()], "hostB", 4, dir.path()),
        fb.clone(),
    )
    .unwrap();
    a.set_vm(100, "vm-a", None);

    // Exclusive on A refuses B, exclusive or shared, and names the holder.
    a.acquire(&rk("/d/excl"), false, 100).unwrap();
    let why = busy(b.acquire(&rk("/d/excl"), false, 200));
    assert!(
        why.contains("exclusive by pid 100 on host hostA (vm vm-a)"),
        "{why}"
    );
    busy(b.acquire(&rk("/d/excl"), true, 200));
    let h = b.holders(&rk("/d/excl")).unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(
        (h[0].host.as_str(), h[0].pid, h[0].shared),
        ("hostA", 100, false)
    );

    // Release on A frees it for B at once.
    a.release(&rk("/d/excl"), 100, true);
    b.acquire(&rk("/d/excl"), false, 200).unwrap();
    busy(a.acquire(&rk("/d/excl"), false, 100));

    // Shared across hosts; exclusive refused while shared is held anywhere.
    a.acquire(&rk("/d/shared"), true, 101).unwrap();
    b.acquire(&rk("/d/shared"), true, 201).unwrap();
    assert_eq!(a.holders(&rk("/d/shared")).unwrap().len(), 2);
    busy(b.acquire(&rk("/d/shared"), false, 202));
    a.release(&rk("/d/shared"), 101, true);
    busy(a.acquire(&rk("/d/shared"), false, 102));
    b.release(&rk("/d/shared"), 201, true);
    a.acquire(&rk("/d/shared"), false, 102).unwrap();

    assert!(
        fa.events().is_empty() && fb.events().is_empty(),
        "no fencing expected"
    );
}

#[test]
fn shared_joins_are_counted_per_owner() {
    let _g = support::serial();
    if !support::etcd_available() {
        return;
    }
    let etcd = support::start_single();
    let dir = tempfile::tempdir().unwrap();
    let a = EtcdArbiter::start(
        support::config(vec![etcd.url()], "A", 4, dir.path()),
        Recorder::new(),
    )
    .unwrap();
    let b = EtcdArbiter::start(
        support::config(vec![etcd.url()], "B", 4, dir.path()),
        Recorder::new(),
    )
    .unwrap();
    let k = rk("/d/joined");
    a.acquire(&k, true, 7).unwrap();
    a.acquire(&k, true, 7).unwrap();
    a.release(&k, 7, false);
    busy(b.acquire(&k, false, 9));
    a.release(&k, 7, true);
    b.acquire(&k, false, 9).unwrap();
    // A release of something never acquired is a no-op, not a panic.
    a.release(&rk("/d/none"), 1, true);
}

#[test]
fn outage_fails_fast_with_a_cluster_error() {
    let _g = support::serial();
    if !support::etcd_available() {
        return;
    }
    let etcd = support::start_single();
    let proxy = support::Proxy::start(etcd.client_port);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = support::config(vec![proxy.url()], "A", 10, dir.path());
    cfg.op_timeout = Duration::from_millis(500);
    let a = EtcdArbiter::start(cfg, Recorder::new()).unwrap();
    proxy.cut();
    let t = std::time::Instant::now();
    match a.acquire(&rk("/d/x"), false, 5) {
        Err(Error::Cluster { why, .. }) => assert!(why.contains("timed out"), "{why}"),
        other => panic!("expected Cluster error, got {other:?}"),
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    // The failed acquire left nothing behind in the record.
    let rec = vmlock_etcd::record::Record::load(&dir.path().join("A-state.json")).unwrap();
    assert!(rec.locks.is_empty(), "{rec:?}");
}

#[test]
fn start_fails_cleanly_without_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let mut cfg = support::config(vec![format!("http://127.0.0.1:{port}")], "A", 4, dir.path());
    cfg.op_timeout = Duration::from_millis(300);
    let err = EtcdArbiter::start(cfg, Recorder::new()).unwrap_err();
    assert!(err.to_string().contains("etcd"), "{err}");
    let mut bad = support::config(vec!["http://x".into()], "a/b", 4, dir.path());
    bad.op_timeout = Duration::from_millis(300);
    let err = EtcdArbiter::start(bad, Recorder::new()).unwrap_err();
    assert!(err.to_string().contains("host_id"), "{err}");
}
