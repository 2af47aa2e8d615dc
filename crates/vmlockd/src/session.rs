//! Per-connection state (docs/protocol.md §3.4) and the lock-program dispatch (§3.5).
//!
//! ```text
//!           REGISTER(owner, id≠0)            RESTRICT
//!  fresh ──────────────────────► registered ──────────► restricted
//!    │  CREATE_LOCKSPACE ok          │ every proc ok        │ every proc → 29 "restricted"
//!    │  others → 55 "not registered" │                      │ (the connection stays: it is
//!    └──────────────────────────────-┘                      │  the VM's lifeline, §5.4)
//! ```
//! Checks run in libvirt's order: flags, restricted, registered, then the
//! procedure's own checks. Engine calls go through [`FsExec`] so that a hung
//! network filesystem never blocks the event loop.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use lockspace::{AcquireFlags, Engine};
use vmlock_proto::error::{WireError, code, domain};
use vmlock_proto::lock::{
    Call, FLAG_AUTOCREATE, FLAG_SHARED, NewArgs, Owner, RegisterArgs, ResourceArgs,
};

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

    fn owner_pid(&self) -> Result<u32, Failure> {
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
    pub stats: crate::inquiry::Stats,
}

impl Shared {
    /// Releases every lock of `pid`, off the event loop.
    async fn release_owner(&self, pid: u32) -> Result<usize, String> {
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
    fn created(&self, dir: &str) {
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
    fn status(&self) -> Option<crate::inquiry::ClusterStatus> {
        None
    }

    /// The fence helper and the watchdog, for STATUS (asks the helper: one
    /// local round trip, at most a second).
    fn fence(&self) -> Option<crate::inquiry::FenceReport> {
        None
    }
}

fn flags_ok(flags: u32, allowed: u32, function: &str) -> Result<(), Failure> {
    if flags & !allowed != 0 {
        return Err(WireError::invalid_flags(flags & !allowed, function).into());
    }
    Ok(())
}

/// Runs one lock-program call.
pub async fn dispatch(sh: &Arc<Shared>, s: &mut Session, call: Call) -> Result<(), Failure> {
    match call {
        Call::Register(a) => register(sh, s, a),
        Call::Restrict(a) => {
            flags_ok(a.flags, 0, "virLockSpaceProtocolDispatchRestrict")?;
            s.owner_pid()?;
            s.restricted = true;
            Ok(())
        }
        Call::New(a) => new_lockspace(sh, s, a).await,
        Call::CreateResource(a) => {
            resource(
                sh,
                s,
                a,
                0,
                "virLockSpaceProtocolDispatchCreateResource",
                Op::Create,
            )
            .await
        }
        Call::DeleteResource(a) => {
            resource(
                sh,
                s,
                a,
                0,
                "virLockSpaceProtocolDispatchDeleteResource",
                Op::Delete,
            )
            .await
        }
        Call::AcquireResource(a) => {
            let allowed = FLAG_SHARED | FLAG_AUTOCREATE;
            resource(
                sh,
                s,
                a,
                allowed,
                "virLockSpaceProtocolDispatchAcquireResource",
                Op::Acquire,
            )
            .await
        }
        Call::ReleaseResource(a) => {
            resource(
                sh,
                s,
                a,
                0,
                "virLockSpaceProtocolDispatchReleaseResource",
                Op::Release,
            )
            .await
        }
        Call::CreateLockspace(a) => {
            if s.restricted {
                return Err(error::restricted().into());
            }
            let engine = sh.engine.clone();
            let path = a.path.clone();
            let r = sh
                .fs
                .run(&a.path, move || engine.create_lockspace(&path))
                .await;
            r.map_err(|e| error::engine(&e))?;
            sh.created(&a.path);
            Ok(())
        }
    }
}

fn register(sh: &Shared, s: &mut Session, a: RegisterArgs) -> Result<(), Failure> {
    flags_ok(a.flags, 0, "virLockSpaceProtocolDispatchRegister")?;
    if s.restricted {
        return Err(error::restricted().into());
    }
    if a.owner.id == 0 {
        return Err(error::unregistered().into());
    }
    if let Some(c) = &sh.cluster {
        let own = i32::try_from(a.owner.pid).is_ok_and(|p| p == s.peer_pid);
        c.registered(&a.owner, s.peer_pid, s.pidfd.as_deref().filter(|_| own));
    }
    let engine = &sh.engine;
    sh.owners.register(&a.owner, || engine.owners());
    s.owner = Some(a.owner);
    Ok(())
}

async fn new_lockspace(sh: &Arc<Shared>, s: &mut Session, a: NewArgs) -> Result<(), Failure> {
    flags_ok(a.flags, 0, "virLockSpaceProtocolDispatchNew")?;
    s.owner_pid()?;
    if a.path.is_empty() {
        return Err(WireError::new(
            code::OPERATION_INVALID,
            domain::RPC,
            "the default lockspace already exists",
        )
        .into());
    }
    let engine = sh.engine.clone();
    let path = a.path.clone();
    let r = sh
        .fs
        .run(&a.path, move || engine.new_lockspace(&path))
        .await;
    r.map_err(|e| error::engine(&e))?;
    sh.created(&a.path);
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Create,
    Delete,
    Acquire,
    Release,
}

async fn resource(
    sh: &Arc<Shared>,
    s: &mut Session,
    a: ResourceArgs,
    allowed: u32,
    function: &str,
    op: Op,
) -> Result<(), Failure> {
    flags_ok(a.flags, allowed, function)?;
    let owner = s.owner_pid()?;
    // The ordering rule of `crate::lifeline`. Rarely anything to do: the
    // check is synchronous, and the close it may have to wait for is boxed
    // so that it does not enlarge every request's future.
    let ended = sh.lifelines.ended_before(owner, s.id);
    if !ended.is_empty() {
        Box::pin(sh.lifelines.end_all(ended, |pid| sh.release_owner(pid))).await;
    }
    let engine = sh.engine.clone();
    if !engine.has_lockspace(&a.path) {
        return Err(WireError::new(
            code::INTERNAL_ERROR,
            domain::RPC,
            &format!("Lockspace for path {} does not exist", a.path),
        )
        .into());
    }
    let hint = if a.path.is_empty() { &a.name } else { &a.path };
    let place = sh.fs.placement(hint);
    let flags = AcquireFlags::from_wire(a.flags);
    let r = sh
        .fs
        .run_at(place, move || match op {
            Op::Create => engine.create_resource(&a.path, &a.name),
            Op::Delete => engine.delete_resource(&a.path, &a.name),
            Op::Acquire => engine.acquire_owned(a.path, a.name, owner, flags),
            Op::Release => engine.release_owned(a.path, a.name, owner),
        })
        .await;
    r.map_err(|e| match (op, &e) {
        // An acquire refused because another owner holds the resource:
        // counted, and the holder named (refusal_names_holder).
        (Op::Acquire, lockspace::Error::Busy { holder, .. }) => {
            sh.stats.refused();
            let suffix = holder.map(|pid| sh.owners.refusal_suffix(pid));
            error::engine_naming(&e, suffix.as_deref().unwrap_or("")).into()
        }
        (Op::Acquire, lockspace::Error::ClusterBusy { .. }) => {
            sh.stats.refused();
            error::engine(&e).into()
        }
        _ => error::engine(&e).into(),
    })
}
