//! `compare`: every mode against every target in one run, interleaved.
//!
//! ```text
//! start targets (null, vmlockd, virtlockd), each in its own namespace
//! memory:  for each daemon: idle RSS, RSS with N locks held, release
//! cells:   for round in 1..=rounds, for mode in modes, for clients in [1, 4, 16, 64]:
//!              for target in targets rotated by the cell number:   (drift hits all equally)
//!                  run the cell for --duration
//!          each cell reports its median round by rate
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
    /// Targets by name: `null`, `vmlockd`, `virtlockd`.
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

fn start_target(name: &str, spec: &CompareSpec) -> Result<Target> {
    match name {
        "null" => {
            let exe = std::env::current_exe().map_err(BenchError::io("locate own binary"))?;
            let sock = "/run/libvirt/virtlockd-sock";
            Target::start(name, &exe, &["serve-null", "--socket", sock])
        }
        "vmlockd" => Target::start(name, &spec.vmlockd, &[]),
        "virtlockd" => Target::start(name, &spec.virtlockd, &[]),
        other => Err(BenchError::Usage(format!("unknown target {other}"))),
    }
}

/// Runs the whole comparison.
pub fn run(spec: &CompareSpec) -> Result<Report> {
    let files = TempDir::new("files")?;
    let mut targets = Vec::with_capacity(spec.targets.len());
    for name in &spec.targets {
        targets.push(start_target(name, spec)?);
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
