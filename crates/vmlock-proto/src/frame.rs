//! Framing: the length word, the receive rules of docs/protocol.md §1.2, and whole-frame encoding.
//!
//! ```text
//! [len u32][header 24 bytes][num_fds u32, only for *_WITH_FDS][payload ...]
//!  len = 4 + 24 + (4) + payload.len()          (the length word counts itself)
//! ```
//!
//! Receiving is two steps, as in `virNetServerClientDispatchRead`:
//! 1. [`body_len`] checks the length word (`len < 4` or `len - 4 > MESSAGE_MAX` closes
//!    the connection) and says how many more bytes to read;
//! 2. [`parse_body`] splits those bytes into header, fd count and payload. Any
//!    [`FrameError`] also means "close the connection, write nothing". Payload errors
//!    are not found here: they come later, from decoding the payload, and get a reply.

use thiserror::Error;

use crate::header::Header;
use crate::limits::{HEADER_LEN, LEN_WORD, MESSAGE_MAX, NUM_FDS_MAX};
use crate::xdr::{Decoder, Encoder, XdrEncode};

/// A frame the server must not answer; the connection is closed.
///
/// Display texts are libvirt's, including its `%d` formatting of unsigned values.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The length word (which counts itself) is below 4.
    #[error("packet {} bytes received from server too small, want {LEN_WORD}", *.0 as i32)]
    TooShort(u32),
    /// `len - 4` (the value carried) is above [`MESSAGE_MAX`].
    #[error("packet {} bytes received from server too large, want {MESSAGE_MAX}", *.0 as i32)]
    TooLarge(u32),
    /// The body (of the given length) is shorter than a header.
    #[error("Unable to decode message header")]
    ShortHeader(usize),
    /// A `*_WITH_FDS` frame ends before its fd count.
    #[error("Unable to decode number of FDs")]
    MissingFdCount,
    /// A `*_WITH_FDS` frame announces more than [`NUM_FDS_MAX`] fds.
    #[error("Received too many FDs {}, expected {NUM_FDS_MAX} maximum", *.0 as i32)]
    TooManyFds(u32),
}

/// Checks a length word and returns how many bytes follow it (`len - 4`).
pub fn body_len(len_word: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(len_word);
    if (len as usize) < LEN_WORD {
        return Err(FrameError::TooShort(len));
    }
    let body = len - LEN_WORD as u32;
    if body as usize > MESSAGE_MAX {
        return Err(FrameError::TooLarge(body));
    }
    Ok(body as usize)
}

/// A received message, split but with its payload still encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The decoded header.
    pub header: Header,
    /// The announced fd count for `*_WITH_FDS` types, else 0.
    pub num_fds: u32,
    /// The XDR payload after the header (and fd count).
    pub payload: Vec<u8>,
}

/// Splits a frame body (the `len - 4` bytes after the length word), with
/// the server's receive rules: only a CALL_WITH_FDS carries the u32 fd count
/// (libvirt's server reads it for no other type; a REPLY_WITH_FDS sent to a
/// server is routed, and dropped, like any other non-call).
pub fn parse_body(body: &[u8]) -> Result<Message, FrameError> {
    let m = parse_body_ref(body)?;
    Ok(Message {
        header: m.header,
        num_fds: m.num_fds,
        payload: m.payload.to_vec(),
    })
}

/// A received message borrowing its payload from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRef<'a> {
    /// The decoded header.
    pub header: Header,
    /// The announced fd count for `*_WITH_FDS` types, else 0.
    pub num_fds: u32,
    /// The XDR payload after the header (and fd count).
    pub payload: &'a [u8],
}

/// [`parse_body`] without copying the payload: what a server uses on its
/// request path.
pub fn parse_body_ref(body: &[u8]) -> Result<MessageRef<'_>, FrameError> {
    if body.len() < HEADER_LEN {
        return Err(FrameError::ShortHeader(body.len()));
    }
    let mut d = Decoder::new(body);
    let header = <Header as crate::xdr::XdrDecode>::decode(&mut d)
        .map_err(|_| FrameError::ShortHeader(body.len()))?;
    let num_fds = if header.mtype == crate::header::MessageType::CallWithFds {
        let n = d.u32().map_err(|_| FrameError::MissingFdCount)?;
        if n > NUM_FDS_MAX {
            return Err(FrameError::TooManyFds(n));
        }
        n
    } else {
        0
    };
    Ok(MessageRef {
        header,
        num_fds,
        payload: d.rest(),
    })
}

/// A whole frame: length word, header, then `payload` as given.
///
/// For `*_WITH_FDS` types the caller puts the fd count at the start of `payload`.
pub fn encode_frame(header: &Header, payload: &[u8]) -> Vec<u8> {
    let mut e = Encoder::with_capacity(LEN_WORD + HEADER_LEN + payload.len());
    e.put_u32(0);
    header.encode(&mut e);
    e.put_raw(payload);
    finish_frame(e)
}

/// A whole frame whose payload is `body` encoded as XDR.
pub fn encode_message(header: &Header, body: &impl XdrEncode) -> Vec<u8> {
    let mut e = Encoder::with_capacity(LEN_WORD + HEADER_LEN + 64);
    e.put_u32(0);
    header.encode(&mut e);
    body.encode(&mut e);
    finish_frame(e)
}

/// Patches the length word of an encoder that started with a placeholder.
fn finish_frame(e: Encoder) -> Vec<u8> {
    let mut v = e.into_vec();
    debug_assert!(
        v.len() - LEN_WORD <= MESSAGE_MAX,
        "frame exceeds MESSAGE_MAX"
    );
    let len = v.len() as u32;
    v[..LEN_WORD].copy_from_slice(&len.to_be_bytes());
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::{MessageType, Status};

    fn hdr(mtype: MessageType) -> Header {
        Header {
            prog: 0x0EA7_BEEF,
            vers: 1,
            proc_: 6,
            mtype,
            serial: 3,
            status: Status::Ok,
        }
    }

    #[test]
    fn body_len_rules() {
        assert_eq!(body_len([0, 0, 0, 3]), Err(FrameError::TooShort(3)));
        assert_eq!(body_len([0, 0, 0, 4]), Ok(0));
        assert_eq!(body_len([0, 0, 0, 28]), Ok(24));
        let max = (MESSAGE_MAX + 4) as u32;
        assert_eq!(body_len(max.to_be_bytes()), Ok(MESSAGE_MAX));
        assert_eq!(
            body_len((max + 1).to_be_bytes()),
            Err(FrameError::TooLarge(MESSAGE_MAX as u32 + 1))
        );
        assert_eq!(body_len([0xff; 4]), Err(FrameError::TooLarge(u32::MAX - 4)));
    }

    #[test]
    fn error_texts_match_libvirt() {
        assert_eq!(
            FrameError::TooLarge(33_554_433).to_string(),
            "packet 33554433 bytes received from server too large, want 33554432"
        );
        assert_eq!(
            FrameError::TooLarge(u32::MAX - 4).to_string(),
            "packet -5 bytes received from server too large, want 33554432"
        );
        assert_eq!(
            FrameError::TooShort(2).to_string(),
            "packet 2 bytes received from server too small, want 4"
        );
        assert_eq!(
            FrameError::TooManyFds(33).to_string(),
            "Received too many FDs 33, expected 32 maximum"
        );
    }

    #[test]
    fn parse_plain_and_with_fds() {
        let f = encode_frame(&hdr(MessageType::Call), &[1, 2, 3, 4]);
        assert_eq!(f.len(), 32);
        assert_eq!(&f[..4], &[0, 0, 0, 32]);
        let m = parse_body(&f[4..]).expect("valid body");
        assert_eq!(
            (m.header, m.num_fds, m.payload),
            (hdr(MessageType::Call), 0, vec![1, 2, 3, 4])
        );

        let f = encode_frame(&hdr(MessageType::CallWithFds), &[0, 0, 0, 2, 9, 9, 9, 9]);
        let m = parse_body(&f[4..]).expect("valid body");
        assert_eq!((m.num_fds, m.payload), (2, vec![9, 9, 9, 9]));
    }

    #[test]
    fn parse_rejects_bad_bodies() {
        assert_eq!(parse_body(&[0; 23]), Err(FrameError::ShortHeader(23)));
        let f = encode_frame(&hdr(MessageType::CallWithFds), &[0, 0]);
        assert_eq!(parse_body(&f[4..]), Err(FrameError::MissingFdCount));
        // A server reads an fd count for CALL_WITH_FDS only.
        let f = encode_frame(&hdr(MessageType::ReplyWithFds), &[0, 0]);
        assert_eq!(
            parse_body(&f[4..]).map(|m| (m.num_fds, m.payload)),
            Ok((0, vec![0, 0]))
        );
        let f = encode_frame(&hdr(MessageType::CallWithFds), &[0, 0, 0, 33]);
        assert_eq!(parse_body(&f[4..]), Err(FrameError::TooManyFds(33)));
        let f = encode_frame(&hdr(MessageType::CallWithFds), &[0, 0, 0, 32]);
        assert_eq!(parse_body(&f[4..]).map(|m| m.num_fds), Ok(32));
    }

    #[test]
    fn encode_message_matches_encode_frame() {
        let h = hdr(MessageType::Reply);
        assert_eq!(encode_message(&h, &()), encode_frame(&h, &[]));
        assert_eq!(encode_message(&h, &()).len(), 28);
    }
}
