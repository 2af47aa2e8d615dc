//! Holders: separate processes that register their *own* pid as owner
//! (like a QEMU), take locks, and are SIGKILLed by the driver. The daemon
//! must then release everything they held; a probe measures how soon.
//!
//! ```text
//! slot j:  spawn `vmlock-soak holder …` ── "held" ── hold 0.1–1.5 s
//!          ── log kill (k<j>.log) ── SIGKILL ── reap
//!          ── probe p<j>: ACQUIRE hd<j> exclusive until granted ── RELEASE
//!          ── next generation
//! ```

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vmlock_soak_check::Mode;

use crate::client::{Client, Outcome, Target};
use crate::logw::LogW;
use crate::plan::{Plan, SHARED, Stats};
use crate::rng::Rng;
use crate::worker::{FAKE_PID_BASE, Session};

/// How long a probe may wait for a killed holder's disk.
pub const PROBE_LIMIT: Duration = Duration::from_secs(30);

/// Encodes a target and mode as one holder argument.
pub fn target_arg(t: &Target, mode: Mode) -> String {
    let auto = if t.autocreate { "a" } else { "-" };
    format!(
        "{}|{}|{}|{auto}|{}",
        t.disk,
        t.lockspace,
        t.resource,
        mode.letter()
    )
}

fn parse_target(arg: &str) -> Option<(Target, Mode)> {
    let v: Vec<&str> = arg.split('|').collect();
    let [disk, lockspace, resource, auto, mode] = v.as_slice() else {
        return None;
    };
    let mode = match *mode {
        "s" => Mode::Shared,
        "x" => Mode::Exclusive,
        _ => return None,
    };
    let t = Target {
        disk: disk.to_string(),
        lockspace: lockspace.to_string(),
        resource: resource.to_string(),
        autocreate: *auto == "a",
    };
    Some((t, mode))
}

fn say(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The holder process: `holder [--cluster] SOCK LOGDIR NAME LEASEDIR TARGET...`.
/// Prints `held` (or `failed`), then waits to be killed. Returns only on
/// bad arguments.
///
/// With `--cluster` (the cluster fault run, `crate::cluster`) a refusal is
/// expected and not logged as an error: a busy disk prints `busy`, any
/// other refusal (etcd unreachable, the host fenced) `refused <why>`, and
/// the process exits. Once `held`, a `release` line on stdin logs the
/// release, sends RELEASE for each target, prints `released` and exits.
pub fn holder_main(args: &[String]) -> Result<(), String> {
    if args.first().map(String::as_str) == Some("--cluster") {
        return cluster_holder(&args[1..]);
    }
    let [sock, log_dir, name, lease_dir, targets @ ..] = args else {
        return Err("usage: holder [--cluster] SOCK LOGDIR NAME LEASEDIR TARGET...".into());
    };
    let targets: Vec<(Target, Mode)> = targets
        .iter()
        .map(|a| parse_target(a).ok_or_else(|| format!("bad target {a:?}")))
        .collect::<Result<_, _>>()?;
    let mut log = LogW::open(Path::new(log_dir), name).map_err(|e| e.to_string())?;
    // Keep the connection open until killed: closing it would release.
    let _conn = match take(Path::new(sock), name, lease_dir, &targets, &mut log) {
        Ok(conn) => {
            say("held");
            Some(conn)
        }
        Err(e) => {
            log.error(&e);
            say("failed");
            None
        }
    };
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn cluster_holder(args: &[String]) -> Result<(), String> {
    let [sock, log_dir, name, lease_dir, targets @ ..] = args else {
        return Err("usage: holder --cluster SOCK LOGDIR NAME LEASEDIR TARGET...".into());
    };
    let targets: Vec<(Target, Mode)> = targets
        .iter()
        .map(|a| parse_target(a).ok_or_else(|| format!("bad target {a:?}")))
        .collect::<Result<_, _>>()?;
    let mut log = LogW::open(Path::new(log_dir), name).map_err(|e| e.to_string())?;
    let refused = |what: String| -> Result<(), String> {
        say(&what);
        std::process::exit(0)
    };
    let mut c = match Client::connect(Path::new(sock), name, std::process::id()) {
        Ok(c) => c,
        Err(e) => return refused(format!("refused {e}")),
    };
    if let Outcome::Failed(e) = c.create_lockspace(lease_dir) {
        return refused(format!("refused create lockspace: {e}"));
    }
    let mut held = Vec::new();
    for (t, mode) in &targets {
        match c.acquire(t, *mode == Mode::Shared) {
            Outcome::Ok => {
                log.grant(&t.disk, *mode);
                held.push((t, *mode));
            }
            Outcome::Busy => return refused("busy".into()),
            Outcome::Failed(e) => return refused(format!("refused {e}")),
        }
    }
    say("held");
    for line in std::io::stdin().lock().lines() {
        if line.map_err(|e| e.to_string())?.trim() != "release" {
            continue;
        }
        for (t, mode) in &held {
            log.release(&t.disk, *mode);
            if let out @ (Outcome::Busy | Outcome::Failed(_)) = c.release(t) {
                say(&format!("release {}: {out:?}", t.disk));
            }
        }
        say("released");
        std::process::exit(0);
    }
    // stdin closed: wait to be killed, still holding.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn take(
    sock: &Path,
    name: &str,
    lease_dir: &str,
    targets: &[(Target, Mode)],
    log: &mut LogW,
) -> Result<Client, String> {
    let mut c = Client::connect(sock, name, std::process::id())?;
    if let out @ (Outcome::Busy | Outcome::Failed(_)) = c.create_lockspace(lease_dir) {
        return Err(format!("create lockspace: {out:?}"));
    }
    for (t, mode) in targets {
        let mut tries = 0;
        loop {
            match c.acquire(t, *mode == Mode::Shared) {
                Outcome::Ok => break log.grant(&t.disk, *mode),
                Outcome::Busy if tries < 500 => tries += 1,
                other => return Err(format!("acquire {}: {other:?}", t.disk)),
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    Ok(c)
}

/// Runs holder slot `j` until the plan stops.
pub fn run_slot(plan: &Plan, j: usize, holder_bin: &Path) {
    let mut rng = Rng::new(plan.seed, 1000 + j as u64);
    let (Ok(hd), Ok(sh)) = (plan.target("hd", j), plan.target("sh", j % SHARED)) else {
        return eprintln!("vmlock-soak: slot {j}: cannot prepare disks");
    };
    let (Ok(mut klog), Ok(mut probe)) = (
        LogW::open(&plan.log_dir, &format!("k{j}")),
        Session::new(plan, &format!("p{j}"), FAKE_PID_BASE + 1000 + j as u32),
    ) else {
        return eprintln!("vmlock-soak: slot {j}: cannot open logs");
    };
    let args = [
        target_arg(&hd, Mode::Exclusive),
        target_arg(&sh, Mode::Shared),
    ];
    let mut generation = 0;
    while !plan.stopped() {
        let name = format!("h{j}g{generation}");
        generation += 1;
        let Some(child) = spawn(plan, holder_bin, &name, &args, &mut klog) else {
            plan.nap(100);
            continue;
        };
        plan.nap(rng.range(100, 1500));
        kill(child, &name, &mut klog);
        Stats::bump(&plan.stats.kills);
        probe_free(plan, &mut probe, &hd);
    }
}

fn spawn(plan: &Plan, bin: &Path, name: &str, args: &[String], klog: &mut LogW) -> Option<Child> {
    let mut cmd = Command::new(bin);
    cmd.arg("holder")
        .arg(&plan.socket)
        .arg(&plan.log_dir)
        .arg(name)
        .arg(&plan.lease_dir);
    let spawned = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            klog.error(&format!("spawn {name}: {e}"));
            return None;
        }
    };
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    if line.trim() != "held" {
        klog.error(&format!("{name} said {:?}", line.trim()));
    }
    Some(child)
}

fn kill(mut child: Child, name: &str, klog: &mut LogW) {
    let pid = child.id() as i32;
    klog.kill(name);
    if let Err(e) = vmlock_sys::process::kill(pid, 9) {
        klog.error(&format!("SIGKILL {name}: {e}"));
    }
    let _ = child.wait();
}

/// Acquires `hd` exclusively until granted (busy is expected while the
/// daemon has not yet noticed the kill), then releases it.
fn probe_free(plan: &Plan, probe: &mut Session<'_>, hd: &Target) {
    let start = Instant::now();
    loop {
        match probe.acquire(hd, Mode::Exclusive) {
            Outcome::Ok => return probe.release(hd, Mode::Exclusive),
            Outcome::Busy if start.elapsed() < PROBE_LIMIT => Stats::bump(&plan.stats.busy),
            Outcome::Busy => {
                return probe
                    .log
                    .error(&format!("{} still busy after {PROBE_LIMIT:?}", hd.disk));
            }
            Outcome::Failed(_) if start.elapsed() < PROBE_LIMIT => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Outcome::Failed(_) => return,
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// The path of this executable, for spawning holders.
pub fn self_exe() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("vmlock-soak"))
}
