//! The clients of a server: listing, look-up, information and CLIENT_CLOSE
//! (the connection closes as on EOF, so a lock holder's locks are released
//! and its VM is killed, exactly as virtlockd does).

use std::sync::Arc;

use vmlock_proto::admin::{ClientRef, Ret, ServerRef, TypedParam, TypedValue};
use vmlock_proto::error::{WireError, code, domain};

use super::params::{Failure, check_flags, client, client_ref, no_server_here, server};
use crate::ctx::{ClientEntry, Ctx};

pub(super) fn list(
    ctx: &Ctx,
    srv: &ServerRef,
    need_results: u32,
    flags: u32,
) -> Result<Ret, Failure> {
    let kind = server(&srv.name)?;
    check_flags(flags, "adminServerListClients")?;
    let clients: Vec<ClientRef> = ctx
        .server(kind)
        .registry()
        .iter()
        .map(|(&id, e)| client_ref(kind, id, e.timestamp))
        .collect();
    Ok(Ret::Clients {
        ret: clients.len() as u32,
        clients: if need_results == 0 {
            Vec::new()
        } else {
            clients
        },
    })
}

pub(super) fn lookup(ctx: &Ctx, srv: &ServerRef, id: u64, flags: u32) -> Result<Ret, Failure> {
    let kind = server(&srv.name)?;
    check_flags(flags, "adminServerLookupClient")?;
    let timestamp = client(ctx, kind, id)?.timestamp;
    Ok(Ret::Client(client_ref(kind, id, timestamp)))
}

pub(super) async fn info(ctx: &Arc<Ctx>, clnt: &ClientRef, flags: u32) -> Result<Ret, Failure> {
    let kind = server(&clnt.srv.name).map_err(|_| no_server_here(&clnt.srv.name))?;
    let entry = client(ctx, kind, clnt.id).map_err(|_| {
        Box::new(WireError::new(
            code::NO_CLIENT,
            domain::ADMIN,
            &format!("no client with matching id '{}' found", clnt.id),
        ))
    })?;
    check_flags(flags, "adminClientGetInfo")?;
    // User and group names go through NSS, which may be a network
    // service (LDAP, sssd): never on the event loop.
    let info = tokio::task::spawn_blocking(move || client_info(&entry))
        .await
        .map_err(|e| {
            Box::new(WireError::new(
                code::INTERNAL_ERROR,
                domain::ADMIN,
                &format!("client information lookup failed: {e}"),
            ))
        })?;
    Ok(Ret::Params(info))
}

pub(super) fn close(ctx: &Ctx, clnt: &ClientRef, flags: u32) -> Result<Ret, Failure> {
    let kind = server(&clnt.srv.name)?;
    let entry = client(ctx, kind, clnt.id)?;
    check_flags(flags, "adminClientClose")?;
    tracing::info!(
        server = kind.name(),
        client = clnt.id,
        pid = entry.pid,
        "closing client on admin request"
    );
    entry.ctl.close();
    Ok(Ret::Void)
}

/// `adminClientGetInfo` for a local (UNIX socket) client: never read-only,
/// then its uid, user name, gid, group name and pid. No SELinux context is
/// reported (libvirt reports one only where SELinux labels the peer).
fn client_info(e: &ClientEntry) -> Vec<TypedParam> {
    let mut out = vec![TypedParam {
        field: "readonly".into(),
        value: TypedValue::Boolean(0),
    }];
    let int = |field: &str, v: i32| TypedParam {
        field: field.into(),
        value: TypedValue::Int(v),
    };
    let string = |field: &str, v: String| TypedParam {
        field: field.into(),
        value: TypedValue::String(v),
    };
    out.push(int("unix_user_id", e.uid as i32));
    if let Some(name) = vmlock_sys::user::user_name(e.uid) {
        out.push(string("unix_user_name", name));
    }
    out.push(int("unix_group_id", e.gid as i32));
    if let Some(name) = vmlock_sys::user::group_name(e.gid) {
        out.push(string("unix_group_name", name));
    }
    if e.pid > 0 {
        out.push(int("unix_process_id", e.pid));
    }
    out
}
