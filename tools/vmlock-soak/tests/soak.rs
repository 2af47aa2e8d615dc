//! The soak as a test: 16 thread clients, 4 SIGKILLed-holder slots and a
//! SIGUSR1 re-exec every 3 s against one vmlockd for 90 s (set
//! `VMLOCK_SOAK_SECS` to change the length). The independent checker must
//! find no conflicting holdings, no unexpected error, and every killed
//! holder's disk free again within 3 s.

use std::time::Duration;

use vmlock_soak::{Config, run};

fn secs() -> u64 {
    std::env::var("VMLOCK_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90)
}

#[test]
fn soak_never_loses_a_lock() {
    let logs = tempfile::tempdir().expect("log dir");
    let seed = vmlock_sys::clock::monotonic_ns();
    let duration = Duration::from_secs(secs());
    let cfg = Config {
        duration,
        clients: 16,
        holders: 4,
        reexec_every: Some(Duration::from_secs(3)),
        seed,
        log_dir: logs.path().to_path_buf(),
        holder_bin: env!("CARGO_BIN_EXE_vmlock-soak").into(),
        free_bound: Duration::from_secs(3),
        flavor: vmlock_testkit::Flavor::Ours,
    };
    let summary = run(&cfg).expect("soak ran");
    eprintln!("seed {seed}:\n{summary}");
    if !summary.problems.is_empty() {
        // Keep the logs for a post-mortem (vmlock-soak-check DIR).
        let kept = logs.keep();
        panic!(
            "seed {seed}: {} problems; logs kept in {}",
            summary.problems.len(),
            kept.display()
        );
    }
    let f = &summary.report.findings;
    // The workload really ran: plenty of holdings, contention, kills, re-execs.
    assert!(
        f.holdings.len() as u64 > 50 * secs(),
        "{} holdings",
        f.holdings.len()
    );
    let killed = f.free_times.len() as u64;
    assert!(killed >= secs() / 2, "only {killed} killed holders");
    let shared = f
        .holdings
        .iter()
        .filter(|h| h.mode == vmlock_soak_check::Mode::Shared)
        .count();
    assert!(shared > 100, "only {shared} shared holdings");
    let c = summary.counters;
    assert!(
        c.reexecs + 2 >= secs() / 3,
        "only {} re-execs: {c}",
        c.reexecs
    );
    assert!(c.busy > 0, "no contention: {c}");
}
