//! Hostile and malformed input against one running vmlockd, table-driven.
//!
//! ```text
//! start daemon ─► sentinel takes 3 locks ─► for each case in the table:
//!     prelude (fresh / registered / restricted connection)
//!     action  (bytes to send, or a custom attack such as slowloris)
//!     expect  (exact error reply, OK, PONG, silence, or a clean close)
//!     then:   daemon alive · sentinel locks held (daemon table + F_OFD_GETLK
//!             and F_GETLK) · a fresh client served within PROMPT
//! ```
//! Every failure is collected with its case name; the test fails at the end
//! listing them all (or at once if the daemon died).

#[path = "hostile/cases.rs"]
mod cases;
#[path = "hostile/custom.rs"]
mod custom;
#[path = "hostile/table.rs"]
mod table;

use std::time::Duration;

use table::{Case, Ctx, Expect};
use vmlock_testkit::sentinel::{self, Sentinel};
use vmlock_testkit::{Daemon, DaemonSpec, Flavor};

/// How quickly a fresh client must be served after (and during) each case.
pub const PROMPT: Duration = Duration::from_millis(500);

fn start() -> Ctx {
    // The expected replies are virtlockd's texts (refusals without the
    // holder's name, which vmlock-compat/tests/inquiry.rs covers).
    let d = Daemon::start(DaemonSpec::new(Flavor::Ours).config("").virtlockd_texts())
        .expect("start vmlockd");
    let sentinel = Sentinel::take(&d).expect("sentinel takes its locks");
    let ls = d.dir().join("fresh-ls");
    let ls = ls.to_string_lossy().into_owned();
    let mut c = d.connect();
    let r = c
        .call(&vmlock_testkit::frames::create_lockspace(0, &ls))
        .expect("create lockspace");
    assert!(vmlock_testkit::decode_reply(&r).1.is_none());
    Ctx {
        d,
        sentinel,
        fresh_ls: ls,
    }
}

/// The invariants that must hold after every case.
fn invariants(ctx: &mut Ctx) -> Result<(), String> {
    if let Some(st) = ctx.d.wait_exit(Duration::ZERO) {
        return Err(format!("daemon died ({st}); log:\n{}", ctx.d.log_text()));
    }
    ctx.sentinel.check(&ctx.d)?;
    sentinel::served(&ctx.d, &ctx.fresh_ls, PROMPT).map(drop)
}

fn run_case(ctx: &mut Ctx, case: &Case) -> Result<(), String> {
    case.run(ctx)?;
    invariants(ctx).map_err(|e| format!("after the case: {e}"))
}

#[test]
fn hostile_input_never_loses_a_lock_nor_stalls_the_daemon() {
    let mut ctx = start();
    let table = cases::all(&cases::Env::of(&ctx.d.dir()));
    invariants(&mut ctx).expect("invariants hold before any case");
    let mut failed = Vec::new();
    for case in &table {
        if let Err(e) = run_case(&mut ctx, case) {
            failed.push(format!("[{}] {e}", case.name));
            if ctx.d.wait_exit(Duration::ZERO).is_some() {
                break;
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} hostile cases failed:\n{}",
        failed.len(),
        table.len(),
        failed.join("\n")
    );
    ctx.d.assert_alive();
}

#[test]
fn the_table_is_large_named_uniquely_and_states_outcomes() {
    let table = cases::all(&cases::Env::of(std::path::Path::new(
        "/tmp/vmlock-tXXXXXX/d",
    )));
    assert!(table.len() >= 50, "only {} cases", table.len());
    let mut names: Vec<&str> = table.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "duplicate case names");
    let closes = table
        .iter()
        .filter(|c| matches!(c.expect, Expect::Closed))
        .count();
    let errors = table
        .iter()
        .filter(|c| matches!(c.expect, Expect::Error { .. }))
        .count();
    assert!(
        closes >= 20 && errors >= 20,
        "{closes} closes, {errors} errors"
    );
}
