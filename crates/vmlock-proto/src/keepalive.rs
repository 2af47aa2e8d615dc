//! The keepalive program (docs/protocol.md §6): 28-byte MESSAGE frames with an empty payload.
//!
//! ```text
//! 0000001c 6b656570 00000001 00000001 00000002 00000000 00000000   PING (proc 1)
//! 0000001c 6b656570 00000001 00000002 00000002 00000000 00000000   PONG (proc 2)
//! ```

use crate::frame::encode_frame;
use crate::header::{Header, MessageType, Status};

/// Program number: ASCII "keep".
pub const PROGRAM: u32 = 0x6b65_6570;
/// Program version.
pub const VERSION: u32 = 1;
/// PING procedure.
pub const PROC_PING: i32 = 1;
/// PONG procedure.
pub const PROC_PONG: i32 = 2;

/// The header of a keepalive message for `proc_`.
pub fn header(proc_: i32) -> Header {
    Header {
        prog: PROGRAM,
        vers: VERSION,
        proc_,
        mtype: MessageType::Message,
        serial: 0,
        status: Status::Ok,
    }
}

/// Whether `h` is a keepalive-program MESSAGE, which is consumed before routing.
pub fn is_keepalive(h: &Header) -> bool {
    h.prog == PROGRAM && h.vers == VERSION && h.mtype == MessageType::Message
}

/// The 28-byte PONG frame.
pub fn pong() -> Vec<u8> {
    encode_frame(&header(PROC_PONG), &[])
}

/// The 28-byte PING frame.
pub fn ping() -> Vec<u8> {
    encode_frame(&header(PROC_PING), &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn appendix_a_bytes() {
        assert_eq!(
            hex(&ping()),
            "0000001c 6b656570 00000001 00000001 00000002 00000000 00000000".replace(' ', "")
        );
        assert_eq!(
            hex(&pong()),
            "0000001c 6b656570 00000001 00000002 00000002 00000000 00000000".replace(' ', "")
        );
    }

    #[test]
    fn keepalive_detection() {
        assert!(is_keepalive(&header(7)));
        let mut h = header(PROC_PING);
        h.mtype = MessageType::Call;
        assert!(!is_keepalive(&h));
        h.mtype = MessageType::Message;
        h.vers = 2;
        assert!(!is_keepalive(&h));
    }
}
