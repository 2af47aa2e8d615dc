//! The lock-information file: which DLM locks this daemon holds, for whom,
//! so that the next process (after a crash, a restart or a re-exec) can
//! adopt the orphans by name and mode and tell which VMs still run.
//!
//! JSON, rewritten whole (temporary file, `fsync`, `rename`) before every
//! lock (write-ahead) and before every unlock, so that it never misses a
//! lock the DLM holds for us: an entry without an orphan behind it is
//! harmless (adoption finds nothing), a lock without an entry could never
//! be adopted.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// Format version (1).
    pub version: u32,
    /// The DLM lockspace the locks are in.
    pub dlm_lockspace: String,
    /// The daemon that wrote it.
    pub pid: u32,
    /// One entry per (resource, owner).
    pub locks: Vec<InfoEntry>,
}

/// One DLM lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfoEntry {
    /// The DLM resource name (64 hex digits).
    pub resource: String,
    /// `"EX"` or `"PR"`.
    pub mode: String,
    /// The libvirt lockspace of the resource (`""`: the default one).
    pub lockspace: String,
    /// The resource name in it.
    pub name: String,
    /// The owner (the VM's pid).
    pub owner: u32,
    /// The owner's start time (field 22 of `/proc/<pid>/stat`), so that a
    /// recycled pid is not taken for the VM.
    pub owner_start: Option<u64>,
    /// The VM's name and UUID, when it registered them.
    pub vm: Option<String>,
    /// The VM's UUID.
    pub uuid: Option<String>,
    /// Acquires of this resource by this owner not yet released.
    pub count: u32,
}

/// Why the file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InfoError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The content is not a lock-information file.
    #[error("{path}: not a lock-information file: {why}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
}

impl LockInfo {
    /// Reads `path`; a missing file is an empty record.
    pub fn read(path: &Path) -> Result<LockInfo, InfoError> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LockInfo::default()),
            Err(source) => {
                return Err(InfoError::Io {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        let info: LockInfo = serde_json::from_str(&text).map_err(|e| InfoError::Format {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        if info.version != 1 {
            return Err(InfoError::Format {
                path: path.display().to_string(),
                why: format!("version {} (this vmlockd reads version 1)", info.version),
            });
        }
        Ok(info)
    }

    /// Replaces `path` with this record, durably.
    pub fn write(&self, path: &Path) -> Result<(), InfoError> {
        let io = |source| InfoError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        let body = serde_json::to_vec_pretty(self).map_err(|e| io(std::io::Error::other(e)))?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(&body).map_err(io)?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent()
            && let Ok(d) = fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(owner: u32) -> InfoEntry {
        InfoEntry {
            resource: "ab".repeat(32),
            mode: "EX".into(),
            lockspace: String::new(),
            name: "/img/a".into(),
            owner,
            owner_start: Some(12345),
            vm: Some("vm1".into()),
            uuid: None,
            count: 1,
        }
    }

    #[test]
    fn missing_file_is_empty_and_writes_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("locks.json");
        assert_eq!(LockInfo::read(&p).unwrap(), LockInfo::default());
        let info = LockInfo {
            version: 1,
            dlm_lockspace: "vmlock".into(),
            pid: 42,
            locks: vec![entry(7), entry(8)],
        };
        info.write(&p).unwrap();
        assert_eq!(LockInfo::read(&p).unwrap(), info);
        assert!(!dir.path().join("locks.json.tmp").exists());
    }

    #[test]
    fn garbage_and_unknown_versions_are_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("locks.json");
        fs::write(&p, "{not json").unwrap();
        let e = LockInfo::read(&p).unwrap_err().to_string();
        assert!(
            e.contains("locks.json") && e.contains("not a lock-information file"),
            "{e}"
        );
        fs::write(
            &p,
            r#"{"version":2,"dlm_lockspace":"x","pid":1,"locks":[]}"#,
        )
        .unwrap();
        let e = LockInfo::read(&p).unwrap_err().to_string();
        assert!(e.contains("version 2"), "{e}");
    }
}
