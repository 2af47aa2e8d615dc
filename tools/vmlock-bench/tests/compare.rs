//! End-to-end: `vmlock-bench compare` for a very short run against the do-nothing server
//! and vmlockd (plus virtlockd and the lockd.so mode when installed), checking that the
//! Markdown tables carry sane, non-zero numbers and that `--plot` writes the chart.
//!
//! Needs root (mount namespaces). Without root, or without virtlockd/lockd.so, the
//! missing parts are skipped, unless `CI` is set, in which case they are failures.

use std::path::{Path, PathBuf};
use std::process::Command;

const VIRTLOCKD: &str = "/usr/sbin/virtlockd";
const LOCKD_SO: &str = "/usr/lib/x86_64-linux-gnu/libvirt/lock-driver/lockd.so";

fn in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status.lines().find(|l| l.starts_with("Uid:"));
    uid.and_then(|l| l.split_whitespace().nth(2)) == Some("0")
}

/// Skips (returns false) or, under CI, fails.
fn require(ok: bool, what: &str) -> bool {
    if !ok {
        assert!(!in_ci(), "CI is set but {what}");
        eprintln!("skipping: {what}");
    }
    ok
}

/// vmlockd from `VMLOCKD_BIN`, or next to this test's target dir, built if missing.
fn vmlockd() -> PathBuf {
    if let Some(p) = std::env::var_os("VMLOCKD_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test exe path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let candidates = [
        profile_dir.join("vmlockd"),
        profile_dir.with_file_name("release").join("vmlockd"),
    ];
    if let Some(p) = candidates.iter().find(|p| p.exists()) {
        return p.clone();
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "-p", "vmlockd"])
        .status()
        .expect("run cargo build -p vmlockd");
    assert!(status.success(), "building vmlockd failed");
    candidates[0].clone()
}

/// The numeric cells of the table rows that start with `| <mode> |`.
fn rows<'a>(md: &'a str, mode: &str) -> Vec<Vec<&'a str>> {
    let prefix = format!("| {mode} |");
    md.lines()
        .filter(|l| l.starts_with(&prefix))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect()
}

fn number(cell: &str) -> f64 {
    cell.replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {cell:?}"))
}

fn check_mode(md: &str, mode: &str, targets: usize) {
    let rows = rows(md, mode);
    // Three tables (throughput, latency, outcomes) × two client counts.
    assert_eq!(rows.len(), 6, "{mode} rows in:\n{md}");
    for row in &rows[..2] {
        for rate in &row[3..3 + targets] {
            assert!(number(rate) > 0.0, "{mode}: rate {rate} in {row:?}");
        }
        let ceiling_ratio = number(row[row.len() - 1]);
        assert!(ceiling_ratio > 0.0 && ceiling_ratio < 10.0, "{row:?}");
    }
    for row in &rows[2..4] {
        for lat in &row[2..2 + targets] {
            let (p50, p99) = lat.split_once(" / ").expect("p50 / p99");
            let (p50, p99) = (number(p50), number(p99));
            assert!(
                p50 > 0.0 && p99 >= p50 && p99 < 1_000_000.0,
                "{mode}: latency {lat}"
            );
        }
    }
    for row in &rows[4..6] {
        for outcome in &row[2..2 + targets] {
            let parts: Vec<&str> = outcome.split(" / ").collect();
            assert!(number(parts[0]) > 0.0, "{mode}: no grants in {outcome}");
            assert_eq!(parts[2], "0", "{mode}: errors in {outcome}");
        }
    }
}

#[test]
fn short_compare_has_sane_numbers() {
    if !require(is_root(), "not root (needs mount namespaces)") {
        return;
    }
    let mut targets = vec!["null", "vmlockd"];
    if require(Path::new(VIRTLOCKD).exists(), "virtlockd is not installed") {
        targets.push("virtlockd");
    }
    let mut modes = vec!["raw-own", "raw-contended"];
    if require(Path::new(LOCKD_SO).exists(), "lockd.so is not installed") {
        modes.push("plugin");
    }
    let plot = std::env::temp_dir().join(format!("vmlock-bench-plot-{}.svg", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_vmlock-bench"))
        .args(["compare", "--duration", "0.3", "--clients", "1,4"])
        .arg("--plot")
        .arg(&plot)
        .args(["--targets", &targets.join(","), "--modes", &modes.join(",")])
        .args(["--mem-locks", "200", "--mem-conns", "2"])
        .arg("--vmlockd")
        .arg(vmlockd())
        .output()
        .expect("run vmlock-bench compare");
    let md = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "compare failed: {err}\n{md}");
    for mode in &modes {
        check_mode(&md, mode, targets.len());
    }
    let vm = rows(&md, "vmlockd");
    let mem = vm.last().expect("memory row for vmlockd");
    let (idle, held) = (number(mem[1]), number(mem[2]));
    assert!(idle > 0.0 && held >= idle, "memory row {mem:?}");
    assert_eq!(number(mem[3]), 200.0);
    let svg = std::fs::read_to_string(&plot).expect("the --plot file");
    let _ = std::fs::remove_file(&plot);
    assert!(
        svg.starts_with("<svg"),
        "not an SVG: {}",
        &svg[..svg.len().min(100)]
    );
    for mode in &modes {
        assert!(
            svg.contains(&format!("{mode}: throughput")),
            "no {mode} panel"
        );
    }
    // One marker per (mode, panel, target, client count) measured.
    assert_eq!(
        svg.matches("<circle").count(),
        modes.len() * 2 * targets.len() * 2
    );
}
