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

use vmlock_proto::admin::{Call, Ret};

use crate::ctx::Ctx;

mod clients;
mod limits;
mod logging;
mod params;
mod servers;

pub(crate) use params::Failure;

/// The libvirt version virtlockd 9.0 reports (`LIBVIR_VERSION_NUMBER`);
/// virt-admin prints it as "Running against daemon: 9.0.0".
const LIB_VERSION: u64 = 9_000_000;

/// What to do after a successful call.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The reply payload.
    pub(crate) ret: Ret,
    /// Close the connection once the reply is written (CONNECT_CLOSE).
    pub(crate) close: bool,
}

impl From<Ret> for Answer {
    fn from(ret: Ret) -> Answer {
        Answer { ret, close: false }
    }
}

/// Runs one admin call: one function per procedure, by topic.
pub(crate) async fn dispatch(ctx: &Arc<Ctx>, call: Call) -> Result<Answer, Failure> {
    let ret = match call {
        Call::ConnectOpen { flags } => connect_open(flags),
        Call::ConnectClose => {
            return Ok(Answer {
                ret: Ret::Void,
                close: true,
            });
        }
        Call::ConnectGetLibVersion => Ok(Ret::LibVersion(LIB_VERSION)),
        Call::ConnectListServers {
            need_results,
            flags,
        } => servers::list(need_results, flags),
        Call::ConnectLookupServer { name, .. } => servers::lookup(&name),
        Call::ServerGetThreadpoolParameters { srv, flags } => {
            servers::get_threadpool(ctx, &srv, flags)
        }
        Call::ServerSetThreadpoolParameters { srv, params, flags } => {
            servers::set_threadpool(ctx, &srv, &params, flags)
        }
        Call::ServerUpdateTlsFiles { srv, flags } => servers::update_tls_files(&srv, flags),
        Call::ServerListClients {
            srv,
            need_results,
            flags,
        } => clients::list(ctx, &srv, need_results, flags),
        Call::ServerLookupClient { srv, id, flags } => clients::lookup(ctx, &srv, id, flags),
        Call::ClientGetInfo { clnt, flags } => clients::info(ctx, &clnt, flags).await,
        Call::ClientClose { clnt, flags } => clients::close(ctx, &clnt, flags),
        Call::ServerGetClientLimits { srv, flags } => limits::get_clients(ctx, &srv, flags),
        Call::ServerSetClientLimits { srv, params, flags } => {
            limits::set_clients(ctx, &srv, &params, flags)
        }
        Call::ConnectSetDaemonTimeout { timeout, flags } => {
            limits::set_daemon_timeout(ctx, timeout, flags)
        }
        Call::ConnectGetLoggingOutputs { flags } => logging::get_outputs(flags),
        Call::ConnectGetLoggingFilters { flags } => logging::get_filters(flags),
        Call::ConnectSetLoggingOutputs { outputs, flags } => {
            logging::set_outputs(outputs, flags).await
        }
        Call::ConnectSetLoggingFilters { filters, flags } => logging::set_filters(filters, flags),
    };
    ret.map(Answer::from)
}

fn connect_open(flags: u32) -> Result<Ret, Failure> {
    params::check_flags(flags, "adminDispatchConnectOpen")?;
    Ok(Ret::Void)
}
