//! The saved cargo-fuzz corpora (`fuzz/corpus/<target>/` at the workspace
//! root), for the stable replay tests of each crate that has a fuzz target.
//!
//! ```text
//! corpus("read_state") ─► sorted files (≥ 50, else the test fails: a lost
//!                          corpus must not pass silently) ─► replay(entry)
//! ```

use std::path::{Path, PathBuf};

/// The regular files in `dir`, sorted. Panics (a test helper) if the
/// directory cannot be read.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// The corpus of fuzz target `target`; at least 50 files.
pub fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let found = files(&dir);
    assert!(
        found.len() >= 50,
        "{}: corpus missing or too small ({} files)",
        dir.display(),
        found.len()
    );
    found
}

/// Feeds every file in `paths` to `entry`.
pub fn replay(paths: &[PathBuf], entry: fn(&[u8])) {
    for p in paths {
        let data = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        entry(&data);
    }
}
