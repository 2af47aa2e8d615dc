//! Every error a client can see, mapped to libvirt's wire form in one place.
//!
//! | source | code | domain | detail |
//! |---|---|---|---|
//! | restricted connection | 29 OPERATION_DENIED | 7 RPC | `lock manager connection has been restricted` |
//! | not registered / owner id 0 | 55 OPERATION_INVALID | 7 RPC | `lock owner details have not been registered` |
//! | unknown flag bits | 8 INVALID_ARG | 7 RPC | `unsupported flags (0x..) in function <C function>` |
//! | undecodable payload | 39 RPC | 7 RPC | `Unable to decode message payload` |
//! | engine errors | see [`engine`] | | |
//!
//! The engine's table ([`engine`]) is pinned by a test; message texts are
//! the C-locale texts virtlockd sends.

use lockspace::Error as E;
use vmlock_proto::error::{WireError, code, domain};

/// The detail sent for a restricted connection.
pub const RESTRICTED: &str = "lock manager connection has been restricted";
/// The detail sent when the owner is not registered.
pub const UNREGISTERED: &str = "lock owner details have not been registered";

/// A restricted connection tried something.
pub fn restricted() -> WireError {
    WireError::new(code::OPERATION_DENIED, domain::RPC, RESTRICTED)
}

/// The connection has not registered an owner (or registered id 0).
pub fn unregistered() -> WireError {
    WireError::new(code::OPERATION_INVALID, domain::RPC, UNREGISTERED)
}

/// NEW of the default lockspace (its path is empty): the engine's
/// `DefaultLockspaceExists`.
pub fn default_lockspace_exists() -> WireError {
    engine(&E::DefaultLockspaceExists)
}

/// A resource call names a lockspace that does not exist: the engine's
/// `NoLockspace` text, with the path exactly as the client sent it.
pub fn no_lockspace(path: &str) -> WireError {
    WireError::new(
        code::INTERNAL_ERROR,
        domain::RPC,
        &format!("Lockspace for path {path} does not exist"),
    )
}

/// The wire form of an engine error.
pub fn engine(e: &E) -> WireError {
    let detail = e.detail();
    match e.errno() {
        Some(errno) => WireError::system(
            engine_domain(e),
            &detail,
            errno,
            &vmlock_sys::strerror(errno),
        ),
        None => WireError::new(engine_code(e), engine_domain(e), &detail),
    }
}

/// [`engine`] for an error without errno, with `suffix` appended to its
/// detail (a refusal naming the holder; an empty suffix is [`engine`]).
pub fn engine_naming(e: &E, suffix: &str) -> WireError {
    if suffix.is_empty() || e.errno().is_some() {
        return engine(e);
    }
    let detail = format!("{}{suffix}", e.detail());
    WireError::new(engine_code(e), engine_domain(e), &detail)
}

/// The error code of an engine error without errno.
fn engine_code(e: &E) -> i32 {
    match e {
        E::Busy { .. } | E::NotLocked { .. } | E::ClusterBusy { .. } => code::RESOURCE_BUSY,
        E::DefaultLockspaceExists => code::OPERATION_INVALID,
        E::InvalidName { .. } => code::INVALID_ARG,
        E::AutocreateInDefault { .. } => code::OPERATION_INVALID,
        E::NotOwner { .. }
        | E::NoLockspace { .. }
        | E::LockspaceExists { .. }
        | E::NotADirectory { .. }
        | E::CreateLockspace { .. }
        | E::Open { .. }
        | E::Lock { .. }
        | E::Delete { .. }
        | E::Touch { .. }
        | E::Cluster { .. } => code::INTERNAL_ERROR,
    }
}

/// The error domain of an engine error.
fn engine_domain(e: &E) -> i32 {
    match e {
        E::NoLockspace { .. } | E::LockspaceExists { .. } | E::DefaultLockspaceExists => {
            domain::RPC
        }
        E::Touch { .. } => domain::NONE,
        E::Busy { .. }
        | E::NotLocked { .. }
        | E::NotOwner { .. }
        | E::NotADirectory { .. }
        | E::CreateLockspace { .. }
        | E::Open { .. }
        | E::Lock { .. }
        | E::Delete { .. }
        | E::InvalidName { .. }
        | E::AutocreateInDefault { .. }
        | E::ClusterBusy { .. }
        | E::Cluster { .. } => domain::LOCKSPACE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> String {
        x.to_owned()
    }

    /// The two texts the lock program sends before it calls the engine.
    #[test]
    fn checks_before_the_engine_send_its_texts() {
        let d = default_lockspace_exists();
        assert_eq!((d.code, d.domain), (code::OPERATION_INVALID, domain::RPC));
        assert_eq!(
            d.message.as_deref(),
            Some("Requested operation is not valid: the default lockspace already exists")
        );
        let n = no_lockspace("/no/such");
        assert_eq!((n.code, n.domain), (code::INTERNAL_ERROR, domain::RPC));
        assert_eq!(
            n.message.as_deref(),
            Some("internal error: Lockspace for path /no/such does not exist")
        );
    }

    /// The one table: engine error → (code, domain, message a client sees).
    #[test]
    fn engine_errors_map_to_libvirts_wire_codes_and_texts() {
        let enoent = libc::ENOENT;
        let table: Vec<(E, i32, i32, String)> = vec![
            (
                E::Busy {
                    name: s("x"),
                    holder: Some(7),
                },
                87,
                51,
                s("resource busy: Lockspace resource 'x' is locked"),
            ),
            (
                E::NotLocked { name: s("x") },
                87,
                51,
                s("resource busy: Lockspace resource 'x' is not locked"),
            ),
            (
                E::NotOwner { pid: 42 },
                1,
                51,
                s("internal error: owner 42 does not hold the resource lock"),
            ),
            (
                E::NoLockspace { path: s("/l") },
                1,
                7,
                s("internal error: Lockspace for path /l does not exist"),
            ),
            (
                E::LockspaceExists { path: s("/l") },
                1,
                7,
                s("internal error: Lockspace for path /l already exists"),
            ),
            (
                E::DefaultLockspaceExists,
                55,
                7,
                s("Requested operation is not valid: the default lockspace already exists"),
            ),
            (
                E::NotADirectory { path: s("/f") },
                1,
                51,
                s("internal error: Lockspace location /f exists, but is not a directory"),
            ),
            (
                E::CreateLockspace {
                    path: s("/l"),
                    errno: enoent,
                },
                38,
                51,
                s("Unable to create lockspace /l: No such file or directory"),
            ),
            (
                E::Open {
                    path: s("/d"),
                    errno: enoent,
                    create: false,
                },
                38,
                51,
                s("Unable to open resource /d: No such file or directory"),
            ),
            (
                E::Open {
                    path: s("/d"),
                    errno: enoent,
                    create: true,
                },
                38,
                51,
                s("Unable to open/create resource /d: No such file or directory"),
            ),
            (
                E::Lock {
                    path: s("/d"),
                    errno: libc::ENOLCK,
                },
                38,
                51,
                s("Unable to acquire lock on '/d': No locks available"),
            ),
            (
                E::Delete {
                    path: s("/d"),
                    errno: libc::EPERM,
                },
                38,
                51,
                s("Unable to delete lockspace resource /d: Operation not permitted"),
            ),
            (
                E::ClusterBusy {
                    name: s("x"),
                    why: s("host b"),
                },
                87,
                51,
                s("resource busy: Lockspace resource 'x' is locked by another host: host b"),
            ),
            (
                E::AutocreateInDefault { name: s("/d") },
                55,
                51,
                s(
                    "Requested operation is not valid: Resource '/d' cannot be auto-created in the default lockspace",
                ),
            ),
        ];
        for (e, code, domain, message) in table {
            let w = engine(&e);
            assert_eq!((w.code, w.domain), (code, domain), "{e:?}");
            assert_eq!(w.message.as_deref(), Some(message.as_str()), "{e:?}");
            assert_eq!(w.level, 2);
        }
    }

    #[test]
    fn a_named_refusal_keeps_code_domain_and_words() {
        let e = E::Busy {
            name: s("/i/a.qcow2"),
            holder: Some(4242),
        };
        let plain = engine(&e);
        let named = engine_naming(&e, " by domain 'web1' (uuid u, pid 4242)");
        assert_eq!((named.code, named.domain, named.level), (87, 51, 2));
        assert_eq!(
            named.message.as_deref(),
            Some(
                "resource busy: Lockspace resource '/i/a.qcow2' is locked by domain 'web1' (uuid u, pid 4242)"
            )
        );
        assert_eq!(named.str1, plain.str1);
        assert_eq!(engine_naming(&e, ""), plain);
    }

    #[test]
    fn dispatch_errors_match_virtlockd() {
        let r = restricted();
        assert_eq!((r.code, r.domain), (29, 7));
        assert_eq!(
            r.message.as_deref(),
            Some("operation forbidden: lock manager connection has been restricted")
        );
        let u = unregistered();
        assert_eq!((u.code, u.domain), (55, 7));
        assert_eq!(
            u.message.as_deref(),
            Some("Requested operation is not valid: lock owner details have not been registered")
        );
    }
}
