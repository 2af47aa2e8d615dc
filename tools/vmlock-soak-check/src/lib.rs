//! An independent checker for vmlock soak logs.
//!
//! This crate shares no code with vmlock (std only): it reads the per-client
//! logs a soak run wrote ([`log`] describes the format) and proves, from
//! those logs alone, that
//!
//! * no two exclusive holdings of one disk overlap in time,
//! * no exclusive holding overlaps a shared one,
//! * every exclusive lock of a SIGKILLed holder was granted to someone else
//!   within a bound after the kill (max and p99 reported),
//! * no client logged an unexpected error.
//!
//! Clients log a grant after its reply arrived and a release before the
//! request left, so logged holdings lie inside the real ones: any overlap
//! found is a real violation, never an artefact of the logging.

#![forbid(unsafe_code)]

pub mod check;
pub mod log;

use std::fmt;
use std::fs;
use std::io;
use std::path::Path;

pub use check::{Findings, FreeTime, Holding, Violation, check};
pub use log::{Event, Kind, Mode};

/// Reads every `*.log` in `dir`; the file stem is the client name.
/// Returns the events and the number of truncated last lines dropped.
pub fn load_dir(dir: &Path) -> io::Result<(Vec<Event>, usize)> {
    let mut events = Vec::new();
    let mut truncated = 0;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "log") {
            continue;
        }
        let client = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = fs::read_to_string(&path)?;
        let (mut evs, cut) = log::parse_log(&client, &text)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        events.append(&mut evs);
        truncated += usize::from(cut);
    }
    Ok((events, truncated))
}

/// The checker's verdict over one soak run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The findings.
    pub findings: Findings,
    /// Truncated last lines dropped while loading.
    pub truncated: usize,
}

/// The `q`-quantile (0..=1) of `sorted`, nearest rank.
pub fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

impl Report {
    /// Loads and checks `dir`.
    pub fn from_dir(dir: &Path) -> io::Result<Report> {
        let (events, truncated) = load_dir(dir)?;
        Ok(Report {
            findings: check(&events),
            truncated,
        })
    }

    /// Sorted kill-to-free times in nanoseconds (resolved ones only).
    pub fn free_ns(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .findings
            .free_times
            .iter()
            .filter_map(|f| f.ns)
            .collect();
        v.sort_unstable();
        v
    }

    /// Killed exclusive holdings whose disk nobody got afterwards.
    pub fn unresolved(&self) -> Vec<&FreeTime> {
        let f = &self.findings.free_times;
        f.iter().filter(|f| f.ns.is_none()).collect()
    }

    /// Every problem, one line each; empty means the run passed with
    /// kill-to-free times of at most `bound_ns`.
    pub fn problems(&self, bound_ns: u64) -> Vec<String> {
        let f = &self.findings;
        let mut out: Vec<String> = f.violations.iter().map(describe).collect();
        out.extend(f.errors.iter().map(|e| format!("error: {e}")));
        out.extend(f.anomalies.iter().map(|a| format!("log: {a}")));
        for u in self.unresolved() {
            out.push(format!(
                "{} held {}: never free after the kill",
                u.client, u.disk
            ));
        }
        for t in &f.free_times {
            if let Some(ns) = t.ns.filter(|ns| *ns > bound_ns) {
                let ms = ns as f64 / 1e6;
                out.push(format!(
                    "{} held {}: free only {ms:.1} ms after the kill",
                    t.client, t.disk
                ));
            }
        }
        out
    }
}

fn describe(v: &Violation) -> String {
    let h = |h: &Holding| {
        let end = if h.end == u64::MAX {
            "∞".to_string()
        } else {
            h.end.to_string()
        };
        format!("{} {} [{}, {end})", h.client, h.mode.letter(), h.start)
    };
    format!(
        "overlap on {}: {} and {}",
        v.first.disk,
        h(&v.first),
        h(&v.second)
    )
}

impl fmt::Display for Report {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        let f = &self.findings;
        let free = self.free_ns();
        let ms =
            |v: Option<u64>| v.map_or("-".to_string(), |ns| format!("{:.1} ms", ns as f64 / 1e6));
        writeln!(out, "holdings:        {}", f.holdings.len())?;
        writeln!(out, "violations:      {}", f.violations.len())?;
        writeln!(out, "errors:          {}", f.errors.len())?;
        writeln!(
            out,
            "log anomalies:   {} (+{} truncated lines)",
            f.anomalies.len(),
            self.truncated
        )?;
        writeln!(
            out,
            "killed holdings: {} ({} never freed)",
            f.free_times.len(),
            self.unresolved().len()
        )?;
        writeln!(out, "kill→free p50:   {}", ms(quantile(&free, 0.5)))?;
        writeln!(out, "kill→free p99:   {}", ms(quantile(&free, 0.99)))?;
        write!(out, "kill→free max:   {}", ms(free.last().copied()))
    }
}
