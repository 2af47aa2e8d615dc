//! The admin program 0x06900690 version 1 (docs/protocol.md §11): procedure numbers, the typed
//! parameter type several admin procedures carry in arrays, and the codec of every
//! procedure's arguments ([`Call`]) and results ([`Ret`]).
//!
//! ```text
//! admin_typed_param = [field: string<ADMIN_STRING_MAX>][type: int][value]
//!   type 1 INT i32 | 2 UINT u32 | 3 LLONG hyper | 4 ULLONG u-hyper | 5 DOUBLE double
//!        6 BOOLEAN int | 7 STRING string<ADMIN_STRING_MAX>
//! admin_typed_param params<N> = [count u32][param]...
//! srv  = admin_nonnull_server = [name: string<ADMIN_STRING_MAX>]
//! clnt = admin_nonnull_client = [srv][id u-hyper][timestamp hyper][transport u32]
//! str? = admin_string         = [0] | [1][string<ADMIN_STRING_MAX>]
//!
//! proc name                              args                     ret
//!  1   CONNECT_OPEN                      flags                    void
//!  2   CONNECT_CLOSE                     void                     void
//!  3   CONNECT_GET_LIB_VERSION           void                     libVer u-hyper
//!  4   CONNECT_LIST_SERVERS              need_results flags       srv<16384> ret
//!  5   CONNECT_LOOKUP_SERVER             name flags               srv
//!  6   SERVER_GET_THREADPOOL_PARAMETERS  srv flags                params<32>
//!  7   SERVER_SET_THREADPOOL_PARAMETERS  srv params<32> flags     void
//!  8   SERVER_LIST_CLIENTS               srv need_results flags   clnt<16384> ret
//!  9   SERVER_LOOKUP_CLIENT              srv id(u-hyper) flags    clnt
//! 10   CLIENT_GET_INFO                   clnt flags               params<64>
//! 11   CLIENT_CLOSE                      clnt flags               void
//! 12   SERVER_GET_CLIENT_LIMITS          srv flags                params<32>
//! 13   SERVER_SET_CLIENT_LIMITS          srv params<32> flags     void
//! 14   CONNECT_GET_LOGGING_OUTPUTS       flags                    outputs(string) noutputs
//! 15   CONNECT_GET_LOGGING_FILTERS       flags                    filters(str?) nfilters
//! 16   CONNECT_SET_LOGGING_OUTPUTS       outputs(str?) flags      void
//! 17   CONNECT_SET_LOGGING_FILTERS       filters(str?) flags      void
//! 18   SERVER_UPDATE_TLS_FILES           srv flags                void
//! 19   CONNECT_SET_DAEMON_TIMEOUT        timeout flags            void
//! ```
//!
//! Arguments are decoded the way libvirt's server decodes them: bytes after the
//! arguments are ignored (as [`crate::lock::decode_call_lenient`] does). Array counts
//! are checked against the type's bound and against the bytes left before anything is
//! allocated.

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

/// Fewest bytes one [`ServerRef`] takes on the wire (an empty name).
const SERVER_WIRE_MIN: usize = 4;
/// Fewest bytes one [`ClientRef`] takes on the wire (empty server name, id, timestamp,
/// transport).
const CLIENT_WIRE_MIN: usize = SERVER_WIRE_MIN + 8 + 8 + 4;

/// Appends an array count. Lengths above `u32::MAX` cannot be represented; callers keep
/// to the protocol bounds, which are far below it.
fn put_count(e: &mut Encoder, len: usize) {
    debug_assert!(u32::try_from(len).is_ok());
    e.put_u32(len as u32);
}

/// Reads a variable-length array of at most `max` elements, each taking at least
/// `wire_min` bytes. The count is checked against `max` and against the bytes left
/// before any memory is reserved, so a hostile count allocates nothing.
fn decode_array<T>(
    d: &mut Decoder<'_>,
    max: usize,
    wire_min: usize,
    mut item: impl FnMut(&mut Decoder<'_>) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    let len = usize::try_from(d.u32()?).map_err(|_| DecodeError::Truncated)?;
    if len > max {
        return Err(DecodeError::ArrayTooLong { len, max });
    }
    if len.saturating_mul(wire_min) > d.remaining() {
        return Err(DecodeError::Truncated);
    }
    let mut out = Vec::with_capacity(len);
    for _ in 0..len {
        out.push(item(d)?);
    }
    Ok(out)
}

/// A server of the daemon, by name (`admin_nonnull_server`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRef {
    /// Server name, e.g. `"virtlockd"` or `"admin"`.
    pub name: String,
}

impl XdrEncode for ServerRef {
    fn encode(&self, e: &mut Encoder) {
        e.put_string(&self.name);
    }
}

impl XdrDecode for ServerRef {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(ServerRef {
            name: d.string(ADMIN_STRING_MAX)?,
        })
    }
}

/// A client connection of a server (`admin_nonnull_client`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRef {
    /// The server the client is connected to.
    pub srv: ServerRef,
    /// The client's id, unique within the server (`unsigned hyper`).
    pub id: u64,
    /// Connection time in seconds since the epoch (`hyper`, signed).
    pub timestamp: i64,
    /// `virClientTransport`: 0 UNIX socket, 1 TCP, 2 TLS.
    pub transport: u32,
}

impl XdrEncode for ClientRef {
    fn encode(&self, e: &mut Encoder) {
        self.srv.encode(e);
        e.put_u64(self.id);
        e.put_i64(self.timestamp);
        e.put_u32(self.transport);
    }
}

impl XdrDecode for ClientRef {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(ClientRef {
            srv: ServerRef::decode(d)?,
            id: d.u64()?,
            timestamp: d.i64()?,
            transport: d.u32()?,
        })
    }
}

/// The decoded arguments of an admin call, one variant per procedure.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// 1 CONNECT_OPEN.
    ConnectOpen {
        /// Must be 0.
        flags: u32,
    },
    /// 2 CONNECT_CLOSE (no arguments).
    ConnectClose,
    /// 3 CONNECT_GET_LIB_VERSION (no arguments).
    ConnectGetLibVersion,
    /// 4 CONNECT_LIST_SERVERS.
    ConnectListServers {
        /// Nonzero if the server list is wanted, 0 for the count only.
        need_results: u32,
        /// Must be 0.
        flags: u32,
    },
    /// 5 CONNECT_LOOKUP_SERVER.
    ConnectLookupServer {
        /// The server name.
        name: String,
        /// Must be 0.
        flags: u32,
    },
    /// 6 SERVER_GET_THREADPOOL_PARAMETERS.
    ServerGetThreadpoolParameters {
        /// The server.
        srv: ServerRef,
        /// Must be 0.
        flags: u32,
    },
    /// 7 SERVER_SET_THREADPOOL_PARAMETERS.
    ServerSetThreadpoolParameters {
        /// The server.
        srv: ServerRef,
        /// At most [`THREADPOOL_PARAMETERS_MAX`] parameters.
        params: Vec<TypedParam>,
        /// Must be 0.
        flags: u32,
    },
    /// 8 SERVER_LIST_CLIENTS.
    ServerListClients {
        /// The server.
        srv: ServerRef,
        /// Nonzero if the client list is wanted, 0 for the count only.
        need_results: u32,
        /// Must be 0.
        flags: u32,
    },
    /// 9 SERVER_LOOKUP_CLIENT.
    ServerLookupClient {
        /// The server.
        srv: ServerRef,
        /// The client id.
        id: u64,
        /// Must be 0.
        flags: u32,
    },
    /// 10 CLIENT_GET_INFO.
    ClientGetInfo {
        /// The client.
        clnt: ClientRef,
        /// Must be 0.
        flags: u32,
    },
    /// 11 CLIENT_CLOSE.
    ClientClose {
        /// The client.
        clnt: ClientRef,
        /// Must be 0.
        flags: u32,
    },
    /// 12 SERVER_GET_CLIENT_LIMITS.
    ServerGetClientLimits {
        /// The server.
        srv: ServerRef,
        /// Must be 0.
        flags: u32,
    },
    /// 13 SERVER_SET_CLIENT_LIMITS.
    ServerSetClientLimits {
        /// The server.
        srv: ServerRef,
        /// At most [`CLIENT_LIMITS_MAX`] parameters.
        params: Vec<TypedParam>,
        /// Must be 0.
        flags: u32,
    },
    /// 14 CONNECT_GET_LOGGING_OUTPUTS.
    ConnectGetLoggingOutputs {
        /// Must be 0.
        flags: u32,
    },
    /// 15 CONNECT_GET_LOGGING_FILTERS.
    ConnectGetLoggingFilters {
        /// Must be 0.
        flags: u32,
    },
    /// 16 CONNECT_SET_LOGGING_OUTPUTS.
    ConnectSetLoggingOutputs {
        /// The new outputs; `None` (or empty) restores the default.
        outputs: Option<String>,
        /// Must be 0.
        flags: u32,
    },
    /// 17 CONNECT_SET_LOGGING_FILTERS.
    ConnectSetLoggingFilters {
        /// The new filters; `None` (or empty) removes all filters.
        filters: Option<String>,
        /// Must be 0.
        flags: u32,
    },
    /// 18 SERVER_UPDATE_TLS_FILES.
    ServerUpdateTlsFiles {
        /// The server.
        srv: ServerRef,
        /// Must be 0.
        flags: u32,
    },
    /// 19 CONNECT_SET_DAEMON_TIMEOUT.
    ConnectSetDaemonTimeout {
        /// Idle timeout in seconds; 0 disables it.
        timeout: u32,
        /// Must be 0.
        flags: u32,
    },
}

impl Call {
    /// The procedure this call is for.
    pub fn procedure(&self) -> Procedure {
        match self {
            Self::ConnectOpen { .. } => Procedure::ConnectOpen,
            Self::ConnectClose => Procedure::ConnectClose,
            Self::ConnectGetLibVersion => Procedure::ConnectGetLibVersion,
            Self::ConnectListServers { .. } => Procedure::ConnectListServers,
            Self::ConnectLookupServer { .. } => Procedure::ConnectLookupServer,
            Self::ServerGetThreadpoolParameters { .. } => Procedure::ServerGetThreadpoolParameters,
            Self::ServerSetThreadpoolParameters { .. } => Procedure::ServerSetThreadpoolParameters,
            Self::ServerListClients { .. } => Procedure::ServerListClients,
            Self::ServerLookupClient { .. } => Procedure::ServerLookupClient,
            Self::ClientGetInfo { .. } => Procedure::ClientGetInfo,
            Self::ClientClose { .. } => Procedure::ClientClose,
            Self::ServerGetClientLimits { .. } => Procedure::ServerGetClientLimits,
            Self::ServerSetClientLimits { .. } => Procedure::ServerSetClientLimits,
            Self::ConnectGetLoggingOutputs { .. } => Procedure::ConnectGetLoggingOutputs,
            Self::ConnectGetLoggingFilters { .. } => Procedure::ConnectGetLoggingFilters,
            Self::ConnectSetLoggingOutputs { .. } => Procedure::ConnectSetLoggingOutputs,
            Self::ConnectSetLoggingFilters { .. } => Procedure::ConnectSetLoggingFilters,
            Self::ServerUpdateTlsFiles { .. } => Procedure::ServerUpdateTlsFiles,
            Self::ConnectSetDaemonTimeout { .. } => Procedure::ConnectSetDaemonTimeout,
        }
    }

    /// Appends the arguments (the payload of the call frame, without header).
    pub fn encode(&self, e: &mut Encoder) {
        match self {
            Self::ConnectClose | Self::ConnectGetLibVersion => {}
            Self::ConnectOpen { flags }
            | Self::ConnectGetLoggingOutputs { flags }
            | Self::ConnectGetLoggingFilters { flags } => e.put_u32(*flags),
            Self::ConnectListServers {
                need_results,
                flags,
            } => {
                e.put_u32(*need_results);
                e.put_u32(*flags);
            }
            Self::ConnectLookupServer { name, flags } => {
                e.put_string(name);
                e.put_u32(*flags);
            }
            Self::ServerGetThreadpoolParameters { srv, flags }
            | Self::ServerGetClientLimits { srv, flags }
            | Self::ServerUpdateTlsFiles { srv, flags } => {
                srv.encode(e);
                e.put_u32(*flags);
            }
            Self::ServerSetThreadpoolParameters { srv, params, flags }
            | Self::ServerSetClientLimits { srv, params, flags } => {
                srv.encode(e);
                encode_params(params, e);
                e.put_u32(*flags);
            }
            Self::ServerListClients {
                srv,
                need_results,
                flags,
            } => {
                srv.encode(e);
                e.put_u32(*need_results);
                e.put_u32(*flags);
            }
            Self::ServerLookupClient { srv, id, flags } => {
                srv.encode(e);
                e.put_u64(*id);
                e.put_u32(*flags);
            }
            Self::ClientGetInfo { clnt, flags } | Self::ClientClose { clnt, flags } => {
                clnt.encode(e);
                e.put_u32(*flags);
            }
            Self::ConnectSetLoggingOutputs { outputs: s, flags }
            | Self::ConnectSetLoggingFilters { filters: s, flags } => {
                e.put_opt_string(s.as_deref());
                e.put_u32(*flags);
            }
            Self::ConnectSetDaemonTimeout { timeout, flags } => {
                e.put_u32(*timeout);
                e.put_u32(*flags);
            }
        }
    }
}

/// Encodes the arguments only, as [`Call::encode`].
impl XdrEncode for Call {
    fn encode(&self, e: &mut Encoder) {
        Call::encode(self, e);
    }
}

/// Reads the arguments of `p`, leaving the decoder after them.
fn decode_args(p: Procedure, d: &mut Decoder<'_>) -> Result<Call, DecodeError> {
    use Procedure as P;
    Ok(match p {
        P::ConnectOpen => Call::ConnectOpen { flags: d.u32()? },
        P::ConnectClose => Call::ConnectClose,
        P::ConnectGetLibVersion => Call::ConnectGetLibVersion,
        P::ConnectListServers => Call::ConnectListServers {
            need_results: d.u32()?,
            flags: d.u32()?,
        },
        P::ConnectLookupServer => Call::ConnectLookupServer {
            name: d.string(ADMIN_STRING_MAX)?,
            flags: d.u32()?,
        },
        P::ServerGetThreadpoolParameters => Call::ServerGetThreadpoolParameters {
            srv: ServerRef::decode(d)?,
            flags: d.u32()?,
        },
        P::ServerSetThreadpoolParameters => Call::ServerSetThreadpoolParameters {
            srv: ServerRef::decode(d)?,
            params: decode_params(d, THREADPOOL_PARAMETERS_MAX)?,
            flags: d.u32()?,
        },
        P::ServerListClients => Call::ServerListClients {
            srv: ServerRef::decode(d)?,
            need_results: d.u32()?,
            flags: d.u32()?,
        },
        P::ServerLookupClient => Call::ServerLookupClient {
            srv: ServerRef::decode(d)?,
            id: d.u64()?,
            flags: d.u32()?,
        },
        P::ClientGetInfo => Call::ClientGetInfo {
            clnt: ClientRef::decode(d)?,
            flags: d.u32()?,
        },
        P::ClientClose => Call::ClientClose {
            clnt: ClientRef::decode(d)?,
            flags: d.u32()?,
        },
        P::ServerGetClientLimits => Call::ServerGetClientLimits {
            srv: ServerRef::decode(d)?,
            flags: d.u32()?,
        },
        P::ServerSetClientLimits => Call::ServerSetClientLimits {
            srv: ServerRef::decode(d)?,
            params: decode_params(d, CLIENT_LIMITS_MAX)?,
            flags: d.u32()?,
        },
        P::ConnectGetLoggingOutputs => Call::ConnectGetLoggingOutputs { flags: d.u32()? },
        P::ConnectGetLoggingFilters => Call::ConnectGetLoggingFilters { flags: d.u32()? },
        P::ConnectSetLoggingOutputs => Call::ConnectSetLoggingOutputs {
            outputs: d.opt_string(ADMIN_STRING_MAX)?,
            flags: d.u32()?,
        },
        P::ConnectSetLoggingFilters => Call::ConnectSetLoggingFilters {
            filters: d.opt_string(ADMIN_STRING_MAX)?,
            flags: d.u32()?,
        },
        P::ServerUpdateTlsFiles => Call::ServerUpdateTlsFiles {
            srv: ServerRef::decode(d)?,
            flags: d.u32()?,
        },
        P::ConnectSetDaemonTimeout => Call::ConnectSetDaemonTimeout {
            timeout: d.u32()?,
            flags: d.u32()?,
        },
    })
}

/// Decodes the payload of a call to `p` the way libvirt's server does: bytes after
/// the arguments are ignored, exactly as
/// [`lock::decode_call_lenient`](crate::lock::decode_call_lenient) does for the
/// lock program (libvirt's XDR decoding never checks that the payload was consumed).
/// Strings and arrays are bounded by the protocol's limits. Any error is answered with
/// [`WireError::payload_decode`](crate::error::WireError::payload_decode).
pub fn decode_call(p: Procedure, payload: &[u8]) -> Result<Call, DecodeError> {
    decode_args(p, &mut Decoder::new(payload))
}

/// The decoded result of a successful admin call. The shape depends on the procedure;
/// see [`Ret::decode`].
#[derive(Debug, Clone, PartialEq)]
pub enum Ret {
    /// `void`: procedures 1, 2, 7, 11, 13, 16, 17, 18, 19.
    Void,
    /// 3 CONNECT_GET_LIB_VERSION: `libVer` (major * 1000000 + minor * 1000 + micro).
    LibVersion(u64),
    /// 4 CONNECT_LIST_SERVERS.
    Servers {
        /// At most [`SERVER_LIST_MAX`] servers; empty if `need_results` was 0.
        servers: Vec<ServerRef>,
        /// The number of servers.
        ret: u32,
    },
    /// 5 CONNECT_LOOKUP_SERVER.
    Server(ServerRef),
    /// 6 SERVER_GET_THREADPOOL_PARAMETERS (at most [`THREADPOOL_PARAMETERS_MAX`]),
    /// 10 CLIENT_GET_INFO (at most [`CLIENT_INFO_PARAMETERS_MAX`]),
    /// 12 SERVER_GET_CLIENT_LIMITS (at most [`CLIENT_LIMITS_MAX`]).
    Params(Vec<TypedParam>),
    /// 8 SERVER_LIST_CLIENTS.
    Clients {
        /// At most [`CLIENT_LIST_MAX`] clients; empty if `need_results` was 0.
        clients: Vec<ClientRef>,
        /// The number of clients.
        ret: u32,
    },
    /// 9 SERVER_LOOKUP_CLIENT.
    Client(ClientRef),
    /// 14 CONNECT_GET_LOGGING_OUTPUTS.
    LoggingOutputs {
        /// The outputs, space separated (never absent on the wire).
        outputs: String,
        /// The number of outputs.
        noutputs: u32,
    },
    /// 15 CONNECT_GET_LOGGING_FILTERS.
    LoggingFilters {
        /// The filters, space separated; `None` when there are none.
        filters: Option<String>,
        /// The number of filters.
        nfilters: u32,
    },
}

impl Ret {
    /// Appends the result (the payload of the reply frame, without header).
    pub fn encode(&self, e: &mut Encoder) {
        match self {
            Self::Void => {}
            Self::LibVersion(v) => e.put_u64(*v),
            Self::Servers { servers, ret } => {
                put_count(e, servers.len());
                for s in servers {
                    s.encode(e);
                }
                e.put_u32(*ret);
            }
            Self::Server(s) => s.encode(e),
            Self::Params(params) => encode_params(params, e),
            Self::Clients { clients, ret } => {
                put_count(e, clients.len());
                for c in clients {
                    c.encode(e);
                }
                e.put_u32(*ret);
            }
            Self::Client(c) => c.encode(e),
            Self::LoggingOutputs { outputs, noutputs } => {
                e.put_string(outputs);
                e.put_u32(*noutputs);
            }
            Self::LoggingFilters { filters, nfilters } => {
                e.put_opt_string(filters.as_deref());
                e.put_u32(*nfilters);
            }
        }
    }

    /// Decodes the reply payload of a call to `p`; the procedure chooses the shape.
    ///
    /// Unlike [`decode_call`], trailing bytes are an error
    /// ([`DecodeError::TrailingBytes`]): this is what test clients use to check the
    /// daemon's replies, which must be exact.
    pub fn decode(p: Procedure, payload: &[u8]) -> Result<Ret, DecodeError> {
        let mut d = Decoder::new(payload);
        let ret = decode_ret(p, &mut d)?;
        d.finish()?;
        Ok(ret)
    }
}

/// Encodes the result only, as [`Ret::encode`] (so a `Ret` can be passed to
/// [`encode_message`](crate::frame::encode_message)).
impl XdrEncode for Ret {
    fn encode(&self, e: &mut Encoder) {
        Ret::encode(self, e);
    }
}

/// Reads the result of `p`, leaving the decoder after it.
fn decode_ret(p: Procedure, d: &mut Decoder<'_>) -> Result<Ret, DecodeError> {
    use Procedure as P;
    Ok(match p {
        P::ConnectOpen
        | P::ConnectClose
        | P::ServerSetThreadpoolParameters
        | P::ClientClose
        | P::ServerSetClientLimits
        | P::ConnectSetLoggingOutputs
        | P::ConnectSetLoggingFilters
        | P::ServerUpdateTlsFiles
        | P::ConnectSetDaemonTimeout => Ret::Void,
        P::ConnectGetLibVersion => Ret::LibVersion(d.u64()?),
        P::ConnectListServers => Ret::Servers {
            servers: decode_array(d, SERVER_LIST_MAX, SERVER_WIRE_MIN, ServerRef::decode)?,
            ret: d.u32()?,
        },
        P::ConnectLookupServer => Ret::Server(ServerRef::decode(d)?),
        P::ServerGetThreadpoolParameters => {
            Ret::Params(decode_params(d, THREADPOOL_PARAMETERS_MAX)?)
        }
        P::ServerListClients => Ret::Clients {
            clients: decode_array(d, CLIENT_LIST_MAX, CLIENT_WIRE_MIN, ClientRef::decode)?,
            ret: d.u32()?,
        },
        P::ServerLookupClient => Ret::Client(ClientRef::decode(d)?),
        P::ClientGetInfo => Ret::Params(decode_params(d, CLIENT_INFO_PARAMETERS_MAX)?),
        P::ServerGetClientLimits => Ret::Params(decode_params(d, CLIENT_LIMITS_MAX)?),
        P::ConnectGetLoggingOutputs => Ret::LoggingOutputs {
            outputs: d.string(ADMIN_STRING_MAX)?,
            noutputs: d.u32()?,
        },
        P::ConnectGetLoggingFilters => Ret::LoggingFilters {
            filters: d.opt_string(ADMIN_STRING_MAX)?,
            nfilters: d.u32()?,
        },
    })
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

    fn srv(name: &str) -> ServerRef {
        ServerRef { name: name.into() }
    }

    fn clnt() -> ClientRef {
        ClientRef {
            srv: srv("virtlockd"),
            id: 0x0102_0304_0506_0708,
            timestamp: -2,
            transport: 0,
        }
    }

    fn sample_params() -> Vec<TypedParam> {
        [
            TypedValue::Int(-7),
            TypedValue::UInt(5000),
            TypedValue::LLong(i64::MIN),
            TypedValue::ULLong(u64::MAX),
            TypedValue::Double(0.25),
            TypedValue::Boolean(1),
            TypedValue::String("unix".into()),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, value)| TypedParam {
            field: format!("f{i}"),
            value,
        })
        .collect()
    }

    /// One call per procedure, in procedure order.
    fn every_call() -> Vec<Call> {
        vec![
            Call::ConnectOpen { flags: 0 },
            Call::ConnectClose,
            Call::ConnectGetLibVersion,
            Call::ConnectListServers {
                need_results: 1,
                flags: 0,
            },
            Call::ConnectLookupServer {
                name: "virtlockd".into(),
                flags: 0,
            },
            Call::ServerGetThreadpoolParameters {
                srv: srv("admin"),
                flags: 0,
            },
            Call::ServerSetThreadpoolParameters {
                srv: srv("virtlockd"),
                params: sample_params(),
                flags: 3,
            },
            Call::ServerListClients {
                srv: srv("virtlockd"),
                need_results: 0,
                flags: 0,
            },
            Call::ServerLookupClient {
                srv: srv("s"),
                id: u64::MAX,
                flags: 0,
            },
            Call::ClientGetInfo {
                clnt: clnt(),
                flags: 0,
            },
            Call::ClientClose {
                clnt: clnt(),
                flags: 1,
            },
            Call::ServerGetClientLimits {
                srv: srv(""),
                flags: 0,
            },
            Call::ServerSetClientLimits {
                srv: srv("virtlockd"),
                params: vec![TypedParam {
                    field: "nclients_max".into(),
                    value: TypedValue::UInt(10),
                }],
                flags: 0,
            },
            Call::ConnectGetLoggingOutputs { flags: 0 },
            Call::ConnectGetLoggingFilters { flags: 0 },
            Call::ConnectSetLoggingOutputs {
                outputs: Some("1:stderr".into()),
                flags: 0,
            },
            Call::ConnectSetLoggingFilters {
                filters: None,
                flags: 0,
            },
            Call::ServerUpdateTlsFiles {
                srv: srv("virtlockd"),
                flags: 0,
            },
            Call::ConnectSetDaemonTimeout {
                timeout: 30,
                flags: 0,
            },
        ]
    }

    /// One result per procedure, in procedure order.
    fn every_ret() -> Vec<(Procedure, Ret)> {
        use Procedure as P;
        let rets = vec![
            Ret::Void,
            Ret::Void,
            Ret::LibVersion(9_000_000),
            Ret::Servers {
                servers: vec![srv("virtlockd"), srv("admin")],
                ret: 2,
            },
            Ret::Server(srv("virtlockd")),
            Ret::Params(sample_params()),
            Ret::Void,
            Ret::Clients {
                clients: vec![clnt(), clnt()],
                ret: 2,
            },
            Ret::Client(clnt()),
            Ret::Params(sample_params()),
            Ret::Void,
            Ret::Params(vec![]),
            Ret::Void,
            Ret::LoggingOutputs {
                outputs: "2:stderr ".into(),
                noutputs: 1,
            },
            Ret::LoggingFilters {
                filters: Some("1:*locking* ".into()),
                nfilters: 1,
            },
            Ret::Void,
            Ret::Void,
            Ret::Void,
            Ret::Void,
        ];
        P::ALL.into_iter().zip(rets).collect()
    }

    #[test]
    fn every_call_round_trips() {
        let calls = every_call();
        let procs: Vec<Procedure> = calls.iter().map(Call::procedure).collect();
        assert_eq!(procs, Procedure::ALL.to_vec());
        for call in calls {
            let bytes = call.to_xdr();
            assert_eq!(decode_call(call.procedure(), &bytes).as_ref(), Ok(&call));
            // The decoder consumes exactly what the encoder wrote.
            let mut d = Decoder::new(&bytes);
            assert_eq!(decode_args(call.procedure(), &mut d).as_ref(), Ok(&call));
            assert_eq!(d.finish(), Ok(()), "{call:?}");
        }
    }

    #[test]
    fn every_ret_shape_round_trips() {
        let rets = every_ret();
        assert_eq!(rets.len(), Procedure::ALL.len());
        for (p, ret) in rets {
            let bytes = ret.to_xdr();
            assert_eq!(Ret::decode(p, &bytes).as_ref(), Ok(&ret), "{p:?}");
        }
        // Empty lists and an absent filter string.
        for (p, ret) in [
            (
                Procedure::ConnectListServers,
                Ret::Servers {
                    servers: vec![],
                    ret: 7,
                },
            ),
            (
                Procedure::ServerListClients,
                Ret::Clients {
                    clients: vec![],
                    ret: 0,
                },
            ),
            (
                Procedure::ConnectGetLoggingFilters,
                Ret::LoggingFilters {
                    filters: None,
                    nfilters: 0,
                },
            ),
        ] {
            assert_eq!(Ret::decode(p, &ret.to_xdr()), Ok(ret));
        }
    }

    #[test]
    fn lookup_server_args_golden() {
        let golden: &[u8] = &[
            0, 0, 0, 9, b'v', b'i', b'r', b't', b'l', b'o', b'c', b'k', b'd', 0, 0, 0, // name
            0, 0, 0, 0, // flags
        ];
        let call = Call::ConnectLookupServer {
            name: "virtlockd".into(),
            flags: 0,
        };
        assert_eq!(call.to_xdr(), golden);
        assert_eq!(
            decode_call(Procedure::ConnectLookupServer, golden),
            Ok(call)
        );
    }

    #[test]
    fn logging_filters_ret_golden() {
        let some: &[u8] = &[
            0, 0, 0, 1, // pointer present
            0, 0, 0, 12, b'1', b':', b'*', b'l', b'o', b'c', b'k', b'i', b'n', b'g', b'*',
            b' ', // 12 bytes, no padding
            0, 0, 0, 1, // nfilters
        ];
        let ret = Ret::LoggingFilters {
            filters: Some("1:*locking* ".into()),
            nfilters: 1,
        };
        assert_eq!(ret.to_xdr(), some);
        assert_eq!(
            Ret::decode(Procedure::ConnectGetLoggingFilters, some),
            Ok(ret)
        );

        let none: &[u8] = &[0, 0, 0, 0, 0, 0, 0, 0];
        let ret = Ret::LoggingFilters {
            filters: None,
            nfilters: 0,
        };
        assert_eq!(ret.to_xdr(), none);
        assert_eq!(
            Ret::decode(Procedure::ConnectGetLoggingFilters, none),
            Ok(ret)
        );
    }

    #[test]
    fn client_ref_golden() {
        let golden: &[u8] = &[
            0, 0, 0, 1, b'a', 0, 0, 0, // srv.name
            0, 0, 0, 0, 0, 0, 0, 42, // id
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, // timestamp -2
            0, 0, 0, 2, // transport TLS
            0, 0, 0, 0, // flags
        ];
        let call = Call::ClientClose {
            clnt: ClientRef {
                srv: srv("a"),
                id: 42,
                timestamp: -2,
                transport: 2,
            },
            flags: 0,
        };
        assert_eq!(call.to_xdr(), golden);
        assert_eq!(decode_call(Procedure::ClientClose, golden), Ok(call));
    }

    #[test]
    fn trailing_bytes_in_args_are_ignored_like_lock_lenient() {
        let junk = [0xde, 0xad, 0xbe, 0xef, 0x01];
        for call in every_call() {
            let mut bytes = call.to_xdr();
            bytes.extend_from_slice(&junk);
            assert_eq!(
                decode_call(call.procedure(), &bytes).as_ref(),
                Ok(&call),
                "{call:?}"
            );
        }
        // The lock program's lenient decoder behaves the same way.
        assert!(
            crate::lock::decode_call_lenient(crate::lock::Procedure::Restrict, &[0; 9]).is_ok()
        );
        // Procedures without arguments accept any payload, as `xdr_void` does.
        assert_eq!(
            decode_call(Procedure::ConnectClose, &junk),
            Ok(Call::ConnectClose)
        );
    }

    #[test]
    fn trailing_bytes_in_ret_are_rejected() {
        for (p, ret) in every_ret() {
            let mut bytes = ret.to_xdr();
            bytes.push(0);
            assert_eq!(Ret::decode(p, &bytes), Err(DecodeError::TrailingBytes(1)));
        }
    }

    #[test]
    fn truncated_payloads_rejected() {
        for call in every_call() {
            let bytes = call.to_xdr();
            for n in 0..bytes.len() {
                assert_eq!(
                    decode_call(call.procedure(), &bytes[..n]),
                    Err(DecodeError::Truncated),
                    "{call:?} cut at {n}"
                );
            }
        }
        for (p, ret) in every_ret() {
            let bytes = ret.to_xdr();
            for n in 0..bytes.len() {
                assert_eq!(
                    Ret::decode(p, &bytes[..n]),
                    Err(DecodeError::Truncated),
                    "{p:?} cut at {n}"
                );
            }
        }
    }

    /// A payload whose array count is `count` followed by `tail`.
    fn with_count(prefix: &[u8], count: u32, tail: &[u8]) -> Vec<u8> {
        let mut v = prefix.to_vec();
        v.extend_from_slice(&count.to_be_bytes());
        v.extend_from_slice(tail);
        v
    }

    #[test]
    fn over_max_array_counts_rejected() {
        let virtlockd = srv("virtlockd").to_xdr();
        for (p, max) in [
            (
                Procedure::ServerSetThreadpoolParameters,
                THREADPOOL_PARAMETERS_MAX,
            ),
            (Procedure::ServerSetClientLimits, CLIENT_LIMITS_MAX),
        ] {
            let bytes = with_count(&virtlockd, max as u32 + 1, &[0; 64]);
            assert_eq!(
                decode_call(p, &bytes),
                Err(DecodeError::ArrayTooLong { len: max + 1, max })
            );
        }
        for (p, max) in [
            (Procedure::ConnectListServers, SERVER_LIST_MAX),
            (
                Procedure::ServerGetThreadpoolParameters,
                THREADPOOL_PARAMETERS_MAX,
            ),
            (Procedure::ServerListClients, CLIENT_LIST_MAX),
            (Procedure::ClientGetInfo, CLIENT_INFO_PARAMETERS_MAX),
            (Procedure::ServerGetClientLimits, CLIENT_LIMITS_MAX),
        ] {
            for count in [max as u32 + 1, u32::MAX] {
                let bytes = with_count(&[], count, &[0; 64]);
                assert_eq!(
                    Ret::decode(p, &bytes),
                    Err(DecodeError::ArrayTooLong {
                        len: count as usize,
                        max
                    }),
                    "{p:?}"
                );
            }
        }
        // At the bound the count is accepted, then found not to be backed by data.
        let at_max = with_count(&[], SERVER_LIST_MAX as u32, &[0; 8]);
        assert_eq!(
            Ret::decode(Procedure::ConnectListServers, &at_max),
            Err(DecodeError::Truncated)
        );
        // 64 client-info parameters are fine, 64 threadpool parameters are not.
        let params: Vec<TypedParam> = (0..64)
            .map(|i| TypedParam {
                field: format!("p{i}"),
                value: TypedValue::UInt(i),
            })
            .collect();
        let bytes = Ret::Params(params.clone()).to_xdr();
        assert_eq!(
            Ret::decode(Procedure::ClientGetInfo, &bytes),
            Ok(Ret::Params(params))
        );
        assert_eq!(
            Ret::decode(Procedure::ServerGetThreadpoolParameters, &bytes),
            Err(DecodeError::ArrayTooLong { len: 64, max: 32 })
        );
    }

    #[test]
    fn hostile_counts_allocate_nothing() {
        // A count within the bound but far beyond the bytes present.
        let bytes = with_count(&[], CLIENT_LIST_MAX as u32, &[0; 23]);
        let mut d = Decoder::new(&bytes);
        assert_eq!(
            decode_ret(Procedure::ServerListClients, &mut d),
            Err(DecodeError::Truncated)
        );
        assert_eq!(d.allocated(), 0);
        // Exactly one minimal client's worth of bytes per claimed entry is accepted.
        let one = with_count(&[], 1, &[0; CLIENT_WIRE_MIN + 4]);
        assert_eq!(
            Ret::decode(Procedure::ServerListClients, &one),
            Ok(Ret::Clients {
                clients: vec![ClientRef {
                    srv: srv(""),
                    id: 0,
                    timestamp: 0,
                    transport: 0,
                }],
                ret: 0,
            })
        );
    }

    #[test]
    fn strings_bounded_and_optional_checked() {
        // A name claiming ADMIN_STRING_MAX + 1 bytes fails on the bound, not the data.
        let bytes = with_count(&[], ADMIN_STRING_MAX as u32 + 1, &[]);
        assert_eq!(
            decode_call(Procedure::ConnectLookupServer, &bytes),
            Err(DecodeError::StringTooLong {
                len: ADMIN_STRING_MAX + 1,
                max: ADMIN_STRING_MAX
            })
        );
        // admin_string's pointer discriminant must be 0 or 1.
        assert_eq!(
            decode_call(
                Procedure::ConnectSetLoggingFilters,
                &[0, 0, 0, 2, 0, 0, 0, 0]
            ),
            Err(DecodeError::BadOptional(2))
        );
        assert_eq!(
            decode_call(
                Procedure::ConnectSetLoggingOutputs,
                &[0, 0, 0, 0, 0, 0, 0, 5]
            ),
            Ok(Call::ConnectSetLoggingOutputs {
                outputs: None,
                flags: 5
            })
        );
        // Logging outputs are a non-null string: no pointer word.
        assert_eq!(
            Ret::decode(
                Procedure::ConnectGetLoggingOutputs,
                &[0, 0, 0, 1, b'x', 0, 0, 0, 0, 0, 0, 1]
            ),
            Ok(Ret::LoggingOutputs {
                outputs: "x".into(),
                noutputs: 1
            })
        );
    }

    #[test]
    fn ret_encodes_through_encode_message() {
        let h = crate::header::Header {
            prog: PROGRAM,
            vers: VERSION,
            proc_: Procedure::ConnectGetLibVersion.to_i32(),
            mtype: crate::header::MessageType::Reply,
            serial: 1,
            status: crate::header::Status::Ok,
        };
        let frame = crate::frame::encode_message(&h, &Ret::LibVersion(9_000_000));
        assert_eq!(frame.len(), 28 + 8);
        assert_eq!(
            Ret::decode(Procedure::ConnectGetLibVersion, &frame[28..]),
            Ok(Ret::LibVersion(9_000_000))
        );
    }
}
