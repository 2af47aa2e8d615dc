//! Golden tests against request/reply pairs captured from the real virtlockd 9.0
//! (see `tests/fixtures/README.md`). Every captured reply must decode and re-encode
//! byte for byte, and our routing plus `WireError` constructors must produce exactly
//! the bytes the C daemon sent.

use std::path::PathBuf;

use vmlock_proto::error::{WireError, code, domain};
use vmlock_proto::frame::{Message, body_len, encode_message, parse_body};
use vmlock_proto::header::{MessageType, Status};
use vmlock_proto::keepalive;
use vmlock_proto::lock::{self, Procedure};
use vmlock_proto::route::{KeepaliveAction, Program, Route, reply_error, reply_ok, route};
use vmlock_proto::xdr::{XdrDecode, XdrEncode};

const ROOT: &str = "/tmp/vmlock-capture";

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Splits a byte stream into frames, checking every length word.
fn frames(mut bytes: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let word: [u8; 4] = bytes[..4].try_into().expect("length word");
        let n = body_len(word).expect("valid length word");
        out.push(parse_body(&bytes[4..4 + n]).expect("valid body"));
        bytes = &bytes[4 + n..];
    }
    out
}

fn one_frame(name: &str) -> Message {
    let mut f = frames(&fixture(name));
    assert_eq!(f.len(), 1, "{name}: one frame expected");
    f.remove(0)
}

/// The request and the reply of a captured pair.
fn pair(name: &str) -> (Message, Message, Vec<u8>) {
    let reply_bytes = fixture(&format!("{name}.reply.bin"));
    (
        one_frame(&format!("{name}.req.bin")),
        one_frame(&format!("{name}.reply.bin")),
        reply_bytes,
    )
}

/// Checks an ERROR reply: it decodes, re-encodes identically, echoes the request, and
/// equals what we send for `expected`.
fn check_error_reply(name: &str, expected: &WireError) {
    let (req, reply, bytes) = pair(name);
    assert_eq!(
        reply.header,
        req.header.reply_to(Status::Error),
        "{name}: header"
    );
    let decoded = WireError::from_xdr(&reply.payload).expect("captured error decodes");
    assert_eq!(
        encode_message(&reply.header, &decoded),
        bytes,
        "{name}: re-encode"
    );
    assert_eq!(&decoded, expected, "{name}: constructor");
    assert_eq!(reply_error(&req.header, expected), bytes, "{name}: bytes");
}

const OK_CASES: [&str; 6] = [
    "register_ok",
    "create_lockspace_ok",
    "acquire_ok",
    "acquire_autocreate_ok",
    "restrict_ok",
    "release_ok",
];

#[test]
fn successful_calls_get_the_28_byte_reply() {
    for name in OK_CASES {
        let (req, reply, bytes) = pair(name);
        assert_eq!(bytes.len(), 28, "{name}");
        assert_eq!(reply.header, req.header.reply_to(Status::Ok), "{name}");
        assert_eq!(reply_ok(&req.header), bytes, "{name}");
        let Route::Lock(p) = route(&req.header, &[Program::Lock]) else {
            panic!("{name}: expected a lock call");
        };
        let call = lock::decode_call(p, &req.payload).expect("captured call decodes");
        assert_eq!(call.to_xdr(), req.payload, "{name}: args re-encode");
    }
}

#[test]
fn register_request_matches_appendix_a_shape() {
    let req = one_frame("register_ok.req.bin");
    let lock::Call::Register(args) =
        lock::decode_call(Procedure::Register, &req.payload).expect("register decodes")
    else {
        panic!("not a register call");
    };
    assert_eq!(
        (args.owner.name.as_str(), args.owner.id, args.owner.pid),
        ("vm1", 1, 4242)
    );
    assert_eq!(fixture("register_ok.req.bin").len(), 64);
}

/// `(fixture, code, domain, detail)` of the errors raised with `virReportError`.
const REPORTED: [(&str, i32, i32, &str); 9] = [
    (
        "acquire_busy",
        87,
        51,
        "Lockspace resource '/tmp/vmlock-capture/disk1.img' is locked",
    ),
    (
        "release_not_locked",
        87,
        51,
        "Lockspace resource '/tmp/vmlock-capture/disk2.img' is not locked",
    ),
    (
        "release_non_owner",
        1,
        51,
        "owner 4343 does not hold the resource lock",
    ),
    (
        "acquire_missing_lockspace",
        1,
        7,
        "Lockspace for path /tmp/vmlock-capture/nolockspace does not exist",
    ),
    (
        "create_lockspace_not_dir",
        code::INTERNAL_ERROR,
        domain::LOCKSPACE,
        "Lockspace location /tmp/vmlock-capture/plainfile exists, but is not a directory",
    ),
    (
        "new_unregistered",
        55,
        7,
        "lock owner details have not been registered",
    ),
    (
        "register_id_zero",
        55,
        7,
        "lock owner details have not been registered",
    ),
    (
        "new_restricted",
        29,
        7,
        "lock manager connection has been restricted",
    ),
    (
        "new_restricted",
        code::OPERATION_DENIED,
        domain::RPC,
        "lock manager connection has been restricted",
    ),
];

fn dispatch_errors() -> Vec<(&'static str, WireError)> {
    let mut out: Vec<_> = REPORTED
        .iter()
        .map(|&(name, c, d, detail)| (name, WireError::new(c, d, detail)))
        .collect();
    let mkdir = format!("Unable to create lockspace {ROOT}/plainfile/sub");
    out.push((
        "create_lockspace_mkdir_fails",
        WireError::system(domain::LOCKSPACE, &mkdir, 20, "Not a directory"),
    ));
    out.push((
        "acquire_bad_flags",
        WireError::invalid_flags(4, Procedure::AcquireResource.c_function()),
    ));
    out.push((
        "register_bad_flags",
        WireError::invalid_flags(0x10, Procedure::Register.c_function()),
    ));
    out
}

#[test]
fn handler_errors_match_captured_bytes() {
    for (name, expected) in dispatch_errors() {
        let req = one_frame(&format!("{name}.req.bin"));
        let Route::Lock(p) = route(&req.header, &[Program::Lock]) else {
            panic!("{name}: expected a lock call");
        };
        lock::decode_call(p, &req.payload).expect("captured call decodes");
        check_error_reply(name, &expected);
    }
}

#[test]
fn routing_errors_match_captured_bytes() {
    let cases = [
        ("unknown_proc_99", "unknown procedure: 99"),
        ("unknown_proc_0", "unknown procedure: 0"),
        ("unknown_proc_neg", "unknown procedure: -1"),
        ("unknown_program", "Cannot find program 305419896 version 1"),
        (
            "unknown_program_high",
            "Cannot find program -559038737 version 3",
        ),
        ("unknown_version", "Cannot find program 245874415 version 2"),
        ("unexpected_status", "Unexpected message status 1"),
        ("keepalive_call", "Cannot find program 1801807216 version 1"),
    ];
    for (name, text) in cases {
        let req = one_frame(&format!("{name}.req.bin"));
        let Route::Reply(e) = route(&req.header, &[Program::Lock]) else {
            panic!("{name}: expected an error reply");
        };
        assert_eq!(e.to_string(), text, "{name}");
        assert_eq!(e, WireError::rpc(text), "{name}");
        check_error_reply(name, &e);
    }
}

#[test]
fn undecodable_payloads_get_rpc_error() {
    for name in ["undecodable_truncated", "undecodable_string_too_long"] {
        let req = one_frame(&format!("{name}.req.bin"));
        let Route::Lock(p) = route(&req.header, &[Program::Lock]) else {
            panic!("{name}: expected a lock call");
        };
        assert!(lock::decode_call(p, &req.payload).is_err(), "{name}");
        check_error_reply(name, &WireError::payload_decode());
    }
}

#[test]
fn keepalive_ping_gets_pong() {
    let (req, _, bytes) = pair("keepalive_ping");
    assert_eq!(
        route(&req.header, &[Program::Lock]),
        Route::Keepalive(KeepaliveAction::Pong)
    );
    assert_eq!(keepalive::pong(), bytes);
    assert_eq!(keepalive::ping(), fixture("keepalive_ping.req.bin"));
}

#[test]
fn dropped_frames_write_nothing() {
    let reqs = frames(&fixture("dropped_stream_then_ping.req.bin"));
    let (last, dropped) = reqs.split_last().expect("frames");
    assert_eq!(dropped.len(), 5);
    for m in dropped {
        let r = route(&m.header, &[Program::Lock]);
        assert!(
            matches!(r, Route::Drop | Route::Keepalive(KeepaliveAction::Ignore)),
            "{:?} routed to {r:?}",
            m.header
        );
    }
    assert_eq!(
        route(&last.header, &[Program::Lock]),
        Route::Keepalive(KeepaliveAction::Pong)
    );
    assert_eq!(
        fixture("dropped_stream_then_ping.reply.bin"),
        keepalive::pong()
    );
    assert_eq!(last.header.mtype, MessageType::Message);
}
