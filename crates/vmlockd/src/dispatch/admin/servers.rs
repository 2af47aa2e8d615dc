//! The servers: listing and look-up, and the thread pool virtlockd reports
//! (every call runs on the event loop, as on virtlockd's 0-worker pool).

use std::sync::atomic::Ordering;

use vmlock_proto::admin::{Ret, ServerRef, TypedParam};
use vmlock_proto::error::{WireError, code, domain};

use super::params::{
    Failure, SERVERS, check_flags, no_server_here, server, server_ref, uint, validate,
};
use crate::ctx::{Ctx, ServerKind};

pub(super) fn list(need_results: u32, flags: u32) -> Result<Ret, Failure> {
    check_flags(flags, "adminConnectListServers")?;
    let servers = SERVERS.map(server_ref);
    Ok(Ret::Servers {
        ret: servers.len() as u32,
        servers: if need_results == 0 {
            Vec::new()
        } else {
            servers.to_vec()
        },
    })
}

/// libvirt checks these flags against themselves: any value passes.
pub(super) fn lookup(name: &str) -> Result<Ret, Failure> {
    let kind = server(name)?;
    Ok(Ret::Server(server_ref(kind)))
}

pub(super) fn get_threadpool(ctx: &Ctx, srv: &ServerRef, flags: u32) -> Result<Ret, Failure> {
    let kind = server(&srv.name)?;
    check_flags(flags, "adminServerGetThreadPoolParameters")?;
    let prio = ctx.server(kind).prio_workers.load(Ordering::Relaxed);
    let params = [
        ("minWorkers", 0),
        ("maxWorkers", 0),
        ("nWorkers", 0),
        ("freeWorkers", 0),
        ("prioWorkers", prio),
        ("jobQueueDepth", 0),
    ];
    Ok(Ret::Params(params.map(|(f, v)| uint(f, v)).to_vec()))
}

pub(super) fn set_threadpool(
    ctx: &Ctx,
    srv: &ServerRef,
    params: &[TypedParam],
    flags: u32,
) -> Result<Ret, Failure> {
    let kind = server(&srv.name).map_err(|_| no_server_here(&srv.name))?;
    check_flags(flags, "adminServerSetThreadPoolParameters")?;
    let [min, max, prio] = validate(
        params,
        ["minWorkers", "maxWorkers", "prioWorkers"],
        domain::NONE,
    )?;
    apply_threadpool(ctx, kind, min, max, prio)?;
    Ok(Ret::Void)
}

pub(super) fn update_tls_files(srv: &ServerRef, flags: u32) -> Result<Ret, Failure> {
    server(&srv.name)?;
    check_flags(flags, "adminServerUpdateTlsFiles")?;
    Err(Box::new(WireError::new(
        code::INTERNAL_ERROR,
        domain::RPC,
        "no tls service found, unable to update tls files",
    )))
}

/// `virThreadPoolSetParameters` on virtlockd's pool of 0 workers: the
/// minimum cannot exceed the maximum and the maximum cannot leave 0, so
/// only the priority-worker count can change (and is only reported).
fn apply_threadpool(
    ctx: &Ctx,
    kind: ServerKind,
    min: Option<u32>,
    max: Option<u32>,
    prio: Option<u32>,
) -> Result<(), Failure> {
    let invalid = |text: &str| Box::new(WireError::new(code::INVALID_ARG, domain::NONE, text));
    if min.unwrap_or(0) > max.unwrap_or(0) {
        return Err(invalid("minWorkers cannot be larger than maxWorkers"));
    }
    if max.is_some_and(|m| m > 0) {
        return Err(invalid(
            "maxWorkers must not be switched from zero to non-zero and vice versa",
        ));
    }
    if let Some(p) = prio {
        ctx.server(kind).prio_workers.store(p, Ordering::Relaxed);
    }
    Ok(())
}
