//! The 24-byte message header `virNetMessageHeader` (docs/protocol.md §1.3).
//!
//! ```text
//! offset  0      4      8      12     16       20       24
//!         +------+------+------+------+--------+--------+
//!         | prog | vers | proc | type | serial | status |
//!         +------+------+------+------+--------+--------+
//!          u32    u32    i32    enum   u32      enum
//! ```
//!
//! `type` and `status` are XDR enums; values outside the defined range decode as
//! `Unknown(n)` rather than failing, as libvirt's decoder does, so routing can answer them.

use crate::limits::HEADER_LEN;
use crate::xdr::{DecodeError, Decoder, Encoder, XdrDecode, XdrEncode};

/// `virNetMessageType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// 0: a request expecting a reply.
    Call,
    /// 1: the reply to a call.
    Reply,
    /// 2: an asynchronous message (keepalive).
    Message,
    /// 3: stream data.
    Stream,
    /// 4: a call with fds attached.
    CallWithFds,
    /// 5: a reply with fds attached.
    ReplyWithFds,
    /// 6: a stream hole.
    StreamHole,
    /// Any other value.
    Unknown(i32),
}

impl MessageType {
    /// The type for a wire value.
    pub fn from_i32(v: i32) -> Self {
        match v {
            0 => Self::Call,
            1 => Self::Reply,
            2 => Self::Message,
            3 => Self::Stream,
            4 => Self::CallWithFds,
            5 => Self::ReplyWithFds,
            6 => Self::StreamHole,
            n => Self::Unknown(n),
        }
    }

    /// The wire value.
    pub fn to_i32(self) -> i32 {
        match self {
            Self::Call => 0,
            Self::Reply => 1,
            Self::Message => 2,
            Self::Stream => 3,
            Self::CallWithFds => 4,
            Self::ReplyWithFds => 5,
            Self::StreamHole => 6,
            Self::Unknown(n) => n,
        }
    }

    /// Whether a u32 fd count follows the header.
    pub fn has_fds(self) -> bool {
        matches!(self, Self::CallWithFds | Self::ReplyWithFds)
    }

    /// Whether this is `CALL` or `CALL_WITH_FDS`.
    pub fn is_call(self) -> bool {
        matches!(self, Self::Call | Self::CallWithFds)
    }
}

/// `virNetMessageStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// 0: success, or a call.
    Ok,
    /// 1: the payload is a `virNetMessageError`.
    Error,
    /// 2: more stream data follows.
    Continue,
    /// Any other value.
    Unknown(i32),
}

impl Status {
    /// The status for a wire value.
    pub fn from_i32(v: i32) -> Self {
        match v {
            0 => Self::Ok,
            1 => Self::Error,
            2 => Self::Continue,
            n => Self::Unknown(n),
        }
    }

    /// The wire value.
    pub fn to_i32(self) -> i32 {
        match self {
            Self::Ok => 0,
            Self::Error => 1,
            Self::Continue => 2,
            Self::Unknown(n) => n,
        }
    }
}

/// A decoded message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// Program number.
    pub prog: u32,
    /// Program version.
    pub vers: u32,
    /// Procedure number.
    pub proc_: i32,
    /// Message type.
    pub mtype: MessageType,
    /// Serial chosen by the client, echoed in replies.
    pub serial: u32,
    /// Status.
    pub status: Status,
}

impl Header {
    /// Decodes the header from the first [`HEADER_LEN`] bytes of `bytes` (anything after
    /// them is ignored). Fewer than 24 bytes is [`DecodeError::Truncated`].
    pub fn decode(bytes: &[u8]) -> Result<Header, DecodeError> {
        <Header as XdrDecode>::decode(&mut Decoder::new(bytes))
    }

    /// Appends the 24 header bytes.
    pub fn encode(&self, e: &mut Encoder) {
        <Header as XdrEncode>::encode(self, e);
    }

    /// The header of a reply to `self`: prog, vers, proc and serial copied, type REPLY.
    pub fn reply_to(&self, status: Status) -> Header {
        Header {
            mtype: MessageType::Reply,
            status,
            ..*self
        }
    }

    /// The header bytes as an array.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut e = Encoder::with_capacity(HEADER_LEN);
        self.encode(&mut e);
        let mut out = [0u8; HEADER_LEN];
        out.copy_from_slice(e.as_slice());
        out
    }
}

impl XdrEncode for Header {
    fn encode(&self, e: &mut Encoder) {
        e.put_u32(self.prog);
        e.put_u32(self.vers);
        e.put_i32(self.proc_);
        e.put_i32(self.mtype.to_i32());
        e.put_u32(self.serial);
        e.put_i32(self.status.to_i32());
    }
}

impl XdrDecode for Header {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Header {
            prog: d.u32()?,
            vers: d.u32()?,
            proc_: d.i32()?,
            mtype: MessageType::from_i32(d.i32()?),
            serial: d.u32()?,
            status: Status::from_i32(d.i32()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTER_CALL: [u8; 24] = [
        0x0e, 0xa7, 0xbe, 0xef, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0,
    ];

    #[test]
    fn decodes_appendix_a_call() {
        let h = Header::decode(&REGISTER_CALL).expect("valid header");
        assert_eq!(h.prog, 0x0EA7_BEEF);
        assert_eq!(h.vers, 1);
        assert_eq!(h.proc_, 1);
        assert_eq!(h.mtype, MessageType::Call);
        assert_eq!(h.serial, 7);
        assert_eq!(h.status, Status::Ok);
        assert_eq!(h.to_bytes(), REGISTER_CALL);
    }

    #[test]
    fn short_header_is_truncated() {
        assert_eq!(
            Header::decode(&REGISTER_CALL[..23]),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn unknown_enum_values_survive() {
        let mut b = REGISTER_CALL;
        b[12..16].copy_from_slice(&(-5i32).to_be_bytes());
        b[20..24].copy_from_slice(&9i32.to_be_bytes());
        let h = Header::decode(&b).expect("valid header");
        assert_eq!(h.mtype, MessageType::Unknown(-5));
        assert_eq!(h.status, Status::Unknown(9));
        assert_eq!(h.to_bytes(), b);
    }

    #[test]
    fn reply_to_copies_identity() {
        let h = Header::decode(&REGISTER_CALL).expect("valid header");
        let r = h.reply_to(Status::Error);
        assert_eq!(
            (r.prog, r.vers, r.proc_, r.serial),
            (h.prog, h.vers, h.proc_, h.serial)
        );
        assert_eq!((r.mtype, r.status), (MessageType::Reply, Status::Error));
    }

    #[test]
    fn enum_values_round_trip() {
        for v in -2..9 {
            assert_eq!(MessageType::from_i32(v).to_i32(), v);
            assert_eq!(Status::from_i32(v).to_i32(), v);
        }
        assert!(MessageType::CallWithFds.has_fds() && MessageType::ReplyWithFds.has_fds());
        assert!(!MessageType::Call.has_fds());
    }
}
