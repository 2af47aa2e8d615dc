//! Hand-encoded libvirt RPC frames for tests, and a reply decoder.
//!
//! ```text
//! 0      4      8      12     16     20       24      28
//! | len  | prog | vers | proc | type | serial | status | payload ...
//! ```
//!
//! `len` counts the whole frame including itself; every field is a
//! big-endian XDR int. Strings are a length word, the bytes and zero padding
//! to a multiple of 4; the UUID is 16 raw bytes. This module is written
//! independently of `vmlock-proto` on purpose (it is the test oracle's
//! codec, not the daemon's).

use std::fmt;

/// The lock-space program number.
pub const LOCK_PROGRAM: u32 = 0x0EA7_BEEF;
/// The lock-space program version.
pub const LOCK_VERSION: u32 = 1;
/// The keepalive program ("keep").
pub const KEEPALIVE_PROGRAM: u32 = 0x6b65_6570;
/// Acquire flag SHARED.
pub const FLAG_SHARED: u32 = 1;
/// Acquire flag AUTOCREATE.
pub const FLAG_AUTOCREATE: u32 = 2;

/// Procedure numbers of the lock-space program.
pub mod procs {
    /// REGISTER.
    pub const REGISTER: i32 = 1;
    /// RESTRICT.
    pub const RESTRICT: i32 = 2;
    /// NEW.
    pub const NEW: i32 = 3;
    /// CREATE_RESOURCE.
    pub const CREATE_RESOURCE: i32 = 4;
    /// DELETE_RESOURCE.
    pub const DELETE_RESOURCE: i32 = 5;
    /// ACQUIRE_RESOURCE.
    pub const ACQUIRE: i32 = 6;
    /// RELEASE_RESOURCE.
    pub const RELEASE: i32 = 7;
    /// CREATE_LOCKSPACE.
    pub const CREATE_LOCKSPACE: i32 = 8;
}

/// Message types.
pub mod types {
    /// CALL.
    pub const CALL: i32 = 0;
    /// REPLY.
    pub const REPLY: i32 = 1;
    /// MESSAGE.
    pub const MESSAGE: i32 = 2;
    /// STREAM.
    pub const STREAM: i32 = 3;
    /// CALL_WITH_FDS.
    pub const CALL_WITH_FDS: i32 = 4;
}

/// An XDR payload under construction.
#[derive(Debug, Default, Clone)]
pub struct Xdr(pub Vec<u8>);

impl Xdr {
    /// An empty payload.
    pub fn new() -> Xdr {
        Xdr::default()
    }
    /// Appends a u32.
    pub fn u32(mut self, v: u32) -> Xdr {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Appends an i32.
    pub fn i32(self, v: i32) -> Xdr {
        self.u32(v as u32)
    }
    /// Appends a string (length, bytes, padding).
    pub fn string(self, s: &str) -> Xdr {
        self.bytes(s.as_bytes())
    }
    /// Appends variable-length opaque bytes (length, bytes, padding).
    pub fn bytes(mut self, b: &[u8]) -> Xdr {
        self = self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }
    /// Appends fixed opaque bytes (no length, no padding).
    pub fn fixed(mut self, b: &[u8]) -> Xdr {
        self.0.extend_from_slice(b);
        self
    }
}

/// The six header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Program.
    pub prog: u32,
    /// Version.
    pub vers: u32,
    /// Procedure.
    pub proc_: i32,
    /// Message type.
    pub ty: i32,
    /// Serial.
    pub serial: u32,
    /// Status (0 OK, 1 ERROR).
    pub status: i32,
}

impl Header {
    /// A lock-program CALL header.
    pub fn call(proc_: i32, serial: u32) -> Header {
        Header {
            prog: LOCK_PROGRAM,
            vers: LOCK_VERSION,
            proc_,
            ty: types::CALL,
            serial,
            status: 0,
        }
    }
}

/// A whole frame: length word, header, payload.
pub fn frame(h: Header, payload: &[u8]) -> Vec<u8> {
    let x = Xdr::new()
        .u32(28 + payload.len() as u32)
        .u32(h.prog)
        .u32(h.vers)
        .i32(h.proc_)
        .i32(h.ty)
        .u32(h.serial)
        .i32(h.status)
        .fixed(payload);
    x.0
}

/// A lock-program CALL frame.
pub fn call(proc_: i32, serial: u32, payload: Xdr) -> Vec<u8> {
    frame(Header::call(proc_, serial), &payload.0)
}

/// REGISTER(owner {uuid, name, id, pid}, flags).
pub fn register(serial: u32, uuid: [u8; 16], name: &str, id: u32, pid: u32, flags: u32) -> Vec<u8> {
    let p = Xdr::new()
        .fixed(&uuid)
        .string(name)
        .u32(id)
        .u32(pid)
        .u32(flags);
    call(procs::REGISTER, serial, p)
}

/// RESTRICT(flags).
pub fn restrict(serial: u32, flags: u32) -> Vec<u8> {
    call(procs::RESTRICT, serial, Xdr::new().u32(flags))
}

/// NEW(path, flags).
pub fn new_lockspace(serial: u32, path: &str, flags: u32) -> Vec<u8> {
    call(procs::NEW, serial, Xdr::new().string(path).u32(flags))
}

fn resource(proc_: i32, serial: u32, path: &str, name: &str, flags: u32) -> Vec<u8> {
    call(
        proc_,
        serial,
        Xdr::new().string(path).string(name).u32(flags),
    )
}

/// CREATE_RESOURCE(path, name, flags).
pub fn create_resource(serial: u32, path: &str, name: &str, flags: u32) -> Vec<u8> {
    resource(procs::CREATE_RESOURCE, serial, path, name, flags)
}

/// DELETE_RESOURCE(path, name, flags).
pub fn delete_resource(serial: u32, path: &str, name: &str, flags: u32) -> Vec<u8> {
    resource(procs::DELETE_RESOURCE, serial, path, name, flags)
}

/// ACQUIRE_RESOURCE(path, name, flags).
pub fn acquire(serial: u32, path: &str, name: &str, flags: u32) -> Vec<u8> {
    resource(procs::ACQUIRE, serial, path, name, flags)
}

/// RELEASE_RESOURCE(path, name, flags).
pub fn release(serial: u32, path: &str, name: &str, flags: u32) -> Vec<u8> {
    resource(procs::RELEASE, serial, path, name, flags)
}

/// CREATE_LOCKSPACE(path).
pub fn create_lockspace(serial: u32, path: &str) -> Vec<u8> {
    call(procs::CREATE_LOCKSPACE, serial, Xdr::new().string(path))
}

fn keepalive(proc_: i32) -> Vec<u8> {
    let h = Header {
        prog: KEEPALIVE_PROGRAM,
        vers: 1,
        proc_,
        ty: types::MESSAGE,
        serial: 0,
        status: 0,
    };
    frame(h, &[])
}

/// Keepalive PING (a MESSAGE, proc 1).
pub fn ping() -> Vec<u8> {
    keepalive(1)
}

/// Keepalive PONG (a MESSAGE, proc 2).
pub fn pong() -> Vec<u8> {
    keepalive(2)
}

/// The 28-byte success reply a daemon sends to `call`.
pub fn ok_reply(proc_: i32, serial: u32) -> Vec<u8> {
    let h = Header {
        ty: types::REPLY,
        ..Header::call(proc_, serial)
    };
    frame(h, &[])
}

/// The decoded `virNetMessageError` of an ERROR reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    /// `virErrorNumber`.
    pub code: i32,
    /// `virErrorDomain`.
    pub domain: i32,
    /// The message (optional string).
    pub message: Option<String>,
    /// Level (2 = error).
    pub level: i32,
    /// Whether `dom` was present.
    pub dom_present: bool,
    /// str1.
    pub str1: Option<String>,
    /// str2.
    pub str2: Option<String>,
    /// str3.
    pub str3: Option<String>,
    /// int1.
    pub int1: i32,
    /// int2.
    pub int2: i32,
    /// Whether `net` was present.
    pub net_present: bool,
}

impl WireError {
    /// The message text, or "" when absent.
    pub fn text(&self) -> &str {
        self.message.as_deref().unwrap_or("")
    }
}

/// Why a reply could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self
            .buf
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| DecodeError(format!("truncated at byte {}", self.pos)))?;
        self.pos += 4;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        self.u32().map(|v| v as i32)
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        let n = self.u32()? as usize;
        let end = self.pos + n;
        let b = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| DecodeError(format!("string of {n} bytes truncated")))?;
        let s = String::from_utf8_lossy(b).into_owned();
        self.pos = end.next_multiple_of(4);
        Ok(s)
    }
    fn opt_string(&mut self) -> Result<Option<String>, DecodeError> {
        match self.u32()? {
            0 => Ok(None),
            1 => self.string().map(Some),
            d => Err(DecodeError(format!("bad optional discriminant {d}"))),
        }
    }
    fn absent(&mut self, what: &str) -> Result<bool, DecodeError> {
        match self.u32()? {
            0 => Ok(false),
            d => Err(DecodeError(format!(
                "{what} present ({d}): not supported here"
            ))),
        }
    }
}

fn decode_error(r: &mut Reader<'_>) -> Result<WireError, DecodeError> {
    Ok(WireError {
        code: r.i32()?,
        domain: r.i32()?,
        message: r.opt_string()?,
        level: r.i32()?,
        dom_present: r.absent("dom")?,
        str1: r.opt_string()?,
        str2: r.opt_string()?,
        str3: r.opt_string()?,
        int1: r.i32()?,
        int2: r.i32()?,
        net_present: r.absent("net")?,
    })
}

/// Decodes a whole frame (with its length word) into its header and, for
/// an ERROR reply, the error. Checks that `len` matches and that nothing
/// trails the payload.
pub fn try_decode_reply(buf: &[u8]) -> Result<(Header, Option<WireError>), DecodeError> {
    let mut r = Reader { buf, pos: 0 };
    let len = r.u32()? as usize;
    if len != buf.len() {
        return Err(DecodeError(format!(
            "len word {len} but {} bytes",
            buf.len()
        )));
    }
    let h = Header {
        prog: r.u32()?,
        vers: r.u32()?,
        proc_: r.i32()?,
        ty: r.i32()?,
        serial: r.u32()?,
        status: r.i32()?,
    };
    let err = if h.status == 1 {
        Some(decode_error(&mut r)?)
    } else {
        None
    };
    if r.pos != buf.len() {
        return Err(DecodeError(format!("{} trailing bytes", buf.len() - r.pos)));
    }
    Ok((h, err))
}

/// [`try_decode_reply`] for tests: panics with the hex dump on failure.
pub fn decode_reply(buf: &[u8]) -> (Header, Option<WireError>) {
    match try_decode_reply(buf) {
        Ok(v) => v,
        Err(e) => panic!("undecodable reply ({e}): {}", hex(buf)),
    }
}

/// Lowercase hex in 4-byte groups, for messages.
pub fn hex(buf: &[u8]) -> String {
    let groups: Vec<String> = buf
        .chunks(4)
        .map(|c| c.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    groups.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_matches_the_spec_example() {
        let uuid = [
            0xc7, 0xa5, 0xfd, 0xbd, 0xed, 0xaf, 0x94, 0x55, 0x92, 0x6a, 0xd6, 0x5c, 0x16, 0xdb,
            0x18, 0x09,
        ];
        let f = register(0, uuid, "vm1", 1, 4242, 0);
        assert_eq!(
            hex(&f),
            "00000040 0ea7beef 00000001 00000001 00000000 00000000 00000000 \
             c7a5fdbd edaf9455 926ad65c 16db1809 00000003 766d3100 00000001 00001092 00000000"
        );
        assert_eq!(
            hex(&ok_reply(1, 0)),
            "0000001c 0ea7beef 00000001 00000001 00000001 00000000 00000000"
        );
        assert_eq!(
            hex(&pong()),
            "0000001c 6b656570 00000001 00000002 00000002 00000000 00000000"
        );
    }

    #[test]
    fn decodes_an_error_reply() {
        let h = Header {
            ty: types::REPLY,
            status: 1,
            ..Header::call(6, 1)
        };
        let p = Xdr::new()
            .i32(87)
            .i32(51)
            .u32(1)
            .string("resource busy: x")
            .i32(2)
            .u32(0)
            .u32(1)
            .string("resource busy: %1$s")
            .u32(1)
            .string("x")
            .u32(0)
            .i32(-1)
            .i32(-1)
            .u32(0);
        let f = frame(h, &p.0);
        let (hd, e) = decode_reply(&f);
        assert_eq!(hd, h);
        let e = e.expect("error");
        assert_eq!((e.code, e.domain, e.level), (87, 51, 2));
        assert_eq!(e.text(), "resource busy: x");
        assert_eq!(e.str2.as_deref(), Some("x"));
        assert_eq!((e.int1, e.int2), (-1, -1));
        assert!(try_decode_reply(&f[..f.len() - 4]).is_err());
        let mut long = f.clone();
        long.extend_from_slice(&[0; 4]);
        long[3] += 4;
        assert!(
            try_decode_reply(&long).is_err(),
            "trailing bytes are refused"
        );
    }
}
