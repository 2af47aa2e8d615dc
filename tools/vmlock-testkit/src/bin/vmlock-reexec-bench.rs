//! `vmlock-reexec-bench [--ours 1000,10000,100000] [--theirs 1000,10000] [--rounds 3] [--gap MS] [--phases]
//!  [--holders H] [--probe-plugin]`
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
//! `--holders H` spreads the locks over H connections of H owners.
//!
//! `--probe-plugin` measures the blackout the way libvirt sees it: a prober
//! process in the daemon's namespace loads libvirt's `lockd.so` and cycles
//! acquire (connect, REGISTER, ACQUIRE) and release of a disk of its own
//! without pause; SIGUSR1 is sent while it runs. The blackout is the time
//! from the signal until the first acquire that *started* after the signal
//! has been granted (both read from CLOCK_MONOTONIC, shared by the two
//! processes); the table also gives the longest single acquire around it.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vmlock_testkit::reexec::{kernel_holder, rss_kib, send_reexec, write_script};
use vmlock_testkit::{Daemon, DaemonSpec, Flavor, RawConn, decode_reply, frames};

const OWNER_PID: u32 = 4_194_900;
/// The prober's (fake) owner pid: its connections are no lifelines.
const PROBE_PID: u32 = 4_194_990;

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

fn take_locks(
    d: &Daemon,
    n: usize,
    holders: usize,
) -> Result<(Vec<RawConn>, PathBuf, Duration), String> {
    let t = Instant::now();
    let ls = d.dir().join("ls");
    let lss = ls.to_string_lossy().into_owned();
    let holders = holders.max(1);
    let mut conns = Vec::with_capacity(holders);
    for h in 0..holders {
        let mut c = d.connect();
        let mut uuid = *b"reexec-bench-own";
        uuid[15] = h as u8;
        call(
            &mut c,
            &frames::register(0, uuid, "bench", 1 + h as u32, OWNER_PID + h as u32, 0),
        )?;
        if h == 0 {
            call(&mut c, &frames::create_lockspace(1, &lss))?;
        }
        // Pipelined, a batch at a time: at 100,000 locks and more (run under
        // emulation, scripts/vm-run.sh) one round trip per lock takes minutes.
        const BATCH: usize = 128;
        let mine: Vec<usize> = (h..n).step_by(holders).collect();
        for chunk in mine.chunks(BATCH) {
            let mut frames_out = Vec::new();
            for &i in chunk {
                let name = format!("r{i}");
                frames_out.extend_from_slice(&frames::acquire(
                    2 + i as u32,
                    &lss,
                    &name,
                    frames::FLAG_AUTOCREATE,
                ));
            }
            c.send(&frames_out).map_err(|e| e.to_string())?;
            for &i in chunk {
                let raw = c.recv_frame().map_err(|e| format!("lock {i}: {e}"))?;
                if let (_, Some(e)) = decode_reply(&raw) {
                    return Err(format!("lock {i}: {} {}", e.code, e.text()));
                }
            }
        }
        conns.push(c);
    }
    Ok((conns, ls, t.elapsed()))
}

/// The prober (`--prober DISK SECS`, run in the daemon's namespace): prints
/// "ready", then cycles acquire/release of DISK through lockd.so for SECS
/// and prints one line per granted acquire, `start end` in monotonic ns.
fn prober(disk: &str, secs: f64) -> Result<(), String> {
    use std::io::Write;
    use vmlock_sys::plugin::{Manager, NEW_STARTED, Plugin};
    let plugin =
        Plugin::load(Path::new(vmlock_testkit::script::LOCKD_SO)).map_err(|e| e.to_string())?;
    plugin
        .init(Some(Path::new(vmlock_testkit::script::MISSING_CONFIG)), 0)
        .map_err(|e| e.to_string())?;
    let uuid = *b"reexec-probe-own";
    let manager = |flags| {
        let mut m = Manager::new(&plugin, uuid, "probe", 1, PROBE_PID, flags)?;
        m.add_disk(disk, false, false)?;
        Ok::<_, vmlock_sys::plugin::PluginError>(m)
    };
    println!("ready");
    let _ = std::io::stdout().flush();
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut lines = Vec::new();
    while Instant::now() < end {
        let t0 = vmlock_sys::clock::monotonic_ns();
        let acquired = manager(NEW_STARTED).and_then(|mut m| m.acquire(0));
        let t1 = vmlock_sys::clock::monotonic_ns();
        match acquired {
            Ok(_) => lines.push(format!("{t0} {t1}")),
            Err(e) => lines.push(format!("err {t0} {t1} {}", e.message)),
        }
        let _ = manager(0).and_then(|mut m| m.release());
    }
    println!("{}", lines.join("\n"));
    Ok(())
}

/// One probed re-exec: (blackout, longest acquire around it).
fn probed_round(d: &Daemon) -> Result<(Duration, Duration), String> {
    use std::io::{BufRead, Read};
    let disk = d.dir().join("probe.img");
    std::fs::write(&disk, b"").map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = d
        .run_in_ns(&exe)
        .arg("--prober")
        .arg(&disk)
        .arg("1.5")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn prober: {e}"))?;
    let mut out = std::io::BufReader::new(child.stdout.take().ok_or("prober stdout")?);
    let mut ready = String::new();
    out.read_line(&mut ready).map_err(|e| e.to_string())?;
    if ready.trim() != "ready" {
        return Err(format!("prober: {ready}"));
    }
    std::thread::sleep(Duration::from_millis(400));
    let signal = vmlock_sys::clock::monotonic_ns();
    let w = send_reexec(d).map_err(|e| e.to_string())?;
    w.wait(d, Duration::from_secs(60))?;
    let mut text = String::new();
    out.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let _ = child.wait();
    if let Some(e) = text.lines().find(|l| l.starts_with("err")) {
        return Err(format!("prober: {e}"));
    }
    let samples: Vec<(u64, u64)> = text
        .lines()
        .filter_map(|l| {
            let (a, b) = l.split_once(' ')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect();
    let first = samples
        .iter()
        .find(|(start, _)| *start >= signal)
        .ok_or("no acquire started after the signal")?;
    let blackout = first.1 - signal;
    let longest = samples
        .iter()
        .filter(|(start, end)| *end >= signal && *start <= first.1)
        .map(|(start, end)| end - start)
        .max()
        .unwrap_or(0);
    Ok((
        Duration::from_nanos(blackout),
        Duration::from_nanos(longest),
    ))
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

/// How a run is measured.
#[derive(Clone, Copy)]
struct Opts {
    rounds: usize,
    gap: Duration,
    phases: bool,
    holders: usize,
    probe: bool,
}

fn run(flavor: Flavor, n: usize, o: Opts, scripts: &Path) -> Result<String, String> {
    let Opts {
        rounds,
        gap,
        phases,
        holders,
        probe,
    } = o;
    let d = start(flavor, scripts, phases);
    let pid = d.pid();
    let (_conns, ls, took) = take_locks(&d, n, holders)?;
    let rss0 = rss_kib(pid).map_err(|e| e.to_string())?;
    let mut times = Vec::new();
    let mut longest = Vec::new();
    for _ in 0..rounds {
        std::thread::sleep(gap);
        if probe {
            match probed_round(&d) {
                Ok((t, l)) => {
                    times.push(t);
                    longest.push(l);
                }
                Err(e) => return Err(after_failure(&d, &ls, n, e)),
            }
            continue;
        }
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
    let longest: Vec<String> = longest.iter().map(|t| ms(*t)).collect();
    let extra = if probe {
        format!(" {} |", longest.join(" / "))
    } else {
        String::new()
    };
    Ok(format!(
        "| {} | {n} | {} | {} | {} → {} | {} s |{extra}",
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
    let mut holders = 1;
    let mut probe = false;
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("--prober") {
        let disk = args.next().unwrap_or_default();
        let secs = args.next().and_then(|s| s.parse().ok()).unwrap_or(1.0);
        if let Err(e) = prober(&disk, secs) {
            fail(e);
        }
        return;
    }
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--phases" {
            phases = true;
            continue;
        }
        if a == "--probe-plugin" {
            probe = true;
            continue;
        }
        let v = args.next().unwrap_or_default();
        match a.as_str() {
            "--ours" => ours = counts(&v),
            "--theirs" => theirs = counts(&v),
            "--rounds" => rounds = v.parse().unwrap_or(3),
            "--gap" => gap = Duration::from_millis(v.parse().unwrap_or(0)),
            "--holders" => holders = v.parse().unwrap_or(1),
            _ => fail(
                "usage: vmlock-reexec-bench [--ours N,..] [--theirs N,..] [--rounds R] [--gap MS] [--phases] [--holders H] [--probe-plugin]",
            ),
        }
    }
    let scripts = tempfile::tempdir().unwrap_or_else(|e| fail(e));
    if probe {
        println!(
            "| daemon | locks | SIGUSR1 → first lockd.so acquire started after it granted, ms (each round) | mean ms | RSS MB before → after | time to take the locks | longest acquire around it, ms |"
        );
        println!("|---|---|---|---|---|---|---|");
    } else {
        println!(
            "| daemon | locks | SIGUSR1 → new client served, ms (each round) | mean ms | RSS MB before → after | time to take the locks |"
        );
        println!("|---|---|---|---|---|---|");
    }
    let opts = Opts {
        rounds,
        gap,
        phases,
        holders,
        probe,
    };
    let runs = ours
        .iter()
        .map(|n| (Flavor::Ours, *n))
        .chain(theirs.iter().map(|n| (Flavor::Theirs, *n)));
    for (f, n) in runs {
        match run(f, n, opts, scripts.path()) {
            Ok(row) => println!("{row}"),
            Err(e) => println!("| {} | {n} | failed: {e} | | | |", f.name()),
        }
    }
}
