//! Pre-encoded call frames and a minimal reply parser for the load generator.
//!
//! A call is encoded once; each send only patches its serial in place:
//!
//! ```text
//! offset 0     4      8      12     16     20       24       28
//!        [len ][prog ][vers ][proc ][type ][serial ][status ][payload ...]
//!                                          ^^^^^^^^ SERIAL_AT
//! ```
//!
//! A reply is checked for type REPLY, the call's program, procedure and serial. An
//! ERROR reply's payload begins with `code` and `domain` (two XDR ints), which is all
//! the bench needs to tell "busy" (87) from real failures.

use vmlock_proto::frame::encode_message;
use vmlock_proto::header::{Header, MessageType, Status};
use vmlock_proto::lock::{self, Owner, Procedure, RegisterArgs, ResourceArgs};
use vmlock_proto::xdr::XdrEncode;

use crate::error::{BenchError, Result};

/// Byte offset of the serial in a whole frame (after the length word).
pub const SERIAL_AT: usize = 20;
/// Size of a frame with an empty payload (the success reply).
pub const EMPTY_FRAME_LEN: usize = 28;
/// `VIR_ERR_RESOURCE_BUSY`.
pub const ERR_RESOURCE_BUSY: i32 = 87;

/// A whole call frame, ready to send after [`CallFrame::set_serial`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFrame {
    proc_: Procedure,
    bytes: Vec<u8>,
}

impl CallFrame {
    /// Encodes a lock-program call with serial 0.
    pub fn new(proc_: Procedure, args: &impl XdrEncode) -> CallFrame {
        let header = Header {
            prog: lock::PROGRAM,
            vers: lock::VERSION,
            proc_: proc_.to_i32(),
            mtype: MessageType::Call,
            serial: 0,
            status: Status::Ok,
        };
        CallFrame {
            proc_,
            bytes: encode_message(&header, args),
        }
    }

    /// REGISTER for a synthetic owner: `bench-<index>`, id `index + 1`, pid `pid`.
    pub fn register(index: u32, pid: u32) -> CallFrame {
        let mut uuid = [0xbe; 16];
        uuid[12..].copy_from_slice(&index.to_be_bytes());
        let owner = Owner {
            uuid,
            name: format!("bench-{index}"),
            id: index + 1,
            pid,
        };
        CallFrame::new(Procedure::Register, &RegisterArgs { owner, flags: 0 })
    }

    /// ACQUIRE_RESOURCE of `name` in lockspace `path` with `flags`.
    pub fn acquire(path: &str, name: &str, flags: u32) -> CallFrame {
        CallFrame::resource(Procedure::AcquireResource, path, name, flags)
    }

    /// RELEASE_RESOURCE of `name` in lockspace `path` (flags are always 0).
    pub fn release(path: &str, name: &str) -> CallFrame {
        CallFrame::resource(Procedure::ReleaseResource, path, name, 0)
    }

    /// CREATE_LOCKSPACE for `path`.
    pub fn create_lockspace(path: &str) -> CallFrame {
        let args = lock::CreateLockspaceArgs {
            path: path.to_string(),
        };
        CallFrame::new(Procedure::CreateLockspace, &args)
    }

    fn resource(proc_: Procedure, path: &str, name: &str, flags: u32) -> CallFrame {
        let args = ResourceArgs {
            path: path.to_string(),
            name: name.to_string(),
            flags,
        };
        CallFrame::new(proc_, &args)
    }

    /// Patches the serial in place.
    pub fn set_serial(&mut self, serial: u32) {
        self.bytes[SERIAL_AT..SERIAL_AT + 4].copy_from_slice(&serial.to_be_bytes());
    }

    /// The procedure called.
    pub fn procedure(&self) -> Procedure {
        self.proc_
    }

    /// The frame bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// What a well-formed reply said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Status OK.
    Ok,
    /// Status ERROR with this `(code, domain)`.
    Error {
        /// `virErrorNumber`.
        code: i32,
        /// `virErrorDomain`.
        domain: i32,
    },
}

impl Outcome {
    /// Whether this is the "resource busy" error.
    pub fn is_busy(self) -> bool {
        matches!(self, Outcome::Error { code, .. } if code == ERR_RESOURCE_BUSY)
    }

    /// `Ok(())` for OK, else [`BenchError::CallFailed`] naming `call`.
    pub fn require_ok(self, call: &'static str) -> Result<()> {
        match self {
            Outcome::Ok => Ok(()),
            Outcome::Error { code, domain } => Err(BenchError::CallFailed { call, code, domain }),
        }
    }
}

/// Parses a whole reply frame (`frame` includes the length word) to a call of
/// `proc_` with `serial`.
pub fn parse_reply(frame: &[u8], proc_: Procedure, serial: u32) -> Result<Outcome> {
    if frame.len() < EMPTY_FRAME_LEN {
        return Err(BenchError::BadReply(format!("{} bytes", frame.len())));
    }
    let header = Header::decode(&frame[4..]).map_err(|e| BenchError::BadReply(e.to_string()))?;
    let expected = (lock::PROGRAM, proc_.to_i32(), serial, MessageType::Reply);
    let got = (header.prog, header.proc_, header.serial, header.mtype);
    if got != expected {
        return Err(BenchError::BadReply(format!(
            "expected {expected:?}, got {got:?}"
        )));
    }
    match header.status {
        Status::Ok => Ok(Outcome::Ok),
        Status::Error => error_codes(&frame[EMPTY_FRAME_LEN..]),
        other => Err(BenchError::BadReply(format!("status {other:?}"))),
    }
}

fn error_codes(payload: &[u8]) -> Result<Outcome> {
    let word = |i: usize| -> Option<i32> {
        let b = payload.get(i * 4..i * 4 + 4)?;
        Some(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    match (word(0), word(1)) {
        (Some(code), Some(domain)) => Ok(Outcome::Error { code, domain }),
        _ => Err(BenchError::BadReply("short error payload".into())),
    }
}

/// The 28-byte success reply to the call whose 24 header bytes are `call_header`.
pub fn success_reply(call_header: &[u8; 24]) -> [u8; EMPTY_FRAME_LEN] {
    let mut out = [0u8; EMPTY_FRAME_LEN];
    out[..4].copy_from_slice(&(EMPTY_FRAME_LEN as u32).to_be_bytes());
    out[4..16].copy_from_slice(&call_header[..12]); // prog, vers, proc
    out[16..20].copy_from_slice(&MessageType::Reply.to_i32().to_be_bytes());
    out[20..24].copy_from_slice(&call_header[16..20]); // serial
    out[24..28].copy_from_slice(&Status::Ok.to_i32().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmlock_proto::error::WireError;
    use vmlock_proto::frame::{encode_frame, parse_body};
    use vmlock_proto::lock::{Call, decode_call};

    #[test]
    fn register_frame_decodes_back() {
        let mut f = CallFrame::register(3, 100_003);
        f.set_serial(0x0102_0304);
        let m = parse_body(&f.bytes()[4..]).expect("valid frame");
        assert_eq!(m.header.serial, 0x0102_0304);
        assert_eq!(m.header.proc_, 1);
        assert_eq!(
            f.bytes().len(),
            u32::from_be_bytes([0, 0, 0, f.bytes()[3]]) as usize
        );
        match decode_call(Procedure::Register, &m.payload).expect("valid payload") {
            Call::Register(a) => {
                assert_eq!((a.owner.id, a.owner.pid, a.flags), (4, 100_003, 0));
                assert_eq!(a.owner.name, "bench-3");
                assert_eq!(&a.owner.uuid[12..], &3u32.to_be_bytes());
            }
            other => panic!("decoded {other:?}"),
        }
    }

    #[test]
    fn acquire_and_release_frames() {
        let a = CallFrame::acquire("", "/tmp/disk-1", lock::FLAG_SHARED);
        let m = parse_body(&a.bytes()[4..]).expect("valid frame");
        let want = ResourceArgs {
            path: String::new(),
            name: "/tmp/disk-1".into(),
            flags: 1,
        };
        assert_eq!(
            decode_call(Procedure::AcquireResource, &m.payload),
            Ok(Call::AcquireResource(want.clone()))
        );
        let r = CallFrame::release("", "/tmp/disk-1");
        let m = parse_body(&r.bytes()[4..]).expect("valid frame");
        let want = ResourceArgs { flags: 0, ..want };
        assert_eq!(
            decode_call(Procedure::ReleaseResource, &m.payload),
            Ok(Call::ReleaseResource(want))
        );
        assert_eq!(r.procedure(), Procedure::ReleaseResource);
    }

    fn reply(proc_: i32, serial: u32, status: Status, payload: &[u8]) -> Vec<u8> {
        let h = Header {
            prog: lock::PROGRAM,
            vers: 1,
            proc_,
            mtype: MessageType::Reply,
            serial,
            status,
        };
        encode_frame(&h, payload)
    }

    #[test]
    fn parses_ok_and_busy_replies() {
        let ok = reply(6, 9, Status::Ok, &[]);
        assert_eq!(
            parse_reply(&ok, Procedure::AcquireResource, 9).expect("ok"),
            Outcome::Ok
        );
        let busy = WireError::new(87, 51, "Lockspace resource 'x' is locked").to_xdr();
        let err = reply(6, 9, Status::Error, &busy);
        assert_eq!(err.len(), 184, "Appendix A's busy reply size");
        let out = parse_reply(&err, Procedure::AcquireResource, 9).expect("error reply");
        assert_eq!(
            out,
            Outcome::Error {
                code: 87,
                domain: 51
            }
        );
        assert!(out.is_busy());
        assert!(out.require_ok("ACQUIRE").is_err());
    }

    #[test]
    fn rejects_mismatched_replies() {
        let ok = reply(6, 9, Status::Ok, &[]);
        assert!(parse_reply(&ok, Procedure::AcquireResource, 10).is_err());
        assert!(parse_reply(&ok, Procedure::ReleaseResource, 9).is_err());
        assert!(parse_reply(&ok[..27], Procedure::AcquireResource, 9).is_err());
        let short_err = reply(6, 9, Status::Error, &[0, 0, 0, 87]);
        assert!(parse_reply(&short_err, Procedure::AcquireResource, 9).is_err());
    }

    #[test]
    fn success_reply_matches_appendix_a() {
        let mut call = CallFrame::register(0, 4242);
        call.set_serial(0);
        let mut hdr = [0u8; 24];
        hdr.copy_from_slice(&call.bytes()[4..28]);
        let want: Vec<u8> = [0x1c, 0x0ea7_beef, 1, 1, 1, 0, 0]
            .iter()
            .flat_map(|w: &u32| w.to_be_bytes())
            .collect();
        assert_eq!(success_reply(&hdr).to_vec(), want);
    }
}
