//! Size limits of the libvirt RPC frame (docs/protocol.md §1.2, §1.4), next to the layout they bound.
//!
//! ```text
//!  0        4                                                28          len
//!  +--------+------+------+------+------+--------+--------+--------------+
//!  |  len   | prog | vers | proc | type | serial | status |   payload    |
//!  +--------+------+------+------+------+--------+--------+--------------+
//!  LEN_WORD |<------------------ HEADER_LEN ------------->|<-PAYLOAD_MAX->|
//!           |<------------------------ len - 4 <= MESSAGE_MAX ---------->|
//! ```
//!
//! `len` counts itself. For `CALL_WITH_FDS`/`REPLY_WITH_FDS` the payload starts with a
//! u32 fd count of at most [`NUM_FDS_MAX`].

/// Size of the length word (`VIR_NET_MESSAGE_LEN_MAX`).
pub const LEN_WORD: usize = 4;
/// Size of the XDR header (`VIR_NET_MESSAGE_HEADER_MAX`).
pub const HEADER_LEN: usize = 24;
/// Largest allowed value of `len - 4` (`VIR_NET_MESSAGE_MAX`, 32 MiB).
pub const MESSAGE_MAX: usize = 33_554_432;
/// Largest payload after the header (`VIR_NET_MESSAGE_PAYLOAD_MAX`).
pub const PAYLOAD_MAX: usize = MESSAGE_MAX - HEADER_LEN;
/// Longest string in a `virNetMessageError` (`VIR_NET_MESSAGE_STRING_MAX`).
pub const ERROR_STRING_MAX: usize = 4_194_304;
/// Longest string in lock-protocol arguments (`VIR_LOCK_SPACE_PROTOCOL_STRING_MAX`).
pub const LOCK_STRING_MAX: usize = 65_536;
/// Most fds one message may carry (`VIR_NET_MESSAGE_NUM_FDS_MAX`).
pub const NUM_FDS_MAX: u32 = 32;
/// Longest string in admin-protocol messages (`ADMIN_STRING_MAX`).
pub const ADMIN_STRING_MAX: usize = 4_194_304;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libvirt_values() {
        assert_eq!(PAYLOAD_MAX, 33_554_408);
        assert_eq!(MESSAGE_MAX, 32 * 1024 * 1024);
        assert_eq!(HEADER_LEN, 6 * 4);
    }
}
