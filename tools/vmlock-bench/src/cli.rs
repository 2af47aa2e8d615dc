//! Command line (clap derive) and dispatch to the modes.
//!
//! ```text
//! vmlock-bench raw-own | raw-contended  --socket S [--clients N --duration SECS ...]
//! vmlock-bench plugin                   --run-dir D [...]
//! vmlock-bench serve-null               --socket S [--lifetime SECS]
//! vmlock-bench compare                  [--duration SECS --clients 1,4,16,64 --vmlockd P ... --plot F.svg]
//! ```

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::compare::{self, CompareSpec, Mode};
use crate::conn::Wait;
use crate::error::{BenchError, Result};
use crate::plugin_mode::{self, DEFAULT_PLUGIN, PluginSpec, WorkerSpec};
use crate::raw::{self, RawMode, RawSpec};
use crate::stats::CellResult;
use crate::target::TempDir;
use crate::{null_server, report};

/// Load generator for virtlockd-protocol lock daemons.
#[derive(Debug, Parser)]
#[command(name = "vmlock-bench", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by the client modes.
#[derive(Debug, Clone, Args)]
pub struct LoadOpts {
    /// Number of concurrent clients.
    #[arg(long, default_value_t = 4)]
    pub clients: u32,
    /// Seconds each client runs.
    #[arg(long, default_value_t = 3.0, value_parser = parse_secs)]
    pub duration: f64,
    /// Upper bound on operations per client.
    #[arg(long, default_value_t = 10_000_000)]
    pub max_ops: u64,
    /// Directory for the disk files (default: a temp dir, removed afterwards).
    #[arg(long)]
    pub files_dir: Option<PathBuf>,
    /// Fake owner pid of client 0 (client i uses base + i).
    #[arg(long, default_value_t = 100_000)]
    pub pid_base: u32,
    /// How raw clients wait for a reply: `poll` then `read`, as libvirt's
    /// client does, or block in `read` (earlier runs).
    #[arg(long, value_enum, default_value_t = Wait::Poll)]
    pub wait: Wait,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Each client cycles ACQUIRE+RELEASE on its own disk (direct leases).
    RawOwn {
        /// The daemon's socket.
        #[arg(long)]
        socket: PathBuf,
        #[command(flatten)]
        load: LoadOpts,
    },
    /// All clients try to take one disk exclusively; busy is a normal outcome.
    RawContended {
        /// The daemon's socket.
        #[arg(long)]
        socket: PathBuf,
        #[command(flatten)]
        load: LoadOpts,
    },
    /// Acquire (REGISTER, ACQUIRE, RESTRICT) and release through libvirt's lockd.so.
    Plugin {
        /// Directory to bind over /run (must hold libvirt/virtlockd-sock).
        #[arg(long)]
        run_dir: PathBuf,
        /// Path of lockd.so.
        #[arg(long, default_value = DEFAULT_PLUGIN)]
        plugin_path: PathBuf,
        /// Each client owns its locks and keeps the restricted connection
        /// until the release, as libvirt's QEMU does.
        #[arg(long)]
        keep_fd: bool,
        #[command(flatten)]
        load: LoadOpts,
    },
    /// The do-nothing server: answers every frame with a success reply.
    ServeNull {
        /// Socket to listen on.
        #[arg(long)]
        socket: PathBuf,
        /// Exit after this many seconds (default: run until killed).
        #[arg(long, value_parser = parse_secs)]
        lifetime: Option<f64>,
    },
    /// Run every mode against the do-nothing server, vmlockd and virtlockd.
    Compare(CompareOpts),
    /// Internal: one plugin-mode client process.
    #[command(hide = true)]
    PluginWorker(WorkerOpts),
}

/// `compare` options.
#[derive(Debug, Clone, Args)]
pub struct CompareOpts {
    /// Seconds per cell.
    #[arg(long, default_value_t = 3.0, value_parser = parse_secs)]
    pub duration: f64,
    /// Client counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    pub clients: Vec<u32>,
    /// Modes, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "raw-own,raw-contended,plugin,plugin-kept"
    )]
    pub modes: Vec<String>,
    /// Targets, comma-separated (null, vmlockd, vmlockd-metrics, virtlockd);
    /// vmlockd-metrics is vmlockd with `metrics_listen` set.
    #[arg(long, value_delimiter = ',', default_value = "null,vmlockd,virtlockd")]
    pub targets: Vec<String>,
    /// The vmlockd binary.
    #[arg(long, default_value = "target/release/vmlockd")]
    pub vmlockd: PathBuf,
    /// The virtlockd binary.
    #[arg(long, default_value = "/usr/sbin/virtlockd")]
    pub virtlockd: PathBuf,
    /// Path of lockd.so.
    #[arg(long, default_value = DEFAULT_PLUGIN)]
    pub plugin_path: PathBuf,
    /// Locks held for the memory measurement (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    pub mem_locks: u32,
    /// Connections that share those locks.
    #[arg(long, default_value_t = 10)]
    pub mem_conns: u32,
    /// Upper bound on operations per client per cell.
    #[arg(long, default_value_t = 10_000_000)]
    pub max_ops: u64,
    /// Repeat the whole grid this many times; each cell reports its median round.
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
    /// Also write the Markdown report to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also draw throughput and p99 latency per mode as an SVG chart into this file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// How raw clients wait for a reply: `poll` then `read`, as libvirt's
    /// client does, or block in `read` (earlier runs).
    #[arg(long, value_enum, default_value_t = Wait::Poll)]
    pub wait: Wait,
}

/// `plugin-worker` options.
#[derive(Debug, Clone, Args)]
pub struct WorkerOpts {
    #[arg(long)]
    index: u32,
    #[arg(long)]
    pid: u32,
    #[arg(long)]
    disk: PathBuf,
    #[arg(long)]
    conf: PathBuf,
    #[arg(long)]
    plugin_path: PathBuf,
    #[arg(long, value_parser = parse_secs)]
    duration: f64,
    #[arg(long)]
    max_ops: u64,
    #[arg(long)]
    keep_fd: bool,
}

/// Parses a positive, finite number of seconds.
pub fn parse_secs(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!("'{s}' is not a number of seconds in (0, 86400]")),
    }
}

/// Runs a raw mode, in a temp files dir unless one is given.
fn raw_mode(socket: PathBuf, mode: RawMode, load: LoadOpts) -> Result<CellResult> {
    let tmp = TempDir::new("raw")?;
    let files_dir = load.files_dir.unwrap_or_else(|| tmp.path().to_path_buf());
    raw::run(&RawSpec {
        socket,
        mode,
        clients: load.clients,
        duration: Duration::from_secs_f64(load.duration),
        max_ops: load.max_ops,
        files_dir,
        pid_base: load.pid_base,
        wait: load.wait,
    })
}

fn plugin(run_dir: PathBuf, plugin: PathBuf, keep_fd: bool, load: LoadOpts) -> Result<CellResult> {
    let tmp = TempDir::new("plugin")?;
    let files_dir = load.files_dir.unwrap_or_else(|| tmp.path().to_path_buf());
    plugin_mode::run(&PluginSpec {
        run_dir,
        clients: load.clients,
        duration: Duration::from_secs_f64(load.duration),
        max_ops: load.max_ops,
        files_dir,
        pid_base: load.pid_base,
        plugin,
        keep_fd,
    })
}

fn compare(o: CompareOpts) -> Result<()> {
    let modes = o
        .modes
        .iter()
        .map(|m| Mode::parse(m))
        .collect::<Result<Vec<_>>>()?;
    let spec = CompareSpec {
        duration: Duration::from_secs_f64(o.duration),
        clients: o.clients,
        modes,
        targets: o.targets,
        vmlockd: o.vmlockd,
        virtlockd: o.virtlockd,
        plugin: o.plugin_path,
        mem_locks: o.mem_locks,
        mem_conns: o.mem_conns,
        max_ops: o.max_ops,
        rounds: o.rounds,
        wait: o.wait,
    };
    let measured = compare::run(&spec)?;
    let md = report::markdown(&measured);
    {
        use std::io::Write;
        let _ = std::io::stdout().lock().write_all(md.as_bytes());
    }
    if let Some(path) = o.out {
        std::fs::write(&path, &md).map_err(BenchError::io(format!("write {}", path.display())))?;
    }
    if let Some(path) = o.plot {
        let svg = crate::plot::svg(&measured)?;
        std::fs::write(&path, svg).map_err(BenchError::io(format!("write {}", path.display())))?;
    }
    Ok(())
}

/// Prints a summary and the RESULT line; a closed stdout (e.g. `| head`) is not an error.
fn print_cell(mode: &str, r: &CellResult) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{mode}: {:.0} ops/s over {:.2} s, grants {}, busy {}, errors {}, p50 {} ns, p99 {} ns",
        r.rate(),
        r.elapsed.as_secs_f64(),
        r.grants,
        r.busy,
        r.errors,
        r.p50_ns,
        r.p99_ns
    );
    let _ = writeln!(out, "{r}");
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::RawOwn { socket, load } => {
            print_cell("raw-own", &raw_mode(socket, RawMode::Own, load)?);
        }
        Command::RawContended { socket, load } => {
            print_cell(
                "raw-contended",
                &raw_mode(socket, RawMode::Contended, load)?,
            );
        }
        Command::Plugin {
            run_dir,
            plugin_path,
            keep_fd,
            load,
        } => {
            // The in-namespace instance prints the RESULT line itself.
            let r = plugin(run_dir, plugin_path, keep_fd, load)?;
            eprintln!(
                "plugin: {:.0} cycles/s, p50 {} ns, p99 {} ns",
                r.rate(),
                r.p50_ns,
                r.p99_ns
            );
        }
        Command::ServeNull { socket, lifetime } => {
            null_server::serve(&socket, lifetime.map(Duration::from_secs_f64))?;
        }
        Command::Compare(o) => compare(o)?,
        Command::PluginWorker(w) => plugin_mode::worker(&WorkerSpec {
            index: w.index,
            pid: w.pid,
            disk: w.disk,
            conf: w.conf,
            plugin: w.plugin_path,
            duration: Duration::from_secs_f64(w.duration),
            max_ops: w.max_ops,
            keep_fd: w.keep_fd,
        })?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_compare_defaults_and_lists() {
        let cli = Cli::parse_from([
            "vmlock-bench",
            "compare",
            "--clients",
            "1,4",
            "--duration",
            "0.3",
        ]);
        match cli.command {
            Command::Compare(o) => {
                assert_eq!(o.clients, vec![1, 4]);
                assert!((o.duration - 0.3).abs() < 1e-12);
                assert_eq!(o.targets, vec!["null", "vmlockd", "virtlockd"]);
                assert_eq!(o.mem_locks, 10_000);
            }
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn seconds_must_be_positive() {
        assert!(parse_secs("0").is_err());
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("nan").is_err());
        assert_eq!(parse_secs("0.25"), Ok(0.25));
    }
}
