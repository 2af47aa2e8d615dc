//! The randomized cluster fault run: several vmlockd hosts on a 3-member
//! etcd, VM-like holders on every host contending for a few disks, and
//! faults thrown at random — judged by the same independent checker as
//! the soak (`vmlock-soak-check`).
//!
//! ```text
//!  etcd n0 n1 n2 ◄── leader moved every few seconds (transfer-leadership)
//!     ▲  ▲  ▲
//!   [Proxy ×3 per host] ◄── partition: all of a host's proxies cut, healed later
//!     ▲
//!  vmlockd A, B, C (each in its own mount namespace, so /run/leases differs per host)
//!     ▲  per host, one fault at a time: SIGSTOP … SIGCONT, SIGKILL of the
//!     │  fence helper, SIGUSR1 re-exec, partition
//!  holder processes (vmlock-soak holder --cluster), per host and slot:
//!     ACQUIRE a random disk ── held 0.3–3 s ── release, or SIGKILL by the driver,
//!     or killed by the host's fence (seen by the driver)
//! ```
//!
//! **What is logged.** A holder logs its grant right after the OK reply
//! (it may write from then on) and its release right before RELEASE (it
//! stops writing first). A holder the driver kills gets a `kill` line right
//! before SIGKILL; a holder that dies otherwise (fenced by vmlockd or
//! vmlock-fenced) gets one as soon as the driver sees it dead (it polls
//! every 10 ms). Each logged holding therefore contains the holder's real
//! writing window: any moment with two writers of one disk is an overlap
//! in the logs, which the checker finds. (An overlap in the logs may in
//! principle be a late-seen death rather than a real second writer; none
//! has been seen, and any would fail the run.)
//!
//! Refusals are expected here (busy, etcd unreachable, a fenced host): the
//! holder prints them and exits; they are counted, not logged as errors.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vmlock_soak_check::{Mode, Report};
use vmlock_testkit::etcd::{self, Etcd, Proxy};
use vmlock_testkit::reexec::send_reexec;
use vmlock_testkit::{Daemon, DaemonSpec, Flavor};

use crate::client::{Client, Outcome, Target};
use crate::holder::target_arg;
use crate::logw::LogW;
use crate::rng::Rng;

/// The lockspace every host uses (a different directory on each).
pub const LS: &str = "/run/leases";

/// What to run.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// How long faults are thrown.
    pub duration: Duration,
    /// vmlockd hosts.
    pub hosts: usize,
    /// Holder slots per host.
    pub slots: usize,
    /// Contended disks.
    pub disks: usize,
    /// `lease_ttl`, seconds.
    pub ttl: u64,
    /// RNG seed.
    pub seed: u64,
    /// Where the logs go (must exist).
    pub log_dir: PathBuf,
    /// The binary whose `holder` subcommand runs a holder.
    pub holder_bin: PathBuf,
    /// Largest acceptable time from a holder's death to its disk's next
    /// grant elsewhere.
    pub free_bound: Duration,
    /// `on_lease_loss = "pause"`: fences SIGSTOP holders instead of killing
    /// them. A stopped holder looks alive to the driver, so its holding
    /// goes on in the logs while another host takes the disk: the checker
    /// must report overlaps. This is the control run showing that the
    /// fault run's logs and checker can see two writers at all.
    pub pause: bool,
}

/// The run's counters.
#[derive(Debug, Default)]
pub struct FaultCounters {
    /// Holders that got their disk.
    pub held: AtomicU64,
    /// Busy refusals.
    pub busy: AtomicU64,
    /// Other refusals (etcd unreachable, fenced host, …).
    pub refused: AtomicU64,
    /// Holders that released their disk themselves.
    pub released: AtomicU64,
    /// Holders SIGKILLed by the driver.
    pub killed: AtomicU64,
    /// Holders that died by another hand: fenced.
    pub fenced: AtomicU64,
    /// Partitions.
    pub partitions: AtomicU64,
    /// Daemon freezes.
    pub freezes: AtomicU64,
    /// Fence helpers SIGKILLed.
    pub helper_kills: AtomicU64,
    /// Re-execs completed.
    pub reexecs: AtomicU64,
    /// Leader changes etcd accepted.
    pub leader_moves: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl std::fmt::Display for FaultCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        write!(
            f,
            "holders: {} held, {} busy, {} refused otherwise; {} released, {} killed by the driver, \
             {} fenced · faults: {} partitions, {} freezes, {} fence helpers killed, {} re-execs, \
             {} leader moves",
            g(&self.held),
            g(&self.busy),
            g(&self.refused),
            g(&self.released),
            g(&self.killed),
            g(&self.fenced),
            g(&self.partitions),
            g(&self.freezes),
            g(&self.helper_kills),
            g(&self.reexecs),
            g(&self.leader_moves),
        )
    }
}

/// What a run did and what the checker found.
#[derive(Debug)]
pub struct ClusterSummary {
    /// The checker's report.
    pub report: Report,
    /// Every problem (the checker's, plus dead daemons, a final sweep that
    /// could not take every disk).
    pub problems: Vec<String>,
    /// What happened.
    pub counters: FaultCounters,
}

impl std::fmt::Display for ClusterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.counters)?;
        writeln!(f, "{}", self.report)?;
        for p in &self.problems {
            writeln!(f, "PROBLEM {p}")?;
        }
        let verdict = if self.problems.is_empty() {
            "PASS"
        } else {
            "FAIL"
        };
        write!(f, "{verdict}")
    }
}

struct Host {
    id: String,
    daemon: Daemon,
    proxies: Vec<Proxy>,
    helper_sock: PathBuf,
}

struct Run<'a> {
    cfg: &'a ClusterConfig,
    hosts: Vec<Host>,
    stop: AtomicBool,
    counters: FaultCounters,
    notes: Mutex<Vec<String>>,
    /// `faults.txt` in the log directory: what was done when, for a
    /// post-mortem (not a `.log`: the checker reads only those).
    fault_log: Mutex<Option<std::fs::File>>,
}

fn disk(k: usize) -> Target {
    Target {
        disk: format!("cd{k}"),
        lockspace: LS.into(),
        resource: format!("cd{k}"),
        autocreate: true,
    }
}

/// Starts the cluster and the hosts, throws faults for the duration,
/// settles, sweeps, checks the logs.
pub fn run_cluster(cfg: &ClusterConfig) -> std::io::Result<ClusterSummary> {
    let nodes = etcd::start_cluster(3);
    let state = tempfile::tempdir()?;
    let mut hosts = Vec::new();
    for h in 0..cfg.hosts {
        let id = char::from(b'A' + h as u8).to_string();
        let proxies: Vec<Proxy> = nodes.iter().map(|n| Proxy::start(n.client_port)).collect();
        let urls: Vec<String> = proxies.iter().map(|p| format!("\"{}\"", p.url())).collect();
        let state_file = state.path().join(format!("{id}.json"));
        let conf = format!(
            "lock_backend = \"etcd\"\netcd_endpoints = [ {} ]\netcd_prefix = \"/vmlock-faults\"\n\
             host_id = \"{id}\"\nlease_ttl = {}\netcd_state_file = \"{}\"\n\
             holder_kill_grace_ms = 200\n{}",
            urls.join(", "),
            cfg.ttl,
            state_file.display(),
            if cfg.pause {
                "on_lease_loss = \"pause\"\n"
            } else {
                ""
            }
        );
        let daemon = Daemon::start(DaemonSpec::new(Flavor::Ours).config(&conf))?;
        let helper_sock = PathBuf::from(format!("{}.fence.sock", state_file.display()));
        hosts.push(Host {
            id,
            daemon,
            proxies,
            helper_sock,
        });
    }
    let run = Run {
        cfg,
        hosts,
        stop: AtomicBool::new(false),
        counters: FaultCounters::default(),
        notes: Mutex::new(Vec::new()),
        fault_log: Mutex::new(std::fs::File::create(cfg.log_dir.join("faults.txt")).ok()),
    };
    std::thread::scope(|s| {
        for h in 0..run.hosts.len() {
            for slot in 0..cfg.slots {
                let run = &run;
                s.spawn(move || run.slot(h, slot));
            }
            let run = &run;
            s.spawn(move || run.faults(h));
        }
        let (run, nodes) = (&run, &nodes);
        s.spawn(move || run.leaders(nodes));
        std::thread::sleep(cfg.duration);
        run.stop.store(true, Ordering::Relaxed);
    });
    let mut problems = Vec::new();
    if let Err(e) = run.final_sweep() {
        problems.push(format!("final sweep: {e}"));
    }
    for h in &mut run.hosts.iter() {
        if !vmlock_sys::process::exists(h.daemon.pid() as i32) {
            problems.push(format!(
                "vmlockd {} died; log:\n{}",
                h.id,
                h.daemon.log_text()
            ));
        }
    }
    let report = Report::from_dir(&cfg.log_dir)?;
    problems.extend(report.problems(cfg.free_bound.as_nanos() as u64));
    for n in run.notes.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        eprintln!("note: {n}");
    }
    drop(nodes);
    Ok(ClusterSummary {
        report,
        problems,
        counters: run.counters,
    })
}

impl Run<'_> {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn note(&self, n: String) {
        self.fault(&n);
        self.notes.lock().unwrap_or_else(|p| p.into_inner()).push(n);
    }

    /// One line of `faults.txt`, stamped like the logs.
    fn fault(&self, what: &str) {
        let mut g = self.fault_log.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = g.as_mut() {
            let _ = writeln!(f, "{} {what}", crate::logw::now());
        }
    }

    /// Sleeps `ms`, waking early when the run stops; whether it stopped.
    fn nap(&self, ms: u64) -> bool {
        let until = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < until {
            if self.stopped() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10).min(until - Instant::now()));
        }
        self.stopped()
    }

    /// One holder slot on host `h`: a holder at a time, on a random disk.
    fn slot(&self, h: usize, slot: usize) {
        let host = &self.hosts[h];
        let mut rng = Rng::new(self.cfg.seed, 100 + (h * 16 + slot) as u64);
        let Ok(mut klog) = LogW::open(&self.cfg.log_dir, &format!("k{}{slot}", host.id)) else {
            return eprintln!("vmlock-soak: cannot open a log");
        };
        let mut generation = 0;
        while !self.stopped() {
            let name = format!("h{}{slot}g{generation}", host.id);
            generation += 1;
            let t = disk(rng.range(0, self.cfg.disks as u64 - 1) as usize);
            let Some((mut child, first)) = self.spawn(host, &name, &t) else {
                self.nap(100);
                continue;
            };
            match first.as_str() {
                "held" => bump(&self.counters.held),
                "busy" => {
                    bump(&self.counters.busy);
                    let _ = child.wait();
                    self.nap(rng.range(10, 60));
                    continue;
                }
                _ => {
                    bump(&self.counters.refused);
                    let _ = child.wait();
                    self.nap(rng.range(50, 200));
                    continue;
                }
            }
            // Held: keep it a while, watching for a fence.
            let until = Instant::now() + Duration::from_millis(rng.range(300, 3000));
            let mut died = false;
            while Instant::now() < until && !self.stopped() {
                if let Ok(Some(_)) = child.try_wait() {
                    klog.kill(&name);
                    bump(&self.counters.fenced);
                    died = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            if died {
                continue;
            }
            if !self.stopped() && rng.chance(50) {
                self.release(&mut child, &name, &mut klog);
            } else {
                klog.kill(&name);
                let _ = child.kill();
                let _ = child.wait();
                bump(&self.counters.killed);
            }
        }
    }

    fn spawn(&self, host: &Host, name: &str, t: &Target) -> Option<(Child, String)> {
        let mut child = Command::new(&self.cfg.holder_bin)
            .arg("holder")
            .arg("--cluster")
            .arg(host.daemon.socket_path())
            .arg(&self.cfg.log_dir)
            .arg(name)
            .arg(LS)
            .arg(target_arg(t, Mode::Exclusive))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        // The first line, read on a thread: a holder stopped by a fence
        // (`pause`) between its grant and its `held` never says anything.
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = BufReader::new(out).read_line(&mut line);
                let _ = tx.send(line);
            });
        }
        let line = match rx.recv_timeout(Duration::from_secs(self.cfg.ttl * 4 + 10)) {
            Ok(line) => line.trim().to_owned(),
            // Silent: it may have logged its grant; held until it dies.
            Err(_) => "held".to_owned(),
        };
        Some((child, line))
    }

    /// Asks the holder to release; a holder that dies first was fenced.
    fn release(&self, child: &mut Child, name: &str, klog: &mut LogW) {
        let asked = child
            .stdin
            .as_mut()
            .is_some_and(|i| writeln!(i, "release").is_ok());
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            match child.try_wait() {
                Ok(Some(st)) => {
                    if asked && st.success() {
                        bump(&self.counters.released);
                    } else {
                        // Died before it could release (or log it): fenced.
                        klog.kill(name);
                        bump(&self.counters.fenced);
                    }
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(_) => break,
            }
        }
        // Its RELEASE hangs (its daemon frozen for long): it logged the
        // release before sending, so it is no writer any more.
        self.note(format!("{name}: release did not return within 20 s"));
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Faults on host `h`, one at a time, until the run stops.
    fn faults(&self, h: usize) {
        let host = &self.hosts[h];
        let mut rng = Rng::new(self.cfg.seed, 900 + h as u64);
        let ttl_ms = self.cfg.ttl * 1000;
        while !self.nap(rng.range(500, 3000)) {
            match rng.range(0, 3) {
                0 => {
                    for p in &host.proxies {
                        p.cut();
                    }
                    self.fault(&format!("{} partition", host.id));
                    bump(&self.counters.partitions);
                    self.nap(rng.range(300, ttl_ms * 2));
                    for p in &host.proxies {
                        p.heal();
                    }
                    self.fault(&format!("{} healed", host.id));
                }
                1 => {
                    if host.daemon.signal(libc::SIGSTOP).is_ok() {
                        self.fault(&format!("{} SIGSTOP", host.id));
                        bump(&self.counters.freezes);
                        self.nap(rng.range(200, ttl_ms * 2));
                        let _ = host.daemon.signal(libc::SIGCONT);
                        self.fault(&format!("{} SIGCONT", host.id));
                    }
                }
                2 => match helper_pid(&host.helper_sock) {
                    Some(pid) => {
                        if vmlock_sys::process::kill(pid, libc::SIGKILL).is_ok() {
                            self.fault(&format!("{} helper {pid} SIGKILL", host.id));
                            bump(&self.counters.helper_kills);
                        }
                    }
                    None => self.note(format!("{}: no fence helper answered", host.id)),
                },
                _ => match send_reexec(&host.daemon)
                    .map_err(|e| e.to_string())
                    .and_then(|w| {
                        self.fault(&format!("{} SIGUSR1", host.id));
                        w.wait(&host.daemon, Duration::from_secs(30))
                    }) {
                    Ok(_) => {
                        self.fault(&format!("{} re-exec served", host.id));
                        bump(&self.counters.reexecs);
                    }
                    Err(e) => self.note(format!(
                        "{}: re-exec: {}",
                        host.id,
                        e.lines().next().unwrap_or("")
                    )),
                },
            }
        }
    }

    /// Moves etcd's leadership to another member every few seconds.
    fn leaders(&self, nodes: &[Etcd]) {
        let mut rng = Rng::new(self.cfg.seed, 7);
        while !self.nap(rng.range(2000, 6000)) {
            let Some(leader) = nodes.iter().position(Etcd::is_leader) else {
                continue;
            };
            let to = (leader + 1 + rng.range(0, nodes.len() as u64 - 2) as usize) % nodes.len();
            let Some(id) = nodes[to].member_id() else {
                continue;
            };
            if nodes[leader].move_leader(&id) {
                self.fault(&format!("etcd leader n{leader} -> n{to}"));
                bump(&self.counters.leader_moves);
            }
        }
    }

    /// After the faults: every disk must be granted again, to one client
    /// on host A (logged, so the checker sees these grants too), within
    /// a few lease lifetimes.
    fn final_sweep(&self) -> Result<(), String> {
        let host = &self.hosts[0];
        let mut log = LogW::open(&self.cfg.log_dir, "final").map_err(|e| e.to_string())?;
        // The owner: a live process of no importance (a fence would hit it).
        let mut owner = Command::new("sleep")
            .arg("600")
            .spawn()
            .map_err(|e| format!("sleep: {e}"))?;
        let r = self.sweep(host, owner.id(), &mut log);
        let _ = (owner.kill(), owner.wait());
        r
    }

    fn sweep(&self, host: &Host, pid: u32, log: &mut LogW) -> Result<(), String> {
        let mut c = Client::connect(&host.daemon.socket_path(), "final", pid)?;
        if let Outcome::Failed(e) = c.create_lockspace(LS) {
            return Err(format!("create lockspace: {e}"));
        }
        let limit = Duration::from_secs(self.cfg.ttl * 4 + 20);
        let mut missing = Vec::new();
        for k in 0..self.cfg.disks {
            let t = disk(k);
            let start = Instant::now();
            loop {
                match c.acquire(&t, false) {
                    Outcome::Ok => {
                        log.grant(&t.disk, Mode::Exclusive);
                        log.release(&t.disk, Mode::Exclusive);
                        let _ = c.release(&t);
                        break;
                    }
                    other if start.elapsed() > limit => {
                        missing.push(format!("{}: {other:?}", t.disk));
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("not granted after the run: {}", missing.join(", ")))
        }
    }
}

/// The fence helper's pid, from its own `status` on its socket.
fn helper_pid(sock: &Path) -> Option<i32> {
    let mut s = std::os::unix::net::UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    writeln!(s, "status").ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
}
