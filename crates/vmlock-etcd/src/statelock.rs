//! Exclusive ownership of the durable record.
//!
//! Two daemons that share one record (two configs leaving
//! `etcd_state_file` at its default, say) would adopt, overwrite and fence
//! each other's locks. The arbiter therefore holds an exclusive `flock` on
//! `<state_path>.lock` for as long as it runs (the record itself is replaced
//! by rename on every write, so it cannot carry the lock). The lock file
//! names its holder: `<pid> <host_id>`.
//!
//! The descriptor is close-on-exec: a daemon re-exec drops the lock and the
//! new image takes it again under the same pid before it reads the record.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::EtcdError;

/// The held lock; dropping it releases the record.
#[derive(Debug)]
pub(crate) struct StateLock {
    _file: File,
}

/// The lock file beside a record.
pub fn lock_path(state_path: &Path) -> PathBuf {
    let mut p = state_path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

impl StateLock {
    /// Takes the record's lock, or says who holds it.
    pub(crate) fn take(state_path: &Path, host_id: &str) -> Result<StateLock, EtcdError> {
        let path = lock_path(state_path);
        let io_err = |source: io::Error| EtcdError::Record {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            // A symlink planted at the lock path must not make us truncate
            // its target.
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = describe(holder.trim());
                return Err(EtcdError::StateBusy {
                    path: state_path.to_owned(),
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
        }
        file.set_len(0).map_err(io_err)?;
        file.rewind().map_err(io_err)?;
        let line = format!("{} {host_id}\n", std::process::id());
        file.write_all(line.as_bytes()).map_err(io_err)?;
        Ok(StateLock { _file: file })
    }
}

fn describe(content: &str) -> String {
    match content.split_once(' ') {
        Some((pid, host)) if !pid.is_empty() => format!("vmlockd pid {pid}, host_id {host}"),
        _ if !content.is_empty() => format!("pid {content}"),
        _ => "another process".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("etcd-state.json");
        let held = StateLock::take(&state, "A").unwrap();
        // flock locks belong to the open file description: a second open in
        // this very process conflicts, as another daemon's would.
        let err = StateLock::take(&state, "B").unwrap_err().to_string();
        assert!(err.contains(&state.display().to_string()), "{err}");
        let me = format!("vmlockd pid {}, host_id A", std::process::id());
        assert!(err.contains(&me), "{err}");
        drop(held);
        let _again = StateLock::take(&state, "B").expect("free once dropped");
        let text = std::fs::read_to_string(lock_path(&state)).unwrap();
        assert_eq!(text, format!("{} B\n", std::process::id()));
    }

    #[test]
    fn a_symlinked_lock_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s.json");
        let target = dir.path().join("precious");
        std::fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, lock_path(&state)).unwrap();
        assert!(StateLock::take(&state, "A").is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    }
}
