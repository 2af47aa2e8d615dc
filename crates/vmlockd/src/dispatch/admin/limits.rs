//! Limits: the clients a server admits, and the daemon's idle timeout.

use std::sync::atomic::Ordering;

use vmlock_proto::admin::{Ret, ServerRef, TypedParam};
use vmlock_proto::error::{WireError, code, domain};

use super::params::{Failure, check_flags, no_server_here, server, uint, validate};
use crate::ctx::{Ctx, ServerKind};

pub(super) fn get_clients(ctx: &Ctx, srv: &ServerRef, flags: u32) -> Result<Ret, Failure> {
    let kind = server(&srv.name)?;
    check_flags(flags, "adminServerGetClientLimits")?;
    let st = ctx.server(kind);
    let load = |a: &std::sync::atomic::AtomicUsize| {
        u32::try_from(a.load(Ordering::Relaxed)).unwrap_or(u32::MAX)
    };
    let params = [
        ("nclients_max", load(&st.max_clients)),
        ("nclients", load(&st.clients)),
        ("nclients_unauth_max", load(&st.max_unauth_clients)),
        ("nclients_unauth", 0),
    ];
    Ok(Ret::Params(params.map(|(f, v)| uint(f, v)).to_vec()))
}

pub(super) fn set_clients(
    ctx: &Ctx,
    srv: &ServerRef,
    params: &[TypedParam],
    flags: u32,
) -> Result<Ret, Failure> {
    let kind = server(&srv.name).map_err(|_| no_server_here(&srv.name))?;
    check_flags(flags, "adminServerSetClientLimits")?;
    let [max, unauth] = validate(
        params,
        ["nclients_max", "nclients_unauth_max"],
        domain::NONE,
    )?;
    set_client_limits(ctx, kind, max, unauth)?;
    Ok(Ret::Void)
}

/// SET_DAEMON_TIMEOUT: `Ctx::idle_timeout` (0: never).
pub(super) fn set_daemon_timeout(ctx: &Ctx, timeout: u32, flags: u32) -> Result<Ret, Failure> {
    check_flags(flags, "adminConnectSetDaemonTimeout")?;
    ctx.idle_timeout.store(timeout, Ordering::Relaxed);
    ctx.timeout_changed.notify_waiters();
    tracing::info!(timeout, "idle timeout changed");
    Ok(Ret::Void)
}

/// `virNetServerSetClientLimits`.
fn set_client_limits(
    ctx: &Ctx,
    kind: ServerKind,
    max: Option<u32>,
    unauth: Option<u32>,
) -> Result<(), Failure> {
    let st = ctx.server(kind);
    let new_max = max.map_or_else(|| st.max_clients.load(Ordering::Relaxed), |v| v as usize);
    let new_unauth = unauth.map_or_else(
        || st.max_unauth_clients.load(Ordering::Relaxed),
        |v| v as usize,
    );
    if new_max < new_unauth {
        return Err(Box::new(WireError::new(
            code::INVALID_ARG,
            domain::RPC,
            "The overall maximum number of clients waiting for authentication must not be less than the overall maximum number of clients",
        )));
    }
    st.max_clients.store(new_max, Ordering::Relaxed);
    st.max_unauth_clients.store(new_unauth, Ordering::Relaxed);
    tracing::info!(
        server = kind.name(),
        max_clients = new_max,
        max_unauth_clients = new_unauth,
        "client limits changed"
    );
    Ok(())
}
