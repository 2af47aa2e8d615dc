//! vmlockd's process lifecycle: signals, timeout, pid file, limits, peer
//! checks, readiness, holder termination that stalls nobody.
//!
//! Each test runs the real binary as root in a private mount namespace
//! (`/run` is a temp dir), through the test kit.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmlock_testkit::frames::{self, decode_reply};
use vmlock_testkit::{Daemon, DaemonSpec, Flavor, RawConn, tool_binary, wait_until};

fn ours(config: &str) -> Daemon {
    Daemon::start(DaemonSpec::new(Flavor::Ours).config(config)).expect("start vmlockd")
}

fn ok(reply: &[u8]) -> bool {
    decode_reply(reply).1.is_none()
}

fn disk(d: &Daemon, name: &str) -> String {
    let p = d.dir().join(name);
    std::fs::write(&p, b"").expect("disk");
    p.to_string_lossy().into_owned()
}

/// Registers a fake owner (not the peer: closing does not release) and acquires `path`.
fn hold_detached(d: &Daemon, path: &str, owner: u32) {
    let mut c = d.connect();
    assert!(ok(&c
        .call(&frames::register(0, [7; 16], "vm", 1, owner, 0))
        .expect("reg")));
    assert!(ok(&c.call(&frames::acquire(1, "", path, 0)).expect("acq")));
}

#[test]
fn sighup_and_sigusr2_do_not_kill_the_daemon() {
    let mut d = ours("");
    d.signal(libc::SIGHUP).expect("hup");
    d.signal(libc::SIGUSR2).expect("usr2");
    std::thread::sleep(Duration::from_millis(200));
    d.assert_alive();
    let mut c = d.connect();
    assert!(c.barrier_is_pong(), "still serving after SIGHUP");
    assert!(d.log_text().contains("SIGHUP ignored"), "{}", d.log_text());
}

#[test]
fn timeout_waits_for_both_clients_and_locks() {
    let mut d =
        Daemon::start(DaemonSpec::new(Flavor::Ours).config("").arg("-t").arg("1")).expect("start");
    let path = disk(&d, "t.img");
    hold_detached(&d, &path, 424_242);
    // No client is connected now, but a lock is held: virtlockd would exit.
    assert!(
        d.wait_exit(Duration::from_millis(2500)).is_none(),
        "exited with a lock held"
    );
    let mut c = d.connect();
    assert!(ok(&c
        .call(&frames::register(0, [7; 16], "vm", 1, 424_242, 0))
        .expect("reg")));
    assert!(ok(&c.call(&frames::release(1, "", &path, 0)).expect("rel")));
    drop(c);
    let st = d
        .wait_exit(Duration::from_secs(5))
        .expect("idle daemon exits");
    assert!(st.success(), "{st}");
}

#[test]
fn a_second_daemon_cannot_take_the_pid_file() {
    let d = ours("");
    let out = d
        .run_in_ns(&vmlock_testkit::vmlockd_binary())
        .arg("-f")
        .arg("/dev/null")
        .stdin(Stdio::null())
        .output()
        .expect("run second");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("pid file"));
    assert_eq!(
        std::fs::read_to_string(d.pid_file()).expect("pid file"),
        d.pid().to_string()
    );
}

#[test]
fn max_clients_refuses_excess_connections_cleanly() {
    let mut d = ours("max_clients = 2\n");
    // The test kit's readiness probe may still be counted for a moment.
    let connect = || {
        let mut got = None;
        wait_until(Duration::from_secs(2), || {
            let mut c = d.connect();
            let alive = c.barrier_is_pong();
            got = alive.then_some(c);
            alive
        });
        got.expect("a client slot")
    };
    let a = connect();
    let mut b = connect();
    let mut c = d.connect();
    assert!(
        c.expect_closed(Duration::from_secs(2)),
        "third client must be closed"
    );
    drop(a);
    assert!(
        wait_until(Duration::from_secs(2), || d.connect().barrier_is_pong()),
        "a slot frees when a client leaves"
    );
    assert!(b.barrier_is_pong());
    d.assert_alive();
}

#[test]
fn peers_of_another_uid_are_refused() {
    let mut d = ours("");
    let sock = d.socket_path();
    let dirs = [sock.parent().expect("dir"), &d.run_dir(), d.root()];
    for p in dirs {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let script = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\n\
                  s.settimeout(3)\nprint('closed' if s.recv(1)==b'' else 'open')";
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            script,
        ])
        .arg(&sock)
        .output()
        .expect("setpriv");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "closed",
        "{out:?}"
    );
    assert!(
        d.log_text().contains("Disallowing client"),
        "{}",
        d.log_text()
    );
    d.assert_alive();
}

#[test]
fn ready_is_sent_to_the_notify_socket() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("notify");
    let rx = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
    rx.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _d = Daemon::start(
        DaemonSpec::new(Flavor::Ours)
            .config("")
            .env("NOTIFY_SOCKET", &path),
    )
    .expect("start");
    let mut buf = [0u8; 64];
    let n = rx.recv(&mut buf).expect("READY=1 datagram");
    assert_eq!(&buf[..n], b"READY=1\n");
}

#[test]
fn the_systemd_watchdog_is_pinged() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("notify");
    let rx = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
    rx.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _d = Daemon::start(
        DaemonSpec::new(Flavor::Ours)
            .config("")
            .env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "200000"),
    )
    .expect("start");
    let mut buf = [0u8; 64];
    let t0 = std::time::Instant::now();
    let mut pings = 0;
    while pings < 5 {
        let n = rx.recv(&mut buf).expect("datagram");
        if &buf[..n] == b"WATCHDOG=1\n" {
            pings += 1;
        }
    }
    // Every 100 ms (half the interval): 5 pings well within 2 s.
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
}

/// A holder that ignores SIGTERM keeps the daemon busy for the whole grace
/// period in virtlockd; in vmlockd everybody else is served meanwhile.
#[test]
fn a_dying_holder_stalls_no_other_client() {
    let mut d = ours("holder_kill_grace_ms = 1500\n");
    let path = disk(&d, "h.img");
    let mut holder = Command::new("sh")
        .args([
            "-c",
            "trap '' TERM; exec \"$0\" --register \"$1\" '' \"$2\"",
        ])
        .arg(tool_binary("vmlock-hold"))
        .arg(d.socket_path())
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("holder");
    let mut out = BufReader::new(holder.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("holder line");
    assert_eq!(line.trim(), "ok", "holder registered and acquired");
    let mut other = d.connect();
    // Keep the holder's stdin open: at EOF it would exit by itself.
    let mut stdin = holder.stdin.take().expect("stdin");
    writeln!(stdin, "close").expect("close");
    let t0 = Instant::now();
    let mut worst = Duration::ZERO;
    while t0.elapsed() < Duration::from_millis(1200) {
        let t = Instant::now();
        assert!(other.barrier_is_pong());
        worst = worst.max(t.elapsed());
    }
    assert!(
        worst < Duration::from_millis(200),
        "a client waited {worst:?}"
    );
    let st = holder.wait().expect("holder reaped");
    drop(stdin);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        st.signal(),
        Some(libc::SIGKILL),
        "TERM-ignoring holder is killed"
    );
    let mut c = d.connect();
    assert!(ok(&c
        .call(&frames::register(0, [9; 16], "vm2", 2, 5555, 0))
        .expect("reg")));
    assert!(
        ok(&c.call(&frames::acquire(1, "", &path, 0)).expect("acq")),
        "disk is free"
    );
    d.assert_alive();
}

#[test]
fn sigterm_shuts_down_cleanly_and_removes_its_files() {
    let mut d = ours("");
    let sock = d.socket_path();
    let pid_file = d.pid_file();
    assert!(sock.exists() && pid_file.exists());
    d.signal(libc::SIGTERM).expect("term");
    let st = d.wait_exit(Duration::from_secs(5)).expect("exits");
    assert!(st.success(), "{st}");
    assert!(!sock.exists(), "socket unlinked");
    assert!(!d.admin_socket_path().exists(), "admin socket unlinked");
    assert!(!pid_file.exists(), "pid file removed");
}

#[test]
fn the_admin_socket_accepts_and_answers_keepalive() {
    let d = ours("");
    let mut a = RawConn::connect(&d.admin_socket_path()).expect("admin");
    assert!(a.barrier_is_pong());
}

#[test]
fn bad_command_lines_and_configs_fail_like_virtlockd() {
    let bin = vmlock_testkit::vmlockd_binary();
    let run = |args: &[&str]| Command::new(&bin).args(args).output().expect("run");
    let v = run(&["-V"]);
    assert!(v.status.success());
    assert!(String::from_utf8_lossy(&v.stdout).contains("(vmlock)"));
    let h = run(&["-h"]);
    assert!(h.status.success() && String::from_utf8_lossy(&h.stderr).contains("--pid-file"));
    assert_eq!(run(&["--bogus"]).status.code(), Some(1));
    assert_eq!(run(&["-t", "x"]).status.code(), Some(1));
    assert_eq!(
        run(&["-f", "/nonexistent/vmlockd.conf"]).status.code(),
        Some(1)
    );
    let tmp = tempfile::tempdir().expect("tmp");
    let bad = tmp.path().join("bad.conf");
    std::fs::write(&bad, "max_clients = \"many\"\n").expect("write");
    let out = run(&["-f", bad.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_clients"));
}

/// Runs vmlockd the way systemd does: listening sockets on fds 3 and 4,
/// `LISTEN_PID`/`LISTEN_FDS`/`LISTEN_FDNAMES` set (python3 plays systemd),
/// inside a private mount namespace.
fn activated(names: &str, tmp: &std::path::Path) -> std::process::Child {
    let launcher = "import os,socket,sys\n\
        d=sys.argv[1]\n\
        for i,n in enumerate(['main.sock','admin.sock']):\n\
        \x20   s=socket.socket(socket.AF_UNIX); s.bind(os.path.join(d,n)); s.listen(5)\n\
        \x20   fd=s.detach()\n\
        \x20   if fd!=3+i: os.dup2(fd,3+i); os.close(fd)\n\
        os.set_inheritable(3,True); os.set_inheritable(4,True)\n\
        os.environ['LISTEN_PID']=str(os.getpid()); os.environ['LISTEN_FDS']='2'\n\
        os.environ['LISTEN_FDNAMES']=sys.argv[2]\n\
        os.execv(sys.argv[3], [sys.argv[3], '-f', '/dev/null'])\n";
    std::fs::create_dir_all(tmp.join("run")).expect("run dir");
    let script = "mount --bind \"$1\" /run && shift && exec \"$@\"";
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(tmp.join("run"))
        .args(["/usr/bin/python3", "-c", launcher])
        .arg(tmp)
        .arg(names)
        .arg(vmlock_testkit::vmlockd_binary())
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("launch")
}

#[test]
fn systemd_socket_activation_is_honoured() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut child = activated("virtlockd.socket:virtlockd-admin.socket", tmp.path());
    let main = tmp.path().join("main.sock");
    let mut c = None;
    wait_until(Duration::from_secs(5), || {
        c = RawConn::connect(&main).ok().filter(|_| true);
        c.as_mut().is_some_and(RawConn::barrier_is_pong)
    });
    let mut c = c.expect("activated main socket serves");
    assert!(ok(&c
        .call(&frames::register(0, [3; 16], "vm", 1, 777, 0))
        .expect("reg")));
    let mut a = RawConn::connect(&tmp.path().join("admin.sock")).expect("admin");
    assert!(a.barrier_is_pong());
    assert!(
        !tmp.path().join("run/libvirt/virtlockd-sock").exists(),
        "no socket of its own"
    );
    vmlock_sys::process::kill(child.id() as i32, libc::SIGTERM).expect("term");
    let st = child.wait().expect("wait");
    assert!(st.success(), "{st}");
    assert!(main.exists(), "systemd's socket paths are never unlinked");
}

#[test]
fn an_unknown_activation_name_is_fatal_with_exit_6() {
    let tmp = tempfile::tempdir().expect("tmp");
    let child = activated("virtlockd.socket:bogus.socket", tmp.path());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus.socket"));
}

#[test]
fn daemon_mode_detaches_and_reports_success() {
    let tmp = vmlock_testkit::daemon::fixed_len_tempdir().expect("tmp");
    let run = tmp.path().join("run");
    std::fs::create_dir(&run).expect("run");
    let out = vmlock_testkit::daemon::ns_command(&run, &vmlock_testkit::vmlockd_binary())
        .args(["-d", "-f", "/dev/null"])
        .env("LIBVIRT_LOG_OUTPUTS", "1:file:/run/vmlockd.log")
        .env("LIBVIRT_DEBUG", "2")
        .stdin(Stdio::null())
        .output()
        .expect("run -d");
    assert!(out.status.success(), "{out:?}");
    let pid_file = run.join("virtlockd.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid file")
        .parse()
        .expect("pid");
    assert!(
        vmlock_sys::process::exists(pid),
        "daemon runs in the background"
    );
    let mut c = RawConn::connect(&run.join("libvirt/virtlockd-sock")).expect("connect");
    assert!(c.barrier_is_pong());
    vmlock_sys::process::kill(pid, libc::SIGTERM).expect("term");
    assert!(
        wait_until(Duration::from_secs(5), || !pid_file.exists()),
        "clean exit"
    );
    assert!(
        std::fs::read_to_string(run.join("vmlockd.log"))
            .expect("log")
            .contains("serving")
    );
}

/// The man page, `--help` and the parser agree on every option.
#[test]
fn help_and_man_page_list_exactly_virtlockds_options() {
    let man = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/man/vmlockd.8.md"
    ))
    .expect("man page");
    let help = Command::new(vmlock_testkit::vmlockd_binary())
        .arg("--help")
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&help.stderr).into_owned();
    for (short, long) in [
        ("-h", "--help"),
        ("-v", "--verbose"),
        ("-d", "--daemon"),
        ("-t", "--timeout"),
        ("-f", "--config"),
        ("-V", "--version"),
        ("-p", "--pid-file"),
    ] {
        assert!(
            man.contains(&format!("**{short}**, **{long}**")),
            "{long} missing from the man page"
        );
        assert!(
            help.contains(&format!("{short} | {long}")),
            "{long} missing from --help"
        );
    }
    let options_in_man = man.matches("\n**-").count();
    assert_eq!(
        options_in_man, 7,
        "the man page documents an option the daemon lacks"
    );
}

/// Asking for cluster-wide protection the daemon cannot give is fatal, never silently local.
#[test]
fn an_unavailable_lock_backend_is_refused_at_start() {
    let tmp = tempfile::tempdir().expect("tmp");
    let run = tmp.path().join("run");
    std::fs::create_dir(&run).expect("run dir");
    let conf = tmp.path().join("v.conf");
    // In a private mount namespace: the daemon takes its pid file and run
    // directory (under /run, as root) before it contacts the back end.
    let daemon = |text: &str| {
        std::fs::write(&conf, text).expect("write");
        vmlock_testkit::daemon::ns_command(&run, &vmlock_testkit::vmlockd_binary())
            .arg("-f")
            .arg(&conf)
            .env("XDG_STATE_HOME", tmp.path())
            .output()
            .expect("run")
    };
    let out = daemon("lock_backend = \"etcd\"\n");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    // Built without the back end: says so; with it: no endpoints configured.
    assert!(
        err.contains("lock_backend") || err.contains("etcd_endpoints is empty"),
        "{err}"
    );
    // An etcd that does not answer is fatal too (after the connect timeout).
    let out = daemon("lock_backend = \"etcd\"\netcd_endpoints = \"http://127.0.0.1:9\"\n");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    // The kernel DLM back end where there is no DLM (this machine's kernel
    // has none; scripts/vm/dlm-test.sh runs the real one in a guest).
    let misc = std::fs::read_to_string("/proc/misc").unwrap_or_default();
    if !misc.contains("dlm-control") {
        let info = tmp.path().join("dlm.json");
        let out = daemon(&format!(
            "lock_backend = \"dlm\"\ndlm_lock_info_file = \"{}\"\n",
            info.display()
        ));
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let want = if vmlock_sys::dlm::available() {
            "load the dlm module (modprobe dlm)"
        } else {
            "package libdlm3"
        };
        assert!(
            err.contains("cannot start the DLM back end") && err.contains(want),
            "{err}"
        );
        assert!(!info.exists(), "nothing written when the DLM is missing");
    }
}

/// A storm of SIGUSR1 (one every 300 µs for 2 s: hundreds of re-execs, with
/// signals landing in every phase, including the moments between `execve`
/// and the new image's handlers) never kills the daemon nor loses a lock.
#[test]
fn a_storm_of_sigusr1_loses_nothing() {
    let mut d = ours("");
    let img = disk(&d, "storm.img");
    let none: [&str; 0] = [];
    let mut holder =
        vmlock_testkit::hold::RegisteredHolder::start(&d.socket_path(), "", &img, &none, &|| {
            String::new()
        });
    let pid = d.pid();
    let t0 = Instant::now();
    let mut sent = 0;
    while t0.elapsed() < Duration::from_secs(2) {
        if vmlock_sys::process::kill(pid as i32, libc::SIGUSR1).is_err() {
            break;
        }
        sent += 1;
        std::thread::sleep(Duration::from_micros(300));
    }
    d.assert_alive();
    // Settled: the image in place handles SIGUSR1 and serves a new client.
    let settled = wait_until(Duration::from_secs(10), || {
        vmlock_testkit::reexec::catches(pid, libc::SIGUSR1)
            && RawConn::connect(&d.socket_path()).is_ok_and(|mut c| c.barrier_is_pong())
    });
    assert!(settled, "not serving after the storm: {}", d.log_text());
    d.assert_alive();
    assert!(holder.alive(), "the holder was killed");
    let mut c = d.connect();
    assert!(ok(&c
        .call(&frames::register(0, [3; 16], "other", 1, 4_100_001, 0))
        .expect("REGISTER")));
    let r = c.call(&frames::acquire(1, "", &img, 0)).expect("ACQUIRE");
    assert_eq!(decode_reply(&r).1.map(|e| e.code), Some(87), "lock lost");
    eprintln!("{sent} SIGUSR1 sent in 2 s");
}
