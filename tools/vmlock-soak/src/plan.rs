//! The disks of a soak run and the counters every thread shares.
//!
//! ```text
//! own<i>   one per "own" client, exclusive (sometimes shared), never busy
//! sh<k>    shared by the "shared" clients; contenders try exclusive too
//! ct<k>    exclusive, many contenders, busy expected
//! hd<j>    held by SIGKILLed holder processes of slot j, probed after
//! ```
//! Even-numbered disks are direct leases (a file in the default lockspace),
//! odd ones AUTOCREATE lease files in the named lockspace `leases/`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::client::Target;

/// Contended exclusive disks.
pub const CONTENDED: usize = 3;
/// Shared disks.
pub const SHARED: usize = 2;

/// Everything the workers need to know.
#[derive(Debug)]
pub struct Plan {
    /// The daemon's main socket.
    pub socket: PathBuf,
    /// Where the logs go.
    pub log_dir: PathBuf,
    /// Directory of direct-lease disk files.
    pub disk_dir: PathBuf,
    /// The named lockspace (AUTOCREATE leases).
    pub lease_dir: String,
    /// The run's seed.
    pub seed: u64,
    /// Set when the run is over.
    pub stop: AtomicBool,
    /// Counters.
    pub stats: Stats,
}

/// Counters of a run (relaxed atomics: summary only).
#[derive(Debug, Default)]
pub struct Stats {
    /// Successful acquires.
    pub grants: AtomicU64,
    /// Expected busy replies.
    pub busy: AtomicU64,
    /// Contended acquires given up after too many busy replies.
    pub gave_up: AtomicU64,
    /// Holders SIGKILLed.
    pub kills: AtomicU64,
    /// Re-execs completed.
    pub reexecs: AtomicU64,
    /// Slowest re-exec (SIGUSR1 to a new client's PONG), µs.
    pub max_reexec_us: AtomicU64,
    /// Slowest single call, µs.
    pub max_call_us: AtomicU64,
}

impl Stats {
    /// Adds one to `c`.
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Raises `c` to `d` (µs) if larger.
    pub fn max(c: &AtomicU64, d: Duration) {
        c.fetch_max(d.as_micros() as u64, Ordering::Relaxed);
    }
}

impl Plan {
    /// A plan for the daemon at `socket`, disks under `scratch`.
    pub fn new(socket: PathBuf, scratch: &Path, log_dir: PathBuf, seed: u64) -> io::Result<Plan> {
        let disk_dir = scratch.join("disks");
        fs::create_dir_all(&disk_dir)?;
        let lease_dir = scratch.join("leases").to_string_lossy().into_owned();
        Ok(Plan {
            socket,
            log_dir,
            disk_dir,
            lease_dir,
            seed,
            stop: AtomicBool::new(false),
            stats: Stats::default(),
        })
    }

    /// True once the run is over.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The target of disk `<prefix><n>`; creates a direct disk's file.
    pub fn target(&self, prefix: &str, n: usize) -> io::Result<Target> {
        let disk = format!("{prefix}{n}");
        if n.is_multiple_of(2) {
            let path = self.disk_dir.join(&disk);
            if !path.exists() {
                fs::write(&path, b"disk")?;
            }
            Ok(Target {
                disk,
                lockspace: String::new(),
                resource: path.to_string_lossy().into_owned(),
                autocreate: false,
            })
        } else {
            Ok(Target {
                resource: format!("lease-{disk}"),
                disk,
                lockspace: self.lease_dir.clone(),
                autocreate: true,
            })
        }
    }

    /// Sleeps `ms` milliseconds, in slices, returning early on stop.
    pub fn nap(&self, ms: u64) {
        let mut left = ms;
        while left > 0 && !self.stopped() {
            let step = left.min(50);
            std::thread::sleep(Duration::from_millis(step));
            left -= step;
        }
    }
}
