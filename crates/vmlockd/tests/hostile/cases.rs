//! The table of hostile cases and their expected outcomes.
//!
//! Expected replies are libvirt's (docs/protocol.md §1.7, §2, §3.5; pinned against the
//! real virtlockd by `vmlock-compat/tests/framing.rs`, `flags.rs`,
//! `register.rs`, `acquire.rs`) except where docs/compatibility.md lists a
//! deliberate difference (name validation, UTF-8, AUTOCREATE in the default
//! lockspace).

use vmlock_testkit::frames::{
    self, FLAG_AUTOCREATE, FLAG_SHARED, KEEPALIVE_PROGRAM, Xdr, procs, types,
};

use crate::custom;
use crate::table::{Action, Case, Expect, HOSTILE_PID, Prelude, error, frame_with, header};

/// The largest legal `len - 4` (docs/protocol.md §1.4).
pub const MESSAGE_MAX: u32 = 32 * 1024 * 1024;

const DECODE: &str = "Unable to decode message payload";
const RESTRICTED: &str = "operation forbidden: lock manager connection has been restricted";
const UNREGISTERED: &str =
    "Requested operation is not valid: lock owner details have not been registered";

/// Paths the expectations mention.
pub struct Env {
    /// The sentinel's named lockspace.
    pub ls: String,
    /// The sentinel's disk (default lockspace).
    pub disk: String,
    /// The daemon's scratch dir.
    pub dir: String,
}

impl Env {
    /// The paths of a daemon's scratch dir (see `Sentinel::take`).
    pub fn of(dir: &std::path::Path) -> Env {
        let dir = dir.to_string_lossy().into_owned();
        Env {
            ls: format!("{dir}/sentinel-ls"),
            disk: format!("{dir}/sentinel.img"),
            dir,
        }
    }
}

fn case(name: impl Into<String>, p: Prelude, bytes: Vec<u8>, expect: Expect) -> Case {
    Case {
        name: name.into(),
        action: Action::Send(p, bytes),
        expect,
    }
}

fn custom(name: &str, f: crate::table::Custom) -> Case {
    Case {
        name: name.into(),
        action: Action::Custom(f),
        expect: Expect::ByAction,
    }
}

/// Every case, in the order they run.
pub fn all(env: &Env) -> Vec<Case> {
    let mut v = lengths();
    v.extend(routing());
    v.extend(xdr(env));
    v.extend(flags());
    v.extend(states());
    v.extend(names(env));
    v.extend(sentinel_attacks(env));
    v.extend(lockspaces(env));
    v.extend(customs());
    v
}

fn lengths() -> Vec<Case> {
    let mut v = Vec::new();
    for len in 0u32..4 {
        let b = len.to_be_bytes().to_vec();
        v.push(case(
            format!("len {len}"),
            Prelude::Fresh,
            b,
            Expect::Closed,
        ));
    }
    for len in 4u32..28 {
        let mut b = len.to_be_bytes().to_vec();
        b.resize(len as usize, 0);
        v.push(case(
            format!("len {len}"),
            Prelude::Fresh,
            b,
            Expect::Closed,
        ));
    }
    let reg = frame_with(header(procs::REGISTER, 0), &[]);
    v.push(case(
        "len 28: a header-only REGISTER",
        Prelude::Fresh,
        reg,
        error(1, 0, 39, 7, DECODE),
    ));
    v.push(case(
        "len 28: PING",
        Prelude::Fresh,
        frames::ping(),
        Expect::Pong,
    ));
    for (what, len) in [
        ("MAX+5", MESSAGE_MAX + 5),
        ("2^31", 0x8000_0000),
        ("2^32-1", u32::MAX),
    ] {
        let b = len.to_be_bytes().to_vec();
        v.push(case(
            format!("len {what}"),
            Prelude::Fresh,
            b,
            Expect::Closed,
        ));
    }
    // Pieces of a valid frame one byte per write: reassembled.
    let reg = frames::register(4, [1; 16], "vm", 1, HOSTILE_PID, 0);
    v.push(Case {
        name: "REGISTER one byte per write".into(),
        action: Action::Trickle(Prelude::Fresh, reg),
        expect: Expect::Ok {
            proc_: 1,
            serial: 4,
        },
    });
    v
}

fn with_header(f: impl FnOnce(&mut frames::Header), payload: &[u8]) -> Vec<u8> {
    let mut h = header(procs::REGISTER, 3);
    f(&mut h);
    frame_with(h, payload)
}

fn routing() -> Vec<Case> {
    let mut v = Vec::new();
    // libvirt formats both numbers with %d (checked against virtlockd 9.0).
    let unknown = |prog: u32, vers: u32| {
        format!(
            "Cannot find program {} version {}",
            prog as i32, vers as i32
        )
    };
    for (name, prog, vers) in [
        ("wrong program", 0x1234_5678, 1),
        ("wrong version 0", frames::LOCK_PROGRAM, 0),
        ("wrong version 2", frames::LOCK_PROGRAM, 2),
        ("wrong version 2^32-1", frames::LOCK_PROGRAM, u32::MAX),
        ("admin program on the main socket", 0x0690_0690, 1),
        ("keepalive program as a CALL", KEEPALIVE_PROGRAM, 1),
    ] {
        let f = with_header(
            |h| {
                h.prog = prog;
                h.vers = vers;
            },
            &[],
        );
        v.push(case(
            name,
            Prelude::Fresh,
            f,
            error(1, 3, 39, 7, &unknown(prog, vers)),
        ));
    }
    for p in [0, 9, -1, i32::MAX, i32::MIN] {
        let f = frame_with(header(p, 5), &[]);
        let e = error(p, 5, 39, 7, &format!("unknown procedure: {p}"));
        v.push(case(format!("unknown procedure {p}"), Prelude::Fresh, f, e));
    }
    for ty in [types::REPLY, types::MESSAGE, types::STREAM, 5, 6, 42, -1] {
        let f = with_header(|h| h.ty = ty, &[]);
        v.push(case(
            format!("type {ty}"),
            Prelude::Fresh,
            f,
            Expect::Silent,
        ));
    }
    for st in [1, 2, 7, -1] {
        let f = with_header(|h| h.status = st, &[]);
        // ... and the status with %u.
        let e = error(
            1,
            3,
            39,
            7,
            &format!("Unexpected message status {}", st as u32),
        );
        v.push(case(format!("status {st}"), Prelude::Fresh, f, e));
    }
    let f = frame_with(
        frames::Header {
            status: 1,
            ..header(99, 6)
        },
        &[],
    );
    let e = error(99, 6, 39, 7, "Unexpected message status 1");
    v.push(case("status before procedure", Prelude::Fresh, f, e));
    v.extend(with_fds());
    v.extend(keepalive());
    v
}

fn with_fds() -> Vec<Case> {
    let fds = |payload: &[u8]| {
        let mut h = header(procs::CREATE_LOCKSPACE, 2);
        h.ty = types::CALL_WITH_FDS;
        frame_with(h, payload)
    };
    let ls0 = Xdr::new().u32(0).string("").0;
    vec![
        case(
            "CALL_WITH_FDS without the fd count",
            Prelude::Fresh,
            fds(&[]),
            Expect::Closed,
        ),
        case(
            "CALL_WITH_FDS announcing 33 fds",
            Prelude::Fresh,
            fds(&33u32.to_be_bytes()),
            Expect::Closed,
        ),
        case(
            "CALL_WITH_FDS announcing 2^32-1 fds",
            Prelude::Fresh,
            fds(&u32::MAX.to_be_bytes()),
            Expect::Closed,
        ),
        case(
            "CALL_WITH_FDS with 0 fds",
            Prelude::Fresh,
            fds(&ls0),
            Expect::Ok {
                proc_: 8,
                serial: 2,
            },
        ),
    ]
}

fn keepalive() -> Vec<Case> {
    let ka = |proc_: i32, vers: u32| {
        frame_with(
            frames::Header {
                prog: KEEPALIVE_PROGRAM,
                vers,
                proc_,
                ty: types::MESSAGE,
                serial: 0,
                status: 0,
            },
            &[],
        )
    };
    vec![
        case("keepalive PONG", Prelude::Fresh, ka(2, 1), Expect::Silent),
        case("keepalive proc 3", Prelude::Fresh, ka(3, 1), Expect::Silent),
        case(
            "keepalive proc -1",
            Prelude::Fresh,
            ka(-1, 1),
            Expect::Silent,
        ),
        case(
            "keepalive version 2",
            Prelude::Fresh,
            ka(1, 2),
            Expect::Silent,
        ),
        case(
            "keepalive PING with a payload",
            Prelude::Fresh,
            frame_with(
                frames::Header {
                    prog: KEEPALIVE_PROGRAM,
                    vers: 1,
                    proc_: 1,
                    ty: types::MESSAGE,
                    serial: 0,
                    status: 0,
                },
                &[0xde, 0xad, 0xbe, 0xef],
            ),
            Expect::Pong,
        ),
    ]
}

fn acquire_raw(serial: u32, payload: Xdr) -> Vec<u8> {
    frames::call(procs::ACQUIRE, serial, payload)
}

fn xdr(env: &Env) -> Vec<Case> {
    let reg = |uuid: &[u8], name: &[u8]| {
        Xdr::new()
            .fixed(uuid)
            .bytes(name)
            .u32(1)
            .u32(HOSTILE_PID)
            .u32(0)
    };
    let mut cut = frames::register(8, [1; 16], "vm", 1, HOSTILE_PID, 0);
    cut.truncate(cut.len() - 4);
    let n = cut.len() as u32;
    cut[..4].copy_from_slice(&n.to_be_bytes());
    let huge_len = |len: u32| acquire_raw(9, Xdr::new().u32(len).u32(0).u32(0));
    let long = format!("/{}", "a".repeat(65535));
    let mut v = vec![
        case(
            "REGISTER missing its flags",
            Prelude::Fresh,
            cut,
            error(1, 8, 39, 7, DECODE),
        ),
        case(
            "string length 2^32-1",
            Prelude::Registered,
            huge_len(u32::MAX),
            error(6, 9, 39, 7, DECODE),
        ),
        case(
            "string length 2^31",
            Prelude::Registered,
            huge_len(0x8000_0000),
            error(6, 9, 39, 7, DECODE),
        ),
        case(
            "string length 65537, short body",
            Prelude::Registered,
            huge_len(65537),
            error(6, 9, 39, 7, DECODE),
        ),
        case(
            "string length 65536, short body",
            Prelude::Registered,
            huge_len(65536),
            error(6, 9, 39, 7, DECODE),
        ),
        case(
            "string of 65537 bytes",
            Prelude::Registered,
            frames::acquire(9, "", &"x".repeat(65537), 0),
            error(6, 9, 39, 7, DECODE),
        ),
        case(
            "string of 70000 bytes",
            Prelude::Registered,
            frames::acquire(9, &"y".repeat(70000), "n", 0),
            error(6, 9, 39, 7, DECODE),
        ),
        case(
            "name of exactly 65536 bytes",
            Prelude::Registered,
            frames::acquire(9, "", &long, 0),
            error(
                6,
                9,
                38,
                51,
                &format!("Unable to open resource {long}: File name too long"),
            ),
        ),
        case(
            "name that is not UTF-8",
            Prelude::Registered,
            acquire_raw(9, Xdr::new().string("").bytes(b"/\xff\xfe").u32(0)),
            error(6, 9, 39, 7, DECODE),
        ),
        case(
            "UUID of 15 bytes",
            Prelude::Fresh,
            frames::call(1, 1, reg(&[7; 15], b"vm")),
            error(1, 1, 39, 7, DECODE),
        ),
        case(
            "UUID of 17 bytes",
            Prelude::Fresh,
            frames::call(1, 1, reg(&[0xaa; 17], b"vm")),
            error(1, 1, 39, 7, DECODE),
        ),
        case(
            "UUID of 0 bytes",
            Prelude::Fresh,
            frames::call(1, 1, reg(&[], b"vm")),
            error(1, 1, 39, 7, DECODE),
        ),
        case(
            "RESTRICT without flags",
            Prelude::Registered,
            frames::call(2, 1, Xdr::new()),
            error(2, 1, 39, 7, DECODE),
        ),
        case(
            "ACQUIRE without arguments",
            Prelude::Registered,
            frames::call(6, 1, Xdr::new()),
            error(6, 1, 39, 7, DECODE),
        ),
        case(
            "ACQUIRE missing its flags",
            Prelude::Registered,
            acquire_raw(1, Xdr::new().string("").string(&env.disk)),
            error(6, 1, 39, 7, DECODE),
        ),
        case(
            "trailing bytes after REGISTER",
            Prelude::Fresh,
            frames::call(1, 2, reg(&[1; 16], b"vm").u32(0xdead_beef).u32(7)),
            Expect::Ok {
                proc_: 1,
                serial: 2,
            },
        ),
    ];
    let mut padded = frames::register(3, [1; 16], "vm", 1, HOSTILE_PID, 0);
    // "vm" sits at 48..50; its two padding bytes are not zero.
    padded[50] = 0xff;
    padded[51] = 0xff;
    v.push(case(
        "non-zero string padding",
        Prelude::Fresh,
        padded,
        Expect::Ok {
            proc_: 1,
            serial: 3,
        },
    ));
    v
}

fn flags() -> Vec<Case> {
    let msg = |f: u32, func: &str| format!("unsupported flags (0x{f:x}) in function {func}");
    let res = |proc_: i32, flags: u32| {
        frames::call(proc_, 4, Xdr::new().string("").string("/x").u32(flags))
    };
    let d = "virLockSpaceProtocolDispatch";
    vec![
        case(
            "REGISTER flags 1",
            Prelude::Fresh,
            frames::register(4, [1; 16], "vm", 1, HOSTILE_PID, 1),
            error(1, 4, 8, 7, &msg(1, &format!("{d}Register"))),
        ),
        case(
            "RESTRICT flags 2^31",
            Prelude::Registered,
            frames::restrict(4, 0x8000_0000),
            error(2, 4, 8, 7, &msg(0x8000_0000, &format!("{d}Restrict"))),
        ),
        case(
            "NEW flags 2",
            Prelude::Registered,
            frames::new_lockspace(4, "/x", 2),
            error(3, 4, 8, 7, &msg(2, &format!("{d}New"))),
        ),
        case(
            "CREATE_RESOURCE flags 8",
            Prelude::Registered,
            res(4, 8),
            error(4, 4, 8, 7, &msg(8, &format!("{d}CreateResource"))),
        ),
        case(
            "DELETE_RESOURCE flags 16",
            Prelude::Registered,
            res(5, 16),
            error(5, 4, 8, 7, &msg(16, &format!("{d}DeleteResource"))),
        ),
        case(
            "ACQUIRE flags 4",
            Prelude::Registered,
            res(6, 4),
            error(6, 4, 8, 7, &msg(4, &format!("{d}AcquireResource"))),
        ),
        case(
            "ACQUIRE flags 2^32-1",
            Prelude::Registered,
            res(6, u32::MAX),
            error(
                6,
                4,
                8,
                7,
                &msg(0xffff_fffc, &format!("{d}AcquireResource")),
            ),
        ),
        case(
            "RELEASE flags SHARED",
            Prelude::Registered,
            res(7, FLAG_SHARED),
            error(7, 4, 8, 7, &msg(1, &format!("{d}ReleaseResource"))),
        ),
        case(
            "flags checked before RESTRICTed",
            Prelude::Restricted,
            res(6, 8),
            error(6, 4, 8, 7, &msg(8, &format!("{d}AcquireResource"))),
        ),
    ]
}

fn states() -> Vec<Case> {
    let res = |proc_: i32| frames::call(proc_, 5, Xdr::new().string("").string("/x").u32(0));
    let all: Vec<(&str, Vec<u8>, i32)> = vec![
        (
            "REGISTER",
            frames::register(5, [1; 16], "vm", 1, HOSTILE_PID, 0),
            1,
        ),
        ("RESTRICT", frames::restrict(5, 0), 2),
        ("NEW", frames::new_lockspace(5, "/x", 0), 3),
        ("CREATE_RESOURCE", res(4), 4),
        ("DELETE_RESOURCE", res(5), 5),
        ("ACQUIRE", res(6), 6),
        ("RELEASE", res(7), 7),
        ("CREATE_LOCKSPACE", frames::create_lockspace(5, ""), 8),
    ];
    let mut v = Vec::new();
    for (name, f, p) in &all {
        let e = error(*p, 5, 29, 7, RESTRICTED);
        v.push(case(
            format!("RESTRICTed: {name}"),
            Prelude::Restricted,
            f.clone(),
            e,
        ));
        if (2..=7).contains(p) {
            let e = error(*p, 5, 55, 7, UNREGISTERED);
            v.push(case(
                format!("unregistered: {name}"),
                Prelude::Fresh,
                f.clone(),
                e,
            ));
        }
    }
    v.push(case(
        "REGISTER with owner id 0",
        Prelude::Fresh,
        frames::register(6, [1; 16], "vm", 0, HOSTILE_PID, 0),
        error(1, 6, 55, 7, UNREGISTERED),
    ));
    v.push(case(
        "REGISTER with owner pid 0 and an empty name",
        Prelude::Fresh,
        frames::register(6, [0; 16], "", 1, 0, 0),
        Expect::Ok {
            proc_: 1,
            serial: 6,
        },
    ));
    v
}

fn names(env: &Env) -> Vec<Case> {
    let bad = |name: &str, why: &str| {
        let shown = name.replace('\0', "\\0");
        format!("invalid argument: Resource name '{shown}' is not valid: {why}")
    };
    let slash = "it contains '/'";
    let rows: Vec<(&str, i32, String, String, &str)> = vec![
        (
            "'/' in a named lockspace",
            6,
            env.ls.clone(),
            "a/b".into(),
            slash,
        ),
        (
            "'..' in a named lockspace",
            6,
            env.ls.clone(),
            "..".into(),
            "it is a relative directory reference",
        ),
        (
            "'.' in a named lockspace",
            4,
            env.ls.clone(),
            ".".into(),
            "it is a relative directory reference",
        ),
        (
            "'../' escape",
            6,
            env.ls.clone(),
            "../sentinel.img".into(),
            slash,
        ),
        (
            "'../' escape on DELETE",
            5,
            env.ls.clone(),
            "../sentinel.img".into(),
            slash,
        ),
        (
            "absolute name in a named lockspace",
            4,
            env.ls.clone(),
            "/etc/passwd".into(),
            slash,
        ),
        (
            "empty name in a named lockspace",
            6,
            env.ls.clone(),
            String::new(),
            "it is empty",
        ),
        (
            "NUL in a named lockspace",
            6,
            env.ls.clone(),
            "sentinel-x\0evil".into(),
            "it contains a NUL byte",
        ),
        (
            "NUL in the default lockspace",
            6,
            String::new(),
            format!("{}\0", env.disk),
            "it contains a NUL byte",
        ),
        (
            "relative name in the default lockspace",
            6,
            String::new(),
            "sentinel.img".into(),
            "the default lockspace needs an absolute path",
        ),
        (
            "relative '..' in the default lockspace",
            5,
            String::new(),
            "../etc/passwd".into(),
            "the default lockspace needs an absolute path",
        ),
    ];
    rows.into_iter()
        .map(|(what, p, ls, name, why)| {
            let flags = if p == 6 && !ls.is_empty() {
                FLAG_AUTOCREATE
            } else {
                0
            };
            let f = frames::call(p, 7, Xdr::new().string(&ls).string(&name).u32(flags));
            case(
                what,
                Prelude::Registered,
                f,
                error(p, 7, 8, 51, &bad(&name, why)),
            )
        })
        .collect()
}

fn sentinel_attacks(env: &Env) -> Vec<Case> {
    let busy = |name: &str| format!("resource busy: Lockspace resource '{name}' is locked");
    let alias = env.disk.replacen("/sentinel.img", "//sentinel.img", 1);
    let dot = env.disk.replacen("/sentinel.img", "/./sentinel.img", 1);
    let ls = env.ls.as_str();
    vec![
        case(
            "exclusive over exclusive",
            Prelude::Registered,
            frames::acquire(2, ls, "sentinel-x", FLAG_AUTOCREATE),
            error(6, 2, 87, 51, &busy("sentinel-x")),
        ),
        case(
            "shared over exclusive",
            Prelude::Registered,
            frames::acquire(2, ls, "sentinel-x", FLAG_SHARED | FLAG_AUTOCREATE),
            error(6, 2, 87, 51, &busy("sentinel-x")),
        ),
        case(
            "exclusive over shared",
            Prelude::Registered,
            frames::acquire(2, ls, "sentinel-s", FLAG_AUTOCREATE),
            error(6, 2, 87, 51, &busy("sentinel-s")),
        ),
        case(
            "disk through '//'",
            Prelude::Registered,
            frames::acquire(2, "", &alias, 0),
            error(6, 2, 87, 51, &busy(&alias)),
        ),
        case(
            "disk through '/./'",
            Prelude::Registered,
            frames::acquire(2, "", &dot, SHARED_ONLY),
            error(6, 2, 87, 51, &busy(&dot)),
        ),
        case(
            "DELETE a held lease",
            Prelude::Registered,
            frames::delete_resource(2, ls, "sentinel-x", 0),
            error(5, 2, 87, 51, &busy("sentinel-x")),
        ),
        case(
            "DELETE a held disk through an alias",
            Prelude::Registered,
            frames::delete_resource(2, "", &alias, 0),
            error(5, 2, 87, 51, &busy(&alias)),
        ),
        case(
            "CREATE over a held shared lease",
            Prelude::Registered,
            frames::create_resource(2, ls, "sentinel-s", 0),
            error(4, 2, 87, 51, &busy("sentinel-s")),
        ),
        case(
            "RELEASE someone else's lease",
            Prelude::Registered,
            frames::release(2, ls, "sentinel-x", 0),
            error(
                7,
                2,
                1,
                51,
                &format!("internal error: owner {HOSTILE_PID} does not hold the resource lock"),
            ),
        ),
        case(
            "RELEASE a lease nobody holds",
            Prelude::Registered,
            frames::release(2, ls, "nothing", 0),
            error(
                7,
                2,
                87,
                51,
                "resource busy: Lockspace resource 'nothing' is not locked",
            ),
        ),
        case(
            "AUTOCREATE on the sentinel's disk",
            Prelude::Registered,
            frames::acquire(2, "", &env.disk, FLAG_AUTOCREATE),
            error(
                6,
                2,
                55,
                51,
                &format!(
                    "Requested operation is not valid: Resource '{}' cannot be auto-created in the default lockspace",
                    env.disk
                ),
            ),
        ),
    ]
}

/// A shared acquire in the default lockspace (no AUTOCREATE there).
const SHARED_ONLY: u32 = FLAG_SHARED;

fn lockspaces(env: &Env) -> Vec<Case> {
    let nope = format!("{}/nope", env.dir);
    let nul = format!("{}/n\0ul", env.dir);
    vec![
        case(
            "ACQUIRE in a missing lockspace",
            Prelude::Registered,
            frames::acquire(3, &nope, "x", FLAG_AUTOCREATE),
            error(
                6,
                3,
                1,
                7,
                &format!("internal error: Lockspace for path {nope} does not exist"),
            ),
        ),
        case(
            "NEW of the default lockspace",
            Prelude::Registered,
            frames::new_lockspace(3, "", 0),
            error(
                3,
                3,
                55,
                7,
                "Requested operation is not valid: the default lockspace already exists",
            ),
        ),
        case(
            "NEW of an existing lockspace",
            Prelude::Registered,
            frames::new_lockspace(3, &env.ls, 0),
            error(
                3,
                3,
                1,
                7,
                &format!(
                    "internal error: Lockspace for path {} already exists",
                    env.ls
                ),
            ),
        ),
        case(
            "CREATE_LOCKSPACE on a held disk file",
            Prelude::Fresh,
            frames::create_lockspace(3, &env.disk),
            error(
                8,
                3,
                1,
                51,
                &format!(
                    "internal error: Lockspace location {} exists, but is not a directory",
                    env.disk
                ),
            ),
        ),
        case(
            "CREATE_LOCKSPACE with a NUL",
            Prelude::Fresh,
            frames::create_lockspace(3, &nul),
            error(
                8,
                3,
                38,
                51,
                &format!(
                    "Unable to create lockspace {}: Invalid argument",
                    nul.replace('\0', "\\0")
                ),
            ),
        ),
    ]
}

fn customs() -> Vec<Case> {
    vec![
        custom(
            "symlink inside a lockspace (AUTOCREATE)",
            custom::symlink_in_lockspace,
        ),
        custom("disk through a symlink", custom::disk_through_symlink),
        custom("peer of another uid", custom::other_uid),
        custom(
            "claimed 32 MiB, short body, stall",
            custom::huge_claim_then_stall,
        ),
        custom(
            "claimed 32 MiB, 1 MiB, close",
            custom::huge_claim_then_close,
        ),
        custom("a frame of exactly 4 + 32 MiB", custom::max_frame),
        custom(
            "idle connections after 32 MiB frames",
            custom::idle_after_max_frames,
        ),
        custom(
            "a crowd of stalled 32 MiB frames",
            custom::many_stalled_huge_frames,
        ),
        custom("a reply then a bad length", custom::good_then_garbage),
        custom("half-close after a call", custom::half_close),
        custom("close before reading replies", custom::close_before_reading),
        custom("300 slowloris connections", custom::slowloris),
        custom("a flood of 20000 PINGs", custom::ping_flood),
        custom("clients that never read", custom::never_read),
        custom("500 connections opened and closed", custom::churn),
    ]
}
