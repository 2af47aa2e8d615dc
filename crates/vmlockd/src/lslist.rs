//! The named lockspaces, remembered across a daemon restart (docs/quirks.md #17).
//!
//! libvirt creates its lockspaces (`file_lockspace_dir` and friends) once,
//! when its lock driver starts. virtlockd keeps them only in memory, so after
//! it is restarted (or crashes) every indirect ACQUIRE fails with "Lockspace
//! for path … does not exist" until libvirtd is restarted too. vmlockd writes
//! the list beside its sockets (`vmlockd-lockspaces`, in `/run`: a reboot,
//! which restarts libvirt as well, forgets it) and reads it at a cold start.
//!
//! ```text
//!  CREATE_LOCKSPACE / NEW added a lockspace ─► rewrite the file (temp + rename)
//!  cold start ─► read it ─► Engine::remember_lockspace (no filesystem call:
//!                a hung mount must not stall start-up; a missing directory
//!                fails the first lease like any removed directory would)
//!  re-exec ─► the lockspaces travel in the state; the file is brought in line
//! ```
//! File: the directories, each followed by a NUL byte (a path cannot contain
//! one). A write that fails is logged and changes nothing else: the lockspace
//! works, it is only not remembered.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing::{info, warn};

/// The file's name, in the socket directory.
pub const FILE_NAME: &str = "vmlockd-lockspaces";

/// The remembered list.
#[derive(Debug)]
pub struct LockspaceList {
    path: PathBuf,
    known: Mutex<BTreeSet<String>>,
}

impl LockspaceList {
    /// The list at `path`, starting from the lockspaces the engine has.
    pub fn new(path: PathBuf, current: Vec<String>) -> LockspaceList {
        LockspaceList {
            path,
            known: Mutex::new(current.into_iter().collect()),
        }
    }

    /// Reads the lockspaces remembered at `path` (none if it is missing).
    pub fn read(path: &Path) -> Vec<String> {
        match std::fs::read(path) {
            Ok(bytes) => bytes
                .split(|&b| b == 0)
                .filter(|p| !p.is_empty())
                .filter_map(|p| std::str::from_utf8(p).ok())
                .map(str::to_owned)
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                warn!(
                    "cannot read the remembered lockspaces {}: {e}",
                    path.display()
                );
                Vec::new()
            }
        }
    }

    /// Records `dir` if it is new; rewrites the file when something changed.
    pub fn add(&self, dir: &str) {
        if dir.is_empty() || dir.contains('\0') {
            return;
        }
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if known.insert(dir.to_owned()) {
            self.write(&known);
        }
    }

    /// Writes the whole list now (after start-up or a restore).
    pub fn sync(&self) {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        self.write(&known);
    }

    fn write(&self, known: &BTreeSet<String>) {
        if let Err(e) = write_atomically(&self.path, known) {
            warn!(
                "cannot remember the lockspaces in {}: {e} (they work, but a restart forgets them)",
                self.path.display()
            );
        }
    }
}

fn write_atomically(path: &Path, known: &BTreeSet<String>) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        for dir in known {
            f.write_all(dir.as_bytes())?;
            f.write_all(&[0])?;
        }
    }
    std::fs::rename(&tmp, path)
}

/// At a cold start: makes the remembered lockspaces known to `engine`.
pub fn restore(engine: &lockspace::Engine, path: &Path) {
    let dirs = LockspaceList::read(path);
    let n = dirs.iter().filter(|d| engine.remember_lockspace(d)).count();
    if n > 0 {
        info!(
            "remembered {n} lockspace(s) from before the restart ({})",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_round_trips_and_skips_what_it_cannot_hold() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(FILE_NAME);
        assert!(LockspaceList::read(&path).is_empty(), "missing file: none");
        let list = LockspaceList::new(path.clone(), vec!["/b".into()]);
        list.add("/a");
        list.add("/a");
        list.add("");
        list.add("/bad\0dir");
        list.add("/with space\nand newline");
        assert_eq!(
            LockspaceList::read(&path),
            ["/a", "/b", "/with space\nand newline"]
        );
        let engine = lockspace::Engine::new(lockspace::EngineOptions::default());
        restore(&engine, &path);
        assert!(engine.has_lockspace("/a") && engine.has_lockspace("/b"));
        assert_eq!(engine.lockspace_paths().len(), 3);
    }
}
