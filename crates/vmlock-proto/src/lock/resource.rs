//! CREATE/DELETE/ACQUIRE/RELEASE_RESOURCE (procs 4–7):
//! `NonNullString path; NonNullString name; unsigned flags`.
//!
//! ```text
//! [path len u32][path + pad][name len u32][name + pad][flags u32]
//! ```

use crate::limits::LOCK_STRING_MAX as STRING_MAX;
use crate::xdr::{DecodeError, Decoder, Encoder, XdrDecode, XdrEncode};

/// Arguments shared by the four resource procedures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceArgs {
    /// Lockspace path; `""` is the default (direct) lockspace.
    pub path: String,
    /// Resource name inside the lockspace.
    pub name: String,
    /// ACQUIRE: [`FLAG_SHARED`](super::FLAG_SHARED) | [`FLAG_AUTOCREATE`](super::FLAG_AUTOCREATE);
    /// others: 0.
    pub flags: u32,
}

impl XdrEncode for ResourceArgs {
    fn encode(&self, e: &mut Encoder) {
        e.put_string(&self.path);
        e.put_string(&self.name);
        e.put_u32(self.flags);
    }
}

impl XdrDecode for ResourceArgs {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(ResourceArgs {
            path: d.string(STRING_MAX)?,
            name: d.string(STRING_MAX)?,
            flags: d.u32()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appendix_a_acquire_size() {
        let a = ResourceArgs {
            path: "/var/lib/libvirt/lockd/files".into(),
            name: "a".repeat(64),
            flags: super::super::FLAG_AUTOCREATE,
        };
        // 132-byte frame = 28 header bytes + 104 payload bytes.
        assert_eq!(a.to_xdr().len(), 104);
    }

    #[test]
    fn string_limit_is_65536() {
        let ok = ResourceArgs {
            path: "p".repeat(STRING_MAX),
            name: String::new(),
            flags: 0,
        };
        assert_eq!(ResourceArgs::from_xdr(&ok.to_xdr()), Ok(ok));
        let too_long = ResourceArgs {
            path: "p".repeat(STRING_MAX + 1),
            name: String::new(),
            flags: 0,
        };
        assert_eq!(
            ResourceArgs::from_xdr(&too_long.to_xdr()),
            Err(DecodeError::StringTooLong {
                len: STRING_MAX + 1,
                max: STRING_MAX
            })
        );
    }
}
