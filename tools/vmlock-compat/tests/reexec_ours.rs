//! vmlockd → vmlockd re-exec with what virtlockd cannot survive: an
//! unregistered connection (docs/quirks.md #21), a half-sent frame, a holder that dies
//! while the exec is under way (docs/quirks.md #22); and no descriptor leak over many
//! re-execs.
//!
//! The exec window is held open on purpose: the symlink points to a gate
//! script that waits on a FIFO before it execs vmlockd (same pid, every
//! inherited descriptor kept), so "during the exec" is a fact, not a race:
//!
//! ```text
//! SIGUSR1 → vmlockd writes state, execs gate.sh ──(test: kill holder, send
//!   the rest of the frame, check the state file)── FIFO "go" → exec vmlockd
//! ```

#[allow(dead_code)]
mod reexec_common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reexec_common::{Holder, PID_OTHER, World, call, owner, real_binary, within};
use vmlock_testkit::frames;
use vmlock_testkit::reexec::{
    ExecWatch, children, exe, fd_count, kernel_holder, send_reexec, write_script,
};
use vmlock_testkit::{DaemonSpec, Flavor, vmlockd_binary};

const WAIT: Duration = Duration::from_secs(20);

fn reexec(w: &World) -> ExecWatch {
    let watch = send_reexec(&w.d).expect("SIGUSR1");
    watch.wait(&w.d, WAIT).unwrap_or_else(|e| panic!("{e}"));
    watch
}

/// Makes `dir/gate.sh` (waits for a line on `dir/gate.fifo`, then execs
/// vmlockd) and returns the FIFO path.
fn make_gate(dir: &Path) -> std::path::PathBuf {
    let fifo = dir.join("gate.fifo");
    let st = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(st.success());
    let body = format!(
        "read _ < '{}'\nexec '{}' \"$@\"\n",
        fifo.display(),
        vmlockd_binary().display()
    );
    write_script(&dir.join("gate.sh"), &body).expect("gate script");
    fifo
}

#[test]
fn vmlockd_to_vmlockd_keeps_unregistered_half_framed_and_dead_clients() {
    let mut w = World::start(Flavor::Ours);
    let pid = w.d.pid();
    let fifo = make_gate(w.bin_dir.path());
    // An unregistered connection that created a lockspace (libvirt's init path).
    let mut unreg = w.d.connect();
    let ls3 = w.p("ls3");
    assert_eq!(call(&mut unreg, &frames::create_lockspace(1, &ls3)).0, 0);
    // Half a REGISTER frame.
    let mut half = w.d.connect();
    let reg = frames::register(7, *b"half-frame-uuid!", "half", 1, 4_194_300, 0);
    half.send(&reg[..22]).expect("first half");
    // A holder that will die while the exec is under way.
    let dying = Holder::start(&w.d, "", &w.p("dying.img").tap_touch());
    let dying_img = w.path("dying.img");
    w.assert_all_held();

    w.link
        .retarget(&w.bin_dir.path().join("gate.sh"))
        .expect("retarget");
    let watch = send_reexec(&w.d).expect("SIGUSR1");
    let sh = std::fs::canonicalize("/bin/sh").expect("sh");
    assert!(
        within(20, || exe(pid).is_ok_and(|e| e == sh)),
        "the gate runs"
    );
    // Inside the window: the old image is gone, the new one not started.
    let meta = std::fs::symlink_metadata(w.d.state_file()).expect("state file written");
    assert!(meta.file_type().is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(w.d.state_file()).expect("state");
    assert!(
        // Whitespace is the writer's choice (vmlockd writes compact JSON).
        text.replace([' ', '\n'], "")
            .contains(&format!("\"magic\":\"{pid}\"")),
        "magic is our pid"
    );
    let mut dying = dying;
    dying.kill();
    half.send(&reg[22..]).expect("second half");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .and_then(|mut f| f.write_all(b"go\n"))
        .expect("open the gate");
    watch.wait(&w.d, WAIT).unwrap_or_else(|e| panic!("{e}"));
    w.d.assert_alive();
    assert_eq!(exe(pid).expect("exe"), real_binary(Flavor::Ours));

    let reply = half
        .recv_frame()
        .expect("reply to the frame split by the exec");
    assert_eq!(reply, frames::ok_reply(frames::procs::REGISTER, 7));
    assert!(
        unreg.barrier_is_pong(),
        "the unregistered connection survived"
    );
    let reg2 = frames::register(2, *b"late-register-id", "late", 1, 4_194_301, 0);
    assert_eq!(call(&mut unreg, &reg2).0, 0);
    let r = call(
        &mut unreg,
        &frames::acquire(3, &ls3, "r", frames::FLAG_AUTOCREATE),
    );
    assert_eq!(r.0, 0, "the once-unregistered connection acquires: {}", r.1);
    assert!(
        within(10, || kernel_holder(&dying_img).is_ok_and(|h| h.is_none())),
        "the holder that died during the exec was released"
    );
    let mut o = owner(&w.d, PID_OTHER, "other");
    let r = call(&mut o, &frames::acquire(1, "", &w.p("dying.img"), 0));
    assert_eq!(r.0, 0, "its disk is free for others: {}", r.1);
    w.assert_all_held();
    w.assert_release_paths();
}

trait TapTouch {
    fn tap_touch(self) -> String;
}

impl TapTouch for String {
    /// Creates the file named by the string and returns the string.
    fn tap_touch(self) -> String {
        reexec_common::touch(Path::new(&self));
        self
    }
}

/// The descriptor count once it has stopped changing (the connection that
/// proved the new image serves is closed asynchronously).
fn steady_fd_count(pid: u32) -> usize {
    let mut last = fd_count(pid).expect("fd count");
    let mut same = 0;
    within(5, || {
        let n = fd_count(pid).expect("fd count");
        same = if n == last { same + 1 } else { 0 };
        last = n;
        same >= 5
    });
    last
}

#[test]
fn twenty_reexecs_leak_no_descriptor() {
    // Verbose: the re-exec timing lines (info) say which state was used.
    let mut w = World::start_with(Flavor::Ours, DaemonSpec::new(Flavor::Ours).arg("-v"));
    let pid = w.d.pid();
    reexec(&w);
    let first = steady_fd_count(pid);
    let mut seen = Vec::new();
    for _ in 0..20 {
        reexec(&w);
        let back = within(5, || fd_count(pid).is_ok_and(|n| n <= first));
        seen.push(fd_count(pid).expect("fd count"));
        assert!(back, "descriptors stay above {first}: {seen:?}");
    }
    w.d.assert_alive();
    assert_eq!(steady_fd_count(pid), first, "after 20 re-execs: {seen:?}");
    // vmlockd to vmlockd goes through the binary state, never the JSON.
    let log = w.d.log_text();
    assert_eq!(log.matches("re-exec: Binary state (").count(), 21, "{log}");
    assert_eq!(log.matches("re-exec: binary state (").count(), 21, "{log}");
    assert!(!log.contains("ignoring"), "{log}");
    assert!(!w.d.state_file().exists());
    // Each old image was freed by a memory releaser, and each releaser was
    // reaped by the next image: none is left behind, zombie or not.
    // (On a loaded host a releaser may miss its 100 ms to arm; that
    // re-exec says so and goes without it.)
    let ready = log.matches(", memory releaser ready").count();
    let late = log.matches(", memory releaser not ready").count();
    assert_eq!(ready + late, 21, "{log}");
    assert!(ready >= 1, "no re-exec had its memory releaser: {log}");
    let none_left = within(5, || children(pid).is_empty());
    assert!(none_left, "children of the daemon: {:?}", children(pid));
    w.assert_all_held();
    w.assert_release_paths();
}
