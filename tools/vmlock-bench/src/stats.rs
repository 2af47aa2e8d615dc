//! Latency samples, percentiles and the per-cell result record.
//!
//! Percentiles use the nearest-rank method on the exact samples: for `p` in (0, 100]
//! and `n` sorted samples, the answer is sample number `ceil(p / 100 * n)` (1-based).
//! Samples are kept in nanoseconds as `u32` (saturating at about 4.3 s), so 10 million
//! calls take 40 MB at most.
//!
//! [`CellResult`] travels between processes as one text line:
//!
//! ```text
//! RESULT ops=1200 grants=600 busy=600 errors=0 elapsed_ns=300000000 p50_ns=9000 p99_ns=41000 samples=1800
//! ```

use std::fmt;
use std::time::Duration;

use crate::error::{BenchError, Result};

/// Latency samples in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Samples {
    ns: Vec<u32>,
}

impl Samples {
    /// An empty set with room for `n` samples.
    pub fn with_capacity(n: usize) -> Samples {
        Samples {
            ns: Vec::with_capacity(n),
        }
    }

    /// Records one latency.
    pub fn push(&mut self, d: Duration) {
        self.ns
            .push(u32::try_from(d.as_nanos()).unwrap_or(u32::MAX));
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: Samples) {
        self.ns.extend(other.ns);
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.ns.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.ns.is_empty()
    }

    /// Sorts and returns the nearest-rank percentiles for each of `ps` (None if empty).
    pub fn percentiles(&mut self, ps: &[f64]) -> Vec<Option<u32>> {
        self.ns.sort_unstable();
        ps.iter().map(|&p| nearest_rank(&self.ns, p)).collect()
    }

    /// The samples as text (space-separated nanoseconds), for passing between processes.
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(self.ns.len() * 7);
        for (i, v) in self.ns.iter().enumerate() {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(&v.to_string());
        }
        s
    }

    /// Parses [`Samples::to_text`] output.
    pub fn from_text(text: &str) -> Result<Samples> {
        let ns = text
            .split_ascii_whitespace()
            .map(|w| w.parse::<u32>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BenchError::Process(format!("bad sample list: {e}")))?;
        Ok(Samples { ns })
    }
}

/// The nearest-rank percentile `p` of sorted `sorted`.
pub fn nearest_rank(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len() as f64;
    // The epsilon keeps float noise (99.9 / 100 * 1000 = 999.0000000000001) from
    // pushing an exact rank up by one.
    let rank = (p / 100.0 * n - 1e-9).ceil().clamp(1.0, n) as usize;
    sorted.get(rank - 1).copied()
}

/// Counters of one worker (a thread or a process).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerCounts {
    /// Completed operations (cycles, or attempts in contended mode).
    pub ops: u64,
    /// Granted acquires.
    pub grants: u64,
    /// Acquires refused as busy.
    pub busy: u64,
    /// Calls that failed for any other reason.
    pub errors: u64,
    /// Time the worker spent in its loop.
    pub elapsed: Duration,
}

/// One benchmark cell: a mode, a client count and a target.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CellResult {
    /// Completed operations.
    pub ops: u64,
    /// Granted acquires.
    pub grants: u64,
    /// Acquires refused as busy.
    pub busy: u64,
    /// Other failed calls.
    pub errors: u64,
    /// The longest worker loop.
    pub elapsed: Duration,
    /// Median per-call latency.
    pub p50_ns: u32,
    /// 99th percentile per-call latency.
    pub p99_ns: u32,
    /// Number of latency samples.
    pub samples: u64,
}

impl CellResult {
    /// Combines worker counters and their merged samples.
    pub fn from_workers(counts: &[WorkerCounts], mut samples: Samples) -> CellResult {
        let sum = |f: fn(&WorkerCounts) -> u64| counts.iter().map(f).sum();
        let p = samples.percentiles(&[50.0, 99.0]);
        CellResult {
            ops: sum(|c| c.ops),
            grants: sum(|c| c.grants),
            busy: sum(|c| c.busy),
            errors: sum(|c| c.errors),
            elapsed: counts.iter().map(|c| c.elapsed).max().unwrap_or_default(),
            p50_ns: p[0].unwrap_or(0),
            p99_ns: p[1].unwrap_or(0),
            samples: samples.len() as u64,
        }
    }

    /// Operations per second.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ops as f64 / secs
        } else {
            0.0
        }
    }

    /// Protocol (or plugin) calls per second: one latency sample is one call.
    pub fn call_rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.samples as f64 / secs
        } else {
            0.0
        }
    }

    /// Parses a `RESULT ...` line (see the module docs).
    pub fn parse_line(line: &str) -> Result<CellResult> {
        let rest = line
            .strip_prefix("RESULT ")
            .ok_or_else(|| BenchError::Process(format!("not a result line: {line}")))?;
        let mut r = CellResult::default();
        for pair in rest.split_ascii_whitespace() {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| BenchError::Process(format!("bad field {pair}")))?;
            let v: u64 = v
                .parse()
                .map_err(|_| BenchError::Process(format!("bad value in {pair}")))?;
            r.set_field(k, v)?;
        }
        Ok(r)
    }

    fn set_field(&mut self, key: &str, v: u64) -> Result<()> {
        let small = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        match key {
            "ops" => self.ops = v,
            "grants" => self.grants = v,
            "busy" => self.busy = v,
            "errors" => self.errors = v,
            "elapsed_ns" => self.elapsed = Duration::from_nanos(v),
            "p50_ns" => self.p50_ns = small(v),
            "p99_ns" => self.p99_ns = small(v),
            "samples" => self.samples = v,
            _ => return Err(BenchError::Process(format!("unknown field {key}"))),
        }
        Ok(())
    }
}

impl fmt::Display for CellResult {
    /// The `RESULT ...` line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RESULT ops={} grants={} busy={} errors={} elapsed_ns={} p50_ns={} p99_ns={} samples={}",
            self.ops,
            self.grants,
            self.busy,
            self.errors,
            self.elapsed.as_nanos(),
            self.p50_ns,
            self.p99_ns,
            self.samples
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_textbook_values() {
        // The classic example: 15 20 35 40 50.
        let s = [15, 20, 35, 40, 50];
        assert_eq!(nearest_rank(&s, 5.0), Some(15));
        assert_eq!(nearest_rank(&s, 30.0), Some(20));
        assert_eq!(nearest_rank(&s, 40.0), Some(20));
        assert_eq!(nearest_rank(&s, 50.0), Some(35));
        assert_eq!(nearest_rank(&s, 100.0), Some(50));
        assert_eq!(nearest_rank(&s, 0.0), Some(15));
        assert_eq!(nearest_rank(&[], 50.0), None);
    }

    #[test]
    fn percentiles_sort_unsorted_input() {
        let mut s = Samples::default();
        for v in (1..=1000u64).rev() {
            s.push(Duration::from_nanos(v * 10));
        }
        let p = s.percentiles(&[50.0, 99.0, 99.9, 100.0]);
        assert_eq!(p, vec![Some(5000), Some(9900), Some(9990), Some(10_000)]);
    }

    #[test]
    fn push_saturates() {
        let mut s = Samples::default();
        s.push(Duration::from_secs(10));
        assert_eq!(s.percentiles(&[50.0]), vec![Some(u32::MAX)]);
    }

    #[test]
    fn merge_and_text_round_trip() {
        let mut a = Samples::with_capacity(2);
        a.push(Duration::from_nanos(3));
        let mut b = Samples::default();
        b.push(Duration::from_nanos(1));
        b.push(Duration::from_nanos(2));
        a.merge(b);
        assert_eq!(a.len(), 3);
        let back = Samples::from_text(&a.to_text()).expect("parses");
        assert_eq!(back, a);
        assert!(Samples::from_text("1 x").is_err());
        assert!(Samples::from_text("").expect("empty").is_empty());
    }

    #[test]
    fn cell_from_workers_sums_and_takes_longest() {
        let w = |ops, elapsed_ms| WorkerCounts {
            ops,
            grants: ops / 2,
            busy: 1,
            errors: 0,
            elapsed: Duration::from_millis(elapsed_ms),
        };
        let mut s = Samples::default();
        (1..=100).for_each(|v| s.push(Duration::from_nanos(v)));
        let r = CellResult::from_workers(&[w(100, 500), w(300, 1000)], s);
        assert_eq!((r.ops, r.grants, r.busy), (400, 200, 2));
        assert_eq!(r.elapsed, Duration::from_secs(1));
        assert_eq!((r.p50_ns, r.p99_ns, r.samples), (50, 99, 100));
        assert!((r.rate() - 400.0).abs() < 1e-9);
        assert!((r.call_rate() - 100.0).abs() < 1e-9);
    }

    #[test]
    fn result_line_round_trip() {
        let r = CellResult {
            ops: 1200,
            grants: 600,
            busy: 600,
            errors: 1,
            elapsed: Duration::from_millis(300),
            p50_ns: 9000,
            p99_ns: 41_000,
            samples: 1800,
        };
        let line = r.to_string();
        assert!(line.starts_with("RESULT ops=1200 "));
        assert_eq!(CellResult::parse_line(&line).expect("parses"), r);
        assert!(CellResult::parse_line("ops=1").is_err());
        assert!(CellResult::parse_line("RESULT ops=x").is_err());
        assert!(CellResult::parse_line("RESULT what=1").is_err());
    }
}
