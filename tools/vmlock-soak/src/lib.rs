//! A randomized soak of vmlockd, judged by an independent checker.
//!
//! ```text
//! vmlockd (testkit, private mount namespace)
//!   ▲  ▲  ▲                      ▲
//!   │  │  └ thread clients c<i>: own / shared / contended disks (worker.rs)
//!   │  └─── holder processes h<j>g<n>, SIGKILLed at random (holder.rs)
//!   └────── SIGUSR1 re-exec every few seconds (this file)
//! every client ──► <log dir>/<client>.log ──► vmlock-soak-check
//! ```
//!
//! Each client logs a grant right after the OK reply and a release right
//! before the request, with `CLOCK_MONOTONIC`; the driver logs a holder's
//! kill right before SIGKILL. The checker (a crate that shares no code
//! with the daemon) then proves from the logs alone that no two holdings
//! conflicted, that nothing unexpected failed, and how soon killed
//! holders' disks were free.

#![forbid(unsafe_code)]

pub mod client;
pub mod cluster;
pub mod holder;
pub mod logw;
pub mod plan;
pub mod rng;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use vmlock_soak_check::{Mode, Report};
use vmlock_testkit::{Daemon, DaemonSpec, Flavor, reexec::send_reexec};

use crate::logw::LogW;
use crate::plan::{Plan, Stats};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long the workload runs.
    pub duration: Duration,
    /// Thread clients.
    pub clients: usize,
    /// Holder slots (each runs one holder process at a time).
    pub holders: usize,
    /// Time between SIGUSR1 re-execs (`None`: never).
    pub reexec_every: Option<Duration>,
    /// RNG seed.
    pub seed: u64,
    /// Where the logs go (must exist).
    pub log_dir: PathBuf,
    /// The binary whose `holder` subcommand runs a holder.
    pub holder_bin: PathBuf,
    /// Largest acceptable kill-to-free time.
    pub free_bound: Duration,
    /// The daemon under test (libvirt's virtlockd for comparison).
    pub flavor: Flavor,
}

/// What a run did and what the checker found.
#[derive(Debug)]
pub struct Summary {
    /// The checker's report.
    pub report: Report,
    /// Every problem (checker's, plus a dead daemon or failed re-exec).
    pub problems: Vec<String>,
    /// What the workload did.
    pub counters: Counters,
}

/// The run's counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// Successful acquires.
    pub grants: u64,
    /// Expected busy replies.
    pub busy: u64,
    /// Contended acquires given up.
    pub gave_up: u64,
    /// Holders SIGKILLed.
    pub kills: u64,
    /// Re-execs completed.
    pub reexecs: u64,
    /// Slowest re-exec (SIGUSR1 to a new client's PONG).
    pub max_reexec: Duration,
    /// Slowest single call of a thread client.
    pub max_call: Duration,
}

impl std::fmt::Display for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "grants {} · busy (expected) {} · gave up {} · holders killed {} · \
             re-execs {} (slowest {:.1} ms) · slowest call {:.1} ms",
            self.grants,
            self.busy,
            self.gave_up,
            self.kills,
            self.reexecs,
            self.max_reexec.as_secs_f64() * 1e3,
            self.max_call.as_secs_f64() * 1e3,
        )
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.counters)?;
        writeln!(f, "{}", self.report)?;
        for p in &self.problems {
            writeln!(f, "PROBLEM {p}")?;
        }
        write!(
            f,
            "{}",
            if self.problems.is_empty() {
                "PASS"
            } else {
                "FAIL"
            }
        )
    }
}

/// Starts a vmlockd, runs the workload, checks the logs.
pub fn run(cfg: &Config) -> std::io::Result<Summary> {
    let mut daemon = Daemon::start(DaemonSpec::new(cfg.flavor))?;
    let plan = Plan::new(
        daemon.socket_path(),
        &daemon.dir(),
        cfg.log_dir.clone(),
        cfg.seed,
    )?;
    let mut problems = Vec::new();
    std::thread::scope(|s| {
        for i in 0..cfg.clients {
            let plan = &plan;
            s.spawn(move || worker::run_client(plan, i));
        }
        for j in 0..cfg.holders {
            let (plan, bin) = (&plan, cfg.holder_bin.as_path());
            s.spawn(move || holder::run_slot(plan, j, bin));
        }
        reexec_loop(&plan, &daemon, cfg, &mut problems);
    });
    if let Err(e) = final_sweep(&plan, cfg) {
        problems.push(format!("final sweep: {e}"));
    }
    if daemon.wait_exit(Duration::ZERO).is_some() {
        problems.push(format!("the daemon died; log:\n{}", daemon.log_text()));
    }
    let report = Report::from_dir(&cfg.log_dir)?;
    problems.extend(report.problems(cfg.free_bound.as_nanos() as u64));
    Ok(Summary {
        report,
        problems,
        counters: counters(&plan),
    })
}

/// Sends SIGUSR1 every `reexec_every` until the duration is over, then
/// stops the plan.
fn reexec_loop(plan: &Plan, d: &Daemon, cfg: &Config, problems: &mut Vec<String>) {
    let end = Instant::now() + cfg.duration;
    let every = cfg.reexec_every.unwrap_or(cfg.duration);
    let mut next = Instant::now() + every;
    let mut log = LogW::open(&cfg.log_dir, "reexec").ok();
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
        if cfg.reexec_every.is_none() || Instant::now() < next {
            continue;
        }
        next = Instant::now() + every;
        match send_reexec(d)
            .map_err(|e| e.to_string())
            .and_then(|w| w.wait(d, Duration::from_secs(20)))
        {
            Ok(took) => {
                Stats::bump(&plan.stats.reexecs);
                Stats::max(&plan.stats.max_reexec_us, took);
            }
            Err(e) => {
                if let Some(l) = log.as_mut() {
                    l.error(&format!("re-exec: {}", e.lines().next().unwrap_or("")));
                }
                problems.push(format!("re-exec failed: {e}"));
                break;
            }
        }
    }
    plan.stop.store(true, Ordering::Relaxed);
}

/// After the run every disk must be free: one client takes and releases
/// each exclusively (logged, so the checker also sees these grants). Then
/// no AUTOCREATE lease file may be left (an exclusive release unlinks it).
fn final_sweep(plan: &Plan, cfg: &Config) -> Result<(), String> {
    let name = "final";
    let mut s = worker::Session::new(plan, name, worker::FAKE_PID_BASE + 9999)
        .map_err(|e| e.to_string())?;
    let own = (0..cfg.clients).filter(|i| worker::Role::of(*i) == worker::Role::Own);
    let mut disks: Vec<(&str, usize)> = own.map(|i| ("own", i)).collect();
    disks.extend((0..cfg.holders).map(|j| ("hd", j)));
    disks.extend((0..plan::CONTENDED).map(|k| ("ct", k)));
    disks.extend((0..plan::SHARED).map(|k| ("sh", k)));
    let mut busy = Vec::new();
    for (prefix, n) in disks {
        let t = plan.target(prefix, n).map_err(|e| e.to_string())?;
        match s.acquire(&t, Mode::Exclusive) {
            client::Outcome::Ok => s.release(&t, Mode::Exclusive),
            other => busy.push(format!("{}: {other:?}", t.disk)),
        }
    }
    s.disconnect();
    if !busy.is_empty() {
        return Err(format!("still taken after the run: {}", busy.join(", ")));
    }
    let left: Vec<String> = std::fs::read_dir(&plan.lease_dir)
        .map_err(|e| format!("{}: {e}", plan.lease_dir))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!("lease files left behind: {}", left.join(", ")))
    }
}

fn counters(plan: &Plan) -> Counters {
    let st = &plan.stats;
    let g = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    Counters {
        grants: g(&st.grants),
        busy: g(&st.busy),
        gave_up: g(&st.gave_up),
        kills: g(&st.kills),
        reexecs: g(&st.reexecs),
        max_reexec: Duration::from_micros(g(&st.max_reexec_us)),
        max_call: Duration::from_micros(g(&st.max_call_us)),
    }
}

/// A fresh log directory under `parent` named for the seed.
pub fn log_dir_in(parent: &Path, seed: u64) -> std::io::Result<PathBuf> {
    let d = parent.join(format!("vmlock-soak-{seed}-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
