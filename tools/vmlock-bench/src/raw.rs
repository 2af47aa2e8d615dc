//! The raw-protocol modes: N threads, one persistent connection each.
//!
//! ```text
//! thread i:  connect ─ REGISTER(pid = pid_base + i) ─ barrier ─┬─ loop until deadline or max_ops
//!   own:        ACQUIRE(disk-i) ─ RELEASE(disk-i)              │   one op = one cycle
//!   contended:  ACQUIRE(shared-disk) ─ [RELEASE if granted]    │   one op = one attempt
//! ```
//!
//! Every call's latency is recorded. Owner pids are fake (not the peer pid), so a
//! daemon never kills anything when the connection closes; every grant is released
//! explicitly so the next cell starts clean.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::conn::{Conn, Wait};
use crate::error::{BenchError, Result};
use crate::frames::{CallFrame, Outcome};
use crate::stats::{CellResult, Samples, WorkerCounts};

/// Which raw workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawMode {
    /// Each client cycles ACQUIRE+RELEASE on its own disk.
    Own,
    /// All clients try to take one disk exclusively.
    Contended,
}

/// Parameters of one raw-mode run.
#[derive(Debug, Clone)]
pub struct RawSpec {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// The workload.
    pub mode: RawMode,
    /// Number of concurrent clients.
    pub clients: u32,
    /// How long each client loops.
    pub duration: Duration,
    /// Upper bound on operations per client.
    pub max_ops: u64,
    /// Directory holding `disk-<i>` and `shared-disk` (see [`prepare_files`]).
    pub files_dir: PathBuf,
    /// Owner pid of client 0; client i uses `pid_base + i`.
    pub pid_base: u32,
    /// How clients wait for replies.
    pub wait: Wait,
}

/// Name of client `i`'s own disk file.
pub fn own_disk(dir: &Path, i: u32) -> PathBuf {
    dir.join(format!("disk-{i}"))
}

/// Name of the contended disk file.
pub fn shared_disk(dir: &Path) -> PathBuf {
    dir.join("shared-disk")
}

/// Creates `disk-0..clients` and `shared-disk` in `dir` (direct leases need them).
pub fn prepare_files(dir: &Path, clients: u32) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(BenchError::io(format!("mkdir {}", dir.display())))?;
    let paths = (0..clients).map(|i| own_disk(dir, i));
    for p in paths.chain([shared_disk(dir)]) {
        if !p.exists() {
            std::fs::File::create(&p).map_err(BenchError::io(format!("create {}", p.display())))?;
        }
    }
    Ok(())
}

/// Runs the workload and aggregates all clients.
pub fn run(spec: &RawSpec) -> Result<CellResult> {
    if spec.clients == 0 {
        return Err(BenchError::Usage("at least one client is needed".into()));
    }
    prepare_files(&spec.files_dir, spec.clients)?;
    let barrier = Arc::new(Barrier::new(spec.clients as usize));
    let handles: Vec<_> = (0..spec.clients)
        .map(|i| {
            let (spec, barrier) = (spec.clone(), Arc::clone(&barrier));
            thread::spawn(move || client(&spec, i, &barrier))
        })
        .collect();
    let mut counts = Vec::with_capacity(handles.len());
    let mut samples = Samples::default();
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok((c, s))) => {
                counts.push(c);
                samples.merge(s);
            }
            Ok(Err(e)) => first_err = first_err.or(Some(e)),
            Err(_) => first_err = first_err.or(Some(BenchError::Process("client panicked".into()))),
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(CellResult::from_workers(&counts, samples)),
    }
}

/// One client thread. Always reaches the barrier, even when setup fails, so the
/// others are not left waiting.
fn client(spec: &RawSpec, i: u32, barrier: &Barrier) -> Result<(WorkerCounts, Samples)> {
    let setup = Conn::connect_waiting(&spec.socket, spec.wait).and_then(|mut c| {
        c.register(i, spec.pid_base.wrapping_add(i))?;
        Ok(c)
    });
    barrier.wait();
    let mut conn = setup?;
    let disk = match spec.mode {
        RawMode::Own => own_disk(&spec.files_dir, i),
        RawMode::Contended => shared_disk(&spec.files_dir),
    };
    let name = disk.to_string_lossy();
    let mut frames = Pair {
        acquire: CallFrame::acquire("", &name, 0),
        release: CallFrame::release("", &name),
    };
    let capacity = usize::try_from(spec.max_ops.min(1 << 20)).unwrap_or(1 << 20);
    let mut samples = Samples::with_capacity(capacity.saturating_mul(2));
    let mut counts = WorkerCounts::default();
    let start = Instant::now();
    let deadline = start + spec.duration;
    let mut now = start;
    while now < deadline && counts.ops < spec.max_ops {
        now = frames.step(&mut conn, spec.mode, &mut counts, &mut samples, now)?;
    }
    counts.elapsed = now - start;
    Ok((counts, samples))
}

/// The two frames a client sends.
struct Pair {
    acquire: CallFrame,
    release: CallFrame,
}

impl Pair {
    /// One operation; returns the time at its end.
    fn step(
        &mut self,
        conn: &mut Conn,
        mode: RawMode,
        counts: &mut WorkerCounts,
        samples: &mut Samples,
        t0: Instant,
    ) -> Result<Instant> {
        let got = conn.call(&mut self.acquire)?;
        let t1 = Instant::now();
        samples.push(t1 - t0);
        match got {
            Outcome::Ok => counts.grants += 1,
            o if o.is_busy() && mode == RawMode::Contended => {
                counts.busy += 1;
                counts.ops += 1;
                return Ok(t1);
            }
            _ => {
                counts.errors += 1;
                return Ok(t1);
            }
        }
        let released = conn.call(&mut self.release)?;
        let t2 = Instant::now();
        samples.push(t2 - t1);
        match released {
            Outcome::Ok => counts.ops += 1,
            Outcome::Error { .. } => counts.errors += 1,
        }
        Ok(t2)
    }
}
