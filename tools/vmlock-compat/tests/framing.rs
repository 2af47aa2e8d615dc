//! Framing and routing: bad lengths, truncated and padded payloads,
//! unknown programs, versions, procedures, types and statuses, keepalive.

#[allow(dead_code)]
mod common;

use std::time::Duration;

use common::{Ctx, differential};
use vmlock_testkit::frames::{self, Header, KEEPALIVE_PROGRAM, LOCK_PROGRAM, Xdr, procs, types};

const CLOSE_WAIT: Duration = Duration::from_secs(5);

fn note_closed(ctx: &mut Ctx, c: &mut vmlock_testkit::RawConn, what: &str) {
    let closed = c.expect_closed(CLOSE_WAIT);
    ctx.note(format!("{what}: closed={closed}"));
    assert!(
        closed,
        "{}: {what} must close the connection",
        ctx.flavor().name()
    );
}

#[test]
fn short_length_words_close_the_connection() {
    differential(|ctx| {
        for len in [0u32, 3] {
            let mut c = ctx.conn();
            c.send(&len.to_be_bytes()).expect("send");
            note_closed(ctx, &mut c, &format!("len={len}"));
        }
        // 4 <= len < 28: the header cannot be decoded: closed, no reply.
        for len in [4u32, 8, 27] {
            let mut c = ctx.conn();
            let mut f = len.to_be_bytes().to_vec();
            f.resize(len as usize, 0);
            c.send(&f).expect("send");
            note_closed(ctx, &mut c, &format!("len={len}"));
        }
    });
}

#[test]
fn oversized_frames_close_and_the_limit_is_32_mib() {
    differential(|ctx| {
        let mut c = ctx.conn();
        let too_big = 4 + 32 * 1024 * 1024 + 1u32;
        c.send(&too_big.to_be_bytes()).expect("send");
        note_closed(ctx, &mut c, "len=MAX+5");
        // Exactly 4 + 32 MiB is legal: the daemon waits for the body.
        let mut c = ctx.conn();
        c.send(&(4 + 32 * 1024 * 1024u32).to_be_bytes())
            .expect("send");
        let open = c.expect_silence(Duration::from_millis(300));
        ctx.note(format!("len=MAX+4 still open: {open}"));
        assert!(
            open,
            "{}: a 32 MiB frame is within the limit",
            ctx.flavor().name()
        );
    });
}

#[test]
fn truncated_payload_is_an_rpc_error_and_keeps_the_connection() {
    differential(|ctx| {
        let mut c = ctx.conn();
        let full = frames::register(7, common::UUID_A, "vm", 1, common::PID_A, 0);
        // Cut the payload (and fix the length word).
        for cut in [4usize, 8, 20] {
            let mut f = full[..full.len() - cut].to_vec();
            let len = f.len() as u32;
            f[..4].copy_from_slice(&len.to_be_bytes());
            let r = ctx.call(&mut c, &f);
            assert_eq!((r.code(), r.domain()), (39, 7));
            assert_eq!(r.text(), "Unable to decode message payload");
            assert_eq!(r.header.serial, 7);
        }
        // Header only, no payload at all.
        let r = ctx.call(&mut c, &frames::frame(Header::call(procs::ACQUIRE, 8), &[]));
        assert_eq!(r.code(), 39);
        // A string longer than 65536 bytes.
        let long = "x".repeat(65537);
        let r = ctx.call(&mut c, &frames::acquire(9, "", &long, 0));
        assert_eq!(r.text(), "Unable to decode message payload");
        // Still usable.
        let r = ctx.call(&mut c, &full);
        assert_eq!(r.code(), 0);
    });
}

#[test]
fn trailing_bytes_after_the_payload() {
    differential(|ctx| {
        let mut c = ctx.conn();
        let p = Xdr::new()
            .fixed(&common::UUID_A)
            .string("vm")
            .u32(1)
            .u32(common::PID_A)
            .u32(0)
            .u32(0xdead_beef);
        ctx.call(&mut c, &frames::call(procs::REGISTER, 1, p));
        let p = Xdr::new().u32(0).u32(0);
        ctx.call(&mut c, &frames::call(procs::RESTRICT, 2, p));
    });
}

#[test]
fn unknown_program_version_and_procedure() {
    differential(|ctx| {
        let mut c = ctx.conn();
        let mut h = Header::call(procs::REGISTER, 3);
        h.prog = 0x1234_5678;
        let r = ctx.call(&mut c, &frames::frame(h, &[]));
        assert_eq!(r.text(), "Cannot find program 305419896 version 1");
        assert_eq!((r.header.prog, r.header.proc_), (0x1234_5678, 1));
        let mut h = Header::call(procs::REGISTER, 4);
        h.vers = 2;
        let r = ctx.call(&mut c, &frames::frame(h, &[]));
        assert_eq!(r.text(), "Cannot find program 245874415 version 2");
        for p in [0, 9, 1000, -1] {
            let r = ctx.call(&mut c, &frames::frame(Header::call(p, 5), &[]));
            assert_eq!(r.text(), format!("unknown procedure: {p}"));
            assert_eq!((r.code(), r.domain()), (39, 7));
        }
        // CALL_WITH_FDS to an unknown program is answered too.
        let mut h = Header::call(procs::REGISTER, 6);
        h.prog = 1;
        h.ty = types::CALL_WITH_FDS;
        ctx.call(&mut c, &frames::frame(h, &0u32.to_be_bytes()));
    });
}

#[test]
fn non_call_types_are_dropped_silently() {
    differential(|ctx| {
        let reg = frames::register(1, common::UUID_A, "vm", 1, common::PID_A, 0);
        for ty in [types::REPLY, types::MESSAGE, types::STREAM, 5, 6, 42] {
            let mut c = ctx.conn();
            let mut f = reg.clone();
            f[16..20].copy_from_slice(&ty.to_be_bytes());
            c.send(&f).expect("send");
            let next = match c.barrier() {
                Ok(next) if next == frames::pong() => "silent".to_string(),
                Ok(next) => format!("answered {}", frames::hex(&next)),
                Err(e) => format!("connection lost: {e}"),
            };
            ctx.note(format!("type {ty} to the lock program: {next}"));
            assert_eq!(
                next,
                "silent",
                "{}: type {ty} must be dropped",
                ctx.flavor().name()
            );
        }
        let mut c = ctx.conn();
        // Unknown program with a non-CALL type: dropped as well.
        let mut h = Header::call(1, 1);
        h.prog = 0x1234_5678;
        h.ty = types::MESSAGE;
        c.send(&frames::frame(h, &[])).expect("send");
        let pong = c.barrier_is_pong();
        ctx.note(format!("MESSAGE to an unknown program: silent={pong}"));
        assert!(pong);
    });
}

#[test]
fn call_with_error_status_is_refused() {
    differential(|ctx| {
        let mut c = ctx.conn();
        for status in [1, 2, 7] {
            let mut h = Header::call(procs::RESTRICT, 11);
            h.status = status;
            let r = ctx.call(&mut c, &frames::frame(h, &0u32.to_be_bytes()));
            assert_eq!(r.text(), format!("Unexpected message status {status}"));
        }
    });
}

#[test]
fn call_with_fds_and_no_fds_is_processed() {
    differential(|ctx| {
        let mut c = ctx.conn();
        let mut f = frames::create_lockspace(3, "");
        f[16..20].copy_from_slice(&types::CALL_WITH_FDS.to_be_bytes());
        // The u32 fd count (0) sits right after the header.
        f.splice(28..28, 0u32.to_be_bytes());
        let len = f.len() as u32;
        f[..4].copy_from_slice(&len.to_be_bytes());
        ctx.call(&mut c, &f);
    });
}

#[test]
fn keepalive_ping_pong_and_keepalive_calls() {
    differential(|ctx| {
        let mut c = ctx.conn();
        let r = ctx.call(&mut c, &frames::ping());
        assert_eq!(r.raw, frames::pong());
        // A PONG and an unknown keepalive proc are consumed silently.
        let mut odd = frames::ping();
        odd[12..16].copy_from_slice(&3u32.to_be_bytes());
        for f in [frames::pong(), odd] {
            c.send(&f).expect("send");
            let silent = c.barrier_is_pong();
            ctx.note(format!("keepalive proc {:?}: silent={silent}", &f[12..16]));
            assert!(silent);
        }
        // Keepalive as a CALL is routed like any unknown program.
        let mut h = Header::call(1, 9);
        h.prog = KEEPALIVE_PROGRAM;
        let r = ctx.call(&mut c, &frames::frame(h, &[]));
        assert_eq!(r.text(), "Cannot find program 1801807216 version 1");
        // The admin socket answers PINGs too.
        let mut a = vmlock_testkit::RawConn::connect(&ctx.d.admin_socket_path()).expect("admin");
        let r = ctx.call(&mut a, &frames::ping());
        assert_eq!(r.raw, frames::pong());
    });
}

#[test]
fn pipelined_calls_are_answered_in_order() {
    differential(|ctx| {
        let mut c = ctx.conn();
        let mut batch = Vec::new();
        for serial in 0..5u32 {
            batch.extend(frames::create_lockspace(serial, ""));
        }
        batch.extend(frames::ping());
        c.send(&batch).expect("send");
        for serial in 0..5u32 {
            let f = c.recv_frame().expect("reply");
            ctx.note(format!("pipelined {serial}: {}", frames::hex(&f)));
            assert_eq!(f, frames::ok_reply(procs::CREATE_LOCKSPACE, serial));
        }
        assert_eq!(c.recv_frame().expect("pong"), frames::pong());
        assert_eq!(LOCK_PROGRAM, 0x0EA7_BEEF);
    });
}
