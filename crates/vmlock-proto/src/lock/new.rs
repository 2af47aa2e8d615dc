//! NEW (proc 3): `NonNullString path; unsigned flags`.

use crate::limits::LOCK_STRING_MAX as STRING_MAX;
use crate::xdr::{DecodeError, Decoder, Encoder, XdrDecode, XdrEncode};

/// NEW arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewArgs {
    /// Lockspace directory to create.
    pub path: String,
    /// Must be 0.
    pub flags: u32,
}

impl XdrEncode for NewArgs {
    fn encode(&self, e: &mut Encoder) {
        e.put_string(&self.path);
        e.put_u32(self.flags);
    }
}

impl XdrDecode for NewArgs {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(NewArgs {
            path: d.string(STRING_MAX)?,
            flags: d.u32()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let a = NewArgs {
            path: "/ab".into(),
            flags: 0,
        };
        assert_eq!(a.to_xdr(), b"\0\0\0\x03/ab\0\0\0\0\0".to_vec());
        assert_eq!(NewArgs::from_xdr(&a.to_xdr()), Ok(a));
    }
}
