//! libvirt's own client plugin (`lockd.so`) against each daemon: domain
//! start (register + restrict, fd kept by a QEMU stand-in), resume, a
//! second domain refused, shared and read-only disks, indirect leases with
//! `file_lockspace_dir`, `<lease>` resources, release, holder death.
//!
//! Scripts run in the daemon's mount namespace through `vmlock-plugin-run`
//! (as root, lockd.so connects to `/run/libvirt/virtlockd-sock`). Output
//! lines are compared across flavors after normalising the temp dir, pids,
//! fd numbers and lease hashes.

#[allow(dead_code)]
mod common;

use std::io::{Read, Write};
use std::process::Stdio;

use common::{Ctx, PID_B, differential, within};
use vmlock_testkit::frames::{self, FLAG_AUTOCREATE};
use vmlock_testkit::{lease_name, tool_binary};

const U1: &str = "c7a5fdbd-edaf-9455-926a-d65c16db1809";
const U2: &str = "3e2b1c0a-5a4d-4f4e-9c2b-0a1b2c3d4e5f";
const U3: &str = "00112233-4455-6677-8899-aabbccddeeff";

fn normalise_word(w: &str) -> String {
    for key in ["pid=", "fd="] {
        if let Some(v) = w.strip_prefix(key)
            && v.bytes().all(|b| b.is_ascii_digit())
        {
            return format!("{key}N");
        }
    }
    w.to_string()
}

/// Runs `script` (with `@D` standing for the scratch dir) and records each
/// command with its normalised result line. Returns the result lines.
fn run(ctx: &mut Ctx, script: &str, hashes: &[&str]) -> Vec<String> {
    let script = script.replace("@D", ctx.p("").trim_end_matches('/'));
    let mut child = ctx
        .d
        .run_in_ns(&tool_binary("vmlock-plugin-run"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn vmlock-plugin-run");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(script.as_bytes()).expect("write script");
    drop(stdin);
    let finished = within(60, || child.try_wait().ok().flatten().is_some());
    if !finished {
        let _ = child.kill();
    }
    let mut out = String::new();
    let mut stdout = child.stdout.take().expect("stdout");
    stdout.read_to_string(&mut out).expect("read output");
    let _ = child.wait();
    assert!(finished, "vmlock-plugin-run hung; output so far:\n{out}");
    let cmds = script
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim().starts_with('#'));
    let mut results = Vec::new();
    for (cmd, line) in cmds.zip(out.lines()) {
        let mut norm: Vec<String> = ctx.norm_text(line).split(' ').map(normalise_word).collect();
        for (i, h) in hashes.iter().enumerate() {
            for w in norm.iter_mut() {
                *w = w.replace(h, &format!("<sha{i}>"));
            }
        }
        let norm = norm.join(" ");
        ctx.note(format!("{} => {norm}", cmd.trim()));
        results.push(line.to_string());
    }
    assert_eq!(
        results.len(),
        script
            .lines()
            .filter(|l| {
                let t = l.trim();
                !t.is_empty() && !t.starts_with('#')
            })
            .count(),
        "one result per command:\n{out}"
    );
    results
}

fn disk(ctx: &Ctx, name: &str) -> String {
    let p = ctx.p(name);
    common::touch(std::path::Path::new(&p));
    p
}

#[test]
fn domain_start_resume_and_a_second_domain_refused() {
    differential(|ctx| {
        disk(ctx, "vm1.img");
        let out = run(
            ctx,
            &format!(
                "init
new {U1} vm1 1 self
disk @D/vm1.img
spawn-qemu
inquire
new {U1} vm1 1 child
disk @D/vm1.img
acquire none
acquire none
new {U2} vm2 2 4194010
disk @D/vm1.img
acquire none
new {U2} vm2 2 4194010
disk @D/vm1.img
release
"
            ),
            &[],
        );
        assert!(out[3].starts_with("ok pid="), "{}", out[3]);
        assert_eq!(out[4], "ok state=none");
        assert_eq!(out[7], "ok fd=none");
        assert!(
            out[8].starts_with("err 87 resource busy: Lockspace resource"),
            "{}",
            out[8]
        );
        assert!(out[11].starts_with("err 87 "), "{}", out[11]);
        assert_eq!(
            out[14],
            "err 1 internal error: owner 4194010 does not hold the resource lock"
        );
    });
}

#[test]
fn shared_and_read_only_disks() {
    differential(|ctx| {
        disk(ctx, "shared.img");
        disk(ctx, "ro.img");
        let out = run(
            ctx,
            &format!(
                "init
new {U1} vm1 1 4194010
disk @D/shared.img shared
disk @D/ro.img
acquire none
new {U2} vm2 2 4194011
disk @D/shared.img shared
disk @D/ro.img readonly
acquire none
new {U3} vm3 3 4194012
disk @D/shared.img
acquire none
new {U3} vm3 3 4194012
disk @D/ro.img readonly
disk @D/ro.img readonly shared
acquire none
"
            ),
            &[],
        );
        assert_eq!(out[4], "ok fd=none", "shared + exclusive for vm1");
        assert_eq!(
            out[8], "ok fd=none",
            "vm2 shares, and its read-only disk is not locked"
        );
        assert!(
            out[11].starts_with("err 87 "),
            "vm3 exclusive on a shared disk"
        );
        assert_eq!(out[15], "ok fd=none", "read-only disks are never locked");
    });
}

#[test]
fn indirect_leases_with_file_lockspace_dir() {
    differential(|ctx| {
        let img = disk(ctx, "vm1.qcow2");
        let sha = lease_name(&img);
        let conf = ctx.dir().join("qemu-lockd.conf");
        let files = ctx.p("files");
        std::fs::write(&conf, format!("file_lockspace_dir = \"{files}\"\n")).expect("conf");
        let out = run(
            ctx,
            &format!(
                "init {}
new {U1} vm1 1 4194010
disk {img}
acquire none
new {U2} vm2 2 4194011
disk {img}
acquire none
",
                conf.display()
            ),
            &[&sha],
        );
        // init created the lockspace (CREATE_LOCKSPACE without REGISTER).
        ctx.note_file("files");
        ctx.note_file_as(&format!("files/{sha}"), "files/<sha0>");
        assert_eq!(out[0], "ok");
        assert_eq!(out[3], "ok fd=none");
        assert_eq!(
            out[6],
            format!("err 87 resource busy: Lockspace resource '{sha}' is locked")
        );
        assert!(ctx.dir().join("files").join(&sha).exists());
        // Pause: release through the plugin unlinks the lease file.
        let out = run(
            ctx,
            &format!(
                "init {}\nnew {U1} vm1 1 4194010\ndisk {img}\nrelease\n",
                conf.display()
            ),
            &[&sha],
        );
        assert_eq!(out[3], "ok state=none");
        ctx.note_file_as(&format!("files/{sha}"), "files/<sha0>");
        assert!(!ctx.dir().join("files").join(&sha).exists());
    });
}

#[test]
fn lease_elements_need_an_existing_lockspace_quirk_19() {
    differential(|ctx| {
        let script = format!(
            "init
new {U1} vm1 1 4194010
lease key1 @D/leases space
acquire none
lease key1 @D/leases -
lease key1 @D/leases space 4096
"
        );
        let out = run(ctx, &script, &[]);
        let ls = format!("{}/leases/space", ctx.p("").trim_end_matches('/'));
        assert_eq!(
            out[3],
            format!("err 1 internal error: Lockspace for path {ls} does not exist")
        );
        assert!(
            out[4].contains("Missing path or lockspace for lease resource"),
            "{}",
            out[4]
        );
        assert!(out[5].contains("Offset must be zero"), "{}", out[5]);
        // Create the lockspace by hand; the lease file must pre-exist.
        let mut c = ctx.conn();
        assert_eq!(
            ctx.call(&mut c, &frames::create_lockspace(0, &ls)).code(),
            0
        );
        let out = run(ctx, &script, &[]);
        assert!(
            out[3].starts_with("err 38 Unable to open resource"),
            "{}",
            out[3]
        );
        common::touch(&std::path::Path::new(&ls).join("key1"));
        let out = run(ctx, &script, &[]);
        assert_eq!(out[3], "ok fd=none");
        let mut b = ctx.owner(PID_B);
        let r = ctx.call(&mut b, &frames::acquire(1, &ls, "key1", 0));
        assert_eq!(r.code(), 87);
        let r = ctx.call(&mut b, &frames::acquire(2, &ls, "key1", FLAG_AUTOCREATE));
        assert_eq!(r.code(), 87);
    });
}

#[test]
fn holder_death_releases_the_domain_locks() {
    differential(|ctx| {
        disk(ctx, "a.img");
        let out = run(
            ctx,
            &format!(
                "init
new {U1} vm1 1 self
disk @D/a.img
spawn-qemu
new {U1} vm1 1 child
disk @D/a.img
acquire none
new {U2} vm2 2 4194011
disk @D/a.img
acquire none
qemu-close
new {U2} vm2 2 4194011
disk @D/a.img
acquire none
new {U1} vm1 1 self
disk @D/a.img
spawn-qemu
new {U1} vm1 1 child
disk @D/a.img
acquire none
kill-qemu
new {U3} vm3 3 4194012
disk @D/a.img
acquire none
"
            ),
            &[],
        );
        assert!(out[9].starts_with("err 87 "), "{}", out[9]);
        assert_eq!(
            out[10], "ok died signal=15",
            "the daemon SIGTERMs the holder"
        );
        assert_eq!(
            out[13], "ok fd=none",
            "vm2 gets the disk after vm1's QEMU died"
        );
        // vm2 (fake pid) still holds it: the second vm1 cannot resume.
        assert!(out[19].starts_with("err 87 "), "{}", out[19]);
        assert!(out[23].starts_with("err 87 "), "{}", out[23]);
    });
}
