//! Calls, by program: a frame's header routes it (protocol.md §1.7) to the
//! lock program ([`lock`]), the admin program ([`admin`]) or the inquiry
//! program ([`inquiry`]); keepalive is answered here. The connection
//! (`conn`) frames, writes and flushes; what to write comes from here.

pub(crate) mod admin;
pub(crate) mod inquiry;
pub(crate) mod lock;

use std::sync::Arc;

use tracing::debug;

use vmlock_proto::error::WireError;
use vmlock_proto::frame;
use vmlock_proto::header::Header;
use vmlock_proto::keepalive;
use vmlock_proto::route::{self, KeepaliveAction, Route};

use crate::ctx::{Ctx, ServerKind};
use crate::session::Session;

/// The target of the per-call debug lines: the connection's, the one a
/// `1:conn` filter turns on (docs/logging.md).
const CONN: &str = "vmlockd::conn";

/// The answer to one frame.
pub(crate) enum Reply {
    /// Write nothing.
    Nothing,
    /// The 28-byte success reply, built without allocating.
    Ok([u8; route::REPLY_OK_LEN]),
    /// Any other frame.
    Frame(Vec<u8>),
    /// A frame, after which the connection closes (admin CONNECT_CLOSE).
    FrameThenClose(Vec<u8>),
}

/// Handles one frame body; `None` closes the connection (short header),
/// an empty reply writes nothing.
pub(crate) async fn handle(
    ctx: &Arc<Ctx>,
    kind: ServerKind,
    s: &mut Session,
    body: &[u8],
) -> Option<Reply> {
    let msg = frame::parse_body_ref(body).ok()?;
    let h = msg.header;
    let reply = match route::route(&h, kind.programs()) {
        Route::Drop | Route::Keepalive(KeepaliveAction::Ignore) => Reply::Nothing,
        Route::Keepalive(KeepaliveAction::Pong) => Reply::Frame(keepalive::pong()),
        Route::Reply(err) => Reply::Frame(route::reply_error(&h, &err)),
        Route::Lock(p) => lock_call(ctx, s, &h, p, msg.payload).await,
        Route::Admin(p) => admin_call(ctx, s, &h, p, msg.payload).await,
        Route::Inquiry(p) => Reply::Frame(inquiry::call(ctx, s, &h, p, msg.payload).await),
    };
    Some(reply)
}

async fn admin_call(ctx: &Arc<Ctx>, s: &Session, h: &Header, p: i32, payload: &[u8]) -> Reply {
    let Some(p) = vmlock_proto::admin::Procedure::from_i32(p) else {
        return Reply::Frame(route::reply_error(h, &WireError::unknown_procedure(p)));
    };
    let call = match vmlock_proto::admin::decode_call(p, payload) {
        Ok(c) => c,
        Err(e) => {
            debug!(target: CONN, client = s.id, "undecodable admin payload: {e}");
            return Reply::Frame(route::reply_error(h, &WireError::payload_decode()));
        }
    };
    match admin::dispatch(ctx, call).await {
        Ok(a) => {
            let mut e = vmlock_proto::xdr::Encoder::new();
            a.ret.encode(&mut e);
            let frame = route::reply_with(h, e.as_slice());
            if a.close {
                Reply::FrameThenClose(frame)
            } else {
                Reply::Frame(frame)
            }
        }
        Err(e) => {
            debug!(target: CONN, client = s.id, code = e.code, "admin call failed: {e}");
            Reply::Frame(route::reply_error(h, &e))
        }
    }
}

async fn lock_call(
    ctx: &Arc<Ctx>,
    s: &mut Session,
    h: &Header,
    p: vmlock_proto::lock::Procedure,
    payload: &[u8],
) -> Reply {
    let call = match vmlock_proto::lock::decode_call_lenient(p, payload) {
        Ok(c) => c,
        Err(e) => {
            debug!(target: CONN, client = s.id, "undecodable payload: {e}");
            return Reply::Frame(route::reply_error(
                h,
                &WireError::rpc("Unable to decode message payload"),
            ));
        }
    };
    let t0 = ctx
        .shared
        .stats
        .requests()
        .map(|_| std::time::Instant::now());
    let r = lock::dispatch(&ctx.shared, s, call).await;
    if let (Some(m), Some(t0)) = (ctx.shared.stats.requests(), t0) {
        m.observe(p, r.is_ok(), t0.elapsed());
    }
    match r {
        Ok(()) => Reply::Ok(route::reply_ok_frame(h)),
        Err(e) => {
            debug!(
                target: CONN,
                client = s.id,
                code = e.code,
                "{}",
                e.message.as_deref().unwrap_or("")
            );
            Reply::Frame(route::reply_error(h, &e))
        }
    }
}
