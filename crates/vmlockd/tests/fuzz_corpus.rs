//! Replays the saved cargo-fuzz corpora of `read_state` and `read_statebin`
//! (`/fuzz/corpus/<target>/`) and the
//! real virtlockd 9.0 state file through the entry point the fuzz target calls, so
//! stable-only CI checks every input the fuzzer found interesting; plus regression tests
//! for what the fuzzer found.

use std::path::Path;

use vmlock_testkit::corpus::{corpus, replay};
use vmlockd::state;
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

const NO_PRIVATE_DATA: &str = r#"{"daemon": {"servers": {"virtlockd": {"max_clients": 1,
    "services": [{"socks": [{"fd": 3}]}], "clients": [{"id": 1, "sock": {"fd": 4}}]}}},
    "defaultLockspace": {"resources": []}, "magic": "42"}"#;

/// Found by `read_state`: a lock-server client without `privateData` (accepted, as no lock
/// data) was written back with `"privateData": {}`, which the reader then refused
/// ("privateData without restricted"), so our own file could not be read back.
#[test]
fn a_client_without_lock_data_reads_back() {
    let first = state::parse(NO_PRIVATE_DATA).expect("lenient read");
    assert_eq!(first.servers[0].clients[0].lock, None);
    let json = first.to_json().expect("write");
    assert!(json.contains(r#""privateData":{}"#), "{json}");
    let again = state::parse(&json).expect("our own file reads back");
    assert_eq!(again.servers, first.servers);
    fuzz_entry_read_state(NO_PRIVATE_DATA.as_bytes());
}

/// Found while writing the `read_state` invariants (the fuzzer had not hit it in 9.5M runs):
/// a client id of -1 (read as `u64::MAX`) left no next id, and computing it overflowed (a
/// panic with overflow checks, a wrap to 0 without). The next id now saturates.
#[test]
fn a_client_id_of_minus_one_does_not_overflow_the_next_id() {
    let text = NO_PRIVATE_DATA.replace(r#""id": 1"#, r#""id": -1"#);
    let s = state::parse(&text).expect("reads");
    assert_eq!(s.servers[0].clients[0].id, u64::MAX);
    assert_eq!(s.servers[0].next_client_id, u64::MAX);
    fuzz_entry_read_state(text.as_bytes());
}
