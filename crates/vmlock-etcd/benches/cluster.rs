//! Cross-host acquire latency and partition failover time on loopback etcd.
//!
//! `cargo bench -p vmlock-etcd --bench cluster` (needs `etcd` in PATH).
//! Optional env: `ITER` (latency iterations, default 500), `FAILOVERS`
//! (partition runs, default 3), `TTL` (seconds, default 3).

use std::time::{Duration, Instant};

use lockspace::{ClusterArbiter, ResourceKey};
use vmlock_etcd::EtcdArbiter;

#[path = "../tests/integration/support.rs"]
mod support;

use support::{Proxy, Recorder};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(what: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{what:<34} n={:<5} p50={:>8.3} ms  p99={:>8.3} ms  max={:>8.3} ms",
        v.len(),
        pct(&v, 0.50).as_secs_f64() * 1e3,
        pct(&v, 0.99).as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3
    );
}

fn latency(iter: u64) {
    let etcd = support::start_single();
    let dir = tempfile::tempdir().unwrap();
    let a = EtcdArbiter::start(
        support::config(vec![etcd.url()], "A", 10, dir.path()),
        Recorder::new(),
    )
    .unwrap();
    let b = EtcdArbiter::start(
        support::config(vec![etcd.url()], "B", 10, dir.path()),
        Recorder::new(),
    )
    .unwrap();
    let (mut acq, mut cross, mut busy, mut rel) = (vec![], vec![], vec![], vec![]);
    for i in 0..iter {
        let k = ResourceKey {
            lockspace: String::new(),
            name: format!("/bench/disk{i}"),
        };
        let t = Instant::now();
        a.acquire(&k, false, 1).unwrap();
        acq.push(t.elapsed());
        let t = Instant::now();
        assert!(support::is_busy(b.acquire(&k, false, 2)));
        busy.push(t.elapsed());
        let t = Instant::now();
        a.release(&k, 1, true);
        rel.push(t.elapsed());
        let t = Instant::now();
        b.acquire(&k, false, 2).unwrap();
        cross.push(t.elapsed());
        b.release(&k, 2, true);
    }
    report("acquire exclusive (free)", acq);
    report("acquire refused (held by A)", busy);
    report("release", rel);
    report("cross-host acquire after release", cross);
}

fn failover(ttl: u64) -> (Duration, Duration) {
    let etcd = support::start_single();
    let proxy = Proxy::start(etcd.client_port);
    let dir = tempfile::tempdir().unwrap();
    let fa = Recorder::new();
    let a = EtcdArbiter::start(
        support::config(vec![proxy.url()], "A", ttl, dir.path()),
        fa.clone(),
    )
    .unwrap();
    let b = EtcdArbiter::start(
        support::config(vec![etcd.url()], "B", ttl, dir.path()),
        Recorder::new(),
    )
    .unwrap();
    let k = ResourceKey {
        lockspace: String::new(),
        name: "/bench/vm".into(),
    };
    a.acquire(&k, false, 1).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let cut = Instant::now();
    proxy.cut();
    let got = support::poll(Duration::from_secs(ttl + 10), || {
        b.acquire(&k, false, 2).ok().map(|()| Instant::now())
    });
    let b_at = got.expect("no takeover");
    let f_at = fa.first_fence_all().expect("A not fenced");
    assert!(f_at < b_at, "fence after takeover");
    (f_at - cut, b_at - cut)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not,
    // and should not spend half a minute here.
    if !std::env::args().any(|a| a == "--bench") {
        println!("cluster benchmark: run with `cargo bench -p vmlock-etcd --bench cluster`");
        return;
    }
    if !support::etcd_available() {
        return;
    }
    latency(env("ITER", 500));
    let ttl = env("TTL", 3);
    let runs = env("FAILOVERS", 3);
    let (mut fenced, mut taken) = (vec![], vec![]);
    for _ in 0..runs {
        let (f, t) = failover(ttl);
        fenced.push(f);
        taken.push(t);
    }
    report(&format!("partition → A fenced (ttl {ttl}s)"), fenced);
    report(&format!("partition → B acquired (ttl {ttl}s)"), taken);
}
