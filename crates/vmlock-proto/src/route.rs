//! Routing of a received header (docs/protocol.md §1.7 and §6), in the order libvirt applies it,
//! and the two reply frames the daemon sends.
//!
//! ```text
//! keepalive prog+vers, type MESSAGE ──► PING: Pong │ other proc: Ignore
//! (prog, vers) not served ───────────► CALL/CALL_WITH_FDS: "Cannot find program P version V"
//!                                       anything else:     Drop
//! served, CALL/CALL_WITH_FDS ────────► status != OK:       "Unexpected message status N"
//!                                       proc has no slot:   "unknown procedure: N"
//!                                       else:               Lock(proc) / Admin(proc)
//! served, STREAM / REPLY / MESSAGE / other ──► Drop
//! ```
//!
//! After `Lock`/`Admin` the daemon decodes the payload; if that fails it answers
//! [`WireError::payload_decode`] and keeps the connection.

use crate::error::WireError;
use crate::frame::{encode_frame, encode_message};
use crate::header::{Header, Status};
use crate::limits::{HEADER_LEN, LEN_WORD};
use crate::{admin, inquiry, keepalive, lock};

/// What to do with a keepalive MESSAGE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepaliveAction {
    /// It was a PING: send [`keepalive::pong`].
    Pong,
    /// Anything else: consume it silently.
    Ignore,
}

/// The outcome of routing one frame.
// One short-lived value per frame; boxing the error would only change the agreed API.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A keepalive message, handled before routing.
    Keepalive(KeepaliveAction),
    /// A call to a lock-space procedure; decode the payload next.
    Lock(lock::Procedure),
    /// A call to an admin procedure (1..=19); decode the payload next.
    Admin(i32),
    /// A call to a vmlock inquiry procedure; decode the payload next.
    Inquiry(inquiry::Procedure),
    /// Send `reply_error(header, &err)`.
    Reply(WireError),
    /// Write nothing.
    Drop,
}

/// A program a socket serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// The lock-space program (the main socket).
    Lock,
    /// The admin program (the admin socket).
    Admin,
    /// vmlock's inquiry program (the admin socket).
    Inquiry,
}

impl Program {
    /// Program number.
    pub fn number(self) -> u32 {
        match self {
            Self::Lock => lock::PROGRAM,
            Self::Admin => admin::PROGRAM,
            Self::Inquiry => inquiry::PROGRAM,
        }
    }

    /// Program version.
    pub fn version(self) -> u32 {
        match self {
            Self::Lock => lock::VERSION,
            Self::Admin => admin::VERSION,
            Self::Inquiry => inquiry::VERSION,
        }
    }

    /// The route for a call of procedure `proc_`, or `None` if no handler exists.
    fn call(self, proc_: i32) -> Option<Route> {
        match self {
            Self::Lock => lock::Procedure::from_i32(proc_).map(Route::Lock),
            Self::Admin => admin::Procedure::from_i32(proc_).map(|p| Route::Admin(p.to_i32())),
            Self::Inquiry => inquiry::Procedure::from_i32(proc_).map(Route::Inquiry),
        }
    }
}

/// Routes a frame by its header on a socket serving `served` programs.
pub fn route(h: &Header, served: &[Program]) -> Route {
    if keepalive::is_keepalive(h) {
        return Route::Keepalive(if h.proc_ == keepalive::PROC_PING {
            KeepaliveAction::Pong
        } else {
            KeepaliveAction::Ignore
        });
    }
    let program = served
        .iter()
        .find(|p| p.number() == h.prog && p.version() == h.vers);
    match (program, h.mtype.is_call()) {
        (None, true) => Route::Reply(WireError::unknown_program(h.prog, h.vers)),
        (None, false) | (Some(_), false) => Route::Drop,
        (Some(p), true) => route_call(*p, h),
    }
}

fn route_call(p: Program, h: &Header) -> Route {
    if h.status != Status::Ok {
        return Route::Reply(WireError::unexpected_status(h.status.to_i32()));
    }
    p.call(h.proc_)
        .unwrap_or_else(|| Route::Reply(WireError::unknown_procedure(h.proc_)))
}

/// The ERROR reply frame to `req`: its prog, vers, proc and serial, type REPLY.
pub fn reply_error(req: &Header, e: &WireError) -> Vec<u8> {
    encode_message(&req.reply_to(Status::Error), e)
}

/// A whole successful reply frame to `req` (length word included): its prog, vers,
/// proc and serial, type REPLY, status OK, followed by `payload` (already-encoded XDR,
/// e.g. an [`admin::Ret`]).
pub fn reply_with(req: &Header, payload: &[u8]) -> Vec<u8> {
    encode_frame(&req.reply_to(Status::Ok), payload)
}

/// The 28-byte success reply to `req` (every lock procedure returns `void`):
/// [`reply_with`] and an empty payload.
pub fn reply_ok(req: &Header) -> Vec<u8> {
    reply_with(req, &[])
}

/// Length of [`reply_ok_frame`]: the length word and a header.
pub const REPLY_OK_LEN: usize = LEN_WORD + HEADER_LEN;

/// [`reply_ok`] as a fixed-size array, built without allocating (the
/// request path answers every successful call with it).
pub fn reply_ok_frame(req: &Header) -> [u8; REPLY_OK_LEN] {
    let h = req.reply_to(Status::Ok);
    let words = [
        REPLY_OK_LEN as u32,
        h.prog,
        h.vers,
        h.proc_ as u32,
        h.mtype.to_i32() as u32,
        h.serial,
        h.status.to_i32() as u32,
    ];
    let mut out = [0u8; REPLY_OK_LEN];
    for (chunk, w) in out.chunks_exact_mut(4).zip(words) {
        chunk.copy_from_slice(&w.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::MessageType;

    const LOCK: &[Program] = &[Program::Lock];

    fn h(prog: u32, vers: u32, proc_: i32, mtype: MessageType, status: Status) -> Header {
        Header {
            prog,
            vers,
            proc_,
            mtype,
            serial: 5,
            status,
        }
    }

    fn lock_call(proc_: i32) -> Header {
        h(lock::PROGRAM, 1, proc_, MessageType::Call, Status::Ok)
    }

    #[test]
    fn keepalive_messages() {
        let ping = keepalive::header(1);
        assert_eq!(route(&ping, LOCK), Route::Keepalive(KeepaliveAction::Pong));
        assert_eq!(
            route(&keepalive::header(2), LOCK),
            Route::Keepalive(KeepaliveAction::Ignore)
        );
        assert_eq!(
            route(&keepalive::header(9), &[]),
            Route::Keepalive(KeepaliveAction::Ignore)
        );
    }

    #[test]
    fn keepalive_call_is_unknown_program() {
        let call = h(keepalive::PROGRAM, 1, 1, MessageType::Call, Status::Ok);
        let Route::Reply(e) = route(&call, LOCK) else {
            panic!("expected an error reply")
        };
        assert_eq!(e.to_string(), "Cannot find program 1801807216 version 1");
        assert_eq!((e.code, e.domain), (39, 7));
    }

    #[test]
    fn unknown_program_by_type() {
        for mtype in [MessageType::Call, MessageType::CallWithFds] {
            let r = route(&h(lock::PROGRAM, 2, 1, mtype, Status::Ok), LOCK);
            assert_eq!(
                r,
                Route::Reply(WireError::unknown_program(lock::PROGRAM, 2))
            );
        }
        for mtype in [
            MessageType::Reply,
            MessageType::Message,
            MessageType::Stream,
            MessageType::Unknown(9),
        ] {
            assert_eq!(route(&h(1, 1, 1, mtype, Status::Ok), LOCK), Route::Drop);
        }
        // The admin program is unknown on the lock socket.
        let r = route(
            &h(admin::PROGRAM, 1, 1, MessageType::Call, Status::Ok),
            LOCK,
        );
        assert!(matches!(r, Route::Reply(_)));
    }

    #[test]
    fn known_program_calls() {
        assert_eq!(
            route(&lock_call(6), LOCK),
            Route::Lock(lock::Procedure::AcquireResource)
        );
        let mut fds = lock_call(1);
        fds.mtype = MessageType::CallWithFds;
        assert_eq!(route(&fds, LOCK), Route::Lock(lock::Procedure::Register));
        for p in [0, 9, -1, i32::MAX] {
            assert_eq!(
                route(&lock_call(p), LOCK),
                Route::Reply(WireError::unknown_procedure(p))
            );
        }
        let admin = h(admin::PROGRAM, 1, 19, MessageType::Call, Status::Ok);
        assert_eq!(route(&admin, &[Program::Admin]), Route::Admin(19));
    }

    #[test]
    fn inquiry_program_only_where_served() {
        const ADMIN_SOCK: &[Program] = &[Program::Admin, Program::Inquiry];
        let call = |proc_, vers| h(inquiry::PROGRAM, vers, proc_, MessageType::Call, Status::Ok);
        assert_eq!(
            route(&call(2, 1), ADMIN_SOCK),
            Route::Inquiry(inquiry::Procedure::List)
        );
        assert_eq!(
            route(&call(2, 1), &[Program::Admin]),
            Route::Reply(WireError::unknown_program(inquiry::PROGRAM, 1))
        );
        assert_eq!(
            route(&call(2, 2), ADMIN_SOCK),
            Route::Reply(WireError::unknown_program(inquiry::PROGRAM, 2))
        );
        assert_eq!(
            route(&call(4, 1), ADMIN_SOCK),
            Route::Reply(WireError::unknown_procedure(4))
        );
        // libvirt's admin program routes as before beside it.
        let admin = h(admin::PROGRAM, 1, 3, MessageType::Call, Status::Ok);
        assert_eq!(route(&admin, ADMIN_SOCK), Route::Admin(3));
    }

    #[test]
    fn status_checked_before_proc() {
        let bad = h(lock::PROGRAM, 1, 99, MessageType::Call, Status::Error);
        let Route::Reply(e) = route(&bad, LOCK) else {
            panic!("expected an error reply")
        };
        assert_eq!(e.to_string(), "Unexpected message status 1");
    }

    #[test]
    fn non_calls_to_known_program_dropped() {
        for mtype in [
            MessageType::Reply,
            MessageType::Message,
            MessageType::Stream,
            MessageType::ReplyWithFds,
            MessageType::StreamHole,
        ] {
            assert_eq!(
                route(&h(lock::PROGRAM, 1, 1, mtype, Status::Ok), LOCK),
                Route::Drop
            );
        }
    }

    #[test]
    fn replies_echo_request() {
        let req = lock_call(1);
        let ok = reply_ok(&req);
        assert_eq!(ok.len(), 28);
        for serial in [0, 5, 0x8000_0001, u32::MAX] {
            let r = Header {
                serial,
                ..lock_call(7)
            };
            assert_eq!(reply_ok_frame(&r).as_slice(), reply_ok(&r).as_slice());
        }
        assert_eq!(&ok[16..20], &[0, 0, 0, 1]);
        let err = reply_error(&req, &WireError::payload_decode());
        let hdr = Header::decode(&err[4..]).expect("valid header");
        assert_eq!(hdr, req.reply_to(Status::Error));
        assert_eq!(
            u32::from_be_bytes([err[0], err[1], err[2], err[3]]) as usize,
            err.len()
        );
    }

    #[test]
    fn reply_with_carries_payload() {
        for serial in [0, 5, u32::MAX] {
            let req = Header {
                serial,
                ..lock_call(3)
            };
            assert_eq!(reply_ok(&req), reply_with(&req, &[]));
            assert_eq!(reply_with(&req, &[]).as_slice(), reply_ok_frame(&req));
        }

        let req = Header {
            serial: 0x0102_0304,
            ..h(admin::PROGRAM, 1, 3, MessageType::Call, Status::Ok)
        };
        let ret = admin::Ret::LibVersion(9_000_000);
        let payload = crate::xdr::XdrEncode::to_xdr(&ret);
        let frame = reply_with(&req, &payload);
        assert_eq!(frame.len(), 28 + 8);
        assert_eq!(&frame[..4], &[0, 0, 0, 36]);
        assert_eq!(
            &frame[4..28],
            &[
                0x06, 0x90, 0x06, 0x90, 0, 0, 0, 1, 0, 0, 0, 3, // prog vers proc
                0, 0, 0, 1, 1, 2, 3, 4, 0, 0, 0, 0, // REPLY serial OK
            ]
        );
        let msg = crate::frame::parse_body(&frame[4..]).expect("valid body");
        assert_eq!(msg.header, req.reply_to(Status::Ok));
        assert_eq!(
            admin::Ret::decode(admin::Procedure::ConnectGetLibVersion, &msg.payload),
            Ok(ret)
        );
    }
}
