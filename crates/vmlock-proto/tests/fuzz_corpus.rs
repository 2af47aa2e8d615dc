//! Replays the saved cargo-fuzz corpus (`/fuzz/corpus/<target>/`) and the captured
//! fixtures through the same entry points the fuzz targets call, so stable-only CI
//! exercises every input the fuzzer found interesting.

use std::path::{Path, PathBuf};

use vmlock_testkit::corpus::{corpus, files, replay};

#[test]
fn decode_frame_corpus() {
    replay(
        &corpus("decode_frame"),
        vmlock_proto::fuzz_entry_decode_frame,
    );
}

#[test]
fn decode_args_corpus() {
    replay(&corpus("decode_args"), vmlock_proto::fuzz_entry_decode_args);
}

#[test]
fn fixtures_through_both_entries() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let bins: Vec<PathBuf> = files(&dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    assert!(bins.len() >= 50, "fixtures missing");
    replay(&bins, vmlock_proto::fuzz_entry_decode_frame);
    replay(&bins, vmlock_proto::fuzz_entry_decode_args);
}
