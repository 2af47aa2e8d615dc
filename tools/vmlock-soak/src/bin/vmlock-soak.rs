//! `vmlock-soak [--duration S] [--clients N] [--holders H] [--reexec-every S] [--seed X]`
//! `vmlock-soak --cluster [--duration S] [--hosts N] [--holders H] [--ttl S] [--seed X]`
//!
//! Runs a soak against a fresh vmlockd (needs root: the daemon runs in a
//! private mount namespace) and prints the checker's verdict; exits 1 on
//! any problem. `--cluster` runs the randomized cluster fault run instead
//! (`vmlock_soak::cluster`: vmlockd hosts on a 3-member etcd, partitions,
//! freezes, fence-helper kills, re-execs, leader moves; `--holders` is per
//! host). `vmlock-soak holder …` is the holder process they spawn.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use vmlock_soak::{Config, cluster, holder, log_dir_in, run};
use vmlock_testkit::Flavor;

/// Soak vmlockd with random clients, killed holders and re-execs.
#[derive(Debug, Parser)]
struct Args {
    /// Seconds of workload.
    #[arg(long, default_value_t = 90)]
    duration: u64,
    /// Thread clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Holder slots.
    #[arg(long, default_value_t = 4)]
    holders: usize,
    /// Seconds between SIGUSR1 re-execs (0: none).
    #[arg(long, default_value_t = 3)]
    reexec_every: u64,
    /// RNG seed (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Parent of the log directory.
    #[arg(long, default_value = "/tmp")]
    out: PathBuf,
    /// Largest acceptable kill-to-free time, ms.
    #[arg(long, default_value_t = 3000)]
    free_bound_ms: u64,
    /// Soak libvirt's virtlockd instead of vmlockd, for comparison.
    #[arg(long)]
    theirs: bool,
    /// The cluster fault run instead of the soak.
    #[arg(long)]
    cluster: bool,
    /// Cluster run: vmlockd hosts.
    #[arg(long, default_value_t = 3)]
    hosts: usize,
    /// Cluster run: contended disks.
    #[arg(long, default_value_t = 3)]
    disks: usize,
    /// Cluster run: lease_ttl, seconds.
    #[arg(long, default_value_t = 3)]
    ttl: u64,
    /// Cluster run, control: fences stop holders (on_lease_loss = "pause")
    /// and the driver takes them for writers; the checker must object.
    #[arg(long)]
    pause: bool,
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("holder") {
        if let Err(e) = holder::holder_main(&argv[2..]) {
            eprintln!("vmlock-soak holder: {e}");
        }
        std::process::exit(2);
    }
    let a = Args::parse();
    let seed = a.seed.unwrap_or_else(vmlock_sys::clock::monotonic_ns);
    let log_dir = match log_dir_in(&a.out, seed) {
        Ok(d) => d,
        Err(e) => fail(&format!("log dir: {e}")),
    };
    let cfg = Config {
        duration: Duration::from_secs(a.duration),
        clients: a.clients,
        holders: a.holders,
        reexec_every: (a.reexec_every > 0).then(|| Duration::from_secs(a.reexec_every)),
        seed,
        log_dir: log_dir.clone(),
        holder_bin: holder::self_exe(),
        free_bound: Duration::from_millis(a.free_bound_ms),
        flavor: if a.theirs {
            Flavor::Theirs
        } else {
            Flavor::Ours
        },
    };
    println!("seed {seed}, logs in {}", log_dir.display());
    if a.cluster {
        let ccfg = cluster::ClusterConfig {
            duration: cfg.duration,
            hosts: a.hosts,
            slots: a.holders,
            disks: a.disks,
            ttl: a.ttl,
            seed,
            log_dir: log_dir.clone(),
            holder_bin: holder::self_exe(),
            // A dead holder's disk waits at most for its host's lease to
            // lapse (a frozen or cut-off host) and for a slot to ask.
            free_bound: cfg.free_bound.max(Duration::from_secs(a.ttl * 3 + 5)),
            pause: a.pause,
        };
        match cluster::run_cluster(&ccfg) {
            Ok(summary) => {
                println!("{summary}");
                std::process::exit(i32::from(!summary.problems.is_empty()));
            }
            Err(e) => fail(&e.to_string()),
        }
    }
    match run(&cfg) {
        Ok(summary) => {
            println!("{summary}");
            std::process::exit(i32::from(!summary.problems.is_empty()));
        }
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("vmlock-soak: {msg}");
    std::process::exit(2)
}
