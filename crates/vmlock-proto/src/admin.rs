//! The admin program 0x06900690 version 1 (spec §11): procedure numbers and the typed
//! parameter type that several admin procedures carry in arrays.
//!
//! ```text
//! admin_typed_param = [field: string<ADMIN_STRING_MAX>][type: int][value]
//!   type 1 INT i32 | 2 UINT u32 | 3 LLONG hyper | 4 ULLONG u-hyper | 5 DOUBLE double
//!        6 BOOLEAN int | 7 STRING string<ADMIN_STRING_MAX>
//! admin_typed_param params<N> = [count u32][param]...
//! ```

use crate::limits::ADMIN_STRING_MAX;
use crate::xdr::{DecodeError, Decoder, Encoder, XdrDecode, XdrEncode};

/// Program number.
pub const PROGRAM: u32 = 0x0690_0690;
/// Program version.
pub const VERSION: u32 = 1;
/// Most entries in a server list.
pub const SERVER_LIST_MAX: usize = 16_384;
/// Most entries in a client list.
pub const CLIENT_LIST_MAX: usize = 16_384;
/// Most threadpool parameters.
pub const THREADPOOL_PARAMETERS_MAX: usize = 32;
/// Most client-info parameters.
pub const CLIENT_INFO_PARAMETERS_MAX: usize = 64;
/// Most client-limit parameters.
pub const CLIENT_LIMITS_MAX: usize = 32;

/// An admin procedure (`admin_procedure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Procedure {
    /// 1
    ConnectOpen = 1,
    /// 2
    ConnectClose,
    /// 3
    ConnectGetLibVersion,
    /// 4
    ConnectListServers,
    /// 5
    ConnectLookupServer,
    /// 6
    ServerGetThreadpoolParameters,
    /// 7
    ServerSetThreadpoolParameters,
    /// 8
    ServerListClients,
    /// 9
    ServerLookupClient,
    /// 10
    ClientGetInfo,
    /// 11
    ClientClose,
    /// 12
    ServerGetClientLimits,
    /// 13
    ServerSetClientLimits,
    /// 14
    ConnectGetLoggingOutputs,
    /// 15
    ConnectGetLoggingFilters,
    /// 16
    ConnectSetLoggingOutputs,
    /// 17
    ConnectSetLoggingFilters,
    /// 18
    ServerUpdateTlsFiles,
    /// 19
    ConnectSetDaemonTimeout,
}

impl Procedure {
    /// Every procedure, in number order.
    pub const ALL: [Procedure; 19] = [
        Self::ConnectOpen,
        Self::ConnectClose,
        Self::ConnectGetLibVersion,
        Self::ConnectListServers,
        Self::ConnectLookupServer,
        Self::ServerGetThreadpoolParameters,
        Self::ServerSetThreadpoolParameters,
        Self::ServerListClients,
        Self::ServerLookupClient,
        Self::ClientGetInfo,
        Self::ClientClose,
        Self::ServerGetClientLimits,
        Self::ServerSetClientLimits,
        Self::ConnectGetLoggingOutputs,
        Self::ConnectGetLoggingFilters,
        Self::ConnectSetLoggingOutputs,
        Self::ConnectSetLoggingFilters,
        Self::ServerUpdateTlsFiles,
        Self::ConnectSetDaemonTimeout,
    ];

    /// The procedure with wire number `n`, if any.
    pub fn from_i32(n: i32) -> Option<Procedure> {
        let idx = usize::try_from(n).ok()?.checked_sub(1)?;
        Self::ALL.get(idx).copied()
    }

    /// The wire number.
    pub fn to_i32(self) -> i32 {
        self as i32
    }
}

/// The value of a typed parameter (`admin_typed_param_value`).
#[derive(Debug, Clone, PartialEq)]
pub enum TypedValue {
    /// 1: `int`.
    Int(i32),
    /// 2: `unsigned int`.
    UInt(u32),
    /// 3: `hyper`.
    LLong(i64),
    /// 4: `unsigned hyper`.
    ULLong(u64),
    /// 5: `double`.
    Double(f64),
    /// 6: boolean, carried as an `int`.
    Boolean(i32),
    /// 7: string.
    String(String),
}

impl TypedValue {
    /// The union discriminant (`VIR_TYPED_PARAM_*`).
    pub fn type_tag(&self) -> i32 {
        match self {
            Self::Int(_) => 1,
            Self::UInt(_) => 2,
            Self::LLong(_) => 3,
            Self::ULLong(_) => 4,
            Self::Double(_) => 5,
            Self::Boolean(_) => 6,
            Self::String(_) => 7,
        }
    }
}

/// A named, typed parameter (`admin_typed_param`).
#[derive(Debug, Clone, PartialEq)]
pub struct TypedParam {
    /// Parameter name, e.g. `"nclients_max"`.
    pub field: String,
    /// Its value.
    pub value: TypedValue,
}

impl XdrEncode for TypedParam {
    fn encode(&self, e: &mut Encoder) {
        e.put_string(&self.field);
        e.put_i32(self.value.type_tag());
        match &self.value {
            TypedValue::Int(v) | TypedValue::Boolean(v) => e.put_i32(*v),
            TypedValue::UInt(v) => e.put_u32(*v),
            TypedValue::LLong(v) => e.put_i64(*v),
            TypedValue::ULLong(v) => e.put_u64(*v),
            TypedValue::Double(v) => e.put_f64(*v),
            TypedValue::String(s) => e.put_string(s),
        }
    }
}

impl XdrDecode for TypedParam {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let field = d.string(ADMIN_STRING_MAX)?;
        let value = match d.i32()? {
            1 => TypedValue::Int(d.i32()?),
            2 => TypedValue::UInt(d.u32()?),
            3 => TypedValue::LLong(d.i64()?),
            4 => TypedValue::ULLong(d.u64()?),
            5 => TypedValue::Double(d.f64()?),
            6 => TypedValue::Boolean(d.i32()?),
            7 => TypedValue::String(d.string(ADMIN_STRING_MAX)?),
            t => return Err(DecodeError::BadDiscriminant(t)),
        };
        Ok(TypedParam { field, value })
    }
}

/// Appends a `admin_typed_param params<N>` array.
pub fn encode_params(params: &[TypedParam], e: &mut Encoder) {
    e.put_u32(params.len() as u32);
    for p in params {
        p.encode(e);
    }
}

/// Reads a typed-parameter array of at most `max` entries. Memory grows only as
/// entries are actually decoded, so a hostile count cannot force a large allocation.
pub fn decode_params(d: &mut Decoder<'_>, max: usize) -> Result<Vec<TypedParam>, DecodeError> {
    let len = usize::try_from(d.u32()?).map_err(|_| DecodeError::Truncated)?;
    if len > max {
        return Err(DecodeError::ArrayTooLong { len, max });
    }
    let mut out = Vec::new();
    for _ in 0..len {
        out.push(TypedParam::decode(d)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procedure_numbers() {
        assert_eq!(
            Procedure::from_i32(19),
            Some(Procedure::ConnectSetDaemonTimeout)
        );
        assert_eq!(Procedure::from_i32(11), Some(Procedure::ClientClose));
        assert_eq!(Procedure::from_i32(20), None);
        assert_eq!(Procedure::from_i32(0), None);
        for p in Procedure::ALL {
            assert_eq!(Procedure::from_i32(p.to_i32()), Some(p));
        }
    }

    #[test]
    fn uint_param_layout() {
        let p = TypedParam {
            field: "nclients".into(),
            value: TypedValue::UInt(3),
        };
        let b = p.to_xdr();
        assert_eq!(b, b"\0\0\0\x08nclients\0\0\0\x02\0\0\0\x03".to_vec());
        assert_eq!(TypedParam::from_xdr(&b), Ok(p));
    }

    #[test]
    fn bad_type_tag_rejected() {
        assert_eq!(
            TypedParam::from_xdr(b"\0\0\0\x01a\0\0\0\0\0\0\x08\0\0\0\0"),
            Err(DecodeError::BadDiscriminant(8))
        );
    }

    #[test]
    fn param_array_bounds() {
        let params = vec![
            TypedParam {
                field: "a".into(),
                value: TypedValue::String("x".into()),
            },
            TypedParam {
                field: "b".into(),
                value: TypedValue::LLong(-1),
            },
        ];
        let mut e = Encoder::new();
        encode_params(&params, &mut e);
        let b = e.into_vec();
        assert_eq!(decode_params(&mut Decoder::new(&b), 2), Ok(params));
        assert_eq!(
            decode_params(&mut Decoder::new(&b), 1),
            Err(DecodeError::ArrayTooLong { len: 2, max: 1 })
        );
        let hostile = [0, 0, 0, 32];
        assert_eq!(
            decode_params(&mut Decoder::new(&hostile), 32),
            Err(DecodeError::Truncated)
        );
    }
}
