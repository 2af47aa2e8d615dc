//! The admin program (docs/protocol.md §11) as virt-admin sees it on
//! `virtlockd-admin-sock`: servers, clients, client limits, logging and the
//! idle timeout, with virtlockd 9.0's replies and error texts.
//!
//! ```text
//!  servers   "virtlockd" (the lock program), "admin" (this program)
//!  clients   ServerState::registry: id → timestamp, SO_PEERCRED, ConnCtl
//!  CLIENT_CLOSE      → ConnCtl::close: the connection closes as on EOF, so a
//!                      lock holder's locks are released and its VM is killed
//!                      (docs/protocol.md §5.4, docs/quirks.md #36), exactly as virtlockd does
//!  logging 14–17     → logging::LogHandle (filters and outputs, live)
//!  SET_DAEMON_TIMEOUT→ Ctx::idle_timeout (0: never)
//!  threadpool 6/7    → every call runs on the event loop, as virtlockd's
//!                      0-worker pool does; the checks and texts are its own
//!  UPDATE_TLS_FILES  → "no tls service found" (UNIX sockets only)
//! ```
//! Everything runs on the event loop except the user and group name
//! look-ups of CLIENT_GET_INFO (NSS may be a network service) and the
//! opening of new log outputs (a file may be on a slow filesystem).
//! Checks run in libvirt's order (server, then client, then flags, then
//! parameters), because that order decides which error a bad call gets.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use vmlock_proto::admin::{Call, ClientRef, Ret, ServerRef, TypedParam, TypedValue};
use vmlock_proto::error::{WireError, code, domain};

use crate::server::{Ctx, ServerKind};

/// The libvirt version virtlockd 9.0 reports (`LIBVIR_VERSION_NUMBER`);
/// virt-admin prints it as "Running against daemon: 9.0.0".
pub const LIB_VERSION: u64 = 9_000_000;

/// `VIR_CLIENT_TRANS_UNIX`.
const TRANSPORT_UNIX: u32 = 0;

/// A failed admin call: the error reply to send.
pub type Failure = Box<WireError>;

/// What to do after a successful call.
#[derive(Debug)]
pub struct Answer {
    /// The reply payload.
    pub ret: Ret,
    /// Close the connection once the reply is written (CONNECT_CLOSE).
    pub close: bool,
}

impl From<Ret> for Answer {
    fn from(ret: Ret) -> Answer {
        Answer { ret, close: false }
    }
}

/// Runs one admin call.
pub async fn dispatch(ctx: &Arc<Ctx>, call: Call) -> Result<Answer, Failure> {
    match call {
        Call::ConnectOpen { flags } => {
            check_flags(flags, "adminDispatchConnectOpen")?;
            Ok(Ret::Void.into())
        }
        Call::ConnectClose => Ok(Answer {
            ret: Ret::Void,
            close: true,
        }),
        Call::ConnectGetLibVersion => Ok(Ret::LibVersion(LIB_VERSION).into()),
        Call::ConnectListServers {
            need_results,
            flags,
        } => {
            check_flags(flags, "adminConnectListServers")?;
            let servers = SERVERS.map(server_ref);
            Ok(Ret::Servers {
                ret: servers.len() as u32,
                servers: if need_results == 0 {
                    Vec::new()
                } else {
                    servers.to_vec()
                },
            }
            .into())
        }
        // libvirt checks these flags against themselves: any value passes.
        Call::ConnectLookupServer { name, .. } => {
            let kind = server(&name)?;
            Ok(Ret::Server(server_ref(kind)).into())
        }
        Call::ServerGetThreadpoolParameters { srv, flags } => {
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
            Ok(Ret::Params(params.map(|(f, v)| uint(f, v)).to_vec()).into())
        }
        Call::ServerSetThreadpoolParameters { srv, params, flags } => {
            let kind = server(&srv.name).map_err(|_| no_server_here(&srv.name))?;
            check_flags(flags, "adminServerSetThreadPoolParameters")?;
            let [min, max, prio] = validate(
                &params,
                ["minWorkers", "maxWorkers", "prioWorkers"],
                domain::NONE,
            )?;
            set_threadpool(ctx, kind, min, max, prio)?;
            Ok(Ret::Void.into())
        }
        Call::ServerListClients {
            srv,
            need_results,
            flags,
        } => {
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
            }
            .into())
        }
        Call::ServerLookupClient { srv, id, flags } => {
            let kind = server(&srv.name)?;
            check_flags(flags, "adminServerLookupClient")?;
            let timestamp = client(ctx, kind, id)?.timestamp;
            Ok(Ret::Client(client_ref(kind, id, timestamp)).into())
        }
        Call::ClientGetInfo { clnt, flags } => {
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
            Ok(Ret::Params(info).into())
        }
        Call::ClientClose { clnt, flags } => {
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
            Ok(Ret::Void.into())
        }
        Call::ServerGetClientLimits { srv, flags } => {
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
            Ok(Ret::Params(params.map(|(f, v)| uint(f, v)).to_vec()).into())
        }
        Call::ServerSetClientLimits { srv, params, flags } => {
            let kind = server(&srv.name).map_err(|_| no_server_here(&srv.name))?;
            check_flags(flags, "adminServerSetClientLimits")?;
            let [max, unauth] = validate(
                &params,
                ["nclients_max", "nclients_unauth_max"],
                domain::NONE,
            )?;
            set_client_limits(ctx, kind, max, unauth)?;
            Ok(Ret::Void.into())
        }
        Call::ConnectGetLoggingOutputs { flags } => {
            check_flags(flags, "adminConnectGetLoggingOutputs")?;
            let (outputs, noutputs) = crate::logging::handle()
                .map_or((String::new(), 0), crate::logging::LogHandle::outputs_text);
            Ok(Ret::LoggingOutputs { outputs, noutputs }.into())
        }
        Call::ConnectGetLoggingFilters { flags } => {
            check_flags(flags, "adminConnectGetLoggingFilters")?;
            let (filters, nfilters) =
                crate::logging::handle().map_or((None, 0), crate::logging::LogHandle::filters_text);
            Ok(Ret::LoggingFilters { filters, nfilters }.into())
        }
        Call::ConnectSetLoggingOutputs { outputs, flags } => {
            check_flags(flags, "adminConnectSetLoggingOutputs")?;
            if let Some(h) = crate::logging::handle() {
                // Opening a file output may touch a slow filesystem.
                let text = outputs.clone();
                tokio::task::spawn_blocking(move || h.set_outputs(text.as_deref()))
                    .await
                    .map_err(|e| {
                        Box::new(WireError::new(
                            code::INTERNAL_ERROR,
                            domain::ADMIN,
                            &format!("log output change failed: {e}"),
                        ))
                    })?
                    .map_err(log_error)?;
            }
            tracing::info!(
                outputs = outputs.as_deref().unwrap_or(""),
                "log outputs changed"
            );
            Ok(Ret::Void.into())
        }
        Call::ConnectSetLoggingFilters { filters, flags } => {
            check_flags(flags, "adminConnectSetLoggingFilters")?;
            if let Some(h) = crate::logging::handle() {
                h.set_filters(filters.as_deref()).map_err(log_error)?;
            }
            tracing::info!(
                filters = filters.as_deref().unwrap_or(""),
                "log filters changed"
            );
            Ok(Ret::Void.into())
        }
        Call::ServerUpdateTlsFiles { srv, flags } => {
            server(&srv.name)?;
            check_flags(flags, "adminServerUpdateTlsFiles")?;
            Err(Box::new(WireError::new(
                code::INTERNAL_ERROR,
                domain::RPC,
                "no tls service found, unable to update tls files",
            )))
        }
        Call::ConnectSetDaemonTimeout { timeout, flags } => {
            check_flags(flags, "adminConnectSetDaemonTimeout")?;
            ctx.idle_timeout.store(timeout, Ordering::Relaxed);
            ctx.timeout_changed.notify_waiters();
            tracing::info!(timeout, "idle timeout changed");
            Ok(Ret::Void.into())
        }
    }
}

/// The servers in virt-admin's `srv-list` order.
const SERVERS: [ServerKind; 2] = [ServerKind::Main, ServerKind::Admin];

fn server_ref(kind: ServerKind) -> ServerRef {
    ServerRef {
        name: kind.name().to_owned(),
    }
}

fn client_ref(kind: ServerKind, id: u64, timestamp: i64) -> ClientRef {
    ClientRef {
        srv: server_ref(kind),
        id,
        timestamp,
        transport: TRANSPORT_UNIX,
    }
}

/// `virNetDaemonGetServer`.
fn server(name: &str) -> Result<ServerKind, Failure> {
    SERVERS
        .into_iter()
        .find(|k| k.name() == name)
        .ok_or_else(|| {
            Box::new(WireError::new(
                code::NO_SERVER,
                domain::RPC,
                &format!("No server named '{name}'"),
            ))
        })
}

/// The text the hand-written admin dispatchers report over the look-up's.
fn no_server_here(name: &str) -> Failure {
    Box::new(WireError::new(
        code::NO_SERVER,
        domain::ADMIN,
        &format!("no server with matching name '{name}' found"),
    ))
}

/// `virNetServerGetClient`.
fn client(ctx: &Ctx, kind: ServerKind, id: u64) -> Result<crate::server::ClientEntry, Failure> {
    ctx.server(kind)
        .registry()
        .get(&id)
        .cloned()
        .ok_or_else(|| {
            Box::new(WireError::new(
                code::NO_CLIENT,
                domain::RPC,
                &format!("No client with matching ID '{id}'"),
            ))
        })
}

/// `virCheckFlags(0, …)` in an admin function.
fn check_flags(flags: u32, function: &str) -> Result<(), Failure> {
    if flags == 0 {
        return Ok(());
    }
    let mut e = WireError::invalid_flags(flags, function);
    e.domain = domain::ADMIN;
    Err(Box::new(e))
}

fn uint(field: &str, v: u32) -> TypedParam {
    TypedParam {
        field: field.to_owned(),
        value: TypedValue::UInt(v),
    }
}

fn log_error(e: crate::logging::LogError) -> Failure {
    Box::new(WireError::new(code::INVALID_ARG, domain::NONE, e.detail()))
}

/// `virTypedParamsValidate` for parameters that are all `uint`: in field
/// order, a repeated field, a wrong type or an unknown field is an error.
/// Returns each known field's value, if given.
fn validate<const N: usize>(
    params: &[TypedParam],
    fields: [&str; N],
    dom: i32,
) -> Result<[Option<u32>; N], Failure> {
    let mut sorted: Vec<&TypedParam> = params.iter().collect();
    sorted.sort_by(|a, b| a.field.cmp(&b.field));
    let mut out = [None; N];
    for (i, p) in sorted.iter().enumerate() {
        let Some(k) = fields.iter().position(|f| *f == p.field) else {
            return Err(Box::new(WireError::new(
                code::ARGUMENT_UNSUPPORTED,
                dom,
                &format!("parameter '{}' not supported", p.field),
            )));
        };
        if i > 0 && sorted[i - 1].field == p.field {
            return Err(Box::new(WireError::new(
                code::INVALID_ARG,
                dom,
                &format!("parameter '{}' occurs multiple times", p.field),
            )));
        }
        let TypedValue::UInt(v) = p.value else {
            return Err(Box::new(WireError::new(
                code::INVALID_ARG,
                dom,
                &format!(
                    "invalid type '{}' for parameter '{}', expected 'uint'",
                    type_name(&p.value),
                    p.field
                ),
            )));
        };
        out[k] = Some(v);
    }
    Ok(out)
}

fn type_name(v: &TypedValue) -> &'static str {
    match v {
        TypedValue::Int(_) => "int",
        TypedValue::UInt(_) => "uint",
        TypedValue::LLong(_) => "llong",
        TypedValue::ULLong(_) => "ullong",
        TypedValue::Double(_) => "double",
        TypedValue::Boolean(_) => "boolean",
        TypedValue::String(_) => "string",
    }
}

/// `virThreadPoolSetParameters` on virtlockd's pool of 0 workers: the
/// minimum cannot exceed the maximum and the maximum cannot leave 0, so
/// only the priority-worker count can change (and is only reported).
fn set_threadpool(
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

/// `adminClientGetInfo` for a local (UNIX socket) client: never read-only,
/// then its uid, user name, gid, group name and pid. No SELinux context is
/// reported (libvirt reports one only where SELinux labels the peer).
fn client_info(e: &crate::server::ClientEntry) -> Vec<TypedParam> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn p(field: &str, value: TypedValue) -> TypedParam {
        TypedParam {
            field: field.into(),
            value,
        }
    }

    #[test]
    fn validate_checks_in_field_order() {
        let ok = validate(
            &[p("b", TypedValue::UInt(2)), p("a", TypedValue::UInt(1))],
            ["a", "b"],
            domain::NONE,
        )
        .expect("valid");
        assert_eq!(ok, [Some(1), Some(2)]);
        let unknown = validate(&[p("zz", TypedValue::UInt(1))], ["a"], domain::NONE);
        let e = unknown.expect_err("unknown field");
        assert_eq!(e.code, code::ARGUMENT_UNSUPPORTED);
        assert_eq!(
            e.to_string(),
            "argument unsupported: parameter 'zz' not supported"
        );
        let dup = validate(
            &[p("a", TypedValue::UInt(1)), p("a", TypedValue::UInt(2))],
            ["a"],
            domain::NONE,
        );
        assert_eq!(
            dup.expect_err("dup").to_string(),
            "invalid argument: parameter 'a' occurs multiple times"
        );
        let ty = validate(&[p("a", TypedValue::Int(1))], ["a"], domain::NONE);
        assert_eq!(
            ty.expect_err("type").to_string(),
            "invalid argument: invalid type 'int' for parameter 'a', expected 'uint'"
        );
    }

    #[test]
    fn unknown_servers_and_flags_get_libvirts_errors() {
        let e = server("nope").expect_err("no such server");
        assert_eq!(
            (e.code, e.domain, e.to_string().as_str()),
            (
                code::NO_SERVER,
                domain::RPC,
                "Server not found: No server named 'nope'"
            )
        );
        assert_eq!(server("admin").ok(), Some(ServerKind::Admin));
        let f = check_flags(4, "adminServerListClients").expect_err("flags");
        assert_eq!(f.domain, domain::ADMIN);
        assert_eq!(
            f.to_string(),
            "unsupported flags (0x4) in function adminServerListClients"
        );
    }
}
