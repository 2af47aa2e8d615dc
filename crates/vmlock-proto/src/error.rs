//! `virNetMessageError`, the payload of every ERROR reply (docs/protocol.md §2), and constructors that
//! fill it the way libvirt's `virerror.c` does.
//!
//! ```text
//! int code | int domain | string *message | int level | DomainRef *dom
//! | string *str1 | string *str2 | string *str3 | int int1 | int int2 | NetworkRef *net
//! ```
//!
//! Templates are those of the reference daemon (Debian's libvirt 9.0), which still uses
//! `%s` slots: `str1` of a busy error is `"resource busy: %s"`, captured byte for byte in
//! `tests/fixtures/`. Newer libvirt sends `%1$s` there; clients only display `message`.

use std::fmt;

use crate::limits::ERROR_STRING_MAX;
use crate::xdr::{DecodeError, Decoder, Encoder, XdrDecode, XdrEncode};

/// `virErrorNumber` values used by virtlockd.
pub mod code {
    /// `VIR_ERR_INTERNAL_ERROR`.
    pub const INTERNAL_ERROR: i32 = 1;
    /// `VIR_ERR_NO_SUPPORT`.
    pub const NO_SUPPORT: i32 = 3;
    /// `VIR_ERR_INVALID_ARG`.
    pub const INVALID_ARG: i32 = 8;
    /// `VIR_ERR_OPERATION_DENIED`.
    pub const OPERATION_DENIED: i32 = 29;
    /// `VIR_ERR_SYSTEM_ERROR`.
    pub const SYSTEM_ERROR: i32 = 38;
    /// `VIR_ERR_RPC`.
    pub const RPC: i32 = 39;
    /// `VIR_ERR_OPERATION_INVALID`.
    pub const OPERATION_INVALID: i32 = 55;
    /// `VIR_ERR_CONFIG_UNSUPPORTED`.
    pub const CONFIG_UNSUPPORTED: i32 = 67;
    /// `VIR_ERR_ARGUMENT_UNSUPPORTED`.
    pub const ARGUMENT_UNSUPPORTED: i32 = 74;
    /// `VIR_ERR_RESOURCE_BUSY`.
    pub const RESOURCE_BUSY: i32 = 87;
    /// `VIR_ERR_NO_SERVER`.
    pub const NO_SERVER: i32 = 95;
    /// `VIR_ERR_NO_CLIENT`.
    pub const NO_CLIENT: i32 = 96;
}

/// `virErrorDomain` values used by virtlockd.
pub mod domain {
    /// `VIR_FROM_NONE`.
    pub const NONE: i32 = 0;
    /// `VIR_FROM_RPC`: dispatch-level errors, including `lock_daemon_dispatch.c`.
    pub const RPC: i32 = 7;
    /// `VIR_FROM_CONF`.
    pub const CONF: i32 = 9;
    /// `VIR_FROM_LOCKING`.
    pub const LOCKING: i32 = 42;
    /// `VIR_FROM_LOCKSPACE`: the lock engine.
    pub const LOCKSPACE: i32 = 51;
    /// `VIR_FROM_ADMIN`.
    pub const ADMIN: i32 = 62;
}

/// `virErrorLevel` values.
pub mod level {
    /// `VIR_ERR_NONE`.
    pub const NONE: i32 = 0;
    /// `VIR_ERR_WARNING`.
    pub const WARNING: i32 = 1;
    /// `VIR_ERR_ERROR`: the only level virtlockd sends.
    pub const ERROR: i32 = 2;
}

/// `virNetMessageDomain`: `{ string name; opaque uuid[16]; int id }`. Never sent here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRef {
    /// Domain name.
    pub name: String,
    /// Domain UUID.
    pub uuid: [u8; 16],
    /// Domain id.
    pub id: i32,
}

/// `virNetMessageNetwork`: `{ string name; opaque uuid[16] }`. Never sent here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRef {
    /// Network name.
    pub name: String,
    /// Network UUID.
    pub uuid: [u8; 16],
}

/// The error payload of an ERROR reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    /// `virErrorNumber` ([`code`]).
    pub code: i32,
    /// `virErrorDomain` ([`domain`]).
    pub domain: i32,
    /// The full message clients display.
    pub message: Option<String>,
    /// Always [`level::ERROR`] from virtlockd.
    pub level: i32,
    /// Always `None` from virtlockd.
    pub dom: Option<DomainRef>,
    /// The template, or the C function name for flag errors.
    pub str1: Option<String>,
    /// The detail.
    pub str2: Option<String>,
    /// Unused.
    pub str3: Option<String>,
    /// −1, errno for system errors, 0 for flag errors.
    pub int1: i32,
    /// −1, or 0 for flag errors.
    pub int2: i32,
    /// Always `None` from virtlockd.
    pub net: Option<NetworkRef>,
}

/// Fills a libvirt `%s` template with a detail.
fn fill(template: &str, detail: &str) -> String {
    template.replacen("%s", detail, 1)
}

impl WireError {
    /// The C-locale template for `code`, with one `%s` slot. Codes without a
    /// prefix (38, 39, and any unknown code) use `"%s"`.
    pub fn template(code: i32) -> &'static str {
        match code {
            code::INTERNAL_ERROR => "internal error: %s",
            code::NO_SUPPORT => "this function is not supported by the connection driver: %s",
            code::INVALID_ARG => "invalid argument: %s",
            code::OPERATION_DENIED => "operation forbidden: %s",
            code::OPERATION_INVALID => "Requested operation is not valid: %s",
            code::CONFIG_UNSUPPORTED => "unsupported configuration: %s",
            code::ARGUMENT_UNSUPPORTED => "argument unsupported: %s",
            code::RESOURCE_BUSY => "resource busy: %s",
            code::NO_SERVER => "Server not found: %s",
            code::NO_CLIENT => "Client not found: %s",
            _ => "%s",
        }
    }

    /// A bare error with everything optional absent.
    fn base(code: i32, domain: i32, message: String) -> WireError {
        WireError {
            code,
            domain,
            message: Some(message),
            level: level::ERROR,
            dom: None,
            str1: None,
            str2: None,
            str3: None,
            int1: -1,
            int2: -1,
            net: None,
        }
    }

    /// `virReportError(code, ...)`: message = template with `detail`, str1 = template,
    /// str2 = detail, int1 = int2 = −1, level 2.
    pub fn new(code: i32, domain: i32, detail: &str) -> WireError {
        let template = Self::template(code);
        WireError {
            str1: Some(template.to_owned()),
            str2: Some(detail.to_owned()),
            ..Self::base(code, domain, fill(template, detail))
        }
    }

    /// `virReportSystemError(errno, detail)`: code 38, message `"<detail>: <strerror>"`,
    /// str1 `"%s"`, str2 = message, int1 = errno.
    pub fn system(domain: i32, detail: &str, errno: i32, strerror: &str) -> WireError {
        let message = format!("{detail}: {strerror}");
        WireError {
            str1: Some("%s".to_owned()),
            str2: Some(message.clone()),
            int1: errno,
            ..Self::base(code::SYSTEM_ERROR, domain, message)
        }
    }

    /// `virCheckFlags` failure in C function `function` (domain RPC). Like C, pass the
    /// unsupported bits (`flags & !allowed`); the message shows them in hex.
    pub fn invalid_flags(flags: u32, function: &str) -> WireError {
        WireError {
            str1: Some(function.to_owned()),
            str2: Some("flags".to_owned()),
            int1: 0,
            int2: 0,
            ..Self::base(
                code::INVALID_ARG,
                domain::RPC,
                format!("unsupported flags (0x{flags:x}) in function {function}"),
            )
        }
    }

    /// An RPC-level error (code 39, domain 7); the message is `detail`.
    pub fn rpc(detail: &str) -> WireError {
        Self::new(code::RPC, domain::RPC, detail)
    }

    /// `Cannot find program <prog> version <vers>`, numbers printed as C `%d`.
    pub fn unknown_program(prog: u32, vers: u32) -> WireError {
        Self::rpc(&format!(
            "Cannot find program {} version {}",
            prog as i32, vers as i32
        ))
    }

    /// `unknown procedure: <proc>`.
    pub fn unknown_procedure(proc_: i32) -> WireError {
        Self::rpc(&format!("unknown procedure: {proc_}"))
    }

    /// `Unexpected message status <status>`, printed as C `%u`.
    pub fn unexpected_status(status: i32) -> WireError {
        Self::rpc(&format!("Unexpected message status {}", status as u32))
    }

    /// `Unable to decode message payload`: the reply to undecodable arguments.
    pub fn payload_decode() -> WireError {
        Self::rpc("Unable to decode message payload")
    }

    /// The error sent when a handler failed without setting one.
    pub fn fallback() -> WireError {
        Self::base(
            code::INTERNAL_ERROR,
            domain::RPC,
            "Library function returned error but did not set virError".to_owned(),
        )
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(m) => f.write_str(m),
            None => write!(f, "error code {} (domain {})", self.code, self.domain),
        }
    }
}

impl std::error::Error for WireError {}

impl XdrEncode for WireError {
    fn encode(&self, e: &mut Encoder) {
        e.put_i32(self.code);
        e.put_i32(self.domain);
        e.put_opt_string(self.message.as_deref());
        e.put_i32(self.level);
        match &self.dom {
            None => e.put_u32(0),
            Some(d) => {
                e.put_u32(1);
                e.put_string(&d.name);
                e.put_fixed_opaque(&d.uuid);
                e.put_i32(d.id);
            }
        }
        e.put_opt_string(self.str1.as_deref());
        e.put_opt_string(self.str2.as_deref());
        e.put_opt_string(self.str3.as_deref());
        e.put_i32(self.int1);
        e.put_i32(self.int2);
        match &self.net {
            None => e.put_u32(0),
            Some(n) => {
                e.put_u32(1);
                e.put_string(&n.name);
                e.put_fixed_opaque(&n.uuid);
            }
        }
    }
}

fn decode_dom(d: &mut Decoder<'_>) -> Result<Option<DomainRef>, DecodeError> {
    if !d.present()? {
        return Ok(None);
    }
    Ok(Some(DomainRef {
        name: d.string(ERROR_STRING_MAX)?,
        uuid: d.fixed_opaque()?,
        id: d.i32()?,
    }))
}

fn decode_net(d: &mut Decoder<'_>) -> Result<Option<NetworkRef>, DecodeError> {
    if !d.present()? {
        return Ok(None);
    }
    Ok(Some(NetworkRef {
        name: d.string(ERROR_STRING_MAX)?,
        uuid: d.fixed_opaque()?,
    }))
}

impl XdrDecode for WireError {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(WireError {
            code: d.i32()?,
            domain: d.i32()?,
            message: d.opt_string(ERROR_STRING_MAX)?,
            level: d.i32()?,
            dom: decode_dom(d)?,
            str1: d.opt_string(ERROR_STRING_MAX)?,
            str2: d.opt_string(ERROR_STRING_MAX)?,
            str3: d.opt_string(ERROR_STRING_MAX)?,
            int1: d.i32()?,
            int2: d.i32()?,
            net: decode_net(d)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_fills_template() {
        let e = WireError::new(
            code::RESOURCE_BUSY,
            domain::LOCKSPACE,
            "Lockspace resource 'x' is locked",
        );
        assert_eq!(
            e.to_string(),
            "resource busy: Lockspace resource 'x' is locked"
        );
        assert_eq!(e.str1.as_deref(), Some("resource busy: %s"));
        assert_eq!(e.str2.as_deref(), Some("Lockspace resource 'x' is locked"));
        assert_eq!((e.level, e.int1, e.int2), (2, -1, -1));
    }

    #[test]
    fn detail_with_percent_s_is_not_expanded_twice() {
        let e = WireError::new(code::INTERNAL_ERROR, domain::RPC, "a %s b");
        assert_eq!(e.message.as_deref(), Some("internal error: a %s b"));
    }

    #[test]
    fn rpc_and_system_have_no_prefix() {
        assert_eq!(WireError::rpc("boom").to_string(), "boom");
        let e = WireError::system(domain::LOCKSPACE, "Unable to x", 20, "Not a directory");
        assert_eq!(e.to_string(), "Unable to x: Not a directory");
        assert_eq!((e.code, e.int1, e.int2), (38, 20, -1));
        assert_eq!(e.str2, e.message);
    }

    #[test]
    fn rpc_texts_use_c_formatting() {
        assert_eq!(
            WireError::unknown_program(0xDEAD_BEEF, 3).to_string(),
            "Cannot find program -559038737 version 3"
        );
        assert_eq!(
            WireError::unexpected_status(-1).to_string(),
            "Unexpected message status 4294967295"
        );
        assert_eq!(
            WireError::unknown_procedure(-1).to_string(),
            "unknown procedure: -1"
        );
    }

    #[test]
    fn fallback_has_no_strings() {
        let e = WireError::fallback();
        assert_eq!((e.code, e.domain, e.str1.as_ref()), (1, 7, None));
    }

    #[test]
    fn appendix_a_busy_error_layout() {
        let e = WireError::new(87, 51, "Lockspace resource 'x' is locked");
        let b = e.to_xdr();
        assert_eq!(&b[..8], &[0, 0, 0, 87, 0, 0, 0, 51]);
        assert_eq!(WireError::from_xdr(&b), Ok(e));
    }

    #[test]
    fn present_dom_and_net_decode() {
        let mut e = WireError::fallback();
        e.dom = Some(DomainRef {
            name: "d".into(),
            uuid: [7; 16],
            id: 3,
        });
        e.net = Some(NetworkRef {
            name: "n".into(),
            uuid: [9; 16],
        });
        assert_eq!(WireError::from_xdr(&e.to_xdr()), Ok(e));
    }
}
