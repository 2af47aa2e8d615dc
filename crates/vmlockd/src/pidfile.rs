//! The PID file (docs/protocol.md §8.6): locked, decimal pid, no trailing newline.
//!
//! ```text
//! open(O_WRONLY|O_CREAT|O_CLOEXEC, 0644) → F_SETLK write lock on byte 0
//!   → fstat/stat: same inode? (else someone replaced it: retry)
//!   → ftruncate → write "<pid>"          (fd kept open: the lock is the claim)
//! exit: unlink, then close
//! ```
//! The lock is a classic POSIX lock, like virtlockd's, so either daemon
//! refuses to start while the other runs with the same pid file. Across a
//! re-exec the descriptor closes (close-on-exec) and the new image takes the
//! file again under the same pid.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use vmlock_sys::lock::{LockKind, LockType, try_lock};

/// A held PID file.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    file: Option<File>,
}

/// Why the PID file could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    /// Another process holds it.
    #[error("Failed to acquire pid file '{path}': another daemon is running")]
    Busy {
        /// The file.
        path: PathBuf,
    },
    /// A system error.
    #[error("Failed to acquire pid file '{path}'")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
}

impl PidFile {
    /// Takes the file and writes `pid` into it.
    pub fn acquire(path: &Path, pid: i32) -> Result<PidFile, PidFileError> {
        let io_err = |source| PidFileError::Io {
            path: path.to_owned(),
            source,
        };
        for _ in 0..10 {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                // A symlink planted at the pid file path must not make
                // us truncate and overwrite its target.
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
                .map_err(io_err)?;
            if !try_lock(file.as_fd(), LockKind::Posix, LockType::Exclusive).map_err(io_err)? {
                return Err(PidFileError::Busy {
                    path: path.to_owned(),
                });
            }
            let held = file.metadata().map_err(io_err)?;
            match std::fs::metadata(path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    file.set_len(0).map_err(io_err)?;
                    (&file)
                        .write_all(pid.to_string().as_bytes())
                        .map_err(io_err)?;
                    return Ok(PidFile {
                        path: path.to_owned(),
                        file: Some(file),
                    });
                }
                // Replaced or removed between open and lock: try again.
                _ => continue,
            }
        }
        Err(io_err(io::Error::other("the file kept being replaced")))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.path);
            self.file.take();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_holds_the_pid_without_newline_and_is_removed() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("d.pid");
        let held = PidFile::acquire(&p, 4242).expect("acquire");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "4242");
        drop(held);
        assert!(!p.exists());
    }

    #[test]
    fn a_symlinked_pid_file_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().expect("tmp");
        let target = dir.path().join("precious");
        std::fs::write(&target, b"keep me").expect("write");
        let p = dir.path().join("d.pid");
        std::os::unix::fs::symlink(&target, &p).expect("symlink");
        assert!(PidFile::acquire(&p, 4242).is_err());
        assert_eq!(std::fs::read(&target).expect("read"), b"keep me");
    }

    #[test]
    fn a_second_process_cannot_take_a_held_pid_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("d.pid");
        let _held = PidFile::acquire(&p, 1).expect("acquire");
        // Classic POSIX locks never conflict within one process, so ask a
        // second process (flock(1) uses flock, not fcntl: use python's fcntl).
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import fcntl,sys\nf=open(sys.argv[1],'a')\ntry:\n fcntl.lockf(f,fcntl.LOCK_EX|fcntl.LOCK_NB,1,0)\n print('locked')\nexcept OSError:\n print('busy')",
            ])
            .arg(&p)
            .output()
            .expect("python3");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "busy");
    }
}
