//! CREATE_LOCKSPACE (proc 8): `NonNullString path` (no flags field).

use crate::limits::LOCK_STRING_MAX as STRING_MAX;
use crate::xdr::{DecodeError, Decoder, Encoder, XdrDecode, XdrEncode};

/// CREATE_LOCKSPACE arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateLockspaceArgs {
    /// Lockspace directory; `""` names the default lockspace.
    pub path: String,
}

impl XdrEncode for CreateLockspaceArgs {
    fn encode(&self, e: &mut Encoder) {
        e.put_string(&self.path);
    }
}

impl XdrDecode for CreateLockspaceArgs {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(CreateLockspaceArgs {
            path: d.string(STRING_MAX)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_path_is_four_zero_bytes() {
        let a = CreateLockspaceArgs {
            path: String::new(),
        };
        assert_eq!(a.to_xdr(), vec![0; 4]);
        assert_eq!(
            CreateLockspaceArgs::from_xdr(&[0; 8]),
            Err(DecodeError::TrailingBytes(4))
        );
    }
}
