//! Checks that a developer's machine may skip but CI never does.
//!
//! A test that needs something the machine may lack (a package, root)
//! calls [`require`]: without it the test is skipped with a printed reason,
//! unless this is a CI run, where the missing piece is a failure. CI runs
//! `scripts/install-deps.sh` first, so a skip there would only hide a gap
//! in that script.

/// Whether this is a CI run: `CI` is set to anything but "", "0" or "false"
/// (CI sets `CI=true`).
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// `ok`, or when it is false: under CI a panic saying `what` is missing,
/// elsewhere a printed `skipping: {what}` and `false` (the caller returns).
#[track_caller]
pub fn require(ok: bool, what: &str) -> bool {
    if !ok {
        assert!(
            !in_ci(),
            "CI is set and {what}: scripts/install-deps.sh installs every package the suite needs"
        );
        eprintln!("skipping: {what}");
    }
    ok
}
