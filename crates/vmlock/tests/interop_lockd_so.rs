//! vmlock's lockd driver and libvirt's own `lockd.so` (driven by the test kit's
//! `vmlock-plugin-run`, inside the daemon's mount namespace) exclude each other on
//! the same disk (direct mode) and the same lease directory (indirect mode).

mod common;

use common::*;
use vmlock::{Disk, DomainLock};
use vmlock_conf::LockdConfig;
use vmlock_testkit::Daemon;
use vmlock_testkit::script::{LOCKD_SO, Session};

/// An interactive `vmlock-plugin-run` session inside the daemon's namespace.
fn plugin(d: &Daemon) -> Session {
    assert!(
        std::path::Path::new(LOCKD_SO).exists(),
        "{LOCKD_SO} is missing: apt-get install libvirt-daemon (scripts/install-deps.sh)"
    );
    Session::spawn(d.run_in_ns(&vmlock_testkit::tool_binary("vmlock-plugin-run")))
}

fn exclusion(configure: impl Fn(&Daemon) -> (String, LockdConfig)) {
    for f in flavors() {
        let d = start(f);
        let (config_text, config) = configure(&d);
        let img = disk(&d, "shared-by-both.img");
        let conf = d.root().join("qemu-lockd.conf");
        std::fs::write(&conf, config_text).expect("conf");
        let (ours_vm, theirs_vm) = (StandIn::spawn(), StandIn::spawn());
        let mut ours = DomainLock::new(
            driver(&d, config.clone()),
            domain("ours", 1, ours_vm.pid()),
            vec![Disk::exclusive(&img)],
            vec![],
        );
        let mut p = plugin(&d);
        assert_eq!(p.cmd(&format!("init {}", conf.display())), "ok");
        let uuid = "22222222-3333-4444-5555-666666666666";
        assert_eq!(
            p.cmd(&format!("new {uuid} theirs 2 {}", theirs_vm.pid())),
            "ok"
        );
        assert_eq!(p.cmd(&format!("disk {img}")), "ok");
        ours.process_resume(None).expect("ours first");
        let line = p.cmd("acquire none");
        assert!(
            line.starts_with("err 87 "),
            "{}: lockd.so got {line}",
            f.name()
        );
        ours.process_pause().expect("ours releases");
        assert_eq!(p.cmd("acquire none"), "ok fd=none", "{}", f.name());
        let e = ours.process_resume(None).expect_err("theirs holds it");
        assert!(e.is_busy(), "{}: {e:?}", f.name());
        assert!(p.cmd("release").starts_with("ok"), "{}", f.name());
        ours.process_resume(None).expect("free again");
    }
}

#[test]
fn direct_mode_excludes_lockd_so() {
    exclusion(|_| (String::new(), LockdConfig::file_read_defaults()));
}

#[test]
fn indirect_mode_excludes_lockd_so() {
    exclusion(|d| {
        let dir = d.dir().join("leases").to_string_lossy().into_owned();
        let text = format!("file_lockspace_dir = \"{dir}\"\n");
        let config = LockdConfig {
            file_lockspace_dir: Some(dir),
            ..LockdConfig::file_read_defaults()
        };
        (text, config)
    });
}
