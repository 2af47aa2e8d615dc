//! What every admin procedure shares: the look-ups of a server and a
//! client, the flag check and the typed-parameter validation, with
//! libvirt's error texts.

use vmlock_proto::admin::{ClientRef, ServerRef, TypedParam, TypedValue};
use vmlock_proto::error::{WireError, code, domain};

use crate::ctx::{ClientEntry, Ctx, ServerKind};

/// `VIR_CLIENT_TRANS_UNIX`.
const TRANSPORT_UNIX: u32 = 0;

/// A failed admin call: the error reply to send.
pub(crate) type Failure = Box<WireError>;

/// The servers in virt-admin's `srv-list` order.
pub(super) const SERVERS: [ServerKind; 2] = [ServerKind::Main, ServerKind::Admin];

pub(super) fn server_ref(kind: ServerKind) -> ServerRef {
    ServerRef {
        name: kind.name().to_owned(),
    }
}

pub(super) fn client_ref(kind: ServerKind, id: u64, timestamp: i64) -> ClientRef {
    ClientRef {
        srv: server_ref(kind),
        id,
        timestamp,
        transport: TRANSPORT_UNIX,
    }
}

/// `virNetDaemonGetServer`.
pub(super) fn server(name: &str) -> Result<ServerKind, Failure> {
    SERVERS
        .into_iter()
        .find(|k| k.name() == name)
        .ok_or_else(|| {
            Box::new(WireError::new(
                code::NO_SERVER,
                domain::RPC,
                &format!("No server named '{name}'"),
            ))
        })
}

/// The text the hand-written admin dispatchers report over the look-up's.
pub(super) fn no_server_here(name: &str) -> Failure {
    Box::new(WireError::new(
        code::NO_SERVER,
        domain::ADMIN,
        &format!("no server with matching name '{name}' found"),
    ))
}

/// `virNetServerGetClient`.
pub(super) fn client(ctx: &Ctx, kind: ServerKind, id: u64) -> Result<ClientEntry, Failure> {
    ctx.server(kind)
        .registry()
        .get(&id)
        .cloned()
        .ok_or_else(|| {
            Box::new(WireError::new(
                code::NO_CLIENT,
                domain::RPC,
                &format!("No client with matching ID '{id}'"),
            ))
        })
}

/// `virCheckFlags(0, …)` in an admin function.
pub(super) fn check_flags(flags: u32, function: &str) -> Result<(), Failure> {
    if flags == 0 {
        return Ok(());
    }
    let mut e = WireError::invalid_flags(flags, function);
    e.domain = domain::ADMIN;
    Err(Box::new(e))
}

pub(super) fn uint(field: &str, v: u32) -> TypedParam {
    TypedParam {
        field: field.to_owned(),
        value: TypedValue::UInt(v),
    }
}

pub(super) fn log_error(e: crate::logging::LogError) -> Failure {
    Box::new(WireError::new(code::INVALID_ARG, domain::NONE, e.detail()))
}

/// `virTypedParamsValidate` for parameters that are all `uint`: in field
/// order, a repeated field, a wrong type or an unknown field is an error.
/// Returns each known field's value, if given.
pub(super) fn validate<const N: usize>(
    params: &[TypedParam],
    fields: [&str; N],
    dom: i32,
) -> Result<[Option<u32>; N], Failure> {
    let mut sorted: Vec<&TypedParam> = params.iter().collect();
    sorted.sort_by(|a, b| a.field.cmp(&b.field));
    let mut out = [None; N];
    for (i, p) in sorted.iter().enumerate() {
        let Some(k) = fields.iter().position(|f| *f == p.field) else {
            return Err(Box::new(WireError::new(
                code::ARGUMENT_UNSUPPORTED,
                dom,
                &format!("parameter '{}' not supported", p.field),
            )));
        };
        if i > 0 && sorted[i - 1].field == p.field {
            return Err(Box::new(WireError::new(
                code::INVALID_ARG,
                dom,
                &format!("parameter '{}' occurs multiple times", p.field),
            )));
        }
        let TypedValue::UInt(v) = p.value else {
            return Err(Box::new(WireError::new(
                code::INVALID_ARG,
                dom,
                &format!(
                    "invalid type '{}' for parameter '{}', expected 'uint'",
                    type_name(&p.value),
                    p.field
                ),
            )));
        };
        out[k] = Some(v);
    }
    Ok(out)
}

pub(super) fn type_name(v: &TypedValue) -> &'static str {
    match v {
        TypedValue::Int(_) => "int",
        TypedValue::UInt(_) => "uint",
        TypedValue::LLong(_) => "llong",
        TypedValue::ULLong(_) => "ullong",
        TypedValue::Double(_) => "double",
        TypedValue::Boolean(_) => "boolean",
        TypedValue::String(_) => "string",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(field: &str, value: TypedValue) -> TypedParam {
        TypedParam {
            field: field.into(),
            value,
        }
    }

    #[test]
    fn validate_checks_in_field_order() {
        let ok = validate(
            &[p("b", TypedValue::UInt(2)), p("a", TypedValue::UInt(1))],
            ["a", "b"],
            domain::NONE,
        )
        .expect("valid");
        assert_eq!(ok, [Some(1), Some(2)]);
        let unknown = validate(&[p("zz", TypedValue::UInt(1))], ["a"], domain::NONE);
        let e = unknown.expect_err("unknown field");
        assert_eq!(e.code, code::ARGUMENT_UNSUPPORTED);
        assert_eq!(
            e.to_string(),
            "argument unsupported: parameter 'zz' not supported"
        );
        let dup = validate(
            &[p("a", TypedValue::UInt(1)), p("a", TypedValue::UInt(2))],
            ["a"],
            domain::NONE,
        );
        assert_eq!(
            dup.expect_err("dup").to_string(),
            "invalid argument: parameter 'a' occurs multiple times"
        );
        let ty = validate(&[p("a", TypedValue::Int(1))], ["a"], domain::NONE);
        assert_eq!(
            ty.expect_err("type").to_string(),
            "invalid argument: invalid type 'int' for parameter 'a', expected 'uint'"
        );
    }

    #[test]
    fn unknown_servers_and_flags_get_libvirts_errors() {
        let e = server("nope").expect_err("no such server");
        assert_eq!(
            (e.code, e.domain, e.to_string().as_str()),
            (
                code::NO_SERVER,
                domain::RPC,
                "Server not found: No server named 'nope'"
            )
        );
        assert_eq!(server("admin").ok(), Some(ServerKind::Admin));
        let f = check_flags(4, "adminServerListClients").expect_err("flags");
        assert_eq!(f.domain, domain::ADMIN);
        assert_eq!(
            f.to_string(),
            "unsupported flags (0x4) in function adminServerListClients"
        );
    }
}
