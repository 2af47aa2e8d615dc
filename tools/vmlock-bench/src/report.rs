//! Markdown rendering of a [`Report`]: throughput with ratios, latency, contention
//! grants, and memory.
//!
//! ```text
//! | mode | clients | unit | null | vmlockd | virtlockd | vmlockd/virtlockd | vmlockd/ceiling |
//! ```
//!
//! With the `vmlockd-metrics` target beside `vmlockd`, a table of the two
//! side by side: metrics on / off (ops), and p99 latency of each.
//!
//! Ratios are printed only when both sides were measured; "ceiling" is the `null` target.
//! vmlockd/virtlockd compares operations per second. vmlockd/ceiling compares *calls*
//! per second, because the do-nothing server never answers "busy": in contended mode
//! it turns every attempt into two calls (ACQUIRE and RELEASE), a daemon mostly into one.

use std::fmt::Write;

use crate::compare::{Mode, Report};
use crate::memory::MemResult;
use crate::stats::CellResult;

/// `12345.6` → `12,346`.
pub fn thousands(v: f64) -> String {
    let n = v.round().max(0.0) as u64;
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Nanoseconds as microseconds with one decimal.
pub fn micros(ns: u32) -> String {
    format!("{:.1}", f64::from(ns) / 1000.0)
}

fn ratio(a: Option<&CellResult>, b: Option<&CellResult>, rate: fn(&CellResult) -> f64) -> String {
    match (a, b) {
        (Some(a), Some(b)) if rate(b) > 0.0 => format!("{:.2}", rate(a) / rate(b)),
        _ => "–".into(),
    }
}

fn grid(report: &Report) -> impl Iterator<Item = (Mode, u32)> + '_ {
    let s = &report.spec;
    s.modes
        .iter()
        .flat_map(move |&m| s.clients.iter().map(move |&c| (m, c)))
}

fn throughput(report: &Report, out: &mut String) {
    let t = &report.spec.targets;
    let _ = writeln!(
        out,
        "| mode | clients | unit | {} | vmlockd/virtlockd (ops) | vmlockd/ceiling (calls) |",
        t.join(" | ")
    );
    let _ = writeln!(out, "|---|---:|---|{}---:|---:|", "---:|".repeat(t.len()));
    for (mode, c) in grid(report) {
        let rates: Vec<String> = t
            .iter()
            .map(|n| {
                report
                    .cell(mode, c, n)
                    .map_or("–".into(), |r| thousands(r.rate()))
            })
            .collect();
        let v = report.cell(mode, c, "vmlockd");
        let _ = writeln!(
            out,
            "| {} | {c} | {} | {} | {} | {} |",
            mode.name(),
            mode.unit(),
            rates.join(" | "),
            ratio(v, report.cell(mode, c, "virtlockd"), CellResult::rate),
            ratio(v, report.cell(mode, c, "null"), CellResult::call_rate),
        );
    }
}

fn latency(report: &Report, out: &mut String) {
    let t = &report.spec.targets;
    let _ = writeln!(out, "Per-call latency, p50 / p99 in µs:\n");
    let _ = writeln!(out, "| mode | clients | {} |", t.join(" | "));
    let _ = writeln!(out, "|---|---:|{}", "---:|".repeat(t.len()));
    for (mode, c) in grid(report) {
        let cols: Vec<String> = t
            .iter()
            .map(|n| {
                report.cell(mode, c, n).map_or("–".into(), |r| {
                    format!("{} / {}", micros(r.p50_ns), micros(r.p99_ns))
                })
            })
            .collect();
        let _ = writeln!(out, "| {} | {c} | {} |", mode.name(), cols.join(" | "));
    }
}

fn outcomes(report: &Report, out: &mut String) {
    let t = &report.spec.targets;
    let _ = writeln!(out, "Outcomes per cell, grants / busy / errors:\n");
    let _ = writeln!(out, "| mode | clients | {} |", t.join(" | "));
    let _ = writeln!(out, "|---|---:|{}", "---:|".repeat(t.len()));
    for (mode, c) in grid(report) {
        let cols: Vec<String> = t
            .iter()
            .map(|n| {
                report.cell(mode, c, n).map_or("–".into(), |r| {
                    format!(
                        "{} / {} / {}",
                        thousands(r.grants as f64),
                        thousands(r.busy as f64),
                        r.errors
                    )
                })
            })
            .collect();
        let _ = writeln!(out, "| {} | {c} | {} |", mode.name(), cols.join(" | "));
    }
}

/// vmlockd with metrics off and on, side by side (only when both ran).
fn metrics_cost(report: &Report, out: &mut String) {
    let on_name = crate::compare::METRICS_TARGET;
    let t = &report.spec.targets;
    if !(t.iter().any(|n| n == "vmlockd") && t.iter().any(|n| n == on_name)) {
        return;
    }
    let _ = writeln!(
        out,
        "vmlockd with metrics off and on (`metrics_listen` set):\n"
    );
    let _ = writeln!(
        out,
        "| mode | clients | unit | metrics off | metrics on | on/off (ops) | p99 off / on (µs) |"
    );
    let _ = writeln!(out, "|---|---:|---|---:|---:|---:|---:|");
    for (mode, c) in grid(report) {
        let (off, on) = (
            report.cell(mode, c, "vmlockd"),
            report.cell(mode, c, on_name),
        );
        let rate = |r: Option<&CellResult>| r.map_or("–".into(), |r| thousands(r.rate()));
        let p99 = |r: Option<&CellResult>| r.map_or("–".into(), |r| micros(r.p99_ns));
        let _ = writeln!(
            out,
            "| {} | {c} | {} | {} | {} | {} | {} / {} |",
            mode.name(),
            mode.unit(),
            rate(off),
            rate(on),
            ratio(on, off, CellResult::rate),
            p99(off),
            p99(on),
        );
    }
    out.push('\n');
}

fn memory(mem: &[(String, MemResult)], out: &mut String) {
    if mem.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "| daemon | idle VmRSS (KiB) | VmRSS with locks held (KiB) | locks | KiB per lock |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    for (name, m) in mem {
        let per = (m.held_kib.saturating_sub(m.idle_kib)) as f64 / f64::from(m.locks.max(1));
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {per:.2} |",
            thousands(m.idle_kib as f64),
            thousands(m.held_kib as f64),
            thousands(f64::from(m.locks)),
        );
    }
}

/// The whole report as Markdown.
pub fn markdown(report: &Report) -> String {
    let mut out = String::new();
    let s = &report.spec;
    let _ = writeln!(
        out,
        "{:.2} s per cell, median of {} round(s); clients {:?}; targets {}; \
         raw clients wait with {}; load average before / after: {} / {}.\n",
        s.duration.as_secs_f64(),
        s.rounds.max(1),
        s.clients,
        s.targets.join(", "),
        match s.wait {
            crate::conn::Wait::Poll => "poll + read",
            crate::conn::Wait::Read => "a blocking read",
        },
        report.load.0,
        report.load.1,
    );
    throughput(report, &mut out);
    out.push('\n');
    latency(report, &mut out);
    out.push('\n');
    outcomes(report, &mut out);
    out.push('\n');
    metrics_cost(report, &mut out);
    memory(&report.memory, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::{Cell, CompareSpec};
    use std::time::Duration;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1_234_567.8), "1,234,568");
        assert_eq!(micros(12_345), "12.3");
    }

    fn cell(target: &str, ops: u64) -> Cell {
        Cell {
            mode: Mode::RawOwn,
            clients: 4,
            target: target.into(),
            result: CellResult {
                ops,
                grants: ops,
                elapsed: Duration::from_secs(1),
                p50_ns: 10_000,
                p99_ns: 50_000,
                samples: ops * 2 - if target == "vmlockd" { 4_000 } else { 0 },
                ..CellResult::default()
            },
        }
    }

    #[test]
    fn markdown_has_rates_and_ratios() {
        let spec = CompareSpec {
            duration: Duration::from_secs(1),
            clients: vec![4],
            modes: vec![Mode::RawOwn],
            targets: vec!["null".into(), "vmlockd".into(), "virtlockd".into()],
            vmlockd: "x".into(),
            virtlockd: "y".into(),
            plugin: "z".into(),
            mem_locks: 0,
            mem_conns: 1,
            max_ops: 10,
            rounds: 1,
            wait: crate::conn::Wait::Poll,
        };
        let report = Report {
            spec,
            cells: vec![
                cell("null", 40_000),
                cell("vmlockd", 36_000),
                cell("virtlockd", 12_000),
            ],
            memory: vec![(
                "vmlockd".into(),
                MemResult {
                    idle_kib: 1000,
                    held_kib: 3000,
                    locks: 1000,
                },
            )],
            load: ("0.1 0.2 0.3".into(), "0.4 0.5 0.6".into()),
        };
        let md = markdown(&report);
        assert!(
            md.contains("| raw-own | 4 | cycles/s | 40,000 | 36,000 | 12,000 | 3.00 | 0.85 |"),
            "{md}"
        );
        assert!(
            md.contains("| raw-own | 4 | 10.0 / 50.0 | 10.0 / 50.0 | 10.0 / 50.0 |"),
            "{md}"
        );
        assert!(
            md.contains("| vmlockd | 1,000 | 3,000 | 1,000 | 2.00 |"),
            "{md}"
        );
        assert!(!md.contains("metrics off"), "{md}");
    }

    #[test]
    fn metrics_on_and_off_side_by_side() {
        let spec = CompareSpec {
            duration: Duration::from_secs(1),
            clients: vec![4],
            modes: vec![Mode::RawOwn],
            targets: vec!["vmlockd".into(), "vmlockd-metrics".into()],
            vmlockd: "x".into(),
            virtlockd: "y".into(),
            plugin: "z".into(),
            mem_locks: 0,
            mem_conns: 1,
            max_ops: 10,
            rounds: 1,
            wait: crate::conn::Wait::Poll,
        };
        let report = Report {
            spec,
            cells: vec![cell("vmlockd", 40_000), cell("vmlockd-metrics", 39_000)],
            memory: vec![],
            load: ("?".into(), "?".into()),
        };
        let md = markdown(&report);
        assert!(
            md.contains("| raw-own | 4 | cycles/s | 40,000 | 39,000 | 0.97 | 50.0 / 50.0 |"),
            "{md}"
        );
    }

    #[test]
    fn cell_picks_the_median_round() {
        let spec = CompareSpec {
            duration: Duration::from_secs(1),
            clients: vec![4],
            modes: vec![Mode::RawOwn],
            targets: vec!["vmlockd".into()],
            vmlockd: "x".into(),
            virtlockd: "y".into(),
            plugin: "z".into(),
            mem_locks: 0,
            mem_conns: 1,
            max_ops: 10,
            rounds: 3,
            wait: crate::conn::Wait::Read,
        };
        let report = Report {
            spec,
            cells: vec![
                cell("vmlockd", 10_000),
                cell("vmlockd", 30_000),
                cell("vmlockd", 20_000),
            ],
            memory: vec![],
            load: ("?".into(), "?".into()),
        };
        let got = report.cell(Mode::RawOwn, 4, "vmlockd").expect("measured");
        assert_eq!(got.ops, 20_000);
        assert!(report.cell(Mode::RawOwn, 1, "vmlockd").is_none());
        let md = markdown(&report);
        assert!(md.contains("median of 3 round(s)"), "{md}");
        assert!(md.contains("raw clients wait with a blocking read"), "{md}");
    }
}
