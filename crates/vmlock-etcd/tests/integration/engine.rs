//! The arbiter plugged into the real lockspace engine.

use std::sync::Arc;

use lockspace::{AcquireFlags, ClusterArbiter, Engine, EngineOptions, Error, ResourceKey};
use vmlock_etcd::EtcdArbiter;

use crate::support::{self, Recorder};

fn rk(name: &str) -> ResourceKey {
    ResourceKey {
        lockspace: String::new(),
        name: name.to_owned(),
    }
}

const SHARED: AcquireFlags = AcquireFlags {
    shared: true,
    autocreate: false,
};

#[test]
fn engine_consults_the_arbiter_and_undoes_refused_acquires() {
    let _g = support::serial();
    if !support::etcd_available() {
        return;
    }
    let etcd = support::start_single();
    let dir = tempfile::tempdir().unwrap();
    let disk = |n: &str| {
        let p = dir.path().join(n);
        std::fs::write(&p, b"").unwrap();
        p.to_str().unwrap().to_owned()
    };
    let (d1, d2) = (disk("d1"), disk("d2"));
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
    let engine = Engine::new(EngineOptions {
        arbiter: Some(a.clone() as Arc<dyn ClusterArbiter>),
        ..EngineOptions::default()
    });

    engine
        .acquire("", &d1, 10, AcquireFlags::EXCLUSIVE)
        .unwrap();
    assert!(matches!(
        b.acquire(&rk(&d1), false, 1),
        Err(Error::ClusterBusy { .. })
    ));

    engine.acquire("", &d2, 11, SHARED).unwrap();
    engine.acquire("", &d2, 12, SHARED).unwrap();
    assert_eq!(b.holders(&rk(&d2)).unwrap().len(), 2);
    b.acquire(&rk(&d2), true, 2).unwrap();
    assert!(matches!(
        b.acquire(&rk(&d2), false, 3),
        Err(Error::ClusterBusy { .. })
    ));

    // Releasing the owner in the engine releases it in the cluster.
    assert_eq!(engine.release_owner(10).unwrap(), 1);
    b.acquire(&rk(&d1), false, 1).unwrap();
    engine.release("", &d2, 11).unwrap();
    engine.release("", &d2, 12).unwrap();
    assert_eq!(
        b.holders(&rk(&d2)).unwrap().len(),
        1,
        "only B's shared hold is left"
    );
}

#[test]
fn cluster_refusal_undoes_the_local_lock() {
    let _g = support::serial();
    if !support::etcd_available() {
        return;
    }
    let etcd = support::start_single();
    let dir = tempfile::tempdir().unwrap();
    let d3 = dir.path().join("d3").to_str().unwrap().to_owned();
    std::fs::write(&d3, b"").unwrap();
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
    let engine = Engine::new(EngineOptions {
        arbiter: Some(a as Arc<dyn ClusterArbiter>),
        ..EngineOptions::default()
    });
    b.acquire(&rk(&d3), false, 4).unwrap();
    let err = engine
        .acquire("", &d3, 13, AcquireFlags::EXCLUSIVE)
        .unwrap_err();
    assert!(matches!(err, Error::ClusterBusy { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("locked by another host: held exclusive by pid 4 on host B"),
        "{err}"
    );
    assert!(
        engine.inspect("", &d3).is_none(),
        "the local lock was not undone"
    );
    // Once B lets go, the same acquire succeeds (nothing stale locally).
    b.release(&rk(&d3), 4, true);
    engine
        .acquire("", &d3, 13, AcquireFlags::EXCLUSIVE)
        .unwrap();
    assert_eq!(b.holders(&rk(&d3)).unwrap()[0].host, "A");
}
