//! The randomized cluster fault run as a test (`vmlock_soak::cluster`):
//! three vmlockd hosts on a 3-member etcd, two holder slots per host on
//! three disks, and for 90 s (`VMLOCK_FAULT_SECS` to change) partitions,
//! daemon freezes, fence-helper kills, re-execs and etcd leader moves. The
//! independent checker must find no moment with two writers of a disk, no
//! unexpected error, and every dead holder's disk granted again in time.

use std::time::Duration;

use vmlock_soak::cluster::{ClusterConfig, run_cluster};

fn secs() -> u64 {
    std::env::var("VMLOCK_FAULT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90)
}

#[test]
fn random_cluster_faults_never_give_a_disk_two_writers() {
    let _g = vmlock_testkit::etcd::serial();
    if !vmlock_testkit::etcd::etcd_available() {
        return;
    }
    let logs = tempfile::tempdir().expect("log dir");
    let seed = vmlock_sys::clock::monotonic_ns();
    let ttl = 3;
    let cfg = ClusterConfig {
        duration: Duration::from_secs(secs()),
        hosts: 3,
        slots: 2,
        disks: 3,
        ttl,
        seed,
        log_dir: logs.path().to_path_buf(),
        holder_bin: env!("CARGO_BIN_EXE_vmlock-soak").into(),
        free_bound: Duration::from_secs(ttl * 3 + 5),
        pause: false,
    };
    let summary = run_cluster(&cfg).expect("fault run ran");
    eprintln!("seed {seed}:\n{summary}");
    if !summary.problems.is_empty() {
        let kept = logs.keep();
        panic!(
            "seed {seed}: {} problems; logs kept in {}",
            summary.problems.len(),
            kept.display()
        );
    }
    // The faults and the workload really happened.
    let c = &summary.counters;
    let n = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let s = secs();
    assert!(n(&c.held) >= s / 2, "few holders got a disk: {c}");
    assert!(n(&c.busy) > 0, "no contention: {c}");
    assert!(n(&c.partitions) > 0 && n(&c.freezes) > 0, "faults: {c}");
    assert!(n(&c.helper_kills) + n(&c.reexecs) > 0, "faults: {c}");
    assert!(n(&c.leader_moves) > 0, "no leader move: {c}");
    assert!(
        summary.report.findings.free_times.len() as u64 >= s / 10,
        "few dead holders: {c}"
    );
}
