//! Replays the saved cargo-fuzz corpus (`/fuzz/corpus/<target>/`) and the captured
//! fixtures through the same entry points the fuzz targets call, so stable-only CI
//! exercises every input the fuzzer found interesting.

use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let found = files(&dir);
    assert!(
        found.len() >= 50,
        "{}: corpus missing or too small",
        dir.display()
    );
    found
}

fn replay(paths: &[PathBuf], entry: fn(&[u8])) {
    for p in paths {
        let data = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        entry(&data);
    }
}

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
