//! The `plugin` mode: lock calls through libvirt's own `lockd.so`, one process per
//! client, a new daemon connection per plugin call (as libvirt does).
//!
//! ```text
//! plugin --run-dir D            (outside the namespace: re-exec under unshare, /run := D)
//!   └─ plugin --run-dir D       (inside: /run/libvirt/virtlockd-sock is D's socket)
//!        ├─ plugin-worker 0 ─┐  load lockd.so, drvInit ─ "ready" ─ wait "go" ─ loop:
//!        ├─ plugin-worker 1  │    Acquire(RESTRICT): REGISTER, ACQUIRE, RESTRICT  (domain start)
//!        └─ ...              │    Release:           REGISTER, RELEASE
//!                            └─ "RESULT ..." and "SAMPLES ..." lines on stdout
//! ```
//!
//! Running as root, lockd.so always dials `/run/libvirt/virtlockd-sock`, hence the
//! namespace. Workers are processes, not threads, because the plugin keeps global
//! driver state and each QEMU start is its own process in libvirt too. Owner pids are
//! fake (`pid_base + i`), so closing the leaked connection never kills anything.
//!
//! With `keep_fd` (`plugin-kept` in `compare`) each worker is its own owner, as
//! QEMU is, and keeps the restricted connection's fd until the release has been
//! answered, then closes it: the daemon sees the kept connection of every cycle
//! close while the same owner is already starting the next one.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use vmlock_sys::plugin::{ACQUIRE_RESTRICT, Manager, NEW_STARTED, Plugin};

use crate::error::{BenchError, Result};
use crate::raw::{own_disk, prepare_files};
use crate::stats::{CellResult, Samples, WorkerCounts};
use crate::target::{in_namespace, socket_in};

/// Where Debian installs libvirt's lockd plugin.
pub const DEFAULT_PLUGIN: &str = "/usr/lib/x86_64-linux-gnu/libvirt/lock-driver/lockd.so";
/// The socket lockd.so dials as root.
pub const SYSTEM_SOCKET: &str = "/run/libvirt/virtlockd-sock";

/// Parameters of one plugin-mode run.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// The directory to bind over `/run` (holds `libvirt/virtlockd-sock`).
    pub run_dir: PathBuf,
    /// Number of concurrent client processes.
    pub clients: u32,
    /// How long each client loops.
    pub duration: Duration,
    /// Upper bound on cycles per client.
    pub max_ops: u64,
    /// Directory for disk files and the lockd config.
    pub files_dir: PathBuf,
    /// Owner pid of client 0.
    pub pid_base: u32,
    /// Path of lockd.so.
    pub plugin: PathBuf,
    /// Each worker owns its locks (owner pid = its own) and keeps the
    /// restricted connection until the release, as libvirt's QEMU does.
    pub keep_fd: bool,
}

impl PluginSpec {
    /// The command-line arguments that reproduce this spec for subcommand `plugin`.
    pub fn args(&self) -> Vec<String> {
        vec![
            "plugin".into(),
            "--run-dir".into(),
            self.run_dir.display().to_string(),
            "--clients".into(),
            self.clients.to_string(),
            "--duration".into(),
            self.duration.as_secs_f64().to_string(),
            "--max-ops".into(),
            self.max_ops.to_string(),
            "--files-dir".into(),
            self.files_dir.display().to_string(),
            "--pid-base".into(),
            self.pid_base.to_string(),
            "--plugin-path".into(),
            self.plugin.display().to_string(),
        ]
        .into_iter()
        .chain(self.keep_fd.then(|| "--keep-fd".to_string()))
        .collect()
    }
}

/// Whether `/run/libvirt/virtlockd-sock` is already the run dir's socket.
fn in_target_namespace(run_dir: &Path) -> bool {
    let a = std::fs::metadata(SYSTEM_SOCKET);
    let b = std::fs::metadata(socket_in(run_dir));
    matches!((a, b), (Ok(a), Ok(b)) if a.ino() == b.ino() && a.dev() == b.dev())
}

/// Runs the mode, re-executing under `unshare` first if needed.
pub fn run(spec: &PluginSpec) -> Result<CellResult> {
    if !spec.plugin.exists() {
        return Err(BenchError::Usage(format!(
            "{} not found",
            spec.plugin.display()
        )));
    }
    if in_target_namespace(&spec.run_dir) {
        return run_here(spec);
    }
    let exe = std::env::current_exe().map_err(BenchError::io("locate own binary"))?;
    let out = in_namespace(&spec.run_dir, &exe)
        .args(spec.args())
        .stderr(Stdio::inherit())
        .output()
        .map_err(BenchError::io("run plugin mode under unshare"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with("RESULT "));
    match (out.status.success(), line) {
        (true, Some(l)) => CellResult::parse_line(l),
        _ => Err(BenchError::Process(format!(
            "plugin mode failed ({}): {}",
            out.status,
            text.trim()
        ))),
    }
}

/// A started worker process.
struct Worker {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Worker {
    fn read_line(&mut self) -> Result<String> {
        let mut line = String::new();
        let n = self
            .out
            .read_line(&mut line)
            .map_err(BenchError::io("read worker output"))?;
        if n == 0 {
            return Err(BenchError::Process("plugin worker exited early".into()));
        }
        Ok(line.trim_end().to_string())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the workers in the current namespace and aggregates them.
fn run_here(spec: &PluginSpec) -> Result<CellResult> {
    prepare_files(&spec.files_dir, spec.clients)?;
    let conf = spec.files_dir.join("qemu-lockd.conf");
    std::fs::write(
        &conf,
        "# direct leases: no lockspace dirs\nauto_disk_leases = 1\n",
    )
    .map_err(BenchError::io("write lockd config"))?;
    let mut workers = Vec::with_capacity(spec.clients as usize);
    for i in 0..spec.clients {
        workers.push(spawn_worker(spec, i, &conf)?);
    }
    for w in &mut workers {
        let line = w.read_line()?;
        if line != "ready" {
            return Err(BenchError::Process(format!("plugin worker: {line}")));
        }
    }
    for w in &mut workers {
        let stdin = w.child.stdin.as_mut();
        let stdin = stdin.ok_or_else(|| BenchError::Process("worker stdin".into()))?;
        stdin
            .write_all(b"go\n")
            .map_err(BenchError::io("start worker"))?;
    }
    let result = collect(&mut workers)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{result}").map_err(BenchError::io("write result"))?;
    out.flush().map_err(BenchError::io("flush"))?;
    Ok(result)
}

/// Reads every worker's RESULT and SAMPLES lines.
fn collect(workers: &mut [Worker]) -> Result<CellResult> {
    let mut counts = Vec::with_capacity(workers.len());
    let mut samples = Samples::default();
    for w in workers {
        let r = CellResult::parse_line(&w.read_line()?)?;
        counts.push(WorkerCounts {
            ops: r.ops,
            grants: r.grants,
            busy: r.busy,
            errors: r.errors,
            elapsed: r.elapsed,
        });
        let line = w.read_line()?;
        let text = line.strip_prefix("SAMPLES").unwrap_or_default();
        samples.merge(Samples::from_text(text)?);
    }
    Ok(CellResult::from_workers(&counts, samples))
}

fn spawn_worker(spec: &PluginSpec, i: u32, conf: &Path) -> Result<Worker> {
    let exe = std::env::current_exe().map_err(BenchError::io("locate own binary"))?;
    let mut child = Command::new(exe)
        .arg("plugin-worker")
        .args(["--index", &i.to_string()])
        .args(["--pid", &spec.pid_base.wrapping_add(i).to_string()])
        .arg("--disk")
        .arg(own_disk(&spec.files_dir, i))
        .arg("--conf")
        .arg(conf)
        .arg("--plugin-path")
        .arg(&spec.plugin)
        .args(["--duration", &spec.duration.as_secs_f64().to_string()])
        .args(["--max-ops", &spec.max_ops.to_string()])
        .args(spec.keep_fd.then_some("--keep-fd"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(BenchError::io("spawn plugin worker"))?;
    let out = child
        .stdout
        .take()
        .ok_or_else(|| BenchError::Process("worker stdout".into()))?;
    Ok(Worker {
        child,
        out: BufReader::new(out),
    })
}

/// What one worker process does.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// Client index (owner name `bench-<index>`, id `index + 1`).
    pub index: u32,
    /// Fake owner pid (unused with `keep_fd`: the worker's own pid).
    pub pid: u32,
    /// Own the locks and keep the restricted connection until the release.
    pub keep_fd: bool,
    /// The disk to lock (a direct lease).
    pub disk: PathBuf,
    /// lockd config file for drvInit.
    pub conf: PathBuf,
    /// lockd.so.
    pub plugin: PathBuf,
    /// Loop duration.
    pub duration: Duration,
    /// Upper bound on cycles.
    pub max_ops: u64,
}

/// Runs one worker: load, report ready, wait for "go", loop, print results.
pub fn worker(spec: &WorkerSpec) -> Result<()> {
    let plugin = Plugin::load(&spec.plugin).map_err(|e| BenchError::Plugin(e.to_string()))?;
    plugin
        .init(Some(&spec.conf), 0)
        .map_err(|e| BenchError::Plugin(e.to_string()))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "ready").map_err(BenchError::io("write ready"))?;
    stdout.flush().map_err(BenchError::io("flush"))?;
    let mut go = String::new();
    std::io::stdin()
        .read_line(&mut go)
        .map_err(BenchError::io("wait for go"))?;
    let (counts, samples) = worker_loop(&plugin, spec)?;
    let result = CellResult::from_workers(std::slice::from_ref(&counts), samples.clone());
    writeln!(stdout, "{result}").map_err(BenchError::io("write result"))?;
    writeln!(stdout, "SAMPLES {}", samples.to_text()).map_err(BenchError::io("write samples"))?;
    stdout.flush().map_err(BenchError::io("flush"))
}

fn worker_loop(plugin: &Plugin, spec: &WorkerSpec) -> Result<(WorkerCounts, Samples)> {
    let disk = spec.disk.to_string_lossy().into_owned();
    let mut uuid = [0xbe; 16];
    uuid[12..].copy_from_slice(&spec.index.to_be_bytes());
    let name = format!("bench-{}", spec.index);
    let owner = if spec.keep_fd {
        std::process::id()
    } else {
        spec.pid
    };
    let manager = |flags| {
        let mut m = Manager::new(plugin, uuid, &name, spec.index + 1, owner, flags)?;
        m.add_disk(&disk, false, false)?;
        Ok::<_, vmlock_sys::plugin::PluginError>(m)
    };
    let mut counts = WorkerCounts::default();
    let mut samples = Samples::with_capacity(4096);
    let start = Instant::now();
    let deadline = start + spec.duration;
    let mut now = start;
    while now < deadline && counts.ops < spec.max_ops {
        let acquired = manager(NEW_STARTED).and_then(|mut m| m.acquire(ACQUIRE_RESTRICT));
        let t1 = Instant::now();
        samples.push(t1 - now);
        now = t1;
        if acquired.is_err() {
            counts.errors += 1;
            continue;
        }
        counts.grants += 1;
        // libvirt's QEMU keeps the restricted connection for its whole run.
        let kept = if spec.keep_fd {
            acquired
        } else {
            drop(acquired);
            Ok(None)
        };
        let released = manager(0).and_then(|mut m| m.release());
        let t2 = Instant::now();
        samples.push(t2 - now);
        now = t2;
        drop(kept);
        match released {
            Ok(_) => counts.ops += 1,
            Err(_) => counts.errors += 1,
        }
    }
    counts.elapsed = now - start;
    Ok((counts, samples))
}
