//! Replays the saved cargo-fuzz corpora of `read_state` and `read_statebin`
//! (`/fuzz/corpus/<target>/`) and the
//! real virtlockd 9.0 state file through the entry point the fuzz target calls, so
//! stable-only CI checks every input the fuzzer found interesting (the regression tests
//! for what the fuzzer found are unit tests of `fuzzing.rs`).

use std::path::Path;

use vmlock_testkit::corpus::{corpus, replay};
use vmlockd::{fuzz_entry_read_state, fuzz_entry_read_statebin};

#[test]
fn read_state_corpus() {
    replay(&corpus("read_state"), fuzz_entry_read_state);
}

#[test]
fn read_statebin_corpus() {
    replay(&corpus("read_statebin"), fuzz_entry_read_statebin);
}

#[test]
fn real_state_file_through_the_entry() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/virtlockd-9.0-restart-state.json");
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    fuzz_entry_read_state(&data);
}
