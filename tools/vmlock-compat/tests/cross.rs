//! Cross-process exclusion through the file locks: two daemons on the same
//! lease directory and disk (every pair of flavors, both running at once,
//! each in its own namespace), and `vmlock-hold` against each daemon.

#[allow(dead_code)]
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{Ctx, PID_A, PID_B, differential, hold_bin};
use vmlock_testkit::frames::{self, FLAG_AUTOCREATE, FLAG_SHARED};
use vmlock_testkit::{Daemon, DaemonSpec, Flavor, RawConn, decode_reply};

fn code(c: &mut RawConn, f: &[u8]) -> i32 {
    let r = c.call(f).expect("reply");
    decode_reply(&r).1.map_or(0, |e| e.code)
}

fn owner(d: &Daemon, pid: u32) -> RawConn {
    let mut c = d.connect();
    assert_eq!(
        code(
            &mut c,
            &frames::register(0, common::UUID_A, "vm", 1, pid, 0)
        ),
        0
    );
    c
}

fn pair(x: Flavor, y: Flavor) {
    let dx = Daemon::start(DaemonSpec::new(x)).expect("start x");
    let dy = Daemon::start(DaemonSpec::new(y)).expect("start y");
    let tag = format!("{} vs {}", x.name(), y.name());
    let ls = dx.dir().join("files").to_string_lossy().into_owned();
    let (mut a, mut b) = (owner(&dx, PID_A), owner(&dy, PID_B));
    assert_eq!(code(&mut a, &frames::create_lockspace(1, &ls)), 0);
    assert_eq!(code(&mut b, &frames::create_lockspace(1, &ls)), 0);
    // Indirect leases in one directory.
    assert_eq!(
        code(&mut a, &frames::acquire(2, &ls, "l", FLAG_AUTOCREATE)),
        0,
        "{tag}"
    );
    assert_eq!(
        code(&mut b, &frames::acquire(2, &ls, "l", FLAG_AUTOCREATE)),
        87,
        "{tag}"
    );
    let sh = FLAG_AUTOCREATE | FLAG_SHARED;
    assert_eq!(code(&mut b, &frames::acquire(3, &ls, "l", sh)), 87, "{tag}");
    assert_eq!(code(&mut a, &frames::release(3, &ls, "l", 0)), 0);
    assert!(!Path::new(&ls).join("l").exists(), "{tag}: unlinked by x");
    assert_eq!(
        code(&mut b, &frames::acquire(4, &ls, "l", FLAG_AUTOCREATE)),
        0,
        "{tag}"
    );
    assert_eq!(code(&mut a, &frames::acquire(4, &ls, "l", sh)), 87, "{tag}");
    assert_eq!(code(&mut b, &frames::release(5, &ls, "l", 0)), 0);
    // Shared on both sides: the last one out unlinks.
    assert_eq!(code(&mut a, &frames::acquire(5, &ls, "s", sh)), 0, "{tag}");
    assert_eq!(code(&mut b, &frames::acquire(6, &ls, "s", sh)), 0, "{tag}");
    assert_eq!(code(&mut a, &frames::release(6, &ls, "s", 0)), 0);
    assert!(
        Path::new(&ls).join("s").exists(),
        "{tag}: y still shares it"
    );
    assert_eq!(code(&mut b, &frames::release(7, &ls, "s", 0)), 0);
    assert!(!Path::new(&ls).join("s").exists(), "{tag}: unlinked by y");
    // Direct mode on one disk.
    let disk = dx.dir().join("disk.img").to_string_lossy().into_owned();
    common::touch(Path::new(&disk));
    assert_eq!(code(&mut a, &frames::acquire(7, "", &disk, 0)), 0);
    assert_eq!(code(&mut b, &frames::acquire(8, "", &disk, 0)), 87, "{tag}");
    assert_eq!(
        code(&mut b, &frames::acquire(9, "", &disk, FLAG_SHARED)),
        87,
        "{tag}"
    );
    assert_eq!(code(&mut a, &frames::release(8, "", &disk, 0)), 0);
    assert_eq!(
        code(&mut b, &frames::acquire(10, "", &disk, FLAG_SHARED)),
        0,
        "{tag}"
    );
    assert_eq!(
        code(&mut a, &frames::acquire(9, "", &disk, FLAG_SHARED)),
        0,
        "{tag}"
    );
    assert_eq!(
        code(&mut a, &frames::acquire(10, "", &disk, 0)),
        87,
        "{tag}"
    );
}

#[test]
fn two_daemons_on_one_lease_dir_exclude_each_other() {
    let flavors = Flavor::from_env();
    for &x in &flavors {
        for &y in &flavors {
            pair(x, y);
        }
    }
}

/// Runs `vmlock-hold KIND TYPE path`, returns the child and its first line.
fn hold(kind: &str, ty: &str, path: &str) -> (Child, String) {
    let mut child = Command::new(hold_bin())
        .args([kind, ty, path])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn vmlock-hold");
    let mut line = String::new();
    let out = child.stdout.take().expect("stdout");
    BufReader::new(out).read_line(&mut line).expect("read");
    (child, line.trim_end().to_string())
}

fn release_hold(mut child: Child) {
    drop(child.stdin.take());
    let st = child.wait().expect("wait");
    assert!(st.success(), "vmlock-hold failed: {st}");
}

fn hold_vs_daemon(ctx: &mut Ctx, kind: &str) {
    let disk = ctx.p(&format!("disk{kind}.img"));
    common::touch(Path::new(&disk));
    let mut a = ctx.owner(PID_A);
    assert_eq!(
        ctx.call(&mut a, &frames::acquire(1, "", &disk, 0)).code(),
        0
    );
    let (c, line) = hold(kind, "--shared", &disk);
    ctx.note(format!("{kind} shared while daemon holds: {line}"));
    assert_eq!(line, "busy");
    let _ = c.wait_with_output();
    assert_eq!(
        ctx.call(&mut a, &frames::release(2, "", &disk, 0)).code(),
        0
    );
    let (c, line) = hold(kind, "--exclusive", &disk);
    ctx.note(format!("{kind} exclusive on a free disk: {line}"));
    assert_eq!(line, "locked");
    assert_eq!(
        ctx.call(&mut a, &frames::acquire(3, "", &disk, 0)).code(),
        87
    );
    assert_eq!(
        ctx.call(&mut a, &frames::acquire(4, "", &disk, FLAG_SHARED))
            .code(),
        87
    );
    release_hold(c);
    let (c, line) = hold(kind, "--shared", &disk);
    assert_eq!(line, "locked");
    assert_eq!(
        ctx.call(&mut a, &frames::acquire(5, "", &disk, FLAG_SHARED))
            .code(),
        0
    );
    let mut b = ctx.owner(PID_B);
    assert_eq!(
        ctx.call(&mut b, &frames::acquire(1, "", &disk, 0)).code(),
        87
    );
    release_hold(c);
}

#[test]
fn vmlock_hold_posix_and_ofd_against_each_daemon() {
    differential(|ctx| {
        hold_vs_daemon(ctx, "--posix");
        hold_vs_daemon(ctx, "--ofd");
    });
}
