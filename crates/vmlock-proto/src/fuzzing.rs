//! Entry points shared by the cargo-fuzz targets in `/fuzz` and the corpus replay test.
//!
//! Each entry decodes untrusted bytes through the public API and asserts the codec's
//! invariants; a panic is a finding:
//! * decoding never panics;
//! * whatever decodes re-encodes to something that decodes to the same value;
//! * decoders allocate no more than the bytes they consumed.

// A panic here is how a broken invariant is reported to the fuzzer; this
// module is never called from the daemon.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use crate::error::WireError;
use crate::frame::{body_len, encode_frame, parse_body};
use crate::header::Header;
use crate::lock::{self, Call};
use crate::route::{self, Program, Route};
use crate::xdr::{Decoder, Encoder, XdrDecode, XdrEncode};
use crate::{admin, inquiry};

/// Frame path: length word, body split, routing, then argument and error decoding.
pub fn fuzz_entry_decode_frame(data: &[u8]) {
    let Some((word, body)) = data.split_first_chunk::<4>() else {
        return;
    };
    if let Ok(n) = body_len(*word) {
        assert!(n <= crate::limits::MESSAGE_MAX);
    }
    let Ok(msg) = parse_body(body) else {
        return;
    };
    assert_eq!(Header::decode(&msg.header.to_bytes()), Ok(msg.header));
    match route::route(
        &msg.header,
        &[Program::Lock, Program::Admin, Program::Inquiry],
    ) {
        Route::Lock(p) => check_call(p, &msg.payload),
        Route::Admin(p) => check_admin_call(p, &msg.payload),
        Route::Inquiry(p) => check_inquiry_call(p, &msg.payload),
        Route::Reply(e) => check_reply(&msg.header, &e),
        Route::Keepalive(_) | Route::Drop => {}
    }
    check_wire_error(&msg.payload);
    let again = encode_frame(&msg.header, &msg.payload);
    if !msg.header.mtype.has_fds() {
        assert_eq!(parse_body(&again[4..]), Ok(msg));
    }
}

/// Argument path: the first byte picks a lock procedure (1..=8), 0 picks the
/// `WireError` decoder, 101..=119 an admin procedure's arguments (1..=19),
/// 201..=203 an inquiry procedure's arguments (1..=3), 211..=213 an inquiry
/// procedure's reply, and anything else the admin typed-parameter array.
pub fn fuzz_entry_decode_args(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match lock::Procedure::from_i32(i32::from(sel)) {
        Some(p) => check_call(p, rest),
        None if sel == 0 => check_wire_error(rest),
        None if (101..=119).contains(&sel) => check_admin_call(i32::from(sel) - 100, rest),
        None if (201..=203).contains(&sel) => {
            if let Some(p) = inquiry::Procedure::from_i32(i32::from(sel) - 200) {
                check_inquiry_call(p, rest);
            }
        }
        None if (211..=213).contains(&sel) => {
            if let Some(p) = inquiry::Procedure::from_i32(i32::from(sel) - 210) {
                check_inquiry_ret(p, rest);
            }
        }
        None => check_params(rest),
    }
}

/// Admin arguments: decoding never panics, and what decodes re-encodes to a
/// prefix of the input (trailing bytes are ignored, as libvirt does) that
/// decodes to the same call.
fn check_admin_call(p: i32, payload: &[u8]) {
    let Some(p) = admin::Procedure::from_i32(p) else {
        return;
    };
    if let Ok(call) = admin::decode_call(p, payload) {
        assert_eq!(call.procedure(), p);
        let mut e = Encoder::new();
        call.encode(&mut e);
        let bytes = e.into_vec();
        assert!(bytes.len() <= payload.len());
        assert_eq!(admin::decode_call(p, &bytes), Ok(call));
    }
}

/// Inquiry arguments: as [`check_admin_call`].
fn check_inquiry_call(p: inquiry::Procedure, payload: &[u8]) {
    if let Ok(call) = inquiry::decode_call(p, payload) {
        assert_eq!(call.procedure(), p);
        let bytes = call.to_xdr();
        assert!(bytes.len() <= payload.len());
        assert_eq!(inquiry::decode_call(p, &bytes), Ok(call));
    }
}

/// Inquiry replies decode strictly: what decodes re-encodes to the input.
fn check_inquiry_ret(p: inquiry::Procedure, payload: &[u8]) {
    if let Ok(ret) = inquiry::Ret::decode(p, payload) {
        // Compare encodings: NaN doubles are not equal to themselves.
        assert_eq!(ret.to_xdr(), payload);
    }
}

fn check_call(p: lock::Procedure, payload: &[u8]) {
    if let Ok(call) = lock::decode_call(p, payload) {
        assert_eq!(call.procedure(), p);
        let bytes = call.to_xdr();
        assert_eq!(bytes.len(), payload.len());
        assert_eq!(lock::decode_call(p, &bytes), Ok::<Call, _>(call));
    }
}

fn check_reply(req: &Header, e: &WireError) {
    let frame = route::reply_error(req, e);
    let Ok(msg) = parse_body(&frame[4..]) else {
        panic!("reply_error produced an unparsable frame");
    };
    assert_eq!(WireError::from_xdr(&msg.payload).as_ref(), Ok(e));
}

fn check_wire_error(payload: &[u8]) {
    let mut d = Decoder::new(payload);
    if let Ok(e) = WireError::decode(&mut d) {
        assert!(d.allocated() <= d.position());
        assert_eq!(WireError::from_xdr(&e.to_xdr()), Ok(e));
    }
}

fn check_params(payload: &[u8]) {
    let mut d = Decoder::new(payload);
    let Ok(params) = admin::decode_params(&mut d, admin::CLIENT_INFO_PARAMETERS_MAX) else {
        return;
    };
    assert!(d.allocated() <= d.position());
    let mut e = Encoder::new();
    admin::encode_params(&params, &mut e);
    let again = admin::decode_params(&mut Decoder::new(e.as_slice()), usize::MAX);
    // Compare encodings: NaN doubles are not equal to themselves.
    let again_bytes = again.map(|p| {
        let mut e2 = Encoder::new();
        admin::encode_params(&p, &mut e2);
        e2.into_vec()
    });
    assert_eq!(again_bytes.as_deref(), Ok(e.as_slice()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_accept_empty_and_short_input() {
        for data in [&[][..], &[0], &[0, 0, 0, 28], &[9; 40]] {
            fuzz_entry_decode_frame(data);
            fuzz_entry_decode_args(data);
        }
    }
}
