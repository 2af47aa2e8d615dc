//! `vmlock-soak-check LOGDIR [BOUND_MS]`: checks a soak run's logs by hand.
//! Prints the summary and every problem; exits 1 if there is any.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use vmlock_soak_check::Report;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first().map(PathBuf::from) else {
        eprintln!("usage: vmlock-soak-check LOGDIR [BOUND_MS]");
        std::process::exit(2)
    };
    let bound_ms: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5000);
    let report = match Report::from_dir(&dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}: {e}", dir.display());
            std::process::exit(2)
        }
    };
    println!("{report}");
    let problems = report.problems(bound_ms * 1_000_000);
    for p in &problems {
        println!("PROBLEM {p}");
    }
    std::process::exit(i32::from(!problems.is_empty()))
}
