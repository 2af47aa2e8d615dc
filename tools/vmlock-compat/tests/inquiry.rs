//! vmlockd's inquiry program, seen through libvirt's own `lockd.so`
//! (`vmlock-plugin-run`, driven line by line) and `vmlockctl`: the refusal
//! names the holding domain, `list`/`status`/`check` show exactly what the
//! plugin took, forced release of a dead holder's lock, refusal for a live
//! one unless `--terminate`, which stops the holder *before* the lock goes.
//! Bad input (unknown flags, unlocked paths, a non-root caller, malformed
//! frames) gets a clear error, releases nothing, and the daemon keeps serving.
//!
//! vmlockd only: virtlockd has no inquiry program (the differential suite
//! runs vmlockd with `refusal_names_holder = 0` instead).

#[allow(dead_code)]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vmlock_proto::header::{Header, MessageType, Status};
use vmlock_proto::inquiry;
use vmlock_sys::lock::{LockKind, LockType};
use vmlock_testkit::{Daemon, DaemonSpec, Flavor, tool_binary};

const U1: &str = "c7a5fdbd-edaf-9455-926a-d65c16db1809";
const U2: &str = "3e2b1c0a-5a4d-4f4e-9c2b-0a1b2c3d4e5f";
const U3: &str = "00112233-4455-6677-8899-aabbccddeeff";
/// A pid above the kernel's maximum: a process that never exists.
const GHOST: u32 = 4_194_011;

/// `vmlock-plugin-run` in the daemon's namespace, one command at a time.
struct Plugin {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
}

impl Plugin {
    fn start(d: &Daemon) -> Plugin {
        let mut child = d
            .run_in_ns(&tool_binary("vmlock-plugin-run"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn vmlock-plugin-run");
        let stdin = child.stdin.take().expect("stdin");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        Plugin { child, stdin, out }
    }

    fn cmd(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").expect("write command");
        self.stdin.flush().expect("flush");
        let mut s = String::new();
        self.out.read_line(&mut s).expect("read result");
        s.trim_end().to_string()
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ctl(d: &Daemon) -> Command {
    let mut c = Command::new(tool_binary("vmlockctl"));
    c.arg("--socket").arg(d.socket_path());
    c.arg("--admin-socket").arg(d.admin_socket_path());
    c.stdin(Stdio::null());
    c
}

fn run(c: &mut Command) -> Output {
    c.output().expect("run vmlockctl")
}

fn json(o: &Output) -> serde_json::Value {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("JSON output")
}

fn list(d: &Daemon) -> Vec<serde_json::Value> {
    let v = json(&run(ctl(d).args(["list", "--json"])));
    v.as_array().expect("array").clone()
}

fn status(d: &Daemon) -> serde_json::Value {
    json(&run(ctl(d).args(["status", "--json"])))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn touch(p: &Path) {
    common::touch(p);
}

/// Whether the kernel shows a lock on libvirt's byte of `path`.
fn locked(path: &Path) -> bool {
    let f = std::fs::File::open(path).expect("open disk");
    vmlock_sys::lock::query(f.as_fd(), LockKind::Ofd, LockType::Exclusive)
        .expect("query")
        .is_some()
}

/// Starts a domain the way libvirt does: the QEMU stand-in registers
/// itself and restricts its connection; libvirtd acquires on its behalf.
/// Returns the stand-in's pid.
fn start_domain(p: &mut Plugin, uuid: &str, name: &str, id: u32, disk: &Path) -> u32 {
    let disk = disk.display();
    assert_eq!(p.cmd("init"), "ok");
    assert_eq!(p.cmd(&format!("new {uuid} {name} {id} self")), "ok");
    assert_eq!(p.cmd(&format!("disk {disk}")), "ok");
    let spawned = p.cmd("spawn-qemu");
    let pid: u32 = spawned
        .strip_prefix("ok pid=")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("spawn-qemu: {spawned}"));
    assert_eq!(p.cmd(&format!("new {uuid} {name} {id} child")), "ok");
    assert_eq!(p.cmd(&format!("disk {disk}")), "ok");
    assert_eq!(p.cmd("acquire none"), "ok fd=none");
    pid
}

#[test]
fn operators_see_and_manage_what_lockd_so_took() {
    let d = Daemon::start(DaemonSpec::new(Flavor::Ours).arg("-v")).expect("vmlockd");
    let vm1 = d.dir().join("vm1.img");
    let vm3 = d.dir().join("vm3.img");
    touch(&vm1);
    touch(&vm3);
    let t0 = now();
    let mut p = Plugin::start(&d);
    let qemu = start_domain(&mut p, U1, "vm1", 1, &vm1);

    // A second domain is refused; the text keeps virtlockd's words and
    // names the first domain. Code 87, as virtlockd.
    assert_eq!(p.cmd(&format!("new {U2} vm2 2 4194010")), "ok");
    assert_eq!(p.cmd(&format!("disk {}", vm1.display())), "ok");
    assert_eq!(
        p.cmd("acquire none"),
        format!(
            "err 87 resource busy: Lockspace resource '{}' is locked by domain 'vm1' (uuid {U1}, pid {qemu})",
            vm1.display()
        )
    );

    // A lock whose owner never connected (libvirtd acquired for a pid that
    // is gone): it stays until released.
    assert_eq!(p.cmd(&format!("new {U3} vm3 3 {GHOST}")), "ok");
    assert_eq!(p.cmd(&format!("disk {}", vm3.display())), "ok");
    assert_eq!(p.cmd("acquire none"), "ok fd=none");

    // list shows exactly the plugin's two locks, with who holds them.
    let rows = list(&d);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let row = |path: &Path| {
        rows.iter()
            .find(|r| r["resource"] == path.to_str().expect("utf-8"))
            .unwrap_or_else(|| panic!("no row for {}: {rows:?}", path.display()))
            .clone()
    };
    let r1 = row(&vm1);
    assert_eq!(r1["lockspace"], "");
    assert_eq!(r1["path"], vm1.to_str().expect("utf-8"));
    assert_eq!(r1["mode"], "exclusive");
    assert_eq!(r1["owner_name"], "vm1");
    assert_eq!(r1["owner_uuid"], U1);
    assert_eq!(r1["owner_id"], 1);
    assert_eq!(r1["pid"], qemu);
    assert_eq!(r1["host"], serde_json::Value::Null);
    let since = r1["since"].as_i64().expect("since");
    assert!((t0..=now()).contains(&since), "since {since}, t0 {t0}");
    let r3 = row(&vm3);
    assert_eq!(
        (r3["owner_name"].clone(), r3["pid"].clone()),
        ("vm3".into(), GHOST.into())
    );

    // Filters.
    let only = |args: &[&str]| {
        let v = json(&run(ctl(&d).arg("list").arg("--json").args(args)));
        v.as_array().expect("array").len()
    };
    assert_eq!(only(&["--owner-name", "vm1"]), 1);
    assert_eq!(only(&["--owner-uuid", U3]), 1);
    assert_eq!(only(&["--owner-pid", &qemu.to_string()]), 1);
    assert_eq!(only(&["--path", vm3.to_str().expect("utf-8")]), 1);
    assert_eq!(only(&["--lockspace", ""]), 2);
    assert_eq!(only(&["--lockspace", "/nowhere"]), 0);
    assert_eq!(only(&["--owner-name", "nobody"]), 0);

    // status counts match.
    let s = status(&d);
    assert_eq!(s["locks"], 2, "{s}");
    assert_eq!(s["locks_exclusive"], 2);
    assert_eq!(s["locks_shared"], 0);
    assert_eq!(s["owners"], 2);
    assert_eq!(s["refusals"], 1);
    assert_eq!(s["forced_releases"], 0);
    assert_eq!(s["lockspaces"], 1);
    assert_eq!(s["lock_kind"], "ofd");
    assert_eq!(s["pid"], d.pid());
    assert!(s["clients"].as_u64().expect("clients") >= 1, "{s}");
    assert!(s["fds_used"].as_u64() < s["fds_limit"].as_u64());

    // check names the VM.
    let o = run(ctl(&d).arg("check").arg(&vm1));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        text.contains(&format!(
            "locked exclusive, held by domain 'vm1' (uuid {U1}, pid {qemu}) since "
        )),
        "{text}"
    );

    what_a_re_exec_keeps(&d, &rows, &s);

    bad_input_is_refused_and_releases_nothing(&d, &vm1, qemu);

    // The dead holder's lock: released by force, logged, counted.
    let o = run(ctl(&d).args(["release", "--force"]).arg(&vm3));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!locked(&vm3), "the ghost's lock is gone");
    assert_eq!(list(&d).len(), 1);
    assert_eq!(status(&d)["forced_releases"], 1);
    let log = d.log_text();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("forced release")
            && l.contains("asker_uid=0")
            && l.contains(&format!("pid {GHOST}"))
            && l.contains("domain 'vm3'")),
        "{log}"
    );

    // The live holder's lock: refused without --terminate...
    let o = run(ctl(&d).args(["release", "--force"]).arg(&vm1));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "held by domain 'vm1' (uuid {U1}, pid {qemu}), which is running"
        )),
        "{err}"
    );
    assert!(locked(&vm1) && list(&d).len() == 1, "nothing released");

    // ...and with it, the holder is gone before the lock is: sample both
    // while the release runs and check the order.
    let pidfd = vmlock_sys::process::pidfd_open(qemu as i32).expect("pidfd of the stand-in");
    let release = ctl(&d)
        .args(["release", "--force", "--terminate"])
        .arg(&vm1)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn release");
    let start = Instant::now();
    let mut samples: Vec<(Duration, bool, bool)> = Vec::new();
    loop {
        let exited = vmlock_sys::process::pidfd_wait(pidfd.as_fd(), Duration::ZERO).expect("poll");
        let held = locked(&vm1);
        samples.push((start.elapsed(), exited, held));
        if (exited && !held) || start.elapsed() > Duration::from_secs(10) {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let out = release.wait_with_output().expect("release");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 holder(s) terminated first"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        !samples[0].1 && samples[0].2,
        "sampling began while the holder ran and held the lock: {samples:?}"
    );
    let first_exit = samples.iter().find(|s| s.1).map(|s| s.0);
    let first_free = samples.iter().find(|s| !s.2).map(|s| s.0);
    assert!(
        samples.iter().all(|&(_, exited, held)| exited || held),
        "the lock was free while the holder ran: {samples:?}"
    );
    match (first_exit, first_free) {
        (Some(e), Some(f)) => assert!(e <= f, "exit at {e:?}, release at {f:?}"),
        other => panic!("holder exit / release not both seen: {other:?} {samples:?}"),
    }
    assert!(list(&d).is_empty());
    let s = status(&d);
    assert_eq!(
        (s["forced_releases"].clone(), s["locks"].clone()),
        (2.into(), 0.into())
    );
    drop(p);
    let mut d = d;
    d.assert_alive();
}

/// A SIGUSR1 re-exec keeps every row as it was (`since` included), the
/// daemon's start time and its counters, and records itself.
fn what_a_re_exec_keeps(d: &Daemon, rows: &[serde_json::Value], before: &serde_json::Value) {
    assert_eq!(before.get("reexec_time"), None, "{before}");
    d.signal(libc::SIGUSR1).expect("re-exec");
    assert!(
        vmlock_testkit::wait_until(Duration::from_secs(30), || d
            .log_text()
            .contains("restored after re-exec")),
        "{}",
        d.log_text()
    );
    let mut again = list(d);
    let mut rows = rows.to_vec();
    let key = |r: &serde_json::Value| r["resource"].as_str().unwrap_or_default().to_owned();
    again.sort_by_key(key);
    rows.sort_by_key(key);
    assert_eq!(again, rows, "rows after the re-exec");
    let s = status(d);
    assert_eq!(s["pid"], d.pid());
    assert_eq!(s["started"], before["started"], "{s}");
    assert!(s["uptime_s"].as_u64() >= before["uptime_s"].as_u64(), "{s}");
    assert_eq!(s["refusals"], before["refusals"]);
    assert_eq!(s["reexecs"], 1, "{s}");
    assert_eq!(s["reexec_locks"], 2, "{s}");
    assert!(
        s["reexec_time"].as_i64() >= before["started"].as_i64(),
        "{s}"
    );
}

/// Unknown filters, unlocked paths, a non-root caller and malformed
/// inquiry frames: clear errors, `vm1`'s lock untouched, daemon serving.
fn bad_input_is_refused_and_releases_nothing(d: &Daemon, vm1: &Path, qemu: u32) {
    let o = run(ctl(d).args(["list", "--owner-colour", "red"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unexpected argument '--owner-colour'"));

    let free = d.dir().join("free.img");
    touch(&free);
    let o = run(ctl(d).args(["release", "--force"]).arg(&free));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("resource '{}' is not locked", free.display())),
        "{err}"
    );
    let o = run(ctl(d).args(["release", "--force", "--pid", "77"]).arg(vm1));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("pid 77 does not hold resource"));

    // Not root: the admin socket refuses, whatever the command.
    for args in [
        &["list"][..],
        &["status", "--json"],
        &["release", "--force", "x.img"],
    ] {
        let o = run(Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(tool_binary("vmlockctl"))
            .arg("--socket")
            .arg(d.socket_path())
            .arg("--admin-socket")
            .arg(d.admin_socket_path())
            .args(args)
            .stdin(Stdio::null()));
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("root only"), "{args:?}: {err}");
    }

    // Malformed frames on the admin socket: an ERROR reply each, the
    // connection stays, and the lock program is not served there.
    let mut c = vmlock_testkit::conn::RawConn::connect(&d.admin_socket_path()).expect("admin");
    let frame = |proc_: i32, vers: u32, payload: &[u8]| {
        let h = Header {
            prog: inquiry::PROGRAM,
            vers,
            proc_,
            mtype: MessageType::Call,
            serial: 9,
            status: Status::Ok,
        };
        vmlock_proto::frame::encode_frame(&h, payload)
    };
    let error_of = |reply: Vec<u8>| {
        let msg = vmlock_proto::frame::parse_body(&reply[4..]).expect("reply");
        assert_eq!(msg.header.status, Status::Error);
        let e: vmlock_proto::error::WireError =
            vmlock_proto::xdr::XdrDecode::from_xdr(&msg.payload).expect("error payload");
        e.to_string()
    };
    for (f, want) in [
        (
            frame(2, 1, &[0, 0, 0, 7]),
            "Unable to decode message payload",
        ),
        (frame(3, 1, &[0xff; 3]), "Unable to decode message payload"),
        (frame(9, 1, &[]), "unknown procedure: 9"),
        (
            frame(1, 2, &[0, 0, 0, 0]),
            "Cannot find program 1986882667 version 2",
        ),
        (
            frame(1, 1, &[0, 0, 0, 4]),
            "unsupported flags (0x4) in function vmlockInquiryStatus",
        ),
    ] {
        let reply = c.call(&f).expect("reply");
        assert_eq!(error_of(reply), want);
    }
    let mut main = vmlock_testkit::conn::RawConn::connect(&d.socket_path()).expect("main");
    assert_eq!(
        error_of(main.call(&frame(1, 1, &[0, 0, 0, 0])).expect("reply")),
        "Cannot find program 1986882667 version 1",
        "the inquiry program is served on the admin socket only"
    );

    assert!(locked(vm1), "vm1 still locked");
    let rows = list(d);
    assert!(rows.iter().any(|r| r["pid"] == qemu), "{rows:?}");
    assert_eq!(status(d)["forced_releases"], 0);
}
