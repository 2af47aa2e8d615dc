//! The etcd back end through the daemon, end to end: two vmlockd "hosts" on
//! a private single-member etcd on loopback, clients speaking the raw
//! protocol over each daemon's socket.
//!
//! `cargo bench -p vmlockd --features etcd --bench cluster` (needs `etcd` in
//! PATH and the binaries: `cargo build -p vmlockd --features etcd -p
//! vmlock-testkit --bins`). Env: `ITER` (default 300), `TTLS` (lease TTLs
//! for the failover runs, default "3,10").
//!
//! Measures, from the client's side:
//! * acquire + release of a free disk on one host (two etcd writes);
//! * cross-host hand-over: A releases, B's acquire of the same disk succeeds;
//! * failover: the proxy between A and etcd is cut while A's VM holds the
//!   disk; time until A's VM is dead (fenced) and until B's acquire succeeds.

#[path = "../tests/cluster_support/mod.rs"]
mod cluster_support;

use std::time::{Duration, Instant};

use cluster_support::{Holder, Host, acquire, release, sleeper};
use vmlock_testkit::etcd::{self, Proxy};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn row(what: &str, v: &mut [Duration]) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "| {what} | {} | {:.2} | {:.2} | {:.2} |",
        v.len(),
        ms(pct(v, 0.5)),
        ms(pct(v, 0.99)),
        ms(pct(v, 1.0))
    );
}

fn latencies(url: &str, dir: &std::path::Path, iter: usize) {
    let a = Host::start(url, "A", dir, "");
    let b = Host::start(url, "B", dir, "");
    let (mut sa, mut sb) = (sleeper(), sleeper());
    let (mut ca, mut cb) = (a.client(sa.id()), b.client(sb.id()));
    let (mut own, mut handover) = (Vec::new(), Vec::new());
    for i in 0..iter {
        let name = format!("own{i}");
        let t0 = Instant::now();
        acquire(&mut ca, &name, false).expect("acquire");
        release(&mut ca, &name);
        own.push(t0.elapsed());
        acquire(&mut ca, "hot", false).expect("acquire on A");
        release(&mut ca, "hot");
        let t0 = Instant::now();
        acquire(&mut cb, "hot", false).expect("cross-host acquire");
        handover.push(t0.elapsed());
        release(&mut cb, "hot");
    }
    println!("| measurement | n | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    row("acquire + release, free disk, one host", &mut own);
    row(
        "cross-host acquire right after the other host's release",
        &mut handover,
    );
    for s in [&mut sa, &mut sb] {
        let _ = (s.kill(), s.wait());
    }
}

fn failover(etcd_port: u16, url: &str, dir: &std::path::Path, ttl: u64) {
    let proxy = Proxy::start(etcd_port);
    let a = Host::start_ttl(&proxy.url(), "A", dir, "", ttl);
    let b = Host::start_ttl(url, "B", dir, "", ttl);
    // A name per run: the previous run's daemons died without revoking.
    let disk = format!("disk-ttl{ttl}");
    let mut vm = Holder::start(&a, &disk, false);
    let mut sb = sleeper();
    let mut cb = b.client(sb.id());
    let cut = Instant::now();
    proxy.cut();
    let mut dead = None;
    let granted = loop {
        if dead.is_none() && !vm.alive() {
            dead = Some(cut.elapsed());
        }
        if acquire(&mut cb, &disk, false).is_ok() {
            break cut.elapsed();
        }
        assert!(cut.elapsed() < Duration::from_secs(ttl + 10), "no failover");
        std::thread::sleep(Duration::from_millis(5));
    };
    let dead = dead.map_or("after the grant (!)".to_owned(), |d| {
        format!("{:.2} s", d.as_secs_f64())
    });
    println!(
        "| {ttl} s | {dead} | {:.2} s | {:.2} s |",
        granted.as_secs_f64(),
        ttl as f64 + 1.0
    );
    let _ = (sb.kill(), sb.wait());
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` probing
    }
    if !etcd::etcd_available() {
        return;
    }
    let iter: usize = env("ITER", "300").parse().unwrap_or(300);
    let etcd = etcd::start_single();
    let dir = tempfile::tempdir().expect("tmp");
    println!("\n### Latency through the daemons ({iter} iterations)\n");
    latencies(&etcd.url(), dir.path(), iter);
    println!("\n### Failover (partition of host A from etcd)\n");
    println!("| lease_ttl | A's VM fenced after | B acquired after | goal: at most |");
    println!("|---|---|---|---|");
    for ttl in env("TTLS", "3,10")
        .split(',')
        .filter_map(|t| t.trim().parse().ok())
    {
        let d = tempfile::tempdir().expect("tmp");
        failover(etcd.client_port, &etcd.url(), d.path(), ttl);
    }
}
