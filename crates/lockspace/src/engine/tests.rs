//! The engine's semantics as a table: setup ops, the op under test, the
//! expected result (kind + exact detail text + errno), and checks after.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::{Arc, Mutex};

use vmlock_sys::lock::{self, LockKind, LockType};

use crate::fsops::hook;
use crate::{AcquireFlags, Engine, EngineOptions, Error, ErrorKind};

const X: u32 = 0; // exclusive
const S: u32 = 1; // shared
const A: u32 = 2; // autocreate
const SA: u32 = 3;

#[derive(Debug, Clone, Copy)]
enum Op {
    Acq(&'static str, &'static str, u32, u32),
    Rel(&'static str, &'static str, u32),
    RelOwner(u32),
    NewLs(&'static str),
    CreateLs(&'static str),
    CreateRes(&'static str, &'static str),
    DeleteRes(&'static str, &'static str),
    /// Another open file description takes an OFD lock (true = shared).
    ExtHold(&'static str, bool),
    RmDir(&'static str),
    MkDir(&'static str),
}

#[derive(Debug, Clone, Copy)]
enum Expect {
    Ok,
    Count(usize),
    Err(ErrorKind, &'static str),
    Sys(ErrorKind, &'static str, i32),
}

#[derive(Debug, Clone, Copy)]
enum Check {
    Exists(&'static str),
    Missing(&'static str),
    Owners(&'static str, &'static str, &'static [u32]),
    NotHeld(&'static str, &'static str),
    Resources(usize),
    HasLs(&'static str, bool),
    Mode600(&'static str),
    /// The held descriptor is the file the path names now.
    FdIsPath(&'static str, &'static str),
    /// The race hook ran this many times.
    HookCalls(usize),
    /// The nested acquire made by the hook got this kind.
    Nested(ErrorKind),
}

#[derive(Debug, Clone, Copy)]
enum Hook {
    None,
    UnlinkOnceAfterOpen,
    ReplaceOnceBeforeOpen,
    ReplaceAlwaysBeforeOpen,
    NestedAcquireBeforeOpen(&'static str, &'static str),
    /// Open-first order: the nested acquire runs once the identity is
    /// reserved, before the lock is taken.
    NestedAcquireAfterOpen(&'static str, &'static str),
}

struct Row {
    name: &'static str,
    setup: &'static [Op],
    hook: Hook,
    op: Op,
    expect: Expect,
    after: &'static [Check],
}

const fn row(name: &'static str, setup: &'static [Op], op: Op, expect: Expect) -> Row {
    Row {
        name,
        setup,
        hook: Hook::None,
        op,
        expect,
        after: &[],
    }
}

const fn with(mut r: Row, after: &'static [Check]) -> Row {
    r.after = after;
    r
}

const fn hooked(mut r: Row, hook: Hook) -> Row {
    r.hook = hook;
    r
}

use Check::*;
use ErrorKind as K;
use Op::*;

const LS: &str = "$LS";

/// One row per case; long because it is data, not logic.
#[rustfmt::skip]
fn table() -> Vec<Row> {
    vec![
        // exclusive / shared
        with(row("exclusive", &[], Acq("", "$D/disk", 1, X), Expect::Ok),
            &[Owners("", "$D/disk", &[1]), Resources(1), Exists("$D/disk")]),
        row("exclusive is not re-entrant", &[Acq("", "$D/disk", 1, X)], Acq("", "$D/disk", 1, X),
            Expect::Err(K::Busy, "Lockspace resource '$D/disk' is locked")),
        row("exclusive vs other owner", &[Acq("", "$D/disk", 1, X)], Acq("", "$D/disk", 2, X),
            Expect::Err(K::Busy, "Lockspace resource '$D/disk' is locked")),
        with(row("shared + shared", &[Acq("", "$D/disk", 1, S)], Acq("", "$D/disk", 2, S), Expect::Ok),
            &[Owners("", "$D/disk", &[1, 2]), Resources(1)]),
        row("shared then exclusive", &[Acq("", "$D/disk", 1, S)], Acq("", "$D/disk", 2, X),
            Expect::Err(K::Busy, "Lockspace resource '$D/disk' is locked")),
        row("exclusive then shared", &[Acq("", "$D/disk", 1, X)], Acq("", "$D/disk", 2, S),
            Expect::Err(K::Busy, "Lockspace resource '$D/disk' is locked")),
        with(row("duplicate shared owner appended", &[Acq("", "$D/disk", 1, S)], Acq("", "$D/disk", 1, S), Expect::Ok),
            &[Owners("", "$D/disk", &[1, 1])]),
        row("busy against another open file description", &[ExtHold("$D/disk", false)], Acq("", "$D/disk", 1, S),
            Expect::Err(K::Busy, "Lockspace resource '$D/disk' is locked")),
        // release
        with(row("release removes one occurrence", &[Acq("", "$D/disk", 1, S), Acq("", "$D/disk", 1, S)],
            Rel("", "$D/disk", 1), Expect::Ok), &[Owners("", "$D/disk", &[1])]),
        with(row("release last owner drops the resource", &[Acq("", "$D/disk", 1, X)], Rel("", "$D/disk", 1), Expect::Ok),
            &[NotHeld("", "$D/disk"), Resources(0), Exists("$D/disk")]),
        with(row("release_owner removes every occurrence everywhere",
            &[Acq("", "$D/disk", 1, S), Acq("", "$D/disk", 1, S), Acq("", "$D/disk", 2, S), Acq(LS, "r", 1, A), Acq(LS, "q", 3, A)],
            RelOwner(1), Expect::Count(2)),
            &[Owners("", "$D/disk", &[2]), NotHeld(LS, "r"), Missing("$LS/r"), Owners(LS, "q", &[3]), Resources(2)]),
        row("release_owner of a stranger", &[Acq("", "$D/disk", 1, X)], RelOwner(9), Expect::Count(0)),
        row("release not locked", &[], Rel("", "$D/disk", 1),
            Expect::Err(K::NotLocked, "Lockspace resource '$D/disk' is not locked")),
        row("release by non-owner", &[Acq("", "$D/disk", 1, X)], Rel("", "$D/disk", 7),
            Expect::Err(K::NotOwner, "owner 7 does not hold the resource lock")),
        row("release in a missing lockspace", &[], Rel("$D/nols", "x", 1),
            Expect::Err(K::NoLockspace, "Lockspace for path $D/nols does not exist")),
        row("acquire in a missing lockspace", &[], Acq("$D/nols", "x", 1, A),
            Expect::Err(K::NoLockspace, "Lockspace for path $D/nols does not exist")),
        // aliases
        row("alias // exclusive is busy", &[Acq("", "$D/disk", 1, X)], Acq("", "$D//disk", 2, X),
            Expect::Err(K::Busy, "Lockspace resource '$D//disk' is locked")),
        row("alias ./ shared vs exclusive is busy", &[Acq("", "$D/disk", 1, S)], Acq("", "$D/./disk", 2, X),
            Expect::Err(K::Busy, "Lockspace resource '$D/./disk' is locked")),
        with(row("alias symlink shared joins", &[Acq("", "$D/disk", 1, S)], Acq("", "$D/link", 2, S), Expect::Ok),
            &[Owners("", "$D/link", &[1, 2]), Owners("", "$D/disk", &[1, 2]), Resources(1)]),
        with(row("release by the other alias name", &[Acq("", "$D/disk", 1, S), Acq("", "$D/link", 2, S)],
            Rel("", "$D/disk", 2), Expect::Ok), &[Owners("", "$D/link", &[1])]),
        with(row("last release through an alias drops all names",
            &[Acq("", "$D/disk", 1, S), Acq("", "$D//disk", 2, S), Rel("", "$D/disk", 1)],
            Rel("", "$D//disk", 2), Expect::Ok), &[NotHeld("", "$D/disk"), NotHeld("", "$D//disk"), Resources(0)]),
        row("alias across lockspaces", &[Acq(LS, "r", 1, A)], Acq("", "$LS/r", 2, X),
            Expect::Err(K::Busy, "Lockspace resource '$LS/r' is locked")),
        // autocreate
        with(row("autocreate creates 0600 and holds", &[], Acq(LS, "r", 1, A), Expect::Ok),
            &[Exists("$LS/r"), Mode600("$LS/r"), FdIsPath(LS, "r")]),
        with(row("autocreate exclusive unlinks on release", &[Acq(LS, "r", 1, A)], Rel(LS, "r", 1), Expect::Ok),
            &[Missing("$LS/r"), Resources(0)]),
        with(row("autocreate shared keeps file while owners remain", &[Acq(LS, "r", 1, SA), Acq(LS, "r", 2, SA)],
            Rel(LS, "r", 1), Expect::Ok), &[Exists("$LS/r"), Owners(LS, "r", &[2])]),
        with(row("autocreate shared unlinks when the upgrade works", &[Acq(LS, "r", 1, SA)], Rel(LS, "r", 1), Expect::Ok),
            &[Missing("$LS/r")]),
        with(row("autocreate shared kept when another host reads", &[Acq(LS, "r", 1, SA), ExtHold("$LS/r", true)],
            Rel(LS, "r", 1), Expect::Ok), &[Exists("$LS/r"), Resources(0)]),
        with(row("direct leases are never unlinked", &[Acq("", "$D/disk", 1, X)], Rel("", "$D/disk", 1), Expect::Ok),
            &[Exists("$D/disk")]),
        with(row("autocreate of an existing lease file", &[CreateRes(LS, "r")], Acq(LS, "r", 1, A), Expect::Ok),
            &[FdIsPath(LS, "r")]),
        row("autocreate refused in the default lockspace", &[], Acq("", "$D/disk", 1, A),
            Expect::Err(K::AutocreateInDefault, "Resource '$D/disk' cannot be auto-created in the default lockspace")),
        row("autocreate refuses a symlink", &[], Acq(LS, "sl", 1, A),
            Expect::Sys(K::Open, "Unable to open/create resource $LS/sl", libc::ELOOP)),
        // open failures
        row("lease without autocreate must exist", &[], Acq(LS, "nofile", 1, X),
            Expect::Sys(K::Open, "Unable to open resource $LS/nofile", libc::ENOENT)),
        row("direct lease on a directory", &[], Acq("", "$D/adir", 1, X),
            Expect::Sys(K::Open, "Unable to open resource $D/adir", libc::EISDIR)),
        // races
        with(hooked(row("unlink race after open is retried", &[], Acq(LS, "r", 1, A), Expect::Ok), Hook::UnlinkOnceAfterOpen),
            &[HookCalls(2), Exists("$LS/r"), FdIsPath(LS, "r")]),
        with(hooked(row("path replaced between stat and open is retried", &[], Acq("", "$D/disk", 1, X), Expect::Ok),
            Hook::ReplaceOnceBeforeOpen), &[HookCalls(2), FdIsPath("", "$D/disk")]),
        with(hooked(row("path replaced every time gives up", &[], Acq("", "$D/disk", 1, X),
            Expect::Sys(K::Open, "Unable to open resource $D/disk", libc::EAGAIN)), Hook::ReplaceAlwaysBeforeOpen),
            &[HookCalls(5), Resources(0)]),
        with(hooked(row("a pending key is busy", &[], Acq(LS, "r", 1, A), Expect::Ok),
            Hook::NestedAcquireBeforeOpen(LS, "r")), &[Nested(K::Busy), Owners(LS, "r", &[1])]),
        with(hooked(row("a pending identity is busy", &[], Acq("", "$D/disk", 1, S), Expect::Ok),
            Hook::NestedAcquireBeforeOpen("", "$D/link")), &[Nested(K::Busy), Owners("", "$D/disk", &[1])]),
        // names
        row("name with a slash", &[], Acq(LS, "a/b", 1, A),
            Expect::Err(K::InvalidName, "Resource name 'a/b' is not valid: it contains '/'")),
        row("name ..", &[], Acq(LS, "..", 1, A),
            Expect::Err(K::InvalidName, "Resource name '..' is not valid: it is a relative directory reference")),
        row("name .", &[], CreateRes(LS, "."),
            Expect::Err(K::InvalidName, "Resource name '.' is not valid: it is a relative directory reference")),
        row("empty name", &[], DeleteRes(LS, ""), Expect::Err(K::InvalidName, "Resource name '' is not valid: it is empty")),
        row("NUL in a name", &[], Acq(LS, "a\0b", 1, A),
            Expect::Err(K::InvalidName, "Resource name 'a\\0b' is not valid: it contains a NUL byte")),
        row("relative path in the default lockspace", &[], Acq("", "disk", 1, X),
            Expect::Err(K::InvalidName, "Resource name 'disk' is not valid: the default lockspace needs an absolute path")),
        // lockspaces
        row("NEW of the default", &[], NewLs(""), Expect::Err(K::DefaultLockspaceExists, "the default lockspace already exists")),
        row("CREATE_LOCKSPACE of the default", &[], CreateLs(""), Expect::Ok),
        row("NEW of an existing lockspace", &[], NewLs(LS),
            Expect::Err(K::LockspaceExists, "Lockspace for path $LS already exists")),
        row("CREATE_LOCKSPACE is idempotent", &[], CreateLs(LS), Expect::Ok),
        with(row("NEW makes the directory", &[], NewLs("$D/new/deep"), Expect::Ok),
            &[HasLs("$D/new/deep", true), Exists("$D/new/deep")]),
        with(row("CREATE_LOCKSPACE on a file", &[], CreateLs("$D/disk"),
            Expect::Err(K::NotADirectory, "Lockspace location $D/disk exists, but is not a directory")),
            &[HasLs("$D/disk", false)]),
        with(row("failed NEW stores nothing", &[], NewLs("$D/disk/sub"),
            Expect::Sys(K::CreateLockspace, "Unable to create lockspace $D/disk/sub", libc::ENOTDIR)),
            &[HasLs("$D/disk/sub", false)]),
        row("lockspace keys are exact strings", &[], Acq("$D/ls/", "r", 1, A),
            Expect::Err(K::NoLockspace, "Lockspace for path $D/ls/ does not exist")),
        // create / delete resource
        with(row("create resource", &[], CreateRes(LS, "r"), Expect::Ok), &[Exists("$LS/r"), Mode600("$LS/r"), Resources(0)]),
        row("create resource on held", &[Acq(LS, "r", 1, A)], CreateRes(LS, "r"),
            Expect::Err(K::Busy, "Lockspace resource 'r' is locked")),
        row("create resource on a held alias", &[Acq("", "$D/disk", 1, S)], CreateRes("", "$D/link"),
            Expect::Err(K::Busy, "Lockspace resource '$D/link' is locked")),
        row("delete resource on held", &[Acq(LS, "r", 1, A)], DeleteRes(LS, "r"),
            Expect::Err(K::Busy, "Lockspace resource 'r' is locked")),
        with(row("delete resource", &[CreateRes(LS, "r")], DeleteRes(LS, "r"), Expect::Ok), &[Missing("$LS/r")]),
        row("delete a missing resource", &[], DeleteRes(LS, "r"), Expect::Ok),
        row("delete fails on a directory", &[MkDir("$LS/sub")], DeleteRes(LS, "sub"),
            Expect::Sys(K::Delete, "Unable to delete lockspace resource $LS/sub", libc::EISDIR)),
        row("touch fails when the directory is gone", &[RmDir("$LS")], CreateRes(LS, "r"),
            Expect::Sys(K::Touch, "cannot create file '$LS/r'", libc::ENOENT)),
        row("create resource in a missing lockspace", &[], CreateRes("$D/nols", "r"),
            Expect::Err(K::NoLockspace, "Lockspace for path $D/nols does not exist")),
    ]
}

struct Fx {
    _dir: tempfile::TempDir,
    d: String,
    engine: Arc<Engine>,
    held: Vec<File>,
    hook_calls: Arc<Mutex<usize>>,
    nested: Arc<Mutex<Option<ErrorKind>>>,
}

impl Fx {
    fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_owned();
        std::fs::write(format!("{d}/disk"), b"img").unwrap();
        std::fs::write(format!("{d}/other"), b"other").unwrap();
        std::os::unix::fs::symlink(format!("{d}/disk"), format!("{d}/link")).unwrap();
        std::fs::create_dir(format!("{d}/adir")).unwrap();
        let engine = Arc::new(Engine::new(EngineOptions::default()));
        engine.create_lockspace(&format!("{d}/ls")).unwrap();
        std::os::unix::fs::symlink(format!("{d}/disk"), format!("{d}/ls/sl")).unwrap();
        Fx {
            _dir: dir,
            d,
            engine,
            held: Vec::new(),
            hook_calls: Arc::default(),
            nested: Arc::default(),
        }
    }

    fn s(&self, t: &str) -> String {
        t.replace("$LS", &format!("{}/ls", self.d))
            .replace("$D", &self.d)
    }

    fn run(&mut self, op: Op) -> Result<usize, Error> {
        let e = &self.engine;
        match op {
            Acq(ls, n, o, f) => e
                .acquire(&self.s(ls), &self.s(n), o, AcquireFlags::from_wire(f))
                .map(|_| 0),
            Rel(ls, n, o) => e.release(&self.s(ls), &self.s(n), o).map(|_| 0),
            RelOwner(o) => e.release_owner(o),
            NewLs(p) => e.new_lockspace(&self.s(p)).map(|_| 0),
            CreateLs(p) => e.create_lockspace(&self.s(p)).map(|_| 0),
            CreateRes(ls, n) => e.create_resource(&self.s(ls), &self.s(n)).map(|_| 0),
            DeleteRes(ls, n) => e.delete_resource(&self.s(ls), &self.s(n)).map(|_| 0),
            ExtHold(p, shared) => {
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(self.s(p))
                    .unwrap();
                let ty = if shared {
                    LockType::Shared
                } else {
                    LockType::Exclusive
                };
                assert!(lock::try_lock(f.as_fd(), LockKind::Ofd, ty).unwrap());
                self.held.push(f);
                Ok(0)
            }
            RmDir(p) => {
                std::fs::remove_dir_all(self.s(p)).unwrap();
                Ok(0)
            }
            MkDir(p) => {
                std::fs::create_dir(self.s(p)).unwrap();
                Ok(0)
            }
        }
    }

    fn install_hook(&self, h: Hook) {
        let calls = Arc::clone(&self.hook_calls);
        let d = self.d.clone();
        let engine = Arc::clone(&self.engine);
        let nested = Arc::clone(&self.nested);
        let (nls, nname) = match h {
            Hook::NestedAcquireBeforeOpen(ls, n) | Hook::NestedAcquireAfterOpen(ls, n) => {
                (self.s(ls), self.s(n))
            }
            _ => Default::default(),
        };
        let f = move |stage: &'static str, path: &str| {
            let want = match h {
                Hook::None => return,
                Hook::UnlinkOnceAfterOpen | Hook::NestedAcquireAfterOpen(..) => "after_open",
                _ => "before_open",
            };
            if stage != want {
                return;
            }
            let mut n = calls.lock().unwrap();
            *n += 1;
            match h {
                Hook::UnlinkOnceAfterOpen if *n == 1 => std::fs::remove_file(path).unwrap(),
                Hook::ReplaceOnceBeforeOpen if *n == 1 => replace(&d, path, *n),
                Hook::ReplaceAlwaysBeforeOpen => replace(&d, path, *n),
                Hook::NestedAcquireBeforeOpen(..) | Hook::NestedAcquireAfterOpen(..) if *n == 1 => {
                    let r = engine.acquire(&nls, &nname, 9, AcquireFlags::from_wire(S));
                    *nested.lock().unwrap() = r.err().map(|e| e.kind());
                }
                _ => {}
            }
        };
        hook::set(Some(Box::new(f)));
    }

    fn check(&self, c: Check, name: &str) {
        let e = &self.engine;
        match c {
            Exists(p) => assert!(
                std::fs::symlink_metadata(self.s(p)).is_ok(),
                "{name}: {p} should exist"
            ),
            Missing(p) => assert!(
                std::fs::symlink_metadata(self.s(p)).is_err(),
                "{name}: {p} should be gone"
            ),
            Owners(ls, n, want) => {
                let info = e
                    .inspect(&self.s(ls), &self.s(n))
                    .unwrap_or_else(|| panic!("{name}: {n} not held"));
                assert_eq!(info.owners, want, "{name}: owners of {n}");
            }
            NotHeld(ls, n) => assert!(
                e.inspect(&self.s(ls), &self.s(n)).is_none(),
                "{name}: {n} still held"
            ),
            Resources(n) => assert_eq!(e.stats().resources, n, "{name}: resources"),
            HasLs(p, want) => {
                assert_eq!(e.has_lockspace(&self.s(p)), want, "{name}: has_lockspace")
            }
            Mode600(p) => {
                let m = std::fs::metadata(self.s(p)).unwrap().permissions().mode();
                assert_eq!(m & 0o777, 0o600, "{name}: mode");
            }
            FdIsPath(ls, n) => {
                let info = e.inspect(&self.s(ls), &self.s(n)).unwrap();
                let fd_meta = std::fs::metadata(format!("/proc/self/fd/{}", info.fd)).unwrap();
                let path_meta = std::fs::metadata(self.s(n).replace("$LS", "")).ok();
                let path_meta = path_meta
                    .or_else(|| std::fs::metadata(&info.path).ok())
                    .unwrap();
                assert_eq!(
                    (fd_meta.dev(), fd_meta.ino()),
                    (path_meta.dev(), path_meta.ino()),
                    "{name}: fd vs path"
                );
                assert_eq!(
                    std::fs::metadata(&info.path).unwrap().ino(),
                    fd_meta.ino(),
                    "{name}"
                );
            }
            HookCalls(n) => assert_eq!(*self.hook_calls.lock().unwrap(), n, "{name}: hook calls"),
            Nested(k) => assert_eq!(
                *self.nested.lock().unwrap(),
                Some(k),
                "{name}: nested acquire"
            ),
        }
    }
}

/// Atomically replaces `path` by a fresh copy (a new inode).
fn replace(d: &str, path: &str, n: usize) {
    let tmp = format!("{d}/replacement-{n}");
    std::fs::write(&tmp, b"new").unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Rows that describe the stat-before-open order only.
const STAT_FIRST_ONLY: &[&str] = &[
    "path replaced between stat and open is retried",
    "path replaced every time gives up",
    "a pending identity is busy",
];

/// The same races in the open-first order (OFD-only engines).
#[rustfmt::skip]
fn open_first_table() -> Vec<Row> {
    vec![
        with(hooked(row("open-first: path replaced before open locks the new file", &[],
            Acq("", "$D/disk", 1, X), Expect::Ok), Hook::ReplaceOnceBeforeOpen),
            &[HookCalls(1), FdIsPath("", "$D/disk")]),
        with(hooked(row("open-first: no stat, so no replacement retries", &[],
            Acq("", "$D/disk", 1, X), Expect::Ok), Hook::ReplaceAlwaysBeforeOpen),
            &[HookCalls(1), Resources(1), FdIsPath("", "$D/disk")]),
        with(hooked(row("open-first: a reserved identity is busy", &[], Acq("", "$D/disk", 1, S), Expect::Ok),
            Hook::NestedAcquireAfterOpen("", "$D/link")), &[Nested(K::Busy), Owners("", "$D/disk", &[1])]),
        with(hooked(row("open-first: an alias that wins the race makes us busy", &[],
            Acq("", "$D/disk", 1, X), Expect::Err(K::Busy, "Lockspace resource '$D/disk' is locked")),
            Hook::NestedAcquireBeforeOpen("", "$D/link")), &[Owners("", "$D/link", &[9]), Resources(1)]),
        with(row("open-first: held alias joins without a second lock", &[Acq("", "$D/disk", 1, S)],
            Acq("", "$D/link", 2, S), Expect::Ok), &[Owners("", "$D/disk", &[1, 2]), Resources(1)]),
        with(row("open-first: held file behind an unopenable path still answers busy",
            &[Acq("", "$D/disk", 1, X)], Acq(LS, "sl", 2, A),
            Expect::Err(K::Busy, "Lockspace resource 'sl' is locked")),
            &[Owners("", "$D/disk", &[1]), Resources(1)]),
    ]
}

/// Which acquire order a row runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    StatFirst,
    OpenFirst,
}

fn run_row(r: &Row, order: Order) {
    let mut fx = Fx::new();
    // A held classic POSIX lock is what makes a real engine use stat-first.
    fx.engine.tables().posix_held = usize::from(order == Order::StatFirst);
    assert_eq!(
        fx.engine.tables().open_first(LockKind::Ofd),
        order == Order::OpenFirst
    );
    for (i, op) in r.setup.iter().enumerate() {
        fx.run(*op)
            .unwrap_or_else(|e| panic!("{}: setup op {i} {op:?} failed: {e}", r.name));
    }
    fx.install_hook(r.hook);
    let got = fx.run(r.op);
    hook::set(None);
    match (r.expect, &got) {
        (Expect::Ok, Ok(_)) => {}
        (Expect::Count(n), Ok(m)) => assert_eq!(*m, n, "{}: count", r.name),
        (Expect::Err(kind, detail), Err(e)) => {
            assert_eq!((e.kind(), e.detail()), (kind, fx.s(detail)), "{}", r.name);
            assert_eq!(e.errno(), None, "{}", r.name);
        }
        (Expect::Sys(kind, detail, errno), Err(e)) => {
            assert_eq!(
                (e.kind(), e.detail(), e.errno()),
                (kind, fx.s(detail), Some(errno)),
                "{}",
                r.name
            );
            let full = format!("{}: {}", fx.s(detail), vmlock_sys::strerror(errno));
            assert_eq!(e.to_string(), full, "{}: message", r.name);
        }
        (want, got) => panic!("{}: expected {want:?}, got {got:?}", r.name),
    }
    for c in r.after {
        fx.check(*c, r.name);
    }
    // Whatever happened, releasing every owner empties the engine.
    for pid in fx.engine.owners() {
        fx.engine.release_owner(pid).unwrap();
    }
    assert_eq!(
        fx.engine.stats().resources,
        0,
        "{}: engine not empty",
        r.name
    );
    let st = fx.engine.tables();
    assert!(
        st.names.is_empty() && st.idents.is_empty(),
        "{}: stale reservations {:?}",
        r.name,
        st.names
    );
}

#[test]
fn semantics_table() {
    let rows = table();
    assert!(rows.len() >= 50);
    for r in &rows {
        run_row(r, Order::StatFirst);
    }
}

#[test]
fn semantics_table_open_first() {
    let rows = table();
    let mut ran = 0;
    for r in rows.iter().filter(|r| !STAT_FIRST_ONLY.contains(&r.name)) {
        run_row(r, Order::OpenFirst);
        ran += 1;
    }
    assert_eq!(ran + STAT_FIRST_ONLY.len(), rows.len());
    for r in &open_first_table() {
        run_row(r, Order::OpenFirst);
    }
}

#[test]
fn posix_resources_switch_to_stat_first() {
    let fx = Fx::new();
    assert!(fx.engine.tables().open_first(LockKind::Ofd));
    assert!(!fx.engine.tables().open_first(LockKind::Posix));
    let posix = Engine::new(EngineOptions {
        lock_kind: LockKind::Posix,
        ..EngineOptions::default()
    });
    posix
        .acquire("", &fx.s("$D/disk"), 1, AcquireFlags::EXCLUSIVE)
        .unwrap();
    std::fs::write(fx.s("$D/other"), b"img").unwrap();
    posix
        .acquire("", &fx.s("$D/other"), 1, AcquireFlags::EXCLUSIVE)
        .unwrap();
    assert_eq!(posix.tables().posix_held, 2);
    assert!(
        !posix.tables().open_first(LockKind::Ofd),
        "a classic lock is held"
    );
    posix.release("", &fx.s("$D/disk"), 1).unwrap();
    assert!(
        !posix.tables().open_first(LockKind::Ofd),
        "one is still held"
    );
    posix.release("", &fx.s("$D/other"), 1).unwrap();
    // The last classic lock is gone: opening first is safe again.
    assert_eq!(posix.tables().posix_held, 0);
    assert!(posix.tables().open_first(LockKind::Ofd));
}

#[test]
fn every_error_kind_has_its_text() {
    let lock = Error::Lock {
        path: "/p".into(),
        errno: libc::ENOLCK,
    };
    assert_eq!(lock.detail(), "Unable to acquire lock on '/p'");
    assert_eq!(
        lock.to_string(),
        "Unable to acquire lock on '/p': No locks available"
    );
    let save = Error::Touch {
        path: "/p".into(),
        errno: libc::EIO,
        close: true,
    };
    assert_eq!(save.detail(), "cannot save file '/p'");
    let neg = Error::NotOwner { pid: u32::MAX };
    assert_eq!(neg.detail(), "owner -1 does not hold the resource lock");
}

#[test]
fn stats_and_owners() {
    let fx = Fx::new();
    let ls = fx.s(LS);
    let e = &fx.engine;
    e.acquire(&ls, "a", 5, AcquireFlags::from_wire(SA)).unwrap();
    e.acquire(&ls, "a", 3, AcquireFlags::from_wire(SA)).unwrap();
    e.acquire("", &fx.s("$D/disk"), 5, AcquireFlags::EXCLUSIVE)
        .unwrap();
    assert_eq!(e.owners(), vec![3, 5]);
    let st = e.stats();
    assert_eq!((st.lockspaces, st.resources, st.owners), (2, 2, 2));
    assert_eq!(e.counts(), (st.resources, st.lockspaces));
    assert_eq!(e.release_owner(5).unwrap(), 2);
    assert_eq!(e.owners(), vec![3]);
    assert_eq!(e.counts(), (1, 2));
}

#[test]
fn busy_names_the_holder_and_held_lists_owners_with_since() {
    let fx = Fx::new();
    let ls = fx.s(LS);
    let e = &fx.engine;
    let before = crate::tables::now_secs();
    e.acquire(&ls, "a", 5, AcquireFlags::from_wire(SA)).unwrap();
    e.acquire(&ls, "a", 3, AcquireFlags::from_wire(SA)).unwrap();
    let disk = fx.s("$D/disk");
    e.acquire("", &disk, 9, AcquireFlags::EXCLUSIVE).unwrap();
    // Exclusive against shared: the first owner is named.
    let err = e
        .acquire(&ls, "a", 4, AcquireFlags::from_wire(A))
        .unwrap_err();
    assert_eq!(
        err,
        Error::Busy {
            name: "a".into(),
            holder: Some(5)
        }
    );
    assert_eq!(err.to_string(), "Lockspace resource 'a' is locked");
    let err = e
        .acquire("", &disk, 4, AcquireFlags::EXCLUSIVE)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Busy {
                holder: Some(9),
                ..
            }
        ),
        "{err:?}"
    );
    // A lock held outside the engine names nobody.
    let ext = fx.s("$D/ext");
    std::fs::write(&ext, b"").unwrap();
    let f = File::open(&ext).unwrap();
    assert!(lock::try_lock(f.as_fd(), LockKind::Ofd, LockType::Shared).unwrap());
    let err = e.acquire("", &ext, 4, AcquireFlags::EXCLUSIVE).unwrap_err();
    assert!(matches!(err, Error::Busy { holder: None, .. }), "{err:?}");

    let mut held = e.held();
    held.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(held.len(), 2);
    let after = crate::tables::now_secs();
    for r in &held {
        assert_eq!(r.owners.len(), r.since.len());
        assert!(r.since.iter().all(|&s| (before..=after).contains(&s)));
    }
    let shared = held.iter().find(|r| r.name == "a").unwrap();
    assert_eq!(shared.owners, [5, 3]);
    assert!(shared.shared);
}

/// The per-owner count behind `holds_any` and `owners` always agrees with
/// a walk over every held resource: random acquires (exclusive, shared,
/// through aliases), releases and whole-owner releases, then a snapshot
/// restored into a new engine.
#[test]
fn owner_index_agrees_with_a_walk() {
    fn walked(e: &Engine) -> Vec<u32> {
        let mut pids: Vec<u32> = e.held().into_iter().flat_map(|r| r.owners).collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }
    fn agree(e: &Engine, step: usize) {
        let want = walked(e);
        assert_eq!(e.owners(), want, "step {step}");
        for pid in 1..=5 {
            assert_eq!(
                e.holds_any(pid),
                want.contains(&pid),
                "step {step} pid {pid}"
            );
        }
    }
    let fx = Fx::new();
    let e = &fx.engine;
    let ls = fx.s("$LS");
    let names = ["a", "b", "c", "d"];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for step in 0..3000 {
        let pid = 1 + next(5) as u32;
        let name = names[next(4) as usize];
        let _ = match next(10) {
            0..=3 => e.acquire(&ls, name, pid, AcquireFlags::from_wire(X | A)),
            4..=6 => e.acquire(&ls, name, pid, AcquireFlags::from_wire(S | A)),
            7 | 8 => e.release(&ls, name, pid),
            _ => e.release_owner(pid).map(|_| ()),
        };
        agree(e, step);
    }
    // Leave something held, then carry it over a snapshot.
    for (i, name) in names.iter().enumerate() {
        let _ = e.acquire(&ls, name, 1 + i as u32, AcquireFlags::from_wire(S | A));
    }
    let before = walked(e);
    assert!(!before.is_empty());
    let (back, _) = Engine::restore(
        EngineOptions::default(),
        e.snapshot(),
        vmlock_sys::fd::dup_raw,
    )
    .expect("restore");
    agree(&back, usize::MAX);
    assert_eq!(back.owners(), before);
    for pid in before {
        back.release_owner(pid).unwrap();
    }
    agree(&back, usize::MAX);
    assert!(back.owners().is_empty());
}
