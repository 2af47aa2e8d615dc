//! Memory with many locks held: RSS of a daemon idle, then holding N indirect leases.
//!
//! ```text
//! conn j (j < conns):  REGISTER(pid_base + j) ─ CREATE_LOCKSPACE(dir) ─
//!                      ACQUIRE(dir, lease-j-k, AUTOCREATE) for its share of the N locks
//! read /proc/<daemon>/status VmRSS ─ RELEASE everything (the pids are fake, so closing
//!                                    a connection would not release anything)
//! ```

use std::path::Path;

use vmlock_proto::lock::FLAG_AUTOCREATE;

use crate::conn::Conn;
use crate::error::{BenchError, Result};
use crate::frames::CallFrame;
use crate::target::Target;

/// RSS figures for one daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemResult {
    /// VmRSS before the bench connects, KiB.
    pub idle_kib: u64,
    /// VmRSS with all locks held, KiB.
    pub held_kib: u64,
    /// Number of locks held.
    pub locks: u32,
}

/// The name of connection `j`'s `k`-th lease (64 characters, like a SHA-256 name).
pub fn lease_name(j: u32, k: u32) -> String {
    format!("{:032x}{:032x}", j, k)
}

/// Takes `locks` leases over `conns` connections in `dir`, measures, releases.
pub fn measure(
    target: &Target,
    dir: &Path,
    locks: u32,
    conns: u32,
    pid_base: u32,
) -> Result<MemResult> {
    let conns = conns.max(1);
    std::fs::create_dir_all(dir).map_err(BenchError::io("mkdir lockspace"))?;
    let idle_kib = target.rss_kib()?;
    let space = dir.to_string_lossy().into_owned();
    let mut held = Vec::with_capacity(conns as usize);
    for j in 0..conns {
        let mut c = Conn::connect(&target.socket())?;
        c.register(j, pid_base.wrapping_add(j))?;
        c.call(&mut CallFrame::create_lockspace(&space))?
            .require_ok("CREATE_LOCKSPACE")?;
        let share = locks / conns + u32::from(j < locks % conns);
        for k in 0..share {
            let mut f = CallFrame::acquire(&space, &lease_name(j, k), FLAG_AUTOCREATE);
            c.call(&mut f)?.require_ok("ACQUIRE")?;
        }
        held.push((c, j, share));
    }
    let held_kib = target.rss_kib()?;
    for (c, j, share) in &mut held {
        for k in 0..*share {
            let mut f = CallFrame::release(&space, &lease_name(*j, k));
            c.call(&mut f)?.require_ok("RELEASE")?;
        }
    }
    Ok(MemResult {
        idle_kib,
        held_kib,
        locks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names_are_distinct_and_sha_sized() {
        assert_eq!(lease_name(1, 2).len(), 64);
        assert_ne!(lease_name(1, 2), lease_name(2, 1));
        assert!(lease_name(9, 9).bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
