//! vmlockd keeps its lock descriptors inheritable (`EngineOptions::
//! inherit_fds`), which is sound only while the daemon runs no program but
//! its own next image: a child would inherit every lock descriptor and keep
//! each OFD lock alive after its release. This scans the daemon's and the
//! engine's sources (up to their test modules) for ways to start one. (The
//! re-exec's memory releaser, `vmlock_sys::mem::ExecReleaser`, is a process
//! but runs no program and holds no descriptor: it leaves the daemon's
//! descriptor table before the daemon goes on.) The one other program is
//! the fence helper (`vmlock-fenced`, etcd back end), started from
//! `fencelink.rs` through `vmlock_sys::fence::spawn_clean`, which marks
//! every inherited descriptor close-on-exec in the child before its `exec`.

use std::path::Path;

/// Ways to start another program; the re-exec goes through
/// `vmlock_sys::process::{exec_file, exec_no_shell}` only.
const FORBIDDEN: &[&str] = &[
    "Command::new",
    "process::Command",
    "libc::system",
    "libc::execv",
    "libc::fork",
    "posix_spawn",
    "exec_no_shell(",
    "exec_file(",
];

fn production_code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read source");
    match text.find("#[cfg(test)]") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn the_daemon_starts_no_other_program() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    sources(&root.join("../lockspace/src"), &mut files);
    assert!(files.len() > 20, "sources found: {files:?}");
    let mut execs = 0;
    let mut helper_spawns = 0;
    for f in &files {
        let code = production_code(f);
        if f.ends_with("fencelink.rs") {
            assert_eq!(code.matches("Command::new").count(), 1, "one helper start");
            assert_eq!(
                code.matches("spawn_clean(").count(),
                1,
                "through spawn_clean"
            );
            assert!(!code.contains(".spawn()"), "no plain spawn");
            helper_spawns += 1;
            continue;
        }
        for pat in FORBIDDEN {
            let n = code.matches(pat).count();
            // The one exec: the re-exec (restart/mod.rs) hands over to the next image.
            if f.ends_with("restart/mod.rs") && pat.starts_with("exec_") {
                execs += n;
                continue;
            }
            assert_eq!(n, 0, "{} uses {pat}", f.display());
        }
    }
    assert_eq!(helper_spawns, 1, "fencelink.rs was scanned");
    assert_eq!(
        execs, 2,
        "restart/mod.rs: exec_file and exec_no_shell, once each"
    );
}
