//! The CLI against vmlockd and libvirt's virtlockd: exclusion, sharing, holder death,
//! `check`, exit-status pass-through, indirect leases and the script subcommands.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use vmlock_testkit::{Daemon, DaemonSpec, Flavor, wait_until};

fn flavors() -> Vec<Flavor> {
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        assert!(
            Path::new(vmlock_testkit::flavor::VIRTLOCKD).exists(),
            "CI is set but /usr/sbin/virtlockd is missing: apt-get install libvirt-daemon"
        );
    }
    Flavor::from_env()
}

fn start(f: Flavor) -> Daemon {
    Daemon::start(DaemonSpec::new(f)).unwrap_or_else(|e| panic!("start {}: {e}", f.name()))
}

fn ctl(d: &Daemon) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmlockctl"));
    c.arg("--socket").arg(d.socket_path());
    c
}

fn run(c: &mut Command) -> Output {
    c.stdin(Stdio::null()).output().expect("run vmlockctl")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn disk(d: &Daemon, name: &str) -> String {
    let p = d.dir().join(name);
    std::fs::write(&p, b"").expect("disk");
    p.to_string_lossy().into_owned()
}

/// `vmlockctl exec --disk SPEC -- sh -c 'echo $$ > PIDFILE; exec sleep 60'`, waiting
/// until the shell has written its pid (the locks are taken before exec).
struct Holder {
    child: Child,
    pid: i32,
}

impl Holder {
    fn start(d: &Daemon, extra: &[&str], tag: &str) -> Holder {
        let pidfile: PathBuf = d.dir().join(format!("{tag}.pid"));
        let script = format!("echo $$ > {}; exec sleep 60", pidfile.display());
        let child = ctl(d)
            .arg("exec")
            .args(extra)
            .args(["--", "sh", "-c", &script])
            .spawn()
            .expect("spawn exec");
        let mut pid = 0;
        let ok = wait_until(Duration::from_secs(10), || {
            pid = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            pid > 0
        });
        assert!(ok, "holder did not start");
        Holder { child, pid }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = vmlock_sys::process::kill(self.pid, 9);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn check_text(d: &Daemon, args: &[&str]) -> String {
    let o = run(ctl(d).arg("check").args(args));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn second_exclusive_exec_is_refused_as_busy_and_check_names_the_holder() {
    for f in flavors() {
        let d = start(f);
        let img = disk(&d, "a.img");
        let _h = Holder::start(&d, &["--disk", &img], "a");
        let o = run(ctl(&d).args(["exec", "--disk", &img, "--", "true"]));
        assert_eq!(o.status.code(), Some(3), "{}: {}", f.name(), stderr(&o));
        let msg = stderr(&o);
        assert!(msg.contains(&img) && msg.contains("busy"), "{msg}");
        let text = check_text(&d, &[&img]);
        assert!(text.contains("locked exclusive"), "{text}");
        match f {
            // virtlockd takes classic POSIX locks: the kernel names the daemon.
            Flavor::Theirs => {
                let who = format!("held by pid {} (virtlockd)", d.pid());
                assert!(msg.contains(&who) && text.contains(&who), "{msg} / {text}");
            }
            // vmlockd names the VM, in the refusal and through its
            // inquiry program.
            Flavor::Ours => {
                let who = "held by domain 'sh' (uuid ";
                assert!(msg.contains(who), "{msg}");
                assert!(text.contains(who), "{text}");
                assert!(
                    text.contains(&format!(", pid {}) since ", _h.pid)),
                    "{text}"
                );
            }
        }
        let json = check_text(&d, &["--json", &img]);
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(v[0]["state"], "exclusive");
        assert_eq!(v[0]["path"], img.as_str());
    }
}

#[test]
fn shared_execs_coexist_and_exclude_an_exclusive_one() {
    for f in flavors() {
        let d = start(f);
        let img = disk(&d, "s.img");
        let spec = format!("{img}:shared");
        let _h = Holder::start(&d, &["--disk", &spec], "s");
        let o = run(ctl(&d).args(["exec", "--disk", &spec, "--", "true"]));
        assert_eq!(o.status.code(), Some(0), "{}: {}", f.name(), stderr(&o));
        assert!(check_text(&d, &[&img]).contains("locked shared"));
        let o = run(ctl(&d).args(["exec", "--disk", &img, "--", "true"]));
        assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    }
}

#[test]
fn a_killed_holder_frees_the_disk() {
    for f in flavors() {
        let d = start(f);
        let img = disk(&d, "k.img");
        let mut h = Holder::start(&d, &["--disk", &img], "k");
        vmlock_sys::process::kill(h.pid, 9).expect("kill");
        let st = h.child.wait().expect("wait parent");
        assert_eq!(st.code(), Some(128 + 9), "signal passed through as 128+n");
        let freed = wait_until(Duration::from_secs(10), || {
            run(ctl(&d).args(["exec", "--disk", &img, "--", "true"]))
                .status
                .code()
                == Some(0)
        });
        assert!(freed, "{}: disk freed after the holder died", f.name());
        assert!(check_text(&d, &[&img]).contains("unlocked"));
    }
}

#[test]
fn exit_status_is_passed_through() {
    let f = flavors()[0];
    let d = start(f);
    let img = disk(&d, "x.img");
    let o = run(ctl(&d).args(["exec", "--disk", &img, "--", "sh", "-c", "exit 7"]));
    assert_eq!(o.status.code(), Some(7));
    let o = run(ctl(&d).args(["exec", "--disk", &img, "--", "sh", "-c", "kill -TERM $$"]));
    assert_eq!(o.status.code(), Some(128 + 15));
    let o = run(ctl(&d).args(["exec", "--disk", &img, "--", "/nonexistent/cmd"]));
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    let o = run(ctl(&d).args(["exec", "--", "true"]));
    assert_eq!(o.status.code(), Some(2), "no resources is a usage error");
}

/// A service manager stopping `vmlockctl exec` stops CMD, whose exit frees
/// the disk; CMD's own exit status comes back.
#[test]
fn signals_are_passed_on_to_the_command() {
    let f = flavors()[0];
    let d = start(f);
    let img = disk(&d, "sig.img");
    let dir = tempfile::tempdir().expect("tmp");
    let ready = dir.path().join("ready");
    let script = format!(
        "trap 'exit 42' TERM; touch {}; while :; do sleep 0.05; done",
        ready.display()
    );
    let mut child = ctl(&d)
        .args(["exec", "--disk", &img, "--", "sh", "-c", &script])
        .spawn()
        .expect("spawn");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !ready.exists() {
        assert!(std::time::Instant::now() < until, "CMD never started");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let busy = run(ctl(&d).args(["exec", "--disk", &img, "--", "true"]));
    assert_eq!(busy.status.code(), Some(3), "held while CMD runs");
    vmlock_sys::process::kill(child.id() as i32, libc::SIGTERM).expect("kill");
    let st = child.wait().expect("wait");
    assert_eq!(
        st.code(),
        Some(42),
        "CMD got the SIGTERM and exited with its code"
    );
    let o = run(ctl(&d).args(["exec", "--disk", &img, "--", "true"]));
    assert!(o.status.success(), "free again: {}", stderr(&o));
}

#[test]
fn the_command_inherits_the_lock_connection() {
    let f = flavors()[0];
    let d = start(f);
    let img = disk(&d, "i.img");
    // The command lists its descriptors: one must be a socket other than 0-2.
    let o = run(ctl(&d).args([
        "exec",
        "--disk",
        &img,
        "--",
        "sh",
        "-c",
        "ls -l /proc/$$/fd | grep -c socket",
    ]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "1");
}

#[test]
fn lockspace_dir_uses_sha256_lease_files() {
    for f in flavors() {
        let d = start(f);
        let img = disk(&d, "ind.img");
        let dir = d.dir().join("leases");
        let dir_s = dir.to_string_lossy().into_owned();
        let lease = dir.join(vmlock::lockd::indirect_name(&img));
        let _h = Holder::start(&d, &["--lockspace-dir", &dir_s, "--disk", &img], "ind");
        assert!(lease.exists(), "{}: lease file", f.name());
        let text = check_text(&d, &["--lockspace-dir", &dir_s, &img]);
        assert!(text.contains("locked exclusive"), "{text}");
        assert!(
            check_text(&d, &[&img]).contains(": unlocked"),
            "image itself untouched"
        );
        let o = run(ctl(&d).args([
            "exec",
            "--lockspace-dir",
            &dir_s,
            "--disk",
            &img,
            "--",
            "true",
        ]));
        assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    }
}

#[test]
fn acquire_and_release_for_an_owner_pid() {
    for f in flavors() {
        let d = start(f);
        let img = disk(&d, "sc.img");
        let mut owner = Command::new("sleep").arg("60").spawn().expect("sleep");
        let pid = owner.id().to_string();
        let o = run(ctl(&d).args(["acquire", "--pid", &pid, &img]));
        assert_eq!(o.status.code(), Some(0), "{}: {}", f.name(), stderr(&o));
        assert!(check_text(&d, &[&img]).contains("locked exclusive"));
        let o = run(ctl(&d).args(["acquire", "--pid", "1", "--name", "other", &img]));
        assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
        let o = run(ctl(&d).args(["release", "--pid", &pid, &img]));
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(check_text(&d, &[&img]).contains(": unlocked"));
        let o = run(ctl(&d).args(["release", "--pid", &pid, &img]));
        assert_eq!(
            o.status.code(),
            Some(1),
            "not locked any more: {}",
            stderr(&o)
        );
        let o = run(ctl(&d).args(["register", "--pid", &pid, "--restrict"]));
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let o = run(ctl(&d).args(["register", "--pid", &pid, "--id", "0"]));
        assert_eq!(o.status.code(), Some(2));
        let _ = owner.kill();
        let _ = owner.wait();
    }
}

/// docs/quirks.md #8, decided to match virtlockd: locks registered for an owner pid
/// that never connects itself (pid 0, as libxl may send, or a process that
/// is already gone) are not reaped; they stay until released for that pid,
/// which `vmlockctl release --pid` does.
#[test]
fn locks_of_an_owner_that_never_connects_stay_until_released_for_it() {
    let mut gone = Command::new("true").spawn().expect("true");
    let _ = gone.wait();
    let gone = gone.id().to_string();
    for f in flavors() {
        let d = start(f);
        for (pid, name) in [("0", "pid0.img"), (gone.as_str(), "gone.img")] {
            let img = disk(&d, name);
            let o = run(ctl(&d).args(["acquire", "--pid", pid, &img]));
            assert_eq!(o.status.code(), Some(0), "{}: {}", f.name(), stderr(&o));
            std::thread::sleep(std::time::Duration::from_millis(300));
            assert!(
                check_text(&d, &[&img]).contains("locked exclusive"),
                "{}: pid {pid}: still held after its registering connection closed",
                f.name()
            );
            let o = run(ctl(&d).args(["release", "--pid", pid, &img]));
            assert_eq!(o.status.code(), Some(0), "{}: {}", f.name(), stderr(&o));
            assert!(
                check_text(&d, &[&img]).contains(": unlocked"),
                "{}",
                f.name()
            );
        }
    }
}
