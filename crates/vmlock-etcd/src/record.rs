//! The durable record: which lease this host holds and which local owners
//! hold which lock keys under it, so a restarted daemon can adopt them.
//!
//! The file is JSON, replaced atomically (write `<path>.tmp`, fsync,
//! rename, fsync the directory) on every change. An entry is written
//! **before** its etcd transaction (write-ahead): a crash can leave an entry
//! whose key never made it to etcd, never a key without an entry, so a
//! restart always knows every pid that may hold a lock.
//!
//! Owners are identified by pid **and** start time (`/proc/<pid>/stat`
//! field 22, clock ticks since boot), so a recycled pid is not mistaken for
//! the original owner.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One owner's hold on one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordLock {
    /// The etcd key.
    pub key: String,
    /// The lockspace path.
    pub lockspace: String,
    /// The resource name.
    pub name: String,
    /// Shared or exclusive.
    pub shared: bool,
    /// The owner pid.
    pub pid: u32,
    /// The owner's start time, if it could be read.
    pub start_time: Option<u64>,
    /// How many times the owner acquired it (shared joins repeat).
    pub count: u32,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The host id the record was written for.
    pub host_id: String,
    /// The lease in use, `None` while there is none (fenced, re-granting).
    pub lease_id: Option<i64>,
    /// Every lock held or being acquired.
    pub locks: Vec<RecordLock>,
}

impl Record {
    /// Reads the record; a missing file is an empty record.
    pub fn load(path: &Path) -> io::Result<Record> {
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Record::default()),
            Err(e) => Err(e),
        }
    }

    /// Replaces the file atomically.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir {
            fs::create_dir_all(dir)?;
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        if let Some(dir) = dir {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// The start time of `pid` (`/proc/<pid>/stat` field 22), `None` if the
/// process does not exist or the file is unreadable.
pub fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Parses field 22 of a `/proc/<pid>/stat` line. The command name (field
/// 2) is in parentheses and may contain spaces and `)`, so fields are
/// counted from the **last** `)`; field 3 follows it.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(22 - 3)?.parse().ok()
}

/// Whether the owner recorded as (`pid`, `start`) is still that process.
/// An owner recorded without a start time matches any live process.
pub fn same_process(pid: u32, start: Option<u64>) -> bool {
    match (proc_start_time(pid), start) {
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_field_22() {
        // After the comm field: state (3), then fields 4..=21 as 1..=18, then 22.
        let line = "1234 (a b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 23 24";
        assert_eq!(parse_start_time(line), Some(987_654));
        assert_eq!(parse_start_time("1 (x) S 1 2"), None);
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn own_process_is_itself() {
        let me = std::process::id();
        let start = proc_start_time(me);
        assert!(start.is_some());
        assert!(same_process(me, start));
        assert!(!same_process(me, start.map(|s| s + 1)));
        assert!(!same_process(u32::MAX - 1, None), "no such pid");
    }

    #[test]
    fn save_load_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        assert_eq!(Record::load(&path).unwrap(), Record::default());
        let rec = Record {
            host_id: "h".into(),
            lease_id: Some(77),
            locks: vec![RecordLock {
                key: "/k".into(),
                lockspace: String::new(),
                name: "/d".into(),
                shared: false,
                pid: 5,
                start_time: Some(6),
                count: 1,
            }],
        };
        rec.save(&path).unwrap();
        assert_eq!(Record::load(&path).unwrap(), rec);
        assert!(!dir.path().join("sub/state.json.tmp").exists());
        fs::write(&path, b"{").unwrap();
        assert!(Record::load(&path).is_err());
    }
}
