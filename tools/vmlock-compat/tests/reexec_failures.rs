//! Re-exec failures: an exec that cannot happen must leave vmlockd serving
//! with every lock, and a bad state file at start must lead to a fresh,
//! serving daemon (docs/quirks.md #23: descriptors named by a stale file are closed).

#[allow(dead_code)]
mod reexec_common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use reexec_common::{PID_OTHER, World, call, owner, real_binary, touch, within};
use vmlock_testkit::frames;
use vmlock_testkit::reexec::{children, exe, kernel_holder, send_reexec};
use vmlock_testkit::{Daemon, DaemonSpec, Flavor, tool_binary, vmlockd_binary};

fn failures_logged(d: &Daemon) -> usize {
    d.log_text().matches("re-exec of").count()
}

/// A 64-byte ELF header for AArch64: the kernel refuses it (ENOEXEC) here.
fn foreign_elf() -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..7].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1]);
    h[16] = 2; // ET_EXEC
    h[18] = 0xb7; // EM_AARCH64
    h[20] = 1; // EV_CURRENT
    h[52] = 64; // e_ehsize
    h[54] = 56; // e_phentsize
    h
}

fn check_still_serving(w: &mut World, what: &str) {
    if exe(w.d.pid()).is_err() {
        // Gone (or a zombie): collect the status for the message.
        w.d.wait_exit(Duration::from_secs(5));
    }
    w.d.assert_alive();
    assert_eq!(
        exe(w.d.pid()).expect("exe"),
        real_binary(Flavor::Ours),
        "{what}"
    );
    assert!(!w.d.state_file().exists(), "{what}: state file left behind");
    let leftovers: Vec<_> = std::fs::read_dir(w.d.run_dir())
        .expect("run dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("restart-exec"))
        .collect();
    assert!(leftovers.is_empty(), "{what}: {leftovers:?}");
    assert!(
        w.raw.barrier_is_pong(),
        "{what}: an old connection still works"
    );
    w.assert_all_held();
}

/// Retargets the link to each target in turn; every SIGUSR1 must fail,
/// be logged, and leave the daemon serving with every lock; then a fixed
/// link re-execs normally.
fn failed_execs(targets: &[(&str, std::path::PathBuf)], w: &mut World) {
    for (what, target) in targets {
        w.link.retarget(target).expect("retarget");
        let before = failures_logged(&w.d);
        let pid = w.d.pid();
        w.d.signal(vmlock_testkit::reexec::SIGUSR1)
            .expect("SIGUSR1");
        // Also stop waiting if the process is gone (exe of a zombie fails).
        let settled = within(10, || failures_logged(&w.d) > before || exe(pid).is_err());
        assert!(
            settled,
            "{what}: no failure logged; log:\n{}",
            w.d.log_text()
        );
        check_still_serving(w, what);
    }
    w.link.retarget(&vmlockd_binary()).expect("fix the link");
    let watch = send_reexec(&w.d).expect("SIGUSR1");
    watch
        .wait(&w.d, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    check_still_serving(w, "after fixing the link");
    w.assert_release_paths();
}

#[test]
fn exec_of_a_foreign_architecture_binary_keeps_serving() {
    let mut w = World::start(Flavor::Ours);
    let elf = w.bin_dir.path().join("aarch64-binary");
    std::fs::write(&elf, foreign_elf()).expect("elf");
    std::fs::set_permissions(&elf, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    failed_execs(&[("wrong architecture (ELF for AArch64)", elf)], &mut w);
}

/// A program that declares vmlockd's hand-over note but that the kernel
/// refuses (our own binary, relabelled for AArch64): the daemon writes the
/// binary state and starts its memory releaser, the exec fails on the main
/// thread, and the releaser must be let go and reaped. The next re-exec
/// starts a fresh one and succeeds.
#[test]
fn a_failed_binary_handover_leaves_no_releaser_behind() {
    let mut w = World::start_with(
        Flavor::Ours,
        vmlock_testkit::DaemonSpec::new(Flavor::Ours).arg("-v"),
    );
    let relabelled = w.bin_dir.path().join("vmlockd-for-aarch64");
    // A whole copy: the daemon looks for its state-format note in the
    // target's section headers, at the end of the file.
    let mut elf = std::fs::read(vmlockd_binary()).expect("read vmlockd");
    elf[18..20].copy_from_slice(&0xb7u16.to_le_bytes()); // e_machine = EM_AARCH64
    std::fs::write(&relabelled, elf).expect("write");
    std::fs::set_permissions(&relabelled, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    failed_execs(&[("relabelled vmlockd", relabelled)], &mut w);
    let log = w.d.log_text();
    // Both hand-overs (the failed one and the one after it) were binary,
    // each with a releaser; only the second reached a new image.
    // each started a releaser (ready, or on a loaded host late and let go)
    let ready = log.matches(", memory releaser ready").count();
    let late = log.matches(", memory releaser not ready").count();
    assert_eq!(ready + late, 2, "{log}");
    assert_eq!(log.matches("re-exec: binary state (").count(), 1, "{log}");
    let pid = w.d.pid();
    let none_left = within(5, || children(pid).is_empty());
    assert!(none_left, "children of the daemon: {:?}", children(pid));
}

#[test]
fn failed_execs_keep_serving_with_every_lock() {
    let mut w = World::start(Flavor::Ours);
    let dir = w.bin_dir.path().to_path_buf();
    let plain = dir.join("not-executable");
    // Its mode alone makes execve fail: the head of the binary will do (a
    // whole copy is tens of MB of test scratch).
    std::fs::write(&plain, elf_head(&vmlockd_binary())).expect("write");
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let script = dir.join("bad-interpreter");
    std::fs::write(&script, "#!/nonexistent/interpreter\n").expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let targets = [
        ("missing file", dir.join("missing")),
        ("non-executable file", plain),
        ("bad interpreter", script),
    ];
    failed_execs(&targets, &mut w);
}

/// The first 64 KiB of an ELF binary: its header and program headers.
fn elf_head(path: &std::path::Path) -> Vec<u8> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(path)
        .expect("open binary")
        .take(64 * 1024)
        .read_to_end(&mut head)
        .expect("read binary");
    assert_eq!(
        &head[..4],
        b"\x7fELF",
        "{} is not an ELF file",
        path.display()
    );
    head
}

/// Starts vmlockd through `vmlock-prestate` with the given settings.
fn start_with_state(vars: &[(&str, String)]) -> Daemon {
    let mut spec = DaemonSpec::new(Flavor::Ours)
        .binary(tool_binary("vmlock-prestate"))
        .env("VMLOCK_PRESTATE_EXEC", vmlockd_binary());
    for (k, v) in vars {
        spec = spec.env(k, v);
    }
    Daemon::start(spec).expect("vmlockd starts")
}

fn serves(d: &Daemon) {
    let mut c = owner(d, PID_OTHER, "fresh");
    let ls = d.dir().join("ls").to_string_lossy().into_owned();
    assert_eq!(call(&mut c, &frames::create_lockspace(1, &ls)).0, 0);
    let r = call(
        &mut c,
        &frames::acquire(2, &ls, "r", frames::FLAG_AUTOCREATE),
    );
    assert_eq!(r.0, 0, "{}", r.1);
}

const SAMPLE: &str =
    include_str!("../../../crates/vmlockd/tests/fixtures/virtlockd-9.0-restart-state.json");

#[test]
fn bad_state_files_at_start_mean_a_fresh_start() {
    let cases: [(&str, String, &str); 3] = [
        (
            "corrupt",
            "{ this is not json".to_string(),
            "ignoring corrupt re-exec state",
        ),
        (
            "truncated",
            SAMPLE[..SAMPLE.len() / 2].replace("30590", "@PID@"),
            "ignoring corrupt re-exec state",
        ),
        (
            "foreign magic",
            SAMPLE.to_string(),
            "not us: starting fresh",
        ),
    ];
    for (what, text, line) in cases {
        let d = start_with_state(&[("VMLOCK_PRESTATE_TEXT", text)]);
        assert!(
            d.log_text().contains(line),
            "{what}: log:\n{}",
            d.log_text()
        );
        assert!(!d.state_file().exists(), "{what}: state file consumed");
        serves(&d);
    }
    let target = std::env::temp_dir().join(format!("vmlock-state-target-{}", std::process::id()));
    std::fs::write(&target, SAMPLE).expect("target");
    let d = start_with_state(&[("VMLOCK_PRESTATE_SYMLINK", target.display().to_string())]);
    assert!(
        d.log_text().contains("ignoring re-exec state"),
        "symlink: log:\n{}",
        d.log_text()
    );
    assert!(
        std::fs::symlink_metadata(d.state_file()).is_err(),
        "the symlink is removed"
    );
    assert_eq!(
        std::fs::read_to_string(&target).expect("target"),
        SAMPLE,
        "target untouched"
    );
    serves(&d);
    let _ = std::fs::remove_file(&target);
}

/// A binary state left by another process instance (same pid, another
/// start time) or damaged is refused with a log line, and the daemon starts
/// fresh (or from the JSON beside it).
#[test]
fn bad_binary_states_at_start_are_refused() {
    for (mode, line) in [
        ("foreign", "not by this process"),
        ("corrupt", "checksum mismatch"),
    ] {
        let d = start_with_state(&[("VMLOCK_PRESTATE_BIN", mode.to_string())]);
        let log = d.log_text();
        assert!(
            log.contains("ignoring binary re-exec state") && log.contains(line),
            "{mode}: log:\n{log}"
        );
        assert!(
            !d.state_file()
                .with_file_name("vmlockd-restart-exec.bin")
                .exists(),
            "{mode}: binary state consumed"
        );
        serves(&d);
    }
    // Beside a JSON state (libvirt's daemon wrote it later), the JSON wins.
    let d = start_with_state(&[
        ("VMLOCK_PRESTATE_BIN", "corrupt".to_string()),
        ("VMLOCK_PRESTATE_TEXT", SAMPLE.to_string()),
    ]);
    let log = d.log_text();
    assert!(log.contains("a JSON state was written after it"), "{log}");
    assert!(
        log.contains("not us: starting fresh"),
        "the JSON was read: {log}"
    );
    serves(&d);
}

#[test]
fn a_stale_state_file_has_its_descriptors_closed() {
    let dir = tempfile::tempdir().expect("dir");
    let disk = dir.path().join("phantom.img");
    touch(&disk);
    let text = format!(
        r#"{{"daemon": {{"servers": {{"virtlockd": {{"min_workers": 0, "max_workers": 0,
   "priority_workers": 0, "max_clients": 1024, "max_anonymous_clients": 1024,
   "keepaliveInterval": 4294967295, "keepaliveCount": 0, "next_client_id": 1,
   "services": [], "clients": []}}}}}},
 "defaultLockspace": {{"resources": [{{"name": "{p}", "path": "{p}", "fd": @FD@,
   "lockHeld": true, "flags": 0, "owners": [4194777]}}]}},
 "lockspaces": [], "magic": "1"}}"#,
        p = disk.display()
    );
    let d = start_with_state(&[
        ("VMLOCK_PRESTATE_TEXT", text),
        ("VMLOCK_PRESTATE_LOCK", disk.display().to_string()),
    ]);
    let log = d.log_text();
    assert!(log.contains("written by pid 1, not us"), "log:\n{log}");
    assert!(log.contains("named in the stale state"), "log:\n{log}");
    assert!(
        within(10, || kernel_holder(&disk).is_ok_and(|h| h.is_none())),
        "the phantom lock of the stale descriptor is gone; log:\n{log}"
    );
    let mut c = owner(&d, PID_OTHER, "fresh");
    let r = call(
        &mut c,
        &frames::acquire(1, "", &disk.display().to_string(), 0),
    );
    assert_eq!(r.0, 0, "{}", r.1);
    assert!(Path::new(&disk).exists());
}
