//! Host half of the frozen-host test (`docs/RELIABILITY.md`, "A frozen
//! host is reset by the watchdog"). The guest half is
//! `scripts/vm/watchdog-test.sh`.
//!
//! ```text
//!  this machine                              guest (scripts/vm-run.sh --net, QEMU TCG)
//!  etcd 127.0.0.1:P ◄──── 10.0.2.2:P ─────── vmlockd A + vmlock-fenced + softdog
//!  vmlockd B ◄── client: ACQUIRE DISK                holder of DISK
//!                every 20 ms once A holds it        SIGSTOP vmlockd and the helper
//!  console lines stamped on arrival ◄──────── "WD …" lines, heartbeat until the reset
//! ```
//!
//! Checks, from this machine's clock: B was refused while A held the disk;
//! the guest reset (softdog's message, QEMU gone, no normal end); the reset
//! came before B's first successful ACQUIRE was even sent; the margin (the
//! last refusal sent after the reset, a lower bound of how long after the
//! reset the lease was still held) is at least 1 s. Prints each check and
//! `N passed, M failed`; exits 1 on any failure.
//!
//! ```text
//! cargo build --features vmlockd/etcd --bins
//! target/debug/vmlock-vm-watchdog [--late] [--ttl S] [--cpus N] [--mem M]
//! ```
//! By default vmlockd and the helper are stopped together, so the pets stop
//! at the freeze and the reset comes one watchdog timeout later. `--late`
//! stops vmlockd first and the helper only once it withholds its pets
//! (the lease deadline is near and a holder is guarded): the last pet is as
//! late as the petting rule allows, so the reset comes at the latest moment
//! the timing rule gives a frozen host (W, `docs/cluster.md`).
//! Root only (vmlockd B runs in a private mount namespace).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vmlock_testkit::{Daemon, DaemonSpec, Flavor, decode_reply, etcd, frames};

/// One ACQUIRE attempt of host B: when it was sent, when answered, result.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    sent: Instant,
    ok: bool,
}

struct Checks {
    passed: u32,
    failed: u32,
}

impl Checks {
    fn check(&mut self, ok: bool, what: &str) {
        if ok {
            self.passed += 1;
            println!("check ok: {what}");
        } else {
            self.failed += 1;
            println!("check FAIL: {what}");
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn main() {
    // Everything started (etcd, vmlockd B, QEMU) is dropped before the exit.
    let c = run();
    println!("{} passed, {} failed", c.passed, c.failed);
    std::process::exit(i32::from(c.failed > 0));
}

fn run() -> Checks {
    let mut ttl: Option<u64> = None;
    let mut mode = "together".to_owned();
    let mut cpus = "1".to_owned();
    let mut mem = "1G".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage(&a));
        match a.as_str() {
            "--ttl" => ttl = Some(val().parse().unwrap_or_else(|_| usage("--ttl"))),
            "--cpus" => cpus = val(),
            "--mem" => mem = val(),
            "--late" => mode = "late".into(),
            _ => usage(&a),
        }
    }
    let repo = repo_root();
    let etcd = etcd::start_single();
    let port = etcd.client_port;
    let dir = tempfile::Builder::new()
        .prefix("vmlock-vm-watchdog")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let disk = dir.path().join("disk1");
    std::fs::write(&disk, b"").expect("disk file");
    let disk = disk.to_string_lossy().into_owned();
    let conf = format!(
        "lock_backend = \"etcd\"\netcd_endpoints = [ \"{}\" ]\n\
         etcd_prefix = \"/vmlock-vm-watchdog\"\nhost_id = \"B\"\n{}\
         etcd_state_file = \"{}\"\n",
        etcd.url(),
        ttl.map(|t| format!("lease_ttl = {t}\n"))
            .unwrap_or_default(),
        dir.path().join("B.json").display()
    );
    let b = Daemon::start(DaemonSpec::new(Flavor::Ours).config(&conf)).expect("vmlockd B");
    let mut owner = Command::new("sleep").arg("100000").spawn().expect("sleep");
    let mut cb = b.connect();
    let r = cb
        .call(&frames::register(0, [9; 16], "b-probe", 1, owner.id(), 0))
        .expect("REGISTER");
    assert!(decode_reply(&r).1.is_none(), "REGISTER on B");

    // B asks for the disk every 20 ms from the moment A's holder has it.
    let attempts: Arc<Mutex<Vec<Attempt>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let go = Arc::new(AtomicBool::new(false));
    let prober = {
        let (attempts, stop, go, disk) = (attempts.clone(), stop.clone(), go.clone(), disk.clone());
        std::thread::spawn(move || {
            let mut serial = 1;
            while !stop.load(Ordering::Relaxed) {
                if !go.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                let sent = Instant::now();
                let reply = cb.call(&frames::acquire(serial, "", &disk, 0));
                serial += 1;
                let ok = match reply {
                    Ok(r) => decode_reply(&r).1.is_none(),
                    Err(e) => {
                        eprintln!("B: {e}");
                        false
                    }
                };
                attempts.lock().unwrap().push(Attempt { sent, ok });
                if ok {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let guest_url = format!("http://10.0.2.2:{port}");
    let mut cmd = Command::new(repo.join("scripts/vm-run.sh"));
    cmd.args(["--mem", &mem, "--cpus", &cpus, "--net"])
        .arg(repo.join("scripts/vm/watchdog-test.sh"))
        .args([&guest_url, &disk, &mode])
        .args(ttl.map(|t| t.to_string()))
        .current_dir(&repo)
        .env("VM_OUT", dir.path().join("out"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    println!("guest: {cmd:?}");
    let started = Instant::now();
    let mut qemu = cmd.spawn().expect("scripts/vm-run.sh");
    let mut lines: Vec<(Instant, String)> = Vec::new();
    let out = BufReader::new(qemu.stdout.take().expect("stdout"));
    for line in out.split(b'\n') {
        let Ok(line) = line else { break };
        let at = Instant::now();
        let text = String::from_utf8_lossy(&line)
            .trim_end_matches('\r')
            .to_owned();
        println!("[{:8.3}] {text}", (at - started).as_secs_f64());
        if text.starts_with("WD check ok: holder ") {
            go.store(true, Ordering::Relaxed);
        }
        let _ = std::io::stdout().flush();
        lines.push((at, text));
    }
    let status = qemu.wait().expect("wait for QEMU");
    let exited = Instant::now();
    // B keeps asking for a while after the guest is gone.
    let limit = Duration::from_secs(ttl.unwrap_or(10) * 2 + 10);
    while !attempts.lock().unwrap().last().is_some_and(|a| a.ok) && exited.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = prober.join();
    let _ = (owner.kill(), owner.wait());

    let find = |p: &str| lines.iter().find(|(_, l)| l.contains(p)).cloned();
    let mut c = Checks {
        passed: 0,
        failed: 0,
    };
    for (_, l) in &lines {
        if let Some(what) = l.strip_prefix("WD check ok: ") {
            c.check(true, &format!("guest: {what}"));
        } else if let Some(what) = l.strip_prefix("WD check FAIL: ") {
            c.check(false, &format!("guest: {what}"));
        }
    }
    let ready = find("WD ready ");
    let freeze = find("WD freeze ");
    let reset = find("softdog: Initiating system reboot");
    let attempts = attempts.lock().unwrap().clone();
    c.check(ready.is_some(), "the guest got everything running");
    let (Some((t_ready, _)), Some((t_freeze, _))) = (ready, freeze) else {
        return c;
    };
    let refused_while_held = attempts
        .iter()
        .filter(|a| !a.ok && a.sent > t_ready && a.sent < t_freeze)
        .count();
    c.check(
        refused_while_held > 0,
        &format!("B refused while A held the disk ({refused_while_held} refusals)"),
    );
    c.check(
        reset.is_some(),
        "the kernel watchdog (softdog) reset the guest",
    );
    c.check(
        find("vm-run: exit").is_none() && find("WD end ").is_none(),
        &format!("the guest did not end on its own (QEMU: {status})"),
    );
    let last_beat = lines
        .iter()
        .rfind(|(_, l)| l.starts_with("WD beat "))
        .cloned();
    c.check(
        last_beat
            .as_ref()
            .is_some_and(|(_, l)| l.ends_with("holder=yes")),
        "the holder still ran at the last heartbeat (nothing in the guest fenced it)",
    );
    let t_reset = reset.map_or(exited, |(t, _)| t);
    let success = attempts.iter().find(|a| a.ok).copied();
    let last_refusal = attempts.iter().rfind(|a| !a.ok).copied();
    let Some(success) = success else {
        c.check(false, "B acquired the disk after the reset");
        return c;
    };
    c.check(
        success.sent > t_reset && success.sent > exited,
        "B's successful ACQUIRE was sent after the reset and after QEMU exited",
    );
    let margin = last_refusal.map_or(Duration::ZERO, |a| {
        a.sent.saturating_duration_since(t_reset)
    });
    let ttl_s = ttl.unwrap_or(10);
    let helper_stopped = find("WD frozen ").map_or("-".into(), |(t, _)| secs(t - t_freeze));
    println!(
        "timeline (this machine's clock, from the freeze of vmlockd): helper stopped {helper_stopped}, \
         reset {}, QEMU gone {}, B's last refusal sent {}, B's successful ACQUIRE sent {}",
        secs(t_reset - t_freeze),
        secs(exited - t_freeze),
        last_refusal.map_or("-".into(), |a| secs(a.sent - t_freeze)),
        secs(success.sent - t_freeze)
    );
    c.check(
        t_reset - t_freeze < Duration::from_secs(ttl_s),
        &format!(
            "reset within lease_ttl ({ttl_s} s) of the freeze: {}",
            secs(t_reset - t_freeze)
        ),
    );
    c.check(
        margin >= Duration::from_secs(1),
        &format!(
            "margin between the reset and the lease's end (last refusal sent after the reset) \
             at least 1 s: {}",
            secs(margin)
        ),
    );
    guest_clock(&lines, t_freeze);
    c
}

/// The guest's clock against this machine's, over the heartbeat lines
/// after the freeze (each stamped here on arrival).
fn guest_clock(lines: &[(Instant, String)], after: Instant) {
    let beats: Vec<(Instant, f64)> = lines
        .iter()
        .filter(|(t, _)| *t > after)
        .filter_map(|(t, l)| {
            Some((
                *t,
                l.strip_prefix("WD beat ")?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()?,
            ))
        })
        .collect();
    if let (Some(first), Some(last)) = (beats.first(), beats.last())
        && last.0 > first.0
    {
        let host = (last.0 - first.0).as_secs_f64();
        let guest = last.1 - first.1;
        println!(
            "guest clock: {guest:.2} s passed in the guest while {host:.2} s passed here \
             (rate {:.3}; {} heartbeats, one every {:.0} ms here)",
            guest / host,
            beats.len(),
            host * 1000.0 / (beats.len().max(2) - 1) as f64
        );
    }
}

fn repo_root() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/vmlock-vm-watchdog
    exe.ancestors()
        .nth(3)
        .map(PathBuf::from)
        .filter(|p| p.join("scripts/vm-run.sh").exists())
        .unwrap_or_else(|| std::env::current_dir().expect("cwd"))
}

fn usage(what: &str) -> ! {
    eprintln!("vmlock-vm-watchdog: bad argument {what}");
    eprintln!("usage: vmlock-vm-watchdog [--late] [--ttl S] [--cpus N] [--mem M]");
    std::process::exit(2)
}
