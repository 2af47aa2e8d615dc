//! Per-connection state (docs/protocol.md §3.4), and [`Shared`], what the
//! lock program's calls (`dispatch::lock`, §3.5) work on.
//!
//! ```text
//!           REGISTER(owner, id≠0)            RESTRICT
//!  fresh ──────────────────────► registered ──────────► restricted
//!    │  CREATE_LOCKSPACE ok          │ every proc ok        │ every proc → 29 "restricted"
//!    │  others → 55 "not registered" │                      │ (the connection stays: it is
//!    └──────────────────────────────-┘                      │  the VM's lifeline, §5.4)
//! ```
//! Engine calls go through [`FsExec`] so that a hung network filesystem
//! never blocks the event loop.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use lockspace::Engine;
use vmlock_proto::error::WireError;
use vmlock_proto::lock::Owner;

use crate::error;
use crate::fsexec::FsExec;
use crate::lifeline::{Lifeline, Lifelines};

/// One client connection's state.
#[derive(Debug)]
pub struct Session {
    /// Client id (per server, from 1).
    pub id: u64,
    /// Peer pid from SO_PEERCRED (−1 if the kernel could not tell).
    pub peer_pid: i32,
    /// Peer uid.
    pub peer_uid: u32,
    /// A pidfd of the peer, taken at accept.
    pub pidfd: Option<Arc<OwnedFd>>,
    /// This connection as its owner's lifeline, while the peer is
    /// registered as itself (see [`crate::lifeline`]).
    pub lifeline: Option<Arc<Lifeline>>,
    /// The registered owner, if any (registered means id ≠ 0).
    pub owner: Option<Owner>,
    /// Set by RESTRICT.
    pub restricted: bool,
    /// Connection time, seconds since the epoch.
    pub conn_time: i64,
}

impl Session {
    /// A fresh connection.
    pub fn new(id: u64, peer_pid: i32, peer_uid: u32, pidfd: Option<OwnedFd>) -> Session {
        let conn_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Session {
            id,
            peer_pid,
            peer_uid,
            pidfd: pidfd.map(Arc::new),
            lifeline: None,
            owner: None,
            restricted: false,
            conn_time,
        }
    }

    /// Whether closing this connection releases its owner's locks (docs/protocol.md §5.4):
    /// the peer registered *itself*.
    pub fn is_holder(&self) -> bool {
        matches!(&self.owner, Some(o) if self.peer_pid > 0 && o.pid as i32 == self.peer_pid)
    }

    pub(crate) fn owner_pid(&self) -> Result<u32, Failure> {
        if self.restricted {
            return Err(error::restricted().into());
        }
        self.owner
            .as_ref()
            .map(|o| o.pid)
            .ok_or_else(|| error::unregistered().into())
    }
}

/// A failed call: the error reply to send (boxed: it is large and rare).
pub type Failure = Box<WireError>;

/// What the dispatcher needs from the daemon.
#[derive(Debug)]
pub struct Shared {
    /// The lock engine.
    pub engine: Arc<Engine>,
    /// Where filesystem calls run.
    pub fs: FsExec,
    /// The cluster back end, when `lock_backend` is not `"file"`.
    pub cluster: Option<Arc<dyn ClusterHooks>>,
    /// Where new named lockspaces are remembered across a restart.
    pub lockspaces: Option<crate::lslist::LockspaceList>,
    /// The owners' lifelines, and the terminations their closes started.
    pub lifelines: Lifelines,
    /// What each owner registered as (inquiry, refusals naming the holder).
    pub owners: crate::owners::Owners,
    /// Counters and facts for the inquiry program's STATUS.
    pub stats: crate::stats::Stats,
}

impl Shared {
    /// Releases every lock of `pid`, off the event loop. An owner that
    /// holds nothing (the usual case when a holder connection closes: its
    /// locks were released on another connection) is answered here, with
    /// no hand-off to the blocking pool.
    pub(crate) async fn release_owner(&self, pid: u32) -> Result<usize, String> {
        if !self.engine.holds_any(pid) {
            return Ok(0);
        }
        let engine = Arc::clone(&self.engine);
        self.fs
            .blocking(move || engine.release_owner(pid))
            .await
            .map_err(|e| e.to_string())
    }

    /// Applies the close of a lifeline once (see [`crate::lifeline`]):
    /// releases every lock of its owner and, if there was any, terminates
    /// the owner in the background.
    pub async fn end_lifeline(&self, l: &Arc<Lifeline>) {
        self.lifelines.end(l, |pid| self.release_owner(pid)).await;
    }

    /// A lockspace now exists: remember it (docs/quirks.md #17).
    pub(crate) fn created(&self, dir: &str) {
        if let Some(l) = &self.lockspaces {
            l.add(dir);
        }
    }
}

/// What a cluster back end hears from the dispatcher (besides the engine's
/// own arbiter calls).
pub trait ClusterHooks: Send + Sync + std::fmt::Debug {
    /// REGISTER succeeded. `peer_pidfd` is the connection's pidfd, taken at
    /// accept, when the peer registered itself; the back end keeps a way
    /// to signal the owner (fencing) that can never hit a recycled pid.
    fn registered(&self, owner: &Owner, peer_pid: i32, peer_pidfd: Option<&OwnedFd>);

    /// The back end's state for the inquiry program's STATUS.
    fn status(&self) -> Option<crate::stats::ClusterStatus> {
        None
    }

    /// The fence helper and the watchdog, for STATUS (asks the helper: one
    /// local round trip, at most a second).
    fn fence(&self) -> Option<crate::stats::FenceReport> {
        None
    }
}
