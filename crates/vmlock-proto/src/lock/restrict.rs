//! RESTRICT (proc 2): `unsigned flags`.

use crate::xdr::{DecodeError, Decoder, Encoder, XdrDecode, XdrEncode};

/// RESTRICT arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestrictArgs {
    /// Must be 0.
    pub flags: u32,
}

impl XdrEncode for RestrictArgs {
    fn encode(&self, e: &mut Encoder) {
        e.put_u32(self.flags);
    }
}

impl XdrDecode for RestrictArgs {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(RestrictArgs { flags: d.u32()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_bytes() {
        assert_eq!(RestrictArgs { flags: 5 }.to_xdr(), vec![0, 0, 0, 5]);
        assert_eq!(
            RestrictArgs::from_xdr(&[0, 0, 1]),
            Err(DecodeError::Truncated)
        );
    }
}
