//! Daemon-wide counters and facts: what the inquiry program's STATUS and
//! the Prometheus metrics report. Written on the request path (a relaxed
//! atomic add each), read by `dispatch::inquiry` and `metrics`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vmlock_proto::lock::Procedure;

use crate::owners::OwnerMeta;
use crate::restart::json::DaemonRecord;

/// When this process image started (set first thing in `main`), for the
/// blackout of a re-exec.
pub static IMAGE_START: OnceLock<Instant> = OnceLock::new();

/// The record the previous image handed over (set by the re-exec restore,
/// before [`Stats::new`] and [`carried_owners`] read it).
static CARRIED: OnceLock<DaemonRecord> = OnceLock::new();

/// Keeps the record a re-exec carried for [`Stats::new`].
pub fn carry(r: DaemonRecord) {
    let _ = CARRIED.set(r);
}

/// The owners the previous image knew (empty after a start, or after a
/// re-exec from libvirt's virtlockd).
pub fn carried_owners() -> Vec<OwnerMeta> {
    CARRIED.get().map(|r| r.owners.clone()).unwrap_or_default()
}

/// What the last re-exec looked like from this image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reexec {
    /// Re-execs since the daemon started (this one included).
    pub count: u64,
    /// When this image began serving, seconds since the epoch.
    pub at: i64,
    /// From the exec of this image to serving.
    pub blackout: Duration,
    /// Locks carried over.
    pub locks: usize,
}

/// The cluster back end's state, when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// This host's name in the cluster.
    pub host_id: String,
    /// The etcd endpoints.
    pub endpoints: Vec<String>,
    /// The lease in use (`None` after a fence, until the next grant).
    pub lease_id: Option<i64>,
    /// Time until this host fences itself.
    pub time_left: Option<Duration>,
    /// Round trip of the last answered keepalive.
    pub last_rtt: Option<Duration>,
    /// A keepalive was answered recently.
    pub healthy: bool,
    /// Fences since start.
    pub fences: u64,
    /// Cluster locks held by this host.
    pub locks: usize,
    /// Locks adopted from the previous run.
    pub adopted: usize,
    /// Each etcd endpoint's last probe, in configuration order.
    pub endpoint_health: Vec<EndpointStatus>,
}

/// What the last probe of one etcd endpoint found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStatus {
    /// The endpoint, as configured.
    pub url: String,
    /// `None` until the first probe ended.
    pub healthy: Option<bool>,
    /// Round trip of the last answered probe.
    pub rtt: Option<Duration>,
    /// Why the last probe failed.
    pub error: String,
}

/// The fence outside the daemon (etcd back end), for STATUS: the helper
/// and the watchdog it pets. Durations are from the moment of asking.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FenceReport {
    /// The helper's pid, when the daemon is connected to one.
    pub helper_pid: Option<i32>,
    /// Whether the helper answered the status request.
    pub helper_answered: bool,
    /// `kill` or `pause` (as the helper reports it).
    pub mode: Option<String>,
    /// Time until the helper fences (zero: due now); `None`: no deadline.
    pub deadline_left: Option<Duration>,
    /// Lock holders the helper watches (pidfds it holds).
    pub guarded: usize,
    /// Fences the helper carried out (since it started).
    pub fences: Option<u64>,
    /// The watchdog device, when configured.
    pub watchdog_device: Option<String>,
    /// The timeout set on it, seconds.
    pub watchdog_timeout_s: Option<u32>,
    /// `off`, `petting`, `withheld` or `disarmed` (as the helper reports it).
    pub watchdog_state: Option<String>,
    /// Time until W: without a renewal the watchdog has reset the host by
    /// then (petting stops one timeout earlier).
    pub watchdog_deadline_left: Option<Duration>,
    /// Time since the helper last petted the watchdog.
    pub watchdog_last_pet_ago: Option<Duration>,
}

/// Daemon-wide counters and facts for STATUS.
#[derive(Debug)]
pub struct Stats {
    pub(crate) started: i64,
    pub(crate) started_at: Instant,
    pub(crate) lock_kind: &'static str,
    pub(crate) refusals: AtomicU64,
    pub(crate) forced_releases: AtomicU64,
    pub(crate) forced_terminations: AtomicU64,
    pub(crate) reexec: OnceLock<Reexec>,
    /// Re-execs before this image (from the previous image's record).
    pub(crate) carried_reexecs: u64,
    /// Request counters and latency, when metrics are on.
    pub(crate) requests: Option<Requests>,
}

impl Stats {
    /// Counters at zero; `lock_kind` as configured; request metrics
    /// kept only if `metrics` (they cost the request path a little).
    /// After a re-exec, the start time and counters continue from the
    /// record the previous image carried ([`carry`]).
    pub fn new(lock_kind: &'static str, metrics: bool) -> Stats {
        let r = CARRIED.get();
        let started_at = Instant::now();
        let started = r.map_or_else(epoch_secs, |r| r.started);
        let up = u64::try_from(epoch_secs().saturating_sub(started)).unwrap_or(0);
        Stats {
            started,
            started_at: started_at
                .checked_sub(Duration::from_secs(up))
                .unwrap_or(started_at),
            lock_kind,
            refusals: AtomicU64::new(r.map_or(0, |r| r.refusals)),
            forced_releases: AtomicU64::new(r.map_or(0, |r| r.forced_releases)),
            forced_terminations: AtomicU64::new(r.map_or(0, |r| r.forced_terminations)),
            reexec: OnceLock::new(),
            carried_reexecs: r.map_or(0, |r| r.reexecs),
            requests: metrics.then(Requests::default),
        }
    }

    /// An acquire was refused because the resource is held.
    pub fn refused(&self) {
        self.refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// Request metrics, if on.
    pub fn requests(&self) -> Option<&Requests> {
        self.requests.as_ref()
    }

    /// What the next image carries over a re-exec.
    pub fn record(&self) -> DaemonRecord {
        DaemonRecord {
            started: self.started,
            reexecs: self.reexec.get().map_or(0, |r| r.count),
            refusals: self.refusals(),
            forced_releases: self.forced_releases(),
            forced_terminations: self.forced_terminations.load(Ordering::Relaxed),
            owners: Vec::new(),
        }
    }

    /// Acquires refused because the resource was held.
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }

    /// Locks released by force.
    pub fn forced_releases(&self) -> u64 {
        self.forced_releases.load(Ordering::Relaxed)
    }

    /// This image was started by a re-exec that carried `locks` locks.
    /// Re-execs are counted from the daemon's start when the previous
    /// image said how many there were (vmlockd), else from this one.
    pub fn set_reexec(&self, locks: usize) {
        let blackout = IMAGE_START.get().map_or(Duration::ZERO, Instant::elapsed);
        let _ = self.reexec.set(Reexec {
            count: self.carried_reexecs + 1,
            at: epoch_secs(),
            blackout,
            locks,
        });
    }
}

fn epoch_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Upper bounds of the latency buckets, in nanoseconds (compared as
/// integers on the request path).
pub(crate) const BOUNDS_NS: [u64; 14] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
];

/// The same bounds in seconds, as exported.
pub const BOUNDS: [f64; 14] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.1, 0.25, 1.0,
];

/// Lock-program requests by procedure and result, and their latency.
#[derive(Debug, Default)]
pub struct Requests {
    /// `[procedure 1..=8][ok, error]` (index 0 unused).
    pub(crate) counts: [[AtomicU64; 2]; 9],
    /// One per bound, and the last for +Inf (not cumulative).
    pub(crate) buckets: [AtomicU64; BOUNDS.len() + 1],
    pub(crate) sum_ns: AtomicU64,
}

impl Requests {
    /// Counts one request.
    pub fn observe(&self, p: Procedure, ok: bool, took: Duration) {
        let (i, r) = (p.to_i32() as usize, usize::from(!ok));
        if let Some(c) = self.counts.get(i).and_then(|c| c.get(r)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        // Most requests fall in the first buckets: a short integer scan.
        let b = BOUNDS_NS
            .iter()
            .position(|&b| ns <= b)
            .unwrap_or(BOUNDS_NS.len());
        if let Some(c) = self.buckets.get(b) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_agree() {
        for (ns, s) in BOUNDS_NS.iter().zip(BOUNDS) {
            assert!((*ns as f64 / 1e9 - s).abs() < 1e-12, "{ns} {s}");
        }
    }

    #[test]
    fn observe_counts_and_buckets() {
        let r = Requests::default();
        r.observe(Procedure::AcquireResource, true, Duration::from_micros(7));
        r.observe(Procedure::AcquireResource, false, Duration::from_millis(3));
        r.observe(Procedure::Register, true, Duration::from_secs(9));
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!(load(&r.counts[6][0]), 1);
        assert_eq!(load(&r.counts[6][1]), 1);
        assert_eq!(load(&r.counts[1][0]), 1);
        assert_eq!(load(&r.buckets[0]), 1, "7 µs ≤ 10 µs");
        assert_eq!(load(&r.buckets[8]), 1, "3 ms ≤ 5 ms");
        assert_eq!(load(&r.buckets[BOUNDS.len()]), 1, "+Inf");
        assert_eq!(load(&r.sum_ns), 9_003_007_000);
    }
}
