//! The vmlock inquiry program (ours, not libvirt's): what the daemon holds,
//! and forced release. Served on the admin socket beside libvirt's admin
//! program, under a program number of its own, so `virt-admin` sees
//! exactly what it sees with virtlockd. Documented in `docs/inquiry.md`.
//!
//! ```text
//! program 0x766d6c6b ("vmlk"), version 1
//!
//! str?  = [0] | [1][string<LOCK_STRING_MAX>]
//! u32?  = [0] | [1][u32]
//! uuid? = [0] | [1][opaque[16]]
//! param = admin_typed_param (see crate::admin)
//! row   = [lockspace str][name str][path str][shared bool]
//!         [owner_known bool][owner_name str][owner_uuid opaque[16]][owner_id u32]
//!         [pid u32][since hyper (s since the epoch, 0 unknown)][host str]
//!
//! proc name     args                                          ret
//!  1   STATUS   flags                                         param<STATUS_PARAMS_MAX>
//!  2   LIST     lockspace str? path str? owner_name str?       row<LIST_MAX> total u32
//!               owner_uuid uuid? pid u32? flags
//!  3   RELEASE  lockspace str name str pid u32 flags           released u32 terminated u32
//!               (pid 0: every owner; flags: RELEASE_TERMINATE)
//! ```
//!
//! Calls decode leniently (trailing bytes ignored), as the other programs'
//! calls do; replies decode strictly.

use crate::admin::{TypedParam, decode_params, encode_params};
use crate::limits::LOCK_STRING_MAX;
use crate::xdr::{DecodeError, Decoder, Encoder, XdrDecode, XdrEncode};

/// Program number: `"vmlk"` in ASCII, far from libvirt's numbers.
pub const PROGRAM: u32 = 0x766d_6c6b;
/// Program version.
pub const VERSION: u32 = 1;
/// Most parameters in a STATUS reply.
pub const STATUS_PARAMS_MAX: usize = 256;
/// Most rows in a LIST reply (`total` says how many matched).
pub const LIST_MAX: usize = 1 << 20;
/// RELEASE flag: terminate a live holder first (through its pidfd) and
/// release only after it exited.
pub const RELEASE_TERMINATE: u32 = 1;

/// An inquiry procedure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Procedure {
    /// 1: daemon status.
    Status = 1,
    /// 2: held locks.
    List,
    /// 3: forced release.
    Release,
}

impl Procedure {
    /// Every procedure, in number order.
    pub const ALL: [Procedure; 3] = [Self::Status, Self::List, Self::Release];

    /// The procedure with wire number `n`, if any.
    pub fn from_i32(n: i32) -> Option<Procedure> {
        let idx = usize::try_from(n).ok()?.checked_sub(1)?;
        Self::ALL.get(idx).copied()
    }

    /// The wire number.
    pub fn to_i32(self) -> i32 {
        self as i32
    }

    /// The name used in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Status => "STATUS",
            Self::List => "LIST",
            Self::Release => "RELEASE",
        }
    }
}

/// LIST filters; every present one must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// The lockspace directory (`""`: the default lockspace).
    pub lockspace: Option<String>,
    /// A resource path: the lease file path, or a name under which the
    /// resource is held.
    pub path: Option<String>,
    /// The owner's (domain's) name.
    pub owner_name: Option<String>,
    /// The owner's UUID.
    pub owner_uuid: Option<[u8; 16]>,
    /// The owner pid.
    pub pid: Option<u32>,
}

/// The decoded arguments of an inquiry call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// 1 STATUS.
    Status {
        /// Must be 0.
        flags: u32,
    },
    /// 2 LIST.
    List {
        /// What to list.
        filter: ListFilter,
        /// Must be 0.
        flags: u32,
    },
    /// 3 RELEASE.
    Release {
        /// The lockspace (`""`: default).
        lockspace: String,
        /// The resource name (in the default lockspace: the disk path).
        name: String,
        /// The owner whose lock goes; 0: every owner of the resource.
        pid: u32,
        /// 0 or [`RELEASE_TERMINATE`].
        flags: u32,
    },
}

impl Call {
    /// The procedure this call is for.
    pub fn procedure(&self) -> Procedure {
        match self {
            Self::Status { .. } => Procedure::Status,
            Self::List { .. } => Procedure::List,
            Self::Release { .. } => Procedure::Release,
        }
    }
}

fn put_opt_u32(e: &mut Encoder, v: Option<u32>) {
    e.put_bool(v.is_some());
    if let Some(v) = v {
        e.put_u32(v);
    }
}

fn put_opt_uuid(e: &mut Encoder, v: Option<&[u8; 16]>) {
    e.put_bool(v.is_some());
    if let Some(v) = v {
        e.put_fixed_opaque(v);
    }
}

impl XdrEncode for Call {
    fn encode(&self, e: &mut Encoder) {
        match self {
            Self::Status { flags } => e.put_u32(*flags),
            Self::List { filter, flags } => {
                e.put_opt_string(filter.lockspace.as_deref());
                e.put_opt_string(filter.path.as_deref());
                e.put_opt_string(filter.owner_name.as_deref());
                put_opt_uuid(e, filter.owner_uuid.as_ref());
                put_opt_u32(e, filter.pid);
                e.put_u32(*flags);
            }
            Self::Release {
                lockspace,
                name,
                pid,
                flags,
            } => {
                e.put_string(lockspace);
                e.put_string(name);
                e.put_u32(*pid);
                e.put_u32(*flags);
            }
        }
    }
}

/// Decodes the payload of a call to `p`; bytes after the arguments are
/// ignored, as for the other programs.
pub fn decode_call(p: Procedure, payload: &[u8]) -> Result<Call, DecodeError> {
    let d = &mut Decoder::new(payload);
    Ok(match p {
        Procedure::Status => Call::Status { flags: d.u32()? },
        Procedure::List => {
            let filter = ListFilter {
                lockspace: d.opt_string(LOCK_STRING_MAX)?,
                path: d.opt_string(LOCK_STRING_MAX)?,
                owner_name: d.opt_string(LOCK_STRING_MAX)?,
                owner_uuid: if d.present()? {
                    Some(d.fixed_opaque::<16>()?)
                } else {
                    None
                },
                pid: if d.present()? { Some(d.u32()?) } else { None },
            };
            Call::List {
                filter,
                flags: d.u32()?,
            }
        }
        Procedure::Release => Call::Release {
            lockspace: d.string(LOCK_STRING_MAX)?,
            name: d.string(LOCK_STRING_MAX)?,
            pid: d.u32()?,
            flags: d.u32()?,
        },
    })
}

/// One held lock, one owner: a LIST row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockRow {
    /// The lockspace (`""`: default).
    pub lockspace: String,
    /// The resource name (the disk path in the default lockspace).
    pub name: String,
    /// The lease file's path.
    pub path: String,
    /// Shared or exclusive.
    pub shared: bool,
    /// Whether the owner fields are known (the owner registered with this
    /// daemon, or before its last re-exec).
    pub owner_known: bool,
    /// The owner's (domain's) name.
    pub owner_name: String,
    /// The owner's UUID.
    pub owner_uuid: [u8; 16],
    /// The owner's (domain's) id.
    pub owner_id: u32,
    /// The owner pid.
    pub pid: u32,
    /// When this owner acquired the lock, seconds since the epoch; 0 if
    /// unknown (locks carried over a re-exec).
    pub since: i64,
    /// The host holding it (etcd back end), else empty.
    pub host: String,
}

/// Fewest bytes a row takes: four empty strings, two bools, a UUID, two
/// u32, a hyper and an empty string.
const ROW_WIRE_MIN: usize = 4 * 3 + 4 + 4 + 4 + 16 + 4 + 4 + 8 + 4;

impl XdrEncode for LockRow {
    fn encode(&self, e: &mut Encoder) {
        e.put_string(&self.lockspace);
        e.put_string(&self.name);
        e.put_string(&self.path);
        e.put_bool(self.shared);
        e.put_bool(self.owner_known);
        e.put_string(&self.owner_name);
        e.put_fixed_opaque(&self.owner_uuid);
        e.put_u32(self.owner_id);
        e.put_u32(self.pid);
        e.put_i64(self.since);
        e.put_string(&self.host);
    }
}

impl XdrDecode for LockRow {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(LockRow {
            lockspace: d.string(LOCK_STRING_MAX)?,
            name: d.string(LOCK_STRING_MAX)?,
            path: d.string(LOCK_STRING_MAX)?,
            shared: d.bool()?,
            owner_known: d.bool()?,
            owner_name: d.string(LOCK_STRING_MAX)?,
            owner_uuid: d.fixed_opaque::<16>()?,
            owner_id: d.u32()?,
            pid: d.u32()?,
            since: d.i64()?,
            host: d.string(LOCK_STRING_MAX)?,
        })
    }
}

/// The decoded result of a successful inquiry call.
#[derive(Debug, Clone, PartialEq)]
pub enum Ret {
    /// 1 STATUS: named values (see `docs/inquiry.md` for the names).
    Status(Vec<TypedParam>),
    /// 2 LIST.
    List {
        /// The rows sent (at most [`LIST_MAX`], and fewer if the reply would
        /// not fit in one message).
        rows: Vec<LockRow>,
        /// How many rows matched.
        total: u32,
    },
    /// 3 RELEASE.
    Release {
        /// Owner occurrences released.
        released: u32,
        /// Holder processes terminated first.
        terminated: u32,
    },
}

impl XdrEncode for Ret {
    fn encode(&self, e: &mut Encoder) {
        match self {
            Self::Status(params) => encode_params(params, e),
            Self::List { rows, total } => {
                e.put_u32(rows.len() as u32);
                for r in rows {
                    r.encode(e);
                }
                e.put_u32(*total);
            }
            Self::Release {
                released,
                terminated,
            } => {
                e.put_u32(*released);
                e.put_u32(*terminated);
            }
        }
    }
}

impl Ret {
    /// Decodes the reply payload of a call to `p`; trailing bytes are an error.
    pub fn decode(p: Procedure, payload: &[u8]) -> Result<Ret, DecodeError> {
        let d = &mut Decoder::new(payload);
        let ret = match p {
            Procedure::Status => Ret::Status(decode_params(d, STATUS_PARAMS_MAX)?),
            Procedure::List => {
                let len = usize::try_from(d.u32()?).map_err(|_| DecodeError::Truncated)?;
                if len > LIST_MAX {
                    return Err(DecodeError::ArrayTooLong { len, max: LIST_MAX });
                }
                if len.saturating_mul(ROW_WIRE_MIN) > d.remaining() {
                    return Err(DecodeError::Truncated);
                }
                let mut rows = Vec::with_capacity(len);
                for _ in 0..len {
                    rows.push(LockRow::decode(d)?);
                }
                Ret::List {
                    rows,
                    total: d.u32()?,
                }
            }
            Procedure::Release => Ret::Release {
                released: d.u32()?,
                terminated: d.u32()?,
            },
        };
        d.finish()?;
        Ok(ret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::TypedValue;

    #[test]
    fn procedure_numbers() {
        assert_eq!(Procedure::from_i32(0), None);
        assert_eq!(Procedure::from_i32(4), None);
        assert_eq!(Procedure::from_i32(-1), None);
        for p in Procedure::ALL {
            assert_eq!(Procedure::from_i32(p.to_i32()), Some(p));
        }
        assert_ne!(PROGRAM, crate::admin::PROGRAM);
        assert_ne!(PROGRAM, crate::lock::PROGRAM);
        assert_eq!(&PROGRAM.to_be_bytes(), b"vmlk");
    }

    fn every_call() -> Vec<Call> {
        vec![
            Call::Status { flags: 0 },
            Call::List {
                filter: ListFilter::default(),
                flags: 0,
            },
            Call::List {
                filter: ListFilter {
                    lockspace: Some(String::new()),
                    path: Some("/var/lib/libvirt/images/a.qcow2".into()),
                    owner_name: Some("web1".into()),
                    owner_uuid: Some([7; 16]),
                    pid: Some(4242),
                },
                flags: 5,
            },
            Call::Release {
                lockspace: "/var/lib/libvirt/lockd/files".into(),
                name: "abc".into(),
                pid: 0,
                flags: RELEASE_TERMINATE,
            },
        ]
    }

    #[test]
    fn calls_round_trip_and_ignore_trailing_bytes() {
        for c in every_call() {
            let mut b = c.to_xdr();
            assert_eq!(decode_call(c.procedure(), &b), Ok(c.clone()));
            b.extend_from_slice(&[0, 0, 0, 9]);
            assert_eq!(decode_call(c.procedure(), &b), Ok(c.clone()));
            // Every strict prefix is too short.
            let exact = c.to_xdr();
            for n in 0..exact.len() {
                assert!(
                    decode_call(c.procedure(), &exact[..n]).is_err(),
                    "{c:?} {n}"
                );
            }
        }
    }

    #[test]
    fn list_call_layout() {
        let c = Call::List {
            filter: ListFilter {
                pid: Some(3),
                ..ListFilter::default()
            },
            flags: 0,
        };
        assert_eq!(
            c.to_xdr(),
            [
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0, 0
            ]
        );
    }

    fn row() -> LockRow {
        LockRow {
            lockspace: String::new(),
            name: "/d/a.img".into(),
            path: "/d/a.img".into(),
            shared: false,
            owner_known: true,
            owner_name: "web1".into(),
            owner_uuid: [0xab; 16],
            owner_id: 3,
            pid: 4242,
            since: 1_700_000_000,
            host: "hv3".into(),
        }
    }

    #[test]
    fn replies_round_trip() {
        let rets = [
            (
                Procedure::Status,
                Ret::Status(vec![TypedParam {
                    field: "pid".into(),
                    value: TypedValue::LLong(7),
                }]),
            ),
            (
                Procedure::List,
                Ret::List {
                    rows: vec![row(), LockRow::default()],
                    total: 3,
                },
            ),
            (
                Procedure::Release,
                Ret::Release {
                    released: 1,
                    terminated: 1,
                },
            ),
        ];
        for (p, r) in rets {
            let b = r.to_xdr();
            assert_eq!(Ret::decode(p, &b), Ok(r.clone()));
            let mut longer = b.clone();
            longer.push(0);
            assert!(Ret::decode(p, &longer).is_err());
        }
        assert_eq!(LockRow::default().to_xdr().len(), ROW_WIRE_MIN);
    }

    #[test]
    fn hostile_row_count_allocates_nothing() {
        assert_eq!(
            Ret::decode(Procedure::List, &[0, 0, 0, 200, 0, 0, 0, 0]),
            Err(DecodeError::Truncated)
        );
        assert!(matches!(
            Ret::decode(Procedure::List, &[0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::ArrayTooLong { .. })
        ));
    }
}
