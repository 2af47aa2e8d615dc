//! The lock program (protocol.md §3.5): each call's checks in libvirt's
//! order (flags, restricted, registered, then the procedure's own) and its
//! engine call, run through `FsExec` so that a hung network filesystem
//! never blocks the event loop.

use std::sync::Arc;

use lockspace::AcquireFlags;
use vmlock_proto::error::WireError;
use vmlock_proto::lock::{Call, FLAG_AUTOCREATE, FLAG_SHARED, NewArgs, RegisterArgs, ResourceArgs};

use crate::error;
use crate::session::{Failure, Session, Shared};

fn flags_ok(flags: u32, allowed: u32, function: &str) -> Result<(), Failure> {
    if flags & !allowed != 0 {
        return Err(WireError::invalid_flags(flags & !allowed, function).into());
    }
    Ok(())
}

/// Runs one lock-program call.
pub(crate) async fn dispatch(sh: &Arc<Shared>, s: &mut Session, call: Call) -> Result<(), Failure> {
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
        return Err(error::default_lockspace_exists().into());
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
        return Err(error::no_lockspace(&a.path).into());
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
