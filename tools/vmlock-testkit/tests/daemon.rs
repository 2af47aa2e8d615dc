//! The harness itself, against every available daemon: paths, pid, signals,
//! connections, and the namespace wrapper.

use std::time::Duration;

use vmlock_testkit::frames;
use vmlock_testkit::{Daemon, DaemonSpec, Flavor};

#[test]
fn daemon_runs_in_its_own_run_dir_and_stops_on_sigterm() {
    for f in Flavor::from_env() {
        let mut d = Daemon::start(DaemonSpec::new(f)).expect("start");
        d.assert_alive();
        assert!(d.socket_path().exists());
        assert!(d.admin_socket_path().exists(), "{}", f.name());
        let pid_text = std::fs::read_to_string(d.pid_file()).expect("pid file");
        assert_eq!(
            pid_text,
            d.pid().to_string(),
            "pid file holds the daemon pid, no newline"
        );
        let mut c = d.connect();
        assert_eq!(c.call(&frames::ping()).expect("ping"), frames::pong());
        assert!(c.barrier_is_pong());
        c.send(&2u32.to_be_bytes()).expect("send");
        assert!(c.expect_closed(Duration::from_secs(5)), "len 2 closes");
        d.signal(libc::SIGTERM).expect("kill");
        let st = d
            .wait_exit(Duration::from_secs(10))
            .expect("exits on SIGTERM");
        assert!(st.success() || st.code().is_some(), "{st}");
        assert!(
            !d.socket_path().exists(),
            "{}: socket unlinked at exit",
            f.name()
        );
    }
}

#[test]
fn run_in_ns_sees_the_daemons_run_dir() {
    let f = Flavor::from_env()[0];
    let d = Daemon::start(DaemonSpec::new(f)).expect("start");
    let out = d
        .run_in_ns(std::path::Path::new("/bin/cat"))
        .arg("/run/virtlockd.pid")
        .output()
        .expect("run cat");
    assert_eq!(String::from_utf8_lossy(&out.stdout), d.pid().to_string());
}

#[test]
fn a_bad_config_makes_start_fail_with_the_log() {
    let f = Flavor::from_env()[0];
    let e = Daemon::start(DaemonSpec::new(f).config("max_clients = \"not a number\"\n"))
        .expect_err("bad config");
    assert!(e.to_string().contains("exited during start"), "{e}");
}
