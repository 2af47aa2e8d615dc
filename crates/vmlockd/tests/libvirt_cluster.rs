//! The etcd back end under real libvirt: two libvirt "hosts" on this machine
//! (private mount and UTS namespaces, each with its own libvirtd, lock
//! daemon and lease directory), QEMU guests (TCG, a 1 MiB raw disk, no OS)
//! on storage both hosts see, libvirt's unmodified `lockd.so` between
//! libvirtd and the lock daemon. See `libvirt_support` for the layout.
//!
//! With vmlockd on the etcd back end, a guest running on one host is refused
//! on the other, its lock follows live migrations, and a host cut off from
//! etcd has its guests fenced before the other host can start them. With
//! libvirt's virtlockd on both hosts (the reference), the same migrations
//! pass and the cross-host exclusion does not hold: the lease directories
//! are private to each host, so only a cluster back end can tell.
#![cfg(feature = "etcd")]

mod cluster_support;
mod libvirt_support;

use std::time::{Duration, Instant};

use cluster_support::{TTL, config_state};
use libvirt_support::{LockDaemon, LvHost, World, alive, available};
use vmlock_testkit::etcd::{self, Proxy};
use vmlock_testkit::reexec;

const UUID_A: &str = "6a1f3c52-0b7e-4d21-9a8c-3f5e7d9b1c2a";
const UUID_B: &str = "7b2e4d63-1c8f-4e32-8b9d-4a6f8e0c2d3b";
/// Where the hosts' migration port ranges start (`qemu.conf`; the
/// destination's libvirtd picks a free port in its range).
const PORT_A: u16 = 49300;
const PORT_B: u16 = 49400;
/// Where vmlockd keeps the cluster locks (`etcd_prefix` of `cluster_support`).
const LOCKS: &str = "/vmlockd-test/locks/";

/// vmlockd's config for host `id` on `url`, its state file private to it.
fn vmlockd(url: &str, id: &str, state_dir: &std::path::Path) -> LockDaemon {
    let state = state_dir.join(format!("{id}.json"));
    LockDaemon::Vmlockd(config_state(url, id, &state, "", TTL))
}

/// Hosts A and B with guest `g1` defined on both (same UUID, same disk).
struct Pair {
    _world: World,
    a: LvHost,
    b: LvHost,
}

impl Pair {
    fn start(world: World, a: LockDaemon, b: LockDaemon) -> Pair {
        Pair::on_ports(world, a, b, PORT_A, PORT_B)
    }

    /// With the hosts' migration ports starting at `pa` and `pb`.
    fn on_ports(world: World, a: LockDaemon, b: LockDaemon, pa: u16, pb: u16) -> Pair {
        let a = LvHost::start(&world, "A", UUID_A, pa, a);
        let b = LvHost::start(&world, "B", UUID_B, pb, b);
        let disk = world.disk("g1");
        let xml = world.domain_xml("g1", &disk);
        a.define(&xml);
        b.define(&xml);
        Pair {
            _world: world,
            a,
            b,
        }
    }

    fn logs(&self) -> String {
        format!("{}{}", self.a.logs(), self.b.logs())
    }
}

/// Migrates `g1` from `src` to `dst` and checks that it runs there only.
/// Returns libvirt's downtime (ms).
fn migrate(src: &LvHost, dst: &LvHost) -> u64 {
    if let Err(e) = src.migrate("g1", dst) {
        panic!(
            "migration {} -> {}: {e}\n{}{}",
            src.name,
            dst.name,
            src.logs(),
            dst.logs()
        );
    }
    assert_eq!(dst.state("g1"), "running");
    assert_eq!(src.state("g1"), "shut off");
    src.last_downtime_ms("g1")
}

/// `host` must be refused `g1` because `holder` has it: the error comes
/// from the lock manager and names the holding host.
fn refused(host: &LvHost, holder: &str) -> String {
    let e = host
        .start_domain("g1")
        .expect_err("g1 started on a second host while the first one runs it");
    assert!(
        e.contains("is locked by another host") && e.contains(&format!("host {holder}")),
        "host {}: unexpected refusal: {e}",
        host.name
    );
    assert_eq!(host.state("g1"), "shut off");
    e
}

/// (median, 90th percentile, mean) of `v`.
fn summary(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9), v.iter().sum::<f64>() / v.len() as f64)
}

#[test]
fn guest_is_refused_on_the_other_host_and_its_lock_follows_migrations() {
    let Some((_g, etcd, dir)) = cluster_support::setup() else {
        return;
    };
    if !available() {
        return;
    }
    let url = etcd.url();
    let p = Pair::start(
        World::new(),
        vmlockd(&url, "A", dir.path()),
        vmlockd(&url, "B", dir.path()),
    );
    let (a, b) = (&p.a, &p.b);
    a.start_domain("g1")
        .unwrap_or_else(|e| panic!("{e}{}", p.logs()));
    let e = refused(b, "A");
    eprintln!("B refused: {}", e.trim());

    let mut downtimes = Vec::new();
    for _ in 0..2 {
        downtimes.push(migrate(a, b));
        refused(a, "B");
        downtimes.push(migrate(b, a));
        refused(b, "A");
    }
    eprintln!("etcd back end: migration downtime (ms) {downtimes:?}");
}

#[test]
fn the_lock_stays_through_a_libvirtd_restart_a_failed_migration_and_a_reexec() {
    let Some((_g, etcd, dir)) = cluster_support::setup() else {
        return;
    };
    if !available() {
        return;
    }
    let url = etcd.url();
    let mut p = Pair::start(
        World::new(),
        vmlockd(&url, "A", dir.path()),
        vmlockd(&url, "B", dir.path()),
    );
    p.a.start_domain("g1")
        .unwrap_or_else(|e| panic!("{e}{}", p.logs()));
    let qemu = p.a.qemu_pid("g1").expect("A's QEMU");

    // libvirtd restarted while the guest runs: the lock daemon keeps it.
    p.a.stop_libvirtd();
    refused(&p.b, "A");
    p.a.start_libvirtd();
    assert_eq!(p.a.state("g1"), "running");
    assert_eq!(p.a.qemu_pid("g1"), Some(qemu));
    refused(&p.b, "A");

    // A migration whose destination QEMU dies midway: the guest stays on
    // A, and so does its lock.
    let mut mig = p.a.migrate_cmd("g1", &p.b);
    mig.args(["--bandwidth", "1"]);
    let child = mig
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("virsh migrate");
    let dst = etcd::poll(Duration::from_secs(60), || p.b.qemu_pid("g1"))
        .unwrap_or_else(|| panic!("no destination QEMU on B\n{}", p.logs()));
    vmlock_sys::process::kill(dst, libc::SIGKILL).expect("kill the destination");
    let out = child.wait_with_output().expect("virsh migrate");
    assert!(
        !out.status.success(),
        "the migration succeeded although its destination was killed"
    );
    assert_eq!(p.a.state("g1"), "running", "{}", p.logs());
    assert_eq!(p.a.qemu_pid("g1"), Some(qemu));
    refused(&p.b, "A");
    // vmlockd on A re-exec'd while a migration to B runs: the migration
    // goes through and the lock moves with it.
    let pid = p.a.lockd_pid();
    let mut mig = p.a.migrate_cmd("g1", &p.b);
    mig.args(["--bandwidth", "1"]);
    let child = mig
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("virsh migrate");
    etcd::poll(Duration::from_secs(60), || p.b.qemu_pid("g1"))
        .unwrap_or_else(|| panic!("no destination QEMU on B\n{}", p.logs()));
    let image = reexec::image_id(pid).expect("vmlockd's image");
    vmlock_sys::process::kill(pid as i32, libc::SIGUSR1).expect("SIGUSR1");
    let out = child.wait_with_output().expect("virsh migrate");
    assert!(
        out.status.success(),
        "migration during a re-exec: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        p.logs()
    );
    let reexeced = etcd::poll(Duration::from_secs(10), || {
        (reexec::image_id(pid).ok()? != image).then_some(())
    });
    assert!(
        reexeced.is_some(),
        "vmlockd on A did not re-exec\n{}",
        p.logs()
    );
    assert!(alive(pid as i32), "vmlockd on A is gone after its re-exec");
    assert_eq!(p.b.state("g1"), "running");
    refused(&p.a, "B");
    // And back, through the re-exec'd daemon.
    migrate(&p.b, &p.a);
    refused(&p.b, "A");
}

#[test]
fn partition_fences_the_guest_before_the_other_host_starts_it() {
    let Some((_g, etcd, dir)) = cluster_support::setup() else {
        return;
    };
    if !available() {
        return;
    }
    let proxy = Proxy::start(etcd.client_port);
    let p = Pair::start(
        World::new(),
        vmlockd(&proxy.url(), "A", dir.path()),
        vmlockd(&etcd.url(), "B", dir.path()),
    );
    p.a.start_domain("g1")
        .unwrap_or_else(|e| panic!("{e}{}", p.logs()));
    let qemu = p.a.qemu_pid("g1").expect("A's QEMU");
    refused(&p.b, "A");

    // A watcher records when A's QEMU dies and when etcd drops A's lock
    // key (A's lease lapsed: from then on B's acquire can succeed); B tries
    // `virsh start` in a loop meanwhile.
    let cut = Instant::now();
    proxy.cut();
    let (died, freed, sent, done, tries) = std::thread::scope(|s| {
        let watch = s.spawn(|| {
            let until = Instant::now() + Duration::from_secs(TTL * 10);
            let (mut died, mut freed) = (None, None);
            while Instant::now() < until && (died.is_none() || freed.is_none()) {
                if died.is_none() && !alive(qemu) {
                    died = Some(Instant::now());
                }
                if freed.is_none() && etcd.count_prefix(LOCKS) == Some(0) {
                    freed = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (died, freed)
        });
        let mut tries = 0;
        let (sent, done) = loop {
            assert!(
                cut.elapsed() < Duration::from_secs(TTL * 10),
                "B never started g1\n{}",
                p.logs()
            );
            tries += 1;
            let sent = Instant::now();
            if p.b.start_domain("g1").is_ok() {
                break (sent, Instant::now());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (died, freed) = watch.join().unwrap();
        (died, freed, sent, done, tries)
    });
    let died = died.unwrap_or_else(|| panic!("A's QEMU was never fenced\n{}", p.logs()));
    let freed = freed.unwrap_or_else(|| panic!("A's lock key never left etcd\n{}", p.logs()));
    // B's acquire is the resume of its paused QEMU, inside the successful
    // `virsh start` (sent .. done); it can only succeed once the key is gone.
    assert!(
        died < freed,
        "A's QEMU died {:?} after etcd dropped its lock",
        died - freed
    );
    assert!(freed < done, "B started g1 before A's lock left etcd");
    eprintln!(
        "partition: A's QEMU fenced after {:?}; A's lock left etcd after {:?}; \
         B's successful virsh start sent after {:?}, done after {:?} ({tries} tries; lease_ttl {TTL} s)",
        died - cut,
        freed - cut,
        sent - cut,
        done - cut
    );
    let failover = freed - cut;
    assert!(
        failover <= Duration::from_secs(TTL + 2),
        "A's lock lasted {failover:?} after the cut (lease_ttl {TTL} s)"
    );
    assert!(p.a.lockd_log().contains("etcd lease about to lapse"));

    // A rejoins: its old lock does not come back. B keeps running, A is
    // refused.
    proxy.heal();
    let b_qemu = p.b.qemu_pid("g1").expect("B's QEMU");
    std::thread::sleep(Duration::from_secs(TTL));
    refused(&p.a, "B");
    assert!(alive(b_qemu), "B's guest was fenced after A rejoined");
    assert_eq!(p.b.state("g1"), "running");
}

/// The reference: virtlockd on both hosts. Migrations work, but nothing
/// keeps the second host from starting the guest (its lease directory is
/// private), which is what the vmlockd tests above tell apart.
#[test]
fn virtlockd_migrates_but_cannot_keep_the_hosts_apart() {
    let _g = etcd::serial();
    if !available() {
        return;
    }
    let p = Pair::start(World::new(), LockDaemon::Virtlockd, LockDaemon::Virtlockd);
    p.a.start_domain("g1")
        .unwrap_or_else(|e| panic!("{e}{}", p.logs()));
    // The exclusion fails: B starts the same disk.
    p.b.start_domain("g1")
        .expect("virtlockd with private lease directories refused the second host");
    p.b.virsh_ok(&["destroy", "g1"]);
    let mut downtimes = Vec::new();
    for _ in 0..2 {
        downtimes.push(migrate(&p.a, &p.b));
        downtimes.push(migrate(&p.b, &p.a));
    }
    eprintln!("virtlockd: migration downtime (ms) {downtimes:?}");
}

/// Live-migration downtime, vmlockd on etcd against virtlockd, in one run:
/// two pairs of hosts side by side, migrations interleaved (etcd pair,
/// virtlockd pair, ...) so both see the same machine load. The downtime is
/// libvirt's own ("Total downtime" of `virsh domjobinfo --completed`: from
/// the source's pause, where lockd.so releases, to the destination's
/// resume, where it acquires), in ms; the wall time of `virsh migrate`
/// beside it. `VMLOCK_MIGRATIONS` sets the migrations per back end (20).
#[test]
#[ignore = "a measurement for docs/PERFORMANCE.md, not a check: cargo test -p vmlockd --all-features --test libvirt_cluster -- --ignored --nocapture"]
fn migration_downtime_etcd_against_virtlockd() {
    let Some((_g, etcd, dir)) = cluster_support::setup() else {
        return;
    };
    if !available() {
        return;
    }
    let n: usize = std::env::var("VMLOCK_MIGRATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let url = etcd.url();
    let ours = Pair::start(
        World::new(),
        vmlockd(&url, "A", dir.path()),
        vmlockd(&url, "B", dir.path()),
    );
    let reference = Pair::on_ports(
        World::new(),
        LockDaemon::Virtlockd,
        LockDaemon::Virtlockd,
        PORT_A + 200,
        PORT_B + 200,
    );
    for p in [&ours, &reference] {
        p.a.start_domain("g1")
            .unwrap_or_else(|e| panic!("{e}{}", p.logs()));
    }
    let (mut down, mut wall) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    for i in 0..n {
        for (k, p) in [&ours, &reference].into_iter().enumerate() {
            let (src, dst) = if i.is_multiple_of(2) {
                (&p.a, &p.b)
            } else {
                (&p.b, &p.a)
            };
            let t = Instant::now();
            let d = migrate(src, dst);
            wall[k].push(t.elapsed().as_secs_f64() * 1e3);
            down[k].push(d as f64);
        }
    }
    // After an even number of migrations the guest is back on A.
    if n.is_multiple_of(2) {
        refused(&ours.b, "A");
    } else {
        refused(&ours.a, "B");
    }
    eprintln!(
        "| back end | migrations | downtime median | p90 | mean | virsh migrate median | p90 |"
    );
    eprintln!("|---|---|---|---|---|---|---|");
    for (k, name) in ["vmlockd, etcd back end", "virtlockd"].iter().enumerate() {
        let (dm, dp, da) = summary(&down[k]);
        let (wm, wp, _) = summary(&wall[k]);
        eprintln!(
            "| {name} | {n} | {dm:.0} ms | {dp:.0} ms | {da:.1} ms | {wm:.0} ms | {wp:.0} ms |"
        );
    }
    let (o, r) = (summary(&down[0]), summary(&down[1]));
    eprintln!(
        "downtime, etcd minus virtlockd: median {:+.0} ms, mean {:+.1} ms (ratio of medians {:.2})",
        o.0 - r.0,
        o.2 - r.2,
        o.0 / r.0.max(1.0)
    );
}
