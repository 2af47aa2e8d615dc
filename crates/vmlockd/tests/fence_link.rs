//! The daemon's link to its fence helper, driven directly against the real
//! `vmlock-fenced` binary: the status surface, guarding and releasing, the
//! deadline, and a helper that dies.
#![cfg(feature = "etcd")]

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use vmlock_etcd::Deadlines;
use vmlockd::{FenceLink, LinkConfig};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sleeper() -> Proc {
    Proc(Command::new("sleep").arg("60").spawn().expect("sleep"))
}

fn deadlines(from_now: Duration) -> Deadlines {
    let d = Instant::now() + from_now;
    Deadlines {
        daemon: d,
        helper: d + Duration::from_millis(250),
        watchdog: d + Duration::from_millis(500),
    }
}

fn report(link: &FenceLink, key: &str) -> Option<String> {
    let st = link.status();
    let r = st.helper_report?;
    r.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_owned))
}

#[test]
fn guards_reports_fences_and_survives_its_helper() {
    let dir = tempfile::tempdir().expect("tmp");
    let link = FenceLink::new(LinkConfig {
        program: env!("CARGO_BIN_EXE_vmlock-fenced").into(),
        socket: dir.path().join("f.sock"),
        pause: false,
        watchdog: None,
    });
    let mut vm = sleeper();
    let released = sleeper();
    // Deadlines only move forward: this one (helper at 3.25 s) is the last.
    let start = Instant::now();
    link.resync(&[vm.0.id()], Some(deadlines(Duration::from_secs(3))));
    link.connected().expect("a helper runs");
    let st = link.status();
    let first = st.helper_pid.expect("helper pid");
    assert_eq!(st.guarded, 1);
    assert!(
        st.helper_deadline
            .is_some_and(|d| d > Duration::from_secs(2))
    );
    assert_eq!(st.watchdog_device, None);
    assert_eq!(report(&link, "watchdog").as_deref(), Some("off"));
    assert_eq!(report(&link, "guarded").as_deref(), Some("1"));

    link.guard(released.0.id(), true).expect("guard");
    assert_eq!(report(&link, "guarded").as_deref(), Some("2"));
    link.guard(released.0.id(), false).expect("unguard");
    assert_eq!(report(&link, "guarded").as_deref(), Some("1"));

    // The helper dies: another one takes over the same set.
    vmlock_sys::process::kill(first, libc::SIGKILL).expect("kill helper");
    let t0 = Instant::now();
    let second = loop {
        let st = link.status();
        if let Some(p) = st.helper_pid.filter(|&p| p != first)
            && report(&link, "guarded").as_deref() == Some("1")
        {
            break p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "not replaced: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_ne!(second, first);

    // An older deadline arriving late changes nothing.
    link.renewed(deadlines(Duration::ZERO));
    assert!(vm.0.try_wait().expect("try_wait").is_none(), "fenced early");
    // The deadline passes with no renewal: the guarded VM is killed, the
    // released one is not.
    while vm.0.try_wait().expect("try_wait").is_none() {
        assert!(start.elapsed() < Duration::from_secs(6), "not fenced");
        std::thread::sleep(Duration::from_millis(5));
    }
    let at = start.elapsed();
    assert!(
        at >= Duration::from_millis(3200),
        "fenced at {at:?}, before its deadline"
    );
    eprintln!("fenced {at:?} after a 3.25 s helper deadline was set");
    let mut released = released;
    assert!(released.0.try_wait().expect("try_wait").is_none());
    assert_eq!(report(&link, "fences").as_deref(), Some("1"));
    assert_eq!(report(&link, "guarded").as_deref(), Some("0"));
    // The deadline is in the daemon's own terms too.
    assert_eq!(link.status().daemon_deadline, Some(Duration::ZERO));
    drop(link);
}
