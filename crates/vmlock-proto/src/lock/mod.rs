//! The lock-space program 0x0EA7BEEF version 1 (docs/protocol.md §3): procedure numbers, argument
//! types, and decoding of a call's payload by procedure.
//!
//! ```text
//! proc  name              args (XDR, in order)
//!  1    REGISTER          Owner { opaque uuid[16]; string name<65536>; u32 id; u32 pid } u32 flags
//!  2    RESTRICT          u32 flags
//!  3    NEW               string path<65536>; u32 flags
//!  4-7  *_RESOURCE        string path<65536>; string name<65536>; u32 flags
//!  8    CREATE_LOCKSPACE  string path<65536>
//! ```
//!
//! Every procedure replies with a `void` body. One file per argument shape.

mod create_lockspace;
mod new;
mod register;
mod resource;
mod restrict;

pub use create_lockspace::CreateLockspaceArgs;
pub use new::NewArgs;
pub use register::{Owner, RegisterArgs};
pub use resource::ResourceArgs;
pub use restrict::RestrictArgs;

use crate::xdr::{DecodeError, Decoder, Encoder, XdrDecode, XdrEncode};

/// Program number (`VIR_LOCK_SPACE_PROTOCOL_PROGRAM`).
pub const PROGRAM: u32 = 0x0EA7_BEEF;
/// Program version.
pub const VERSION: u32 = 1;
/// ACQUIRE flag: take a shared (read) lock.
pub const FLAG_SHARED: u32 = 1;
/// ACQUIRE flag: create the lease file if missing, unlink it on last release.
pub const FLAG_AUTOCREATE: u32 = 2;
/// Longest string in lock-protocol arguments.
pub const STRING_MAX: usize = crate::limits::LOCK_STRING_MAX;

/// A lock-space procedure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Procedure {
    /// 1: record the owner of this connection.
    Register = 1,
    /// 2: forbid further calls on this connection.
    Restrict,
    /// 3: create a named lockspace (fails if it exists).
    New,
    /// 4: create a resource file.
    CreateResource,
    /// 5: delete a resource file.
    DeleteResource,
    /// 6: acquire a lock.
    AcquireResource,
    /// 7: release a lock.
    ReleaseResource,
    /// 8: create a named lockspace (idempotent).
    CreateLockspace,
}

impl Procedure {
    /// libvirt's name, for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Register => "REGISTER",
            Self::Restrict => "RESTRICT",
            Self::New => "NEW",
            Self::CreateResource => "CREATE_RESOURCE",
            Self::DeleteResource => "DELETE_RESOURCE",
            Self::AcquireResource => "ACQUIRE_RESOURCE",
            Self::ReleaseResource => "RELEASE_RESOURCE",
            Self::CreateLockspace => "CREATE_LOCKSPACE",
        }
    }

    /// Every procedure, in number order.
    pub const ALL: [Procedure; 8] = [
        Self::Register,
        Self::Restrict,
        Self::New,
        Self::CreateResource,
        Self::DeleteResource,
        Self::AcquireResource,
        Self::ReleaseResource,
        Self::CreateLockspace,
    ];

    /// The procedure with wire number `n`, if any (slot 0 is empty).
    pub fn from_i32(n: i32) -> Option<Procedure> {
        let idx = usize::try_from(n).ok()?.checked_sub(1)?;
        Self::ALL.get(idx).copied()
    }

    /// The wire number.
    pub fn to_i32(self) -> i32 {
        self as i32
    }

    /// The C dispatch function, as named in flag-check errors.
    pub fn c_function(self) -> &'static str {
        match self {
            Self::Register => "virLockSpaceProtocolDispatchRegister",
            Self::Restrict => "virLockSpaceProtocolDispatchRestrict",
            Self::New => "virLockSpaceProtocolDispatchNew",
            Self::CreateResource => "virLockSpaceProtocolDispatchCreateResource",
            Self::DeleteResource => "virLockSpaceProtocolDispatchDeleteResource",
            Self::AcquireResource => "virLockSpaceProtocolDispatchAcquireResource",
            Self::ReleaseResource => "virLockSpaceProtocolDispatchReleaseResource",
            Self::CreateLockspace => "virLockSpaceProtocolDispatchCreateLockSpace",
        }
    }
}

/// A decoded lock-space call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// REGISTER.
    Register(RegisterArgs),
    /// RESTRICT.
    Restrict(RestrictArgs),
    /// NEW.
    New(NewArgs),
    /// CREATE_RESOURCE.
    CreateResource(ResourceArgs),
    /// DELETE_RESOURCE.
    DeleteResource(ResourceArgs),
    /// ACQUIRE_RESOURCE.
    AcquireResource(ResourceArgs),
    /// RELEASE_RESOURCE.
    ReleaseResource(ResourceArgs),
    /// CREATE_LOCKSPACE.
    CreateLockspace(CreateLockspaceArgs),
}

impl Call {
    /// The procedure this call is for.
    pub fn procedure(&self) -> Procedure {
        match self {
            Self::Register(_) => Procedure::Register,
            Self::Restrict(_) => Procedure::Restrict,
            Self::New(_) => Procedure::New,
            Self::CreateResource(_) => Procedure::CreateResource,
            Self::DeleteResource(_) => Procedure::DeleteResource,
            Self::AcquireResource(_) => Procedure::AcquireResource,
            Self::ReleaseResource(_) => Procedure::ReleaseResource,
            Self::CreateLockspace(_) => Procedure::CreateLockspace,
        }
    }
}

/// Encodes the arguments only (the payload of the call frame).
impl XdrEncode for Call {
    fn encode(&self, e: &mut Encoder) {
        match self {
            Self::Register(a) => a.encode(e),
            Self::Restrict(a) => a.encode(e),
            Self::New(a) => a.encode(e),
            Self::CreateResource(a)
            | Self::DeleteResource(a)
            | Self::AcquireResource(a)
            | Self::ReleaseResource(a) => a.encode(e),
            Self::CreateLockspace(a) => a.encode(e),
        }
    }
}

fn decode_one(proc_: Procedure, d: &mut Decoder<'_>) -> Result<Call, DecodeError> {
    Ok(match proc_ {
        Procedure::Register => Call::Register(RegisterArgs::decode(d)?),
        Procedure::Restrict => Call::Restrict(RestrictArgs::decode(d)?),
        Procedure::New => Call::New(NewArgs::decode(d)?),
        Procedure::CreateResource => Call::CreateResource(ResourceArgs::decode(d)?),
        Procedure::DeleteResource => Call::DeleteResource(ResourceArgs::decode(d)?),
        Procedure::AcquireResource => Call::AcquireResource(ResourceArgs::decode(d)?),
        Procedure::ReleaseResource => Call::ReleaseResource(ResourceArgs::decode(d)?),
        Procedure::CreateLockspace => Call::CreateLockspace(CreateLockspaceArgs::decode(d)?),
    })
}

/// Decodes the payload of a call to `proc_`. Strings are bounded by [`STRING_MAX`];
/// trailing bytes are an error. Any error is answered with
/// [`WireError::payload_decode`](crate::error::WireError::payload_decode).
pub fn decode_call(proc_: Procedure, payload: &[u8]) -> Result<Call, DecodeError> {
    let mut d = Decoder::new(payload);
    let call = decode_one(proc_, &mut d)?;
    d.finish()?;
    Ok(call)
}

/// Decodes the arguments of `proc_` the way libvirt's server does: bytes
/// after the arguments, inside the frame, are ignored (XDR decoding in libvirt
/// never checks that the payload was consumed). The daemon uses this one so
/// that it answers exactly as virtlockd; [`decode_call`] is the strict form.
pub fn decode_call_lenient(proc_: Procedure, payload: &[u8]) -> Result<Call, DecodeError> {
    decode_one(proc_, &mut Decoder::new(payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_decoding_ignores_what_follows_the_arguments() {
        let mut payload = RestrictArgs { flags: 0 }.to_xdr();
        payload.extend_from_slice(&[0, 0, 0, 9]);
        assert!(decode_call(Procedure::Restrict, &payload).is_err());
        let call = decode_call_lenient(Procedure::Restrict, &payload).expect("lenient");
        assert_eq!(call, Call::Restrict(RestrictArgs { flags: 0 }));
        assert!(
            decode_call_lenient(Procedure::Restrict, &[0, 0]).is_err(),
            "still truncated"
        );
    }

    #[test]
    fn procedure_numbers() {
        assert_eq!(Procedure::from_i32(0), None);
        assert_eq!(Procedure::from_i32(-1), None);
        assert_eq!(Procedure::from_i32(9), None);
        for (i, p) in Procedure::ALL.iter().enumerate() {
            assert_eq!(p.to_i32(), i as i32 + 1);
            assert_eq!(Procedure::from_i32(p.to_i32()), Some(*p));
        }
        assert_eq!(Procedure::CreateLockspace.to_i32(), 8);
    }

    #[test]
    fn decode_call_rejects_trailing_bytes() {
        assert_eq!(
            decode_call(Procedure::Restrict, &[0, 0, 0, 0, 1]),
            Err(DecodeError::TrailingBytes(1))
        );
        assert_eq!(
            decode_call(Procedure::Restrict, &[0, 0, 0, 0]),
            Ok(Call::Restrict(RestrictArgs { flags: 0 }))
        );
    }

    #[test]
    fn call_encodes_to_its_args() {
        let call = Call::AcquireResource(ResourceArgs {
            path: String::new(),
            name: "/d".into(),
            flags: FLAG_SHARED,
        });
        let bytes = call.to_xdr();
        assert_eq!(decode_call(call.procedure(), &bytes), Ok(call));
    }
}
