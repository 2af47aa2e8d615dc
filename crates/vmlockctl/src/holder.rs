//! Who holds the lock on a lease file, as the kernel reports it, without taking or
//! dropping any lock.
//!
//! ```text
//! open(file, O_RDONLY)                 (this process holds no locks, so closing the
//!                                       descriptor cannot drop anyone's lock)
//! F_OFD_GETLK(F_RDLCK, byte 0, len 1)  conflict -> exclusive holder
//! F_OFD_GETLK(F_WRLCK, byte 0, len 1)  conflict -> shared holder(s), else unlocked
//! l_pid > 0  -> a classic POSIX lock: that process (libvirt's virtlockd)
//! l_pid = -1 -> an OFD lock: "held by a lock daemon" (vmlockd), pid not reported
//! ```

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use serde::Serialize;
use vmlock_sys::lock::{LockKind, LockType, query};

/// The lock state of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// No lock on byte 0.
    Unlocked,
    /// Read lock(s).
    Shared,
    /// A write lock.
    Exclusive,
    /// The file does not exist (a lease file not created yet: unlocked).
    Missing,
}

/// What the kernel says about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The state.
    pub state: State,
    /// The holder pid for classic locks; `None` for OFD locks or no lock.
    pub pid: Option<i32>,
}

/// Probes `path` (see the module docs).
pub fn probe(path: &Path) -> io::Result<Probe> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Probe {
                state: State::Missing,
                pid: None,
            });
        }
        Err(e) => return Err(e),
    };
    let (state, holder) = match query(f.as_fd(), LockKind::Ofd, LockType::Shared)? {
        Some(h) => (State::Exclusive, Some(h)),
        None => match query(f.as_fd(), LockKind::Ofd, LockType::Exclusive)? {
            Some(h) => (State::Shared, Some(h)),
            None => (State::Unlocked, None),
        },
    };
    let pid = holder.map(|h| h.pid).filter(|&p| p > 0);
    Ok(Probe { state, pid })
}

impl Probe {
    /// Whether anyone holds a lock.
    pub fn is_locked(&self) -> bool {
        matches!(self.state, State::Shared | State::Exclusive)
    }

    /// "held by pid N (comm)", "held by a lock daemon", or `None` when unlocked.
    pub fn holder_text(&self) -> Option<String> {
        if !self.is_locked() {
            return None;
        }
        Some(match self.pid {
            Some(pid) => match comm(pid) {
                Some(c) => format!("held by pid {pid} ({c})"),
                None => format!("held by pid {pid}"),
            },
            None => "held by a lock daemon (OFD lock: the kernel reports no pid)".to_owned(),
        })
    }
}

/// The command name of `pid`, from `/proc`.
fn comm(pid: i32) -> Option<String> {
    let c = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(c.trim_end().to_owned())
}
