//! `vmlock-reexec-bench [--ours 1000,10000,100000] [--theirs 1000,10000] [--rounds 3] [--gap MS] [--phases]`
//!
//! Measures live re-exec (SIGUSR1) with many locks held, for vmlockd and
//! libvirt's virtlockd:
//!
//! ```text
//! start daemon (descriptor limit raised by a wrapper script)
//! one client: REGISTER, CREATE_LOCKSPACE, ACQUIRE r0..rN (AUTOCREATE, 128 pipelined at a time)
//! RSS before ── rounds × { SIGUSR1 → new image ready → new client PONG } ── RSS after
//! ```
//! "ready" = a new program image that has its SIGUSR1 handler installed
//! (see `vmlock_testkit::reexec`). Prints one Markdown table row per run.
//! `--gap MS` waits that long before each round (default 0: back to back,
//! as every number before it was taken; a pause lets each image settle and
//! is closer to real use, where a re-exec is a rare event).
//! Not a pass/fail test: numbers go to docs/PERFORMANCE.md. `--phases`
//! also prints the daemon's own `re-exec:` timing lines (stderr).

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vmlock_testkit::reexec::{kernel_holder, rss_kib, send_reexec, write_script};
use vmlock_testkit::{Daemon, DaemonSpec, Flavor, RawConn, decode_reply, frames};

const OWNER_PID: u32 = 4_194_900;

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("vmlock-reexec-bench: {msg}");
    std::process::exit(1)
}

fn call(c: &mut RawConn, f: &[u8]) -> Result<(), String> {
    let raw = c.call(f).map_err(|e| e.to_string())?;
    match decode_reply(&raw) {
        (_, Some(e)) => Err(format!("{} {}", e.code, e.text())),
        (_, None) => Ok(()),
    }
}

fn start(flavor: Flavor, scripts: &Path, phases: bool) -> Daemon {
    let wrapper = scripts.join(format!("{}-nofile.sh", flavor.name()));
    let body = format!(
        "ulimit -Hn 1048576 2>/dev/null; ulimit -Sn 1048576 2>/dev/null || ulimit -Sn 200000\n\
         exec '{}' \"$@\"\n",
        flavor.default_binary().display()
    );
    write_script(&wrapper, &body).unwrap_or_else(|e| fail(e));
    let mut spec = DaemonSpec::new(flavor).binary(wrapper);
    if phases && flavor == Flavor::Ours {
        // Info level: vmlockd's "restore took" line.
        spec = spec.config("log_level = 2\n");
    }
    Daemon::start(spec).unwrap_or_else(|e| fail(e))
}

fn take_locks(d: &Daemon, n: usize) -> Result<(RawConn, PathBuf, Duration), String> {
    let t = Instant::now();
    let mut c = d.connect();
    call(
        &mut c,
        &frames::register(0, *b"reexec-bench-own", "bench", 1, OWNER_PID, 0),
    )?;
    let ls = d.dir().join("ls");
    let lss = ls.to_string_lossy().into_owned();
    call(&mut c, &frames::create_lockspace(1, &lss))?;
    // Pipelined, a batch at a time: at 100,000 locks and more (run under
    // emulation, scripts/vm-run.sh) one round trip per lock takes minutes.
    const BATCH: usize = 128;
    for start in (0..n).step_by(BATCH) {
        let end = (start + BATCH).min(n);
        let mut frames_out = Vec::new();
        for i in start..end {
            let name = format!("r{i}");
            frames_out.extend_from_slice(&frames::acquire(
                2 + i as u32,
                &lss,
                &name,
                frames::FLAG_AUTOCREATE,
            ));
        }
        c.send(&frames_out).map_err(|e| e.to_string())?;
        for i in start..end {
            let raw = c.recv_frame().map_err(|e| format!("lock {i}: {e}"))?;
            if let (_, Some(e)) = decode_reply(&raw) {
                return Err(format!("lock {i}: {} {}", e.code, e.text()));
            }
        }
    }
    Ok((c, ls, t.elapsed()))
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn mb(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// What a failed round left: is the daemon there, are the locks held, and
/// the end of its log.
fn after_failure(d: &Daemon, ls: &Path, n: usize, e: String) -> String {
    let alive = std::path::Path::new(&format!("/proc/{}", d.pid())).exists();
    let held = (0..n)
        .step_by((n / 100).max(1))
        .filter(|i| matches!(kernel_holder(&ls.join(format!("r{i}"))), Ok(Some(_))))
        .count();
    let sampled = n.div_ceil((n / 100).max(1));
    let log = d.log_text();
    let tail: Vec<&str> = log.lines().rev().take(3).collect();
    format!(
        "{e}; daemon {}, {held} of {sampled} sampled locks held; log ends: {}",
        if alive { "alive" } else { "gone" },
        tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
    )
}

/// The daemon's own phase timings (vmlockd logs them at each re-exec).
fn print_phases(d: &Daemon) {
    let log = d.log_text();
    for line in log
        .lines()
        .filter(|l| l.contains("re-exec") && !l.contains("SIGUSR1"))
    {
        eprintln!("    {}", line.trim());
    }
}

fn run(
    flavor: Flavor,
    n: usize,
    rounds: usize,
    gap: Duration,
    scripts: &Path,
    phases: bool,
) -> Result<String, String> {
    let d = start(flavor, scripts, phases);
    let pid = d.pid();
    let (_conn, ls, took) = take_locks(&d, n)?;
    let rss0 = rss_kib(pid).map_err(|e| e.to_string())?;
    let mut times = Vec::new();
    for _ in 0..rounds {
        std::thread::sleep(gap);
        let w = send_reexec(&d).map_err(|e| e.to_string())?;
        match w.wait_tight(&d, Duration::from_secs(120)) {
            Ok(t) => times.push(t),
            Err(e) => return Err(after_failure(&d, &ls, n, e)),
        }
    }
    // Steady state: the daemon gives back what the restore did not use
    // shortly after it serves again.
    std::thread::sleep(Duration::from_millis(300));
    let rss1 = rss_kib(pid).map_err(|e| e.to_string())?;
    if phases {
        print_phases(&d);
    }
    for i in [0, n / 2, n - 1] {
        let held = kernel_holder(&ls.join(format!("r{i}"))).map_err(|e| e.to_string())?;
        if held.is_none() {
            return Err(format!("lock r{i} lost after re-exec"));
        }
    }
    let list: Vec<String> = times.iter().map(|t| ms(*t)).collect();
    Ok(format!(
        "| {} | {n} | {} | {} | {} → {} | {} s |",
        if flavor == Flavor::Ours {
            "vmlockd"
        } else {
            "virtlockd"
        },
        list.join(" / "),
        ms(times.iter().sum::<Duration>() / rounds.max(1) as u32),
        mb(rss0),
        mb(rss1),
        took.as_secs(),
    ))
}

fn counts(s: &str) -> Vec<usize> {
    s.split(',').filter_map(|x| x.trim().parse().ok()).collect()
}

fn main() {
    let mut ours = vec![1_000, 10_000, 100_000];
    let mut theirs = vec![1_000, 10_000];
    let mut rounds = 3;
    let mut phases = false;
    let mut gap = Duration::ZERO;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--phases" {
            phases = true;
            continue;
        }
        let v = args.next().unwrap_or_default();
        match a.as_str() {
            "--ours" => ours = counts(&v),
            "--theirs" => theirs = counts(&v),
            "--rounds" => rounds = v.parse().unwrap_or(3),
            "--gap" => gap = Duration::from_millis(v.parse().unwrap_or(0)),
            _ => fail(
                "usage: vmlock-reexec-bench [--ours N,..] [--theirs N,..] [--rounds R] [--gap MS] [--phases]",
            ),
        }
    }
    let scripts = tempfile::tempdir().unwrap_or_else(|e| fail(e));
    println!(
        "| daemon | locks | SIGUSR1 → new client served, ms (each round) | mean ms | RSS MB before → after | time to take the locks |"
    );
    println!("|---|---|---|---|---|---|");
    let runs = ours
        .iter()
        .map(|n| (Flavor::Ours, *n))
        .chain(theirs.iter().map(|n| (Flavor::Theirs, *n)));
    for (f, n) in runs {
        match run(f, n, rounds, gap, scripts.path(), phases) {
            Ok(row) => println!("{row}"),
            Err(e) => println!("| {} | {n} | failed: {e} | | | |", f.name()),
        }
    }
}
