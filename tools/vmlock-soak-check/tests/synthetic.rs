//! The checker on hand-written logs: it must find every planted violation
//! (so it demonstrably can fail) and accept the clean cases.

use std::fs;

use vmlock_soak_check::{Report, check, log::parse_log, quantile};

const MS: u64 = 1_000_000;

/// Builds a report from `(client, log text)` pairs via real files.
fn report(logs: &[(&str, &str)]) -> Report {
    let dir = tempdir();
    for (client, text) in logs {
        fs::write(dir.join(format!("{client}.log")), text).expect("write log");
    }
    fs::write(dir.join("ignored.txt"), "not a log").expect("write");
    let r = Report::from_dir(&dir).expect("load");
    let _ = fs::remove_dir_all(&dir);
    r
}

fn tempdir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("soak-check-{}-{n}", std::process::id()));
    fs::create_dir_all(&d).expect("mkdir");
    d
}

#[test]
fn disjoint_exclusive_holdings_pass() {
    let r = report(&[
        (
            "a",
            "10 grant d1 x\n20 release d1 x\n40 grant d1 x\n50 release d1 x\n",
        ),
        ("b", "25 grant d1 x\n35 release d1 x\n"),
    ]);
    assert_eq!(r.findings.holdings.len(), 3);
    assert!(
        r.problems(u64::MAX).is_empty(),
        "{:?}",
        r.problems(u64::MAX)
    );
}

#[test]
fn touching_holdings_are_not_an_overlap() {
    // b's grant reply came after a's release request left: legal.
    let r = report(&[
        ("a", "10 grant d x\n20 release d x\n"),
        ("b", "20 grant d x\n30 release d x\n"),
    ]);
    assert!(r.findings.violations.is_empty());
}

#[test]
fn overlapping_exclusive_holdings_are_found() {
    let r = report(&[
        ("a", "10 grant d1 x\n30 release d1 x\n"),
        ("b", "20 grant d1 x\n40 release d1 x\n"),
        ("c", "20 grant d2 x\n40 release d2 x\n"),
    ]);
    let v = &r.findings.violations;
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(
        (v[0].first.client.as_str(), v[0].second.client.as_str()),
        ("a", "b")
    );
    assert_eq!(v[0].first.disk, "d1");
    assert!(r.problems(u64::MAX)[0].contains("overlap on d1"));
}

#[test]
fn a_holding_nested_inside_another_is_found() {
    let r = report(&[
        ("a", "10 grant d x\n100 release d x\n"),
        ("b", "40 grant d x\n50 release d x\n"),
    ]);
    assert_eq!(r.findings.violations.len(), 1);
}

#[test]
fn shared_holdings_may_overlap_but_not_with_exclusive() {
    let ok = report(&[
        ("a", "10 grant d s\n30 release d s\n"),
        ("b", "20 grant d s\n40 release d s\n"),
    ]);
    assert!(ok.findings.violations.is_empty());
    let bad = report(&[
        ("a", "10 grant d s\n30 release d s\n"),
        ("b", "20 grant d s\n40 release d s\n"),
        ("c", "35 grant d x\n36 release d x\n"),
    ]);
    assert_eq!(
        bad.findings.violations.len(),
        1,
        "{:?}",
        bad.findings.violations
    );
    assert_eq!(bad.findings.violations[0].second.client, "c");
    let bad2 = report(&[
        ("a", "10 grant d x\n30 release d x\n"),
        ("b", "20 grant d s\n25 release d s\n"),
    ]);
    assert_eq!(bad2.findings.violations.len(), 1);
}

#[test]
fn a_holding_never_released_lasts_for_ever() {
    let r = report(&[
        ("a", "10 grant d x\n"),
        ("b", "1000 grant d x\n1001 release d x\n"),
    ]);
    assert_eq!(r.findings.violations.len(), 1);
    assert!(r.problems(u64::MAX)[0].contains("∞"));
}

#[test]
fn a_kill_ends_the_holdings_of_the_killed_client_only() {
    let r = report(&[
        ("h1", "10 grant d1 x\n11 grant s s\n"),
        ("h2", "12 grant d2 x\n"),
        ("driver", &format!("{} kill h1\n", 20)),
        (
            "p",
            &format!(
                "{} grant d1 x\n{} release d1 x\n{} grant d2 x\n",
                20 + 3 * MS,
                30 * MS,
                31 * MS
            ),
        ),
    ]);
    // h2 was never killed: the probe's grant of d2 overlaps it.
    assert_eq!(r.findings.violations.len(), 1);
    assert_eq!(r.findings.violations[0].first.client, "h2");
    let free = &r.findings.free_times;
    assert_eq!(free.len(), 1, "only h1's exclusive holding: {free:?}");
    assert_eq!(
        (free[0].client.as_str(), free[0].disk.as_str(), free[0].ns),
        ("h1", "d1", Some(3 * MS))
    );
}

#[test]
fn a_grant_before_the_kill_is_a_violation_and_slow_frees_are_reported() {
    let r = report(&[
        ("h", "10 grant d x\n"),
        ("driver", &format!("{} kill h\n", 100 * MS)),
        (
            "p",
            &format!(
                "50 grant d x\n60 release d x\n{} grant d x\n{} release d x\n",
                400 * MS,
                401 * MS
            ),
        ),
    ]);
    assert_eq!(r.findings.violations.len(), 1, "grant at 50 while h held d");
    assert_eq!(r.free_ns(), vec![300 * MS]);
    let p = r.problems(200 * MS);
    assert!(p.iter().any(|l| l.contains("free only 300.0 ms")), "{p:?}");
    assert!(!r.problems(500 * MS).iter().any(|l| l.contains("free only")));
}

#[test]
fn a_killed_holding_nobody_got_back_is_unresolved() {
    let r = report(&[("h", "10 grant d x\n"), ("driver", "20 kill h\n")]);
    assert_eq!(r.unresolved().len(), 1);
    assert!(
        r.problems(u64::MAX)
            .iter()
            .any(|l| l.contains("never free"))
    );
}

#[test]
fn errors_and_inconsistent_logs_are_problems() {
    let r = report(&[(
        "a",
        "10 grant d x\n15 error acquire d: code 38 boom\n20 release d s\n30 release e x\n",
    )]);
    let p = r.problems(u64::MAX);
    assert!(
        p.iter().any(|l| l == "error: a: acquire d: code 38 boom"),
        "{p:?}"
    );
    assert_eq!(r.findings.anomalies.len(), 2, "{:?}", r.findings.anomalies);
}

#[test]
fn truncated_lines_are_counted_and_bad_lines_fail_the_load() {
    let r = report(&[("h", "10 grant d x\n20 gra")]);
    assert_eq!(r.truncated, 1);
    let dir = tempdir();
    fs::write(dir.join("a.log"), "10 grant d y\n").expect("write");
    assert!(Report::from_dir(&dir).is_err());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn events_are_ordered_by_time_not_by_file() {
    // Same client, lines out of order across a kill written by the driver.
    let (a, _) = parse_log("a", "10 grant d x\n30 grant d x\n40 release d x\n").expect("parse");
    let (k, _) = parse_log("driver", "20 kill a\n").expect("parse");
    let all: Vec<_> = k.into_iter().chain(a).collect();
    let f = check(&all);
    assert!(f.violations.is_empty(), "{:?}", f.violations);
    assert_eq!(f.holdings.len(), 2);
}

#[test]
fn quantile_uses_nearest_rank() {
    let v: Vec<u64> = (1..=100).collect();
    assert_eq!(quantile(&v, 0.99), Some(99));
    assert_eq!(quantile(&v, 0.5), Some(50));
    assert_eq!(quantile(&v, 1.0), Some(100));
    assert_eq!(quantile(&[], 0.5), None);
    assert_eq!(quantile(&[7], 0.99), Some(7));
}
