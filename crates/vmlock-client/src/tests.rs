//! Unit tests against a scripted in-process peer on a socket pair.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;

use vmlock_proto::error::{WireError, code, domain};
use vmlock_proto::frame::{body_len, encode_frame, encode_message, parse_body};
use vmlock_proto::header::{Header, Status};
use vmlock_proto::keepalive;

use super::*;

/// Reads one whole frame (length word included) from `s`.
fn read_frame(s: &mut UnixStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).expect("len");
    let mut body = vec![0u8; body_len(len).expect("valid len")];
    s.read_exact(&mut body).expect("body");
    let mut out = len.to_vec();
    out.extend(body);
    out
}

/// Runs `client_side` against a peer that answers each call with `answer(header)`
/// and returns every frame the peer received.
fn with_peer(
    answer: impl Fn(&Header) -> Vec<u8> + Send + 'static,
    calls: usize,
    client_side: impl FnOnce(&mut Client),
) -> Vec<Vec<u8>> {
    let (a, mut b) = UnixStream::pair().expect("pair");
    let peer = thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..calls {
            let f = read_frame(&mut b);
            let h = parse_body(&f[4..]).expect("frame").header;
            b.write_all(&answer(&h)).expect("reply");
            seen.push(f);
        }
        seen
    });
    let mut c = Client::from_stream(a);
    client_side(&mut c);
    drop(c);
    peer.join().expect("peer")
}

fn ok(h: &Header) -> Vec<u8> {
    encode_frame(&h.reply_to(Status::Ok), &[])
}

const UUID: [u8; 16] = [
    0xc7, 0xa5, 0xfd, 0xbd, 0xed, 0xaf, 0x94, 0x55, 0x92, 0x6a, 0xd6, 0x5c, 0x16, 0xdb, 0x18, 0x09,
];

#[test]
fn register_sends_appendix_a_bytes_and_serials_count_from_zero() {
    let seen = with_peer(ok, 3, |c| {
        assert_eq!(c.next_serial(), 0);
        c.register(&owner(UUID, "vm1", 1, 4242)).expect("register");
        c.acquire_resource("", "/d", FLAG_SHARED).expect("acquire");
        c.restrict().expect("restrict");
        assert_eq!(c.next_serial(), 3);
    });
    let appendix_a: Vec<u8> = [
        "00000040 0ea7beef 00000001 00000001 00000000 00000000 00000000",
        "c7a5fdbd edaf9455 926ad65c 16db1809 00000003 766d3100",
        "00000001 00001092 00000000",
    ]
    .join(" ")
    .split_whitespace()
    .flat_map(|w| u32::from_str_radix(w, 16).expect("hex").to_be_bytes())
    .collect();
    assert_eq!(seen[0], appendix_a);
    let serials: Vec<u32> = seen
        .iter()
        .map(|f| parse_body(&f[4..]).expect("frame").header.serial)
        .collect();
    assert_eq!(serials, [0, 1, 2]);
    let procs: Vec<i32> = seen
        .iter()
        .map(|f| parse_body(&f[4..]).expect("frame").header.proc_)
        .collect();
    assert_eq!(procs, [1, 6, 2]);
}

#[test]
fn error_reply_keeps_code_domain_and_message() {
    let busy = |h: &Header| {
        let e = WireError::new(
            code::RESOURCE_BUSY,
            domain::LOCKSPACE,
            "Lockspace resource 'x' is locked",
        );
        encode_message(&h.reply_to(Status::Error), &e)
    };
    with_peer(busy, 1, |c| {
        let e = c.acquire_resource("", "x", 0).expect_err("busy");
        assert!(e.is_busy());
        let w = e.remote().expect("remote");
        assert_eq!((w.code, w.domain), (87, 51));
        assert_eq!(
            e.to_string(),
            "resource busy: Lockspace resource 'x' is locked"
        );
    });
}

#[test]
fn keepalive_ping_is_answered_and_skipped() {
    let (a, mut b) = UnixStream::pair().expect("pair");
    let peer = thread::spawn(move || {
        let f = read_frame(&mut b);
        let h = parse_body(&f[4..]).expect("frame").header;
        b.write_all(&encode_frame(&keepalive::header(keepalive::PROC_PING), &[]))
            .expect("ping");
        let pong = read_frame(&mut b);
        b.write_all(&ok(&h)).expect("reply");
        pong
    });
    let mut c = Client::from_stream(a);
    c.create_lockspace("/l").expect("create");
    assert_eq!(peer.join().expect("peer"), keepalive::pong());
}

#[test]
fn a_reply_to_another_serial_is_a_protocol_error() {
    let wrong = |h: &Header| {
        let mut r = h.reply_to(Status::Ok);
        r.serial += 7;
        encode_frame(&r, &[])
    };
    with_peer(wrong, 1, |c| {
        let e = c.restrict().expect_err("mismatch");
        assert!(
            matches!(
                e,
                ClientError::Protocol(ProtocolError::Mismatch {
                    serial: 7,
                    want_serial: 0,
                    ..
                })
            ),
            "{e:?}"
        );
    });
}

#[test]
fn a_non_empty_ok_body_and_odd_status_are_refused() {
    let body = |h: &Header| encode_frame(&h.reply_to(Status::Ok), &[0, 0, 0, 1]);
    with_peer(body, 1, |c| {
        let e = c.release_resource("", "x").expect_err("trailing");
        assert!(matches!(
            e,
            ClientError::Protocol(ProtocolError::Payload(_))
        ));
    });
    let odd = |h: &Header| encode_frame(&h.reply_to(Status::Continue), &[]);
    with_peer(odd, 1, |c| {
        let e = c.delete_resource("", "x").expect_err("status");
        assert!(matches!(e, ClientError::Protocol(ProtocolError::Status(2))));
    });
}

#[test]
fn eof_is_an_io_error() {
    let (a, b) = UnixStream::pair().expect("pair");
    drop(b);
    let mut c = Client::from_stream(a);
    let e = c.new_lockspace("/x").expect_err("eof");
    assert!(matches!(e, ClientError::Io(_)), "{e:?}");
    assert_eq!(e.code(), None);
}
