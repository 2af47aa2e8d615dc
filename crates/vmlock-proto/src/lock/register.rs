//! REGISTER (proc 1): `Owner owner; unsigned flags`.
//!
//! ```text
//! [uuid 16 raw bytes][name len u32][name bytes + pad][id u32][pid u32][flags u32]
//! ```

use crate::limits::LOCK_STRING_MAX as STRING_MAX;
use crate::xdr::{DecodeError, Decoder, Encoder, XdrDecode, XdrEncode};

/// `virLockSpaceProtocolOwner`: who holds the locks taken on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The VM's UUID (a fixed opaque: no length word).
    pub uuid: [u8; 16],
    /// The VM's name.
    pub name: String,
    /// The VM's id; 0 means "not registered".
    pub id: u32,
    /// The pid every lock is taken for.
    pub pid: u32,
}

/// REGISTER arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterArgs {
    /// The owner to record.
    pub owner: Owner,
    /// Must be 0.
    pub flags: u32,
}

impl XdrEncode for Owner {
    fn encode(&self, e: &mut Encoder) {
        e.put_fixed_opaque(&self.uuid);
        e.put_string(&self.name);
        e.put_u32(self.id);
        e.put_u32(self.pid);
    }
}

impl XdrDecode for Owner {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Owner {
            uuid: d.fixed_opaque()?,
            name: d.string(STRING_MAX)?,
            id: d.u32()?,
            pid: d.u32()?,
        })
    }
}

impl XdrEncode for RegisterArgs {
    fn encode(&self, e: &mut Encoder) {
        self.owner.encode(e);
        e.put_u32(self.flags);
    }
}

impl XdrDecode for RegisterArgs {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(RegisterArgs {
            owner: Owner::decode(d)?,
            flags: d.u32()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The REGISTER payload of spec Appendix A.
    const APPENDIX_A: [u8; 36] = [
        0xc7, 0xa5, 0xfd, 0xbd, 0xed, 0xaf, 0x94, 0x55, 0x92, 0x6a, 0xd6, 0x5c, 0x16, 0xdb, 0x18,
        0x09, 0, 0, 0, 3, b'v', b'm', b'1', 0, 0, 0, 0, 1, 0, 0, 0x10, 0x92, 0, 0, 0, 0,
    ];

    #[test]
    fn appendix_a_payload() {
        let args = RegisterArgs::from_xdr(&APPENDIX_A).expect("valid payload");
        assert_eq!(args.owner.name, "vm1");
        assert_eq!((args.owner.id, args.owner.pid, args.flags), (1, 4242, 0));
        assert_eq!(args.owner.uuid[15], 0x09);
        assert_eq!(args.to_xdr(), APPENDIX_A);
    }

    #[test]
    fn truncated_payload_fails() {
        assert_eq!(
            RegisterArgs::from_xdr(&APPENDIX_A[..32]),
            Err(DecodeError::Truncated)
        );
    }
}
