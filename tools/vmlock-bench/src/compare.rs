//! `compare`: every mode against every target in one run, interleaved.
//!
//! ```text
//! start targets (null, vmlockd, vmlockd-metrics, virtlockd), each in its own namespace
//!          (vmlockd-metrics: the same vmlockd with `metrics_listen` set)
//! memory:  for each daemon: idle RSS, RSS with N locks held, release
//! cells:   for round in 1..=rounds, for mode in modes, for clients in [1, 4, 16, 64]:
//!              for target in targets rotated by the cell number:   (drift hits all equally)
//!                  run the cell for --duration
//!          each cell reports its median round by rate
//! check:   vmlockd-metrics' /metrics counted the requests (metrics were on)
//! report:  Markdown tables (report.rs)
//! ```
//!
//! Each target gets its own files dir, and each cell its own block of fake owner pids,
//! so a cell that fails half-way cannot make later cells see "busy".

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{BenchError, Result};
use crate::memory::{self, MemResult};
use crate::plugin_mode::{self, PluginSpec};
use crate::raw::{self, RawMode, RawSpec};
use crate::stats::CellResult;
use crate::target::{Target, TempDir};

/// A workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// ACQUIRE+RELEASE cycles on private disks.
    RawOwn,
    /// Exclusive ACQUIRE attempts on one disk.
    RawContended,
    /// Acquire/release through lockd.so.
    Plugin,
    /// Acquire/release through lockd.so, each client its own owner keeping
    /// the restricted connection until the release (libvirt's QEMU).
    PluginKept,
}

impl Mode {
    /// The subcommand name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::RawOwn => "raw-own",
            Mode::RawContended => "raw-contended",
            Mode::Plugin => "plugin",
            Mode::PluginKept => "plugin-kept",
        }
    }

    /// Parses a subcommand name.
    pub fn parse(s: &str) -> Result<Mode> {
        [
            Mode::RawOwn,
            Mode::RawContended,
            Mode::Plugin,
            Mode::PluginKept,
        ]
        .into_iter()
        .find(|m| m.name() == s)
        .ok_or_else(|| BenchError::Usage(format!("unknown mode {s}")))
    }

    /// What one operation is, for table headers.
    pub fn unit(self) -> &'static str {
        match self {
            Mode::RawContended => "attempts/s",
            Mode::RawOwn | Mode::Plugin | Mode::PluginKept => "cycles/s",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct CompareSpec {
    /// Seconds per cell.
    pub duration: Duration,
    /// Client counts.
    pub clients: Vec<u32>,
    /// Modes, in order.
    pub modes: Vec<Mode>,
    /// Targets by name: `null`, `vmlockd`, `vmlockd-metrics`, `virtlockd`.
    pub targets: Vec<String>,
    /// vmlockd binary.
    pub vmlockd: PathBuf,
    /// virtlockd binary.
    pub virtlockd: PathBuf,
    /// lockd.so.
    pub plugin: PathBuf,
    /// Locks held for the memory measurement (0 skips it).
    pub mem_locks: u32,
    /// Connections sharing those locks.
    pub mem_conns: u32,
    /// Upper bound on operations per client per cell.
    pub max_ops: u64,
    /// How many times the whole grid is run; each cell reports its median round.
    pub rounds: u32,
    /// How raw clients wait for replies.
    pub wait: crate::conn::Wait,
}

/// One measured cell.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Workload.
    pub mode: Mode,
    /// Client count.
    pub clients: u32,
    /// Target name.
    pub target: String,
    /// Measurement.
    pub result: CellResult,
}

/// Everything `compare` measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// The spec it ran.
    pub spec: CompareSpec,
    /// Cells in run order.
    pub cells: Vec<Cell>,
    /// Memory per daemon target.
    pub memory: Vec<(String, MemResult)>,
    /// `/proc/loadavg` before and after the cells (other work on the machine skews results).
    pub load: (String, String),
}

/// The first three fields of `/proc/loadavg`, or "?".
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

impl Report {
    /// The median round (by operation rate) of (mode, clients, target), if measured.
    pub fn cell(&self, mode: Mode, clients: u32, target: &str) -> Option<&CellResult> {
        let mut rounds: Vec<&CellResult> = self
            .cells
            .iter()
            .filter(|c| c.mode == mode && c.clients == clients && c.target == target)
            .map(|c| &c.result)
            .collect();
        rounds.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
        rounds.get(rounds.len().saturating_sub(1) / 2).copied()
    }
}

/// The target running vmlockd with Prometheus metrics on.
pub const METRICS_TARGET: &str = "vmlockd-metrics";
/// Its metrics socket inside the namespace (`/run` is the run dir).
const METRICS_SOCKET: &str = "vmlockd-metrics.sock";

fn start_target(name: &str, spec: &CompareSpec, files: &Path) -> Result<Target> {
    match name {
        "null" => {
            let exe = std::env::current_exe().map_err(BenchError::io("locate own binary"))?;
            let sock = "/run/libvirt/virtlockd-sock";
            Target::start(name, &exe, &["serve-null", "--socket", sock])
        }
        "vmlockd" => Target::start(name, &spec.vmlockd, &[]),
        METRICS_TARGET => {
            // Everything as the plain target (no configuration file exists
            // in the namespace for either), plus metrics.
            let conf = files.join("vmlockd-metrics.conf");
            let text = format!("metrics_listen = \"/run/{METRICS_SOCKET}\"\n");
            std::fs::write(&conf, text)
                .map_err(BenchError::io(format!("write {}", conf.display())))?;
            let conf = conf.to_string_lossy().into_owned();
            Target::start(name, &spec.vmlockd, &["-f", &conf])
        }
        "virtlockd" => Target::start(name, &spec.virtlockd, &[]),
        other => Err(BenchError::Usage(format!("unknown target {other}"))),
    }
}

/// `GET /metrics` from a metrics target; fails unless it counted lock
/// requests (so a run that says "metrics on" had them on).
pub fn scrape_requests(t: &Target) -> Result<u64> {
    use std::io::{Read, Write};
    let path = t.run_dir().join(METRICS_SOCKET);
    let io = |what: &str| BenchError::io(format!("{what} {}", path.display()));
    let mut s = std::os::unix::net::UnixStream::connect(&path).map_err(io("connect"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io("timeout"))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .map_err(io("write"))?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(io("read"))?;
    let n = requests_total(&text);
    if n == 0 {
        return Err(BenchError::Process(format!(
            "{}: /metrics counted no requests: metrics were not on",
            t.name
        )));
    }
    Ok(n)
}

/// The sum of every `vmlockd_requests_total` sample in an exposition text.
pub fn requests_total(text: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with("vmlockd_requests_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Runs the whole comparison.
pub fn run(spec: &CompareSpec) -> Result<Report> {
    let files = TempDir::new("files")?;
    let mut targets = Vec::with_capacity(spec.targets.len());
    for name in &spec.targets {
        targets.push(start_target(name, spec, files.path())?);
    }
    let memory = measure_memory(spec, &targets, files.path())?;
    let load_before = loadavg();
    let mut cells = Vec::new();
    let grid = (0..spec.rounds.max(1)).flat_map(|_| {
        spec.modes
            .iter()
            .flat_map(|&m| spec.clients.iter().map(move |&c| (m, c)))
    });
    let pid_stride = spec
        .clients
        .iter()
        .max()
        .copied()
        .unwrap_or(1)
        .saturating_add(1);
    for (n, (mode, clients)) in grid.enumerate() {
        let pid_base = 100_000u32.saturating_add((n as u32).saturating_mul(pid_stride));
        for k in 0..targets.len() {
            let t = &mut targets[(n + k) % spec.targets.len()];
            t.check_alive()?;
            let dir = files.path().join(&t.name);
            let result = run_cell(spec, mode, clients, t, &dir, pid_base)?;
            eprintln!(
                "{:>13} {:>3} clients {:>9}: {:>10.0} {} p99 {} ns",
                mode.name(),
                clients,
                t.name,
                result.rate(),
                mode.unit(),
                result.p99_ns
            );
            let target = t.name.clone();
            cells.push(Cell {
                mode,
                clients,
                target,
                result,
            });
        }
    }
    let load = (load_before, loadavg());
    for t in targets.iter().filter(|t| t.name == METRICS_TARGET) {
        eprintln!(
            "{}: /metrics counted {} requests",
            t.name,
            scrape_requests(t)?
        );
    }
    let spec = spec.clone();
    Ok(Report {
        spec,
        cells,
        memory,
        load,
    })
}

/// RSS of every daemon target (not the null server), idle and with locks held.
fn measure_memory(
    spec: &CompareSpec,
    targets: &[Target],
    files: &Path,
) -> Result<Vec<(String, MemResult)>> {
    let mut memory = Vec::new();
    if spec.mem_locks == 0 {
        return Ok(memory);
    }
    for t in targets.iter().filter(|t| t.name != "null") {
        let dir = files.join(&t.name).join("lockspace");
        eprintln!("memory: {} with {} locks", t.name, spec.mem_locks);
        // Owner pids far above the cells' range.
        let m = memory::measure(t, &dir, spec.mem_locks, spec.mem_conns, 3_000_000)?;
        memory.push((t.name.clone(), m));
    }
    Ok(memory)
}

fn run_cell(
    spec: &CompareSpec,
    mode: Mode,
    clients: u32,
    t: &Target,
    dir: &Path,
    pid_base: u32,
) -> Result<CellResult> {
    let raw_mode = match mode {
        Mode::RawOwn => RawMode::Own,
        Mode::RawContended => RawMode::Contended,
        Mode::Plugin | Mode::PluginKept => {
            return plugin_mode::run(&PluginSpec {
                run_dir: t.run_dir().to_path_buf(),
                clients,
                duration: spec.duration,
                max_ops: spec.max_ops,
                files_dir: dir.to_path_buf(),
                pid_base,
                plugin: spec.plugin.clone(),
                keep_fd: mode == Mode::PluginKept,
            });
        }
    };
    raw::run(&RawSpec {
        socket: t.socket(),
        mode: raw_mode,
        clients,
        duration: spec.duration,
        max_ops: spec.max_ops,
        files_dir: dir.to_path_buf(),
        pid_base,
        wait: spec.wait,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_total_sums_every_series() {
        let text = "# HELP vmlockd_requests_total lock-program requests.\n\
                    # TYPE vmlockd_requests_total counter\n\
                    vmlockd_requests_total{procedure=\"REGISTER\",result=\"ok\"} 4\n\
                    vmlockd_requests_total{procedure=\"ACQUIRE_RESOURCE\",result=\"error\"} 12\n\
                    vmlockd_refusals_total 12\n";
        assert_eq!(requests_total(text), 16);
        assert_eq!(requests_total("vmlockd_refusals_total 3\n"), 0);
    }
}
