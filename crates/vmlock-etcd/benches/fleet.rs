//! Fleet simulation: N simulated hosts against a 3-member etcd cluster on
//! loopback, each host a real [`EtcdArbiter`] (its own lease, keepalive
//! task, runtime, watchdog and state file), in this one process.
//!
//! ```text
//!  host 0 ──► 3 proxies (cuttable) ─┐
//!  host 1 ──────────────────────────┼──► etcd n0, n1, n2 (loopback, fsync on)
//!  ...                              │
//!  host N-1 ────────────────────────┘
//! ```
//!
//! Per N: start the hosts; fill (every host acquires its D disks: a boot
//! storm, as fast as W workers go); a steady phase (W workers at a paced
//! rate: a VM restart is a release and an acquire on the same host, a
//! migration a release on one host and an acquire on another); then host 0
//! is cut off from etcd and another host polls for one of its disks.
//! Measured: acquire p50/p99 per phase, the steady rates reached, the etcd
//! leader's CPU and RSS, the keepalives etcd received per second, the
//! failover time (cut → fence, cut → the other host's grant), and what
//! breaks: acquires that fail for another reason than a refusal, and hosts
//! that fence although nobody cut them (their lease lapsed under load).
//!
//! `cargo bench -p vmlock-etcd --bench fleet -- 10 100 1000`
//! Env: `DISKS` (100), `TTL` (10 s), `STEADY` (30 s), `RATE` (restarts/s,
//! 50), `MIGRATIONS` (per s, 10), `WORKERS` (16). Prints one Markdown row
//! per N.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lockspace::{ClusterArbiter, ResourceKey};
use vmlock_etcd::EtcdArbiter;

#[path = "../tests/integration/support.rs"]
mod support;

use support::{Etcd, Proxy, Recorder};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e3
}

struct Host {
    arb: Arc<EtcdArbiter>,
    rec: Arc<Recorder>,
}

/// Where a disk's lock is: host index and owner pid.
#[derive(Clone, Copy)]
struct Place {
    host: usize,
    owner: u32,
}

fn key(disk: usize) -> ResourceKey {
    ResourceKey {
        lockspace: "/var/lib/libvirt/lockd/files".into(),
        name: format!("fleet-disk-{disk:08}"),
    }
}

/// utime + stime of `pid`, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields after the command: state is [0], utime [11], stime [12].
    (tick(11) + tick(12)) / 100.0
}

fn rss_mib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Keepalive messages the members received so far (sum over members).
fn keepalives(members: &[Etcd]) -> f64 {
    members
        .iter()
        .filter_map(Etcd::metrics)
        .flat_map(|m| {
            m.lines()
                .filter(|l| {
                    l.starts_with("grpc_server_msg_received_total")
                        && l.contains("grpc_method=\"LeaseKeepAlive\"")
                })
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

#[derive(Default)]
struct Row {
    n: usize,
    start_s: f64,
    fill_rate: f64,
    fill_p50: f64,
    fill_p99: f64,
    acq_p50: f64,
    acq_p99: f64,
    mig_p50: f64,
    mig_p99: f64,
    steady_ops: f64,
    keepalive_rate: f64,
    leader_cpu: f64,
    sim_cpu: f64,
    leader_rss: f64,
    bench_rss: f64,
    fenced_ms: f64,
    failover_ms: f64,
    errors: usize,
    spurious: usize,
}

fn run(
    n: usize,
    disks: usize,
    ttl: u64,
    steady: u64,
    rate: u64,
    migrations: u64,
    workers: usize,
) -> Row {
    let members = support::start_cluster(3);
    let urls: Vec<String> = members.iter().map(Etcd::url).collect();
    let proxies: Vec<Proxy> = members
        .iter()
        .map(|m| Proxy::start(m.client_port))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut row = Row {
        n,
        ..Row::default()
    };

    // Start the hosts, W at a time.
    let t = Instant::now();
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Host>>> = (0..n).map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let eps = if i == 0 {
                        proxies.iter().map(Proxy::url).collect()
                    } else {
                        urls.clone()
                    };
                    let rec = Recorder::new();
                    let cfg = support::config(eps, &format!("h{i:05}"), ttl, dir.path());
                    let arb = EtcdArbiter::start(cfg, rec.clone())
                        .unwrap_or_else(|e| panic!("host {i} did not start: {e}"));
                    *slots[i].lock().unwrap() = Some(Host { arb, rec });
                }
            });
        }
    });
    let hosts: Vec<Host> = slots
        .into_iter()
        .map(|m| m.into_inner().unwrap().expect("started"))
        .collect();
    row.start_s = t.elapsed().as_secs_f64();

    let errors = AtomicUsize::new(0);
    let total = n * disks;
    let places: Vec<Mutex<Place>> = (0..total)
        .map(|d| {
            Mutex::new(Place {
                host: d / disks,
                owner: 10_000 + (d % disks) as u32,
            })
        })
        .collect();

    // Fill: every disk acquired on its home host.
    let t = Instant::now();
    let next = AtomicUsize::new(0);
    let fill: Mutex<Vec<Duration>> = Mutex::new(Vec::with_capacity(total));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let mut mine = Vec::new();
                loop {
                    let d = next.fetch_add(1, Ordering::Relaxed);
                    if d >= total {
                        break;
                    }
                    let p = *places[d].lock().unwrap();
                    let t = Instant::now();
                    if hosts[p.host].arb.acquire(&key(d), false, p.owner).is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    mine.push(t.elapsed());
                }
                fill.lock().unwrap().extend(mine);
            });
        }
    });
    let fill_s = t.elapsed().as_secs_f64();
    let mut fill = fill.into_inner().unwrap();
    row.fill_rate = total as f64 / fill_s;
    row.fill_p50 = pct(&mut fill, 0.5);
    row.fill_p99 = pct(&mut fill, 0.99);

    // Steady: paced restarts and migrations.
    let leader = members
        .iter()
        .find(|m| m.is_leader())
        .expect("a leader")
        .pid()
        .expect("leader pid");
    let me = std::process::id();
    let (cpu0, sim0) = (cpu_secs(leader), cpu_secs(me));
    let (ka0, t0) = (keepalives(&members), Instant::now());
    let acq: Mutex<Vec<Duration>> = Mutex::new(Vec::new());
    let mig: Mutex<Vec<Duration>> = Mutex::new(Vec::new());
    let ops = AtomicU64::new(0);
    let until = t0 + Duration::from_secs(steady);
    let per_worker = Duration::from_secs_f64(workers as f64 / (rate + migrations).max(1) as f64);
    let mig_share = migrations as f64 / (rate + migrations).max(1) as f64;
    std::thread::scope(|s| {
        for w in 0..workers {
            let (acq, mig, ops, errors, places, hosts) =
                (&acq, &mig, &ops, &errors, &places, &hosts);
            s.spawn(move || {
                let mut rng = 0x9e37_79b9_7f4a_7c15_u64 ^ (w as u64 + 1);
                let mut draw = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                let mut tick = Instant::now() + per_worker.mul_f64((w as f64) / workers as f64);
                let (mut my_acq, mut my_mig) = (Vec::new(), Vec::new());
                while Instant::now() < until {
                    if let Some(wait) = tick.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    tick += per_worker;
                    // Host 0 is kept out: its disks stay put for the
                    // failover measurement.
                    let d = disks + (draw() as usize % (total - disks));
                    let migrate = (draw() % 1000) as f64 / 1000.0 < mig_share && n > 2;
                    let mut p = places[d].lock().unwrap();
                    let k = key(d);
                    hosts[p.host].arb.release(&k, p.owner, true);
                    let to = if migrate {
                        let mut h = 1 + draw() as usize % (n - 1);
                        if h == p.host {
                            h = 1 + (h % (n - 1));
                        }
                        h
                    } else {
                        p.host
                    };
                    let t = Instant::now();
                    if hosts[to].arb.acquire(&k, false, p.owner).is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                        // Put it back where it was (if it can be).
                        let _ = hosts[p.host].arb.acquire(&k, false, p.owner);
                    } else {
                        p.host = to;
                    }
                    if migrate {
                        my_mig.push(t.elapsed());
                    } else {
                        my_acq.push(t.elapsed());
                    }
                    ops.fetch_add(1, Ordering::Relaxed);
                }
                acq.lock().unwrap().extend(my_acq);
                mig.lock().unwrap().extend(my_mig);
            });
        }
    });
    let secs = t0.elapsed().as_secs_f64();
    row.leader_cpu = (cpu_secs(leader) - cpu0) / secs * 100.0;
    row.sim_cpu = (cpu_secs(me) - sim0) / secs * 100.0;
    row.keepalive_rate = (keepalives(&members) - ka0) / secs;
    row.leader_rss = rss_mib(leader);
    row.bench_rss = rss_mib(std::process::id());
    row.steady_ops = ops.load(Ordering::Relaxed) as f64 / secs;
    let (mut acq, mut mig) = (acq.into_inner().unwrap(), mig.into_inner().unwrap());
    row.acq_p50 = pct(&mut acq, 0.5);
    row.acq_p99 = pct(&mut acq, 0.99);
    row.mig_p50 = pct(&mut mig, 0.5);
    row.mig_p99 = pct(&mut mig, 0.99);

    // Failover: host 0 cut off; host 1 polls for host 0's first disk.
    let cut = Instant::now();
    for p in &proxies {
        p.cut();
    }
    let other = if n > 1 { 1 } else { 0 };
    let got = support::poll(Duration::from_secs(ttl * 4), || {
        hosts[other]
            .arb
            .acquire(&key(0), false, 99)
            .ok()
            .map(|()| Instant::now())
    });
    if let (Some(at), Some(f)) = (got, hosts[0].rec.first_fence_all()) {
        assert!(f < at, "host 0 fenced after the takeover");
        row.fenced_ms = (f - cut).as_secs_f64() * 1e3;
        row.failover_ms = (at - cut).as_secs_f64() * 1e3;
    } else {
        row.fenced_ms = f64::NAN;
        row.failover_ms = f64::NAN;
    }
    row.errors = errors.load(Ordering::Relaxed);
    row.spurious = hosts[1..]
        .iter()
        .filter(|h| h.rec.first_fence_all().is_some())
        .count();
    // Shut the hosts down in parallel (each revokes nothing: a crash-like
    // stop; the members go away with the run).
    let hosts = Mutex::new(hosts);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let h = hosts.lock().unwrap().pop();
                    match h {
                        Some(h) => drop(h),
                        None => return,
                    }
                }
            });
        }
    });
    row
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "fleet simulation: run with `cargo bench -p vmlock-etcd --bench fleet -- 10 100 1000`"
        );
        return;
    }
    if !support::etcd_available() {
        return;
    }
    let ns: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let ns = if ns.is_empty() { vec![10, 100] } else { ns };
    let disks = env("DISKS", 100) as usize;
    let ttl = env("TTL", 10);
    let steady = env("STEADY", 30);
    let rate = env("RATE", 50);
    let migrations = env("MIGRATIONS", 10);
    let workers = env("WORKERS", 16) as usize;
    println!(
        "fleet: {disks} disks per host, lease_ttl {ttl} s, steady {steady} s at {rate} restarts/s + \
         {migrations} migrations/s, {workers} workers, 3 etcd members on loopback"
    );
    println!(
        "| hosts | locks | start hosts | fill rate | fill acquire p50 / p99 | steady ops/s | \
         restart acquire p50 / p99 | migration acquire p50 / p99 | keepalives/s | leader CPU | \
         simulation CPU | leader RSS | sim RSS | partition → fenced | → other host's grant | errors | spurious fences |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for n in ns {
        let r = run(n, disks, ttl, steady, rate, migrations, workers);
        println!(
            "| {} | {} | {:.1} s | {:.0}/s | {:.1} / {:.1} ms | {:.1} | {:.1} / {:.1} ms | {:.1} / {:.1} ms | \
             {:.0} | {:.0} % | {:.0} % | {:.0} MiB | {:.0} MiB | {:.0} ms | {:.0} ms | {} | {} |",
            r.n,
            r.n * disks,
            r.start_s,
            r.fill_rate,
            r.fill_p50,
            r.fill_p99,
            r.steady_ops,
            r.acq_p50,
            r.acq_p99,
            r.mig_p50,
            r.mig_p99,
            r.keepalive_rate,
            r.leader_cpu,
            r.sim_cpu,
            r.leader_rss,
            r.bench_rss,
            r.fenced_ms,
            r.failover_ms,
            r.errors,
            r.spurious
        );
    }
}
