//! Every lifecycle sequence of `DomainLock` with the lockd driver, against vmlockd and
//! libvirt's virtlockd.

mod common;

use std::os::unix::net::UnixStream;

use common::*;
use vmlock::{Disk, DomainLock, Lease, LockError};
use vmlock_client::Client;
use vmlock_conf::LockdConfig;
use vmlock_sys::lock::LockType;

fn direct() -> LockdConfig {
    LockdConfig::file_read_defaults()
}

#[test]
fn start_pause_resume_and_exclusion() {
    for f in flavors() {
        let d = start(f);
        let drv = driver(&d, direct());
        let img = disk(&d, "a.img");
        let (vm1, vm2) = (StandIn::spawn(), StandIn::spawn());
        let mut a = DomainLock::new(
            drv.clone(),
            domain("a", 1, vm1.pid()),
            vec![Disk::exclusive(&img)],
            vec![],
        );
        let mut b = DomainLock::new(
            drv.clone(),
            domain("b", 2, vm2.pid()),
            vec![Disk::exclusive(&img)],
            vec![],
        );
        a.process_start(false).expect("start a");
        assert!(a.holder_fd().is_some(), "{}: fd for the VM", f.name());
        let h = holder(&img).expect("locked");
        assert_eq!(h.lock_type, LockType::Exclusive);
        let e = b.process_start(false).expect_err("b busy");
        assert!(e.is_busy(), "{}: {e:?}", f.name());
        assert_eq!(e.resource(), Some(img.as_str()));
        assert_eq!(
            a.process_pause().expect("pause"),
            None,
            "lockd has no state"
        );
        assert!(holder(&img).is_none(), "{}: released on pause", f.name());
        b.process_resume(None).expect("b resumes");
        assert!(a.process_resume(None).expect_err("a busy now").is_busy());
        b.process_pause().expect("b pause");
        a.process_resume(None).expect("a resumes");
        a.process_pause().expect("a pause");
    }
}

#[test]
fn paused_start_registers_only_and_restricts() {
    for f in flavors() {
        let d = start(f);
        let drv = driver(&d, direct());
        let img = disk(&d, "a.img");
        let vm = StandIn::spawn();
        let mut a = DomainLock::new(
            drv,
            domain("a", 1, vm.pid()),
            vec![Disk::exclusive(&img)],
            vec![],
        );
        a.process_start(true).expect("start paused");
        assert!(holder(&img).is_none(), "{}: nothing acquired yet", f.name());
        let fd = a.take_holder_fd().expect("fd");
        assert!(!vmlock_sys::fd::is_cloexec(std::os::fd::AsFd::as_fd(&fd)).expect("flags"));
        let mut restricted = Client::from_stream(UnixStream::from(fd));
        let e = restricted.create_lockspace("").expect_err("restricted");
        assert_eq!(e.code(), Some(29), "{}: {e}", f.name());
        a.process_resume(None).expect("resume");
        assert!(holder(&img).is_some());
    }
}

#[test]
fn indirect_leases_and_shared_disks() {
    for f in flavors() {
        let d = start(f);
        let dir = d.dir().join("files").to_string_lossy().into_owned();
        let config = LockdConfig {
            file_lockspace_dir: Some(dir.clone()),
            ..direct()
        };
        let drv = driver(&d, config);
        assert!(
            std::path::Path::new(&dir).is_dir(),
            "{}: init made the lockspace",
            f.name()
        );
        let img = disk(&d, "shared.img");
        let lease = std::path::Path::new(&dir).join(vmlock::lockd::indirect_name(&img));
        let (vm1, vm2) = (StandIn::spawn(), StandIn::spawn());
        let mut a = DomainLock::new(
            drv.clone(),
            domain("a", 1, vm1.pid()),
            vec![Disk::shared(&img)],
            vec![],
        );
        let mut b = DomainLock::new(
            drv.clone(),
            domain("b", 2, vm2.pid()),
            vec![Disk::shared(&img)],
            vec![],
        );
        a.process_resume(None).expect("a");
        b.process_resume(None).expect("b shares");
        assert_eq!(holder(&lease).map(|h| h.lock_type), Some(LockType::Shared));
        assert!(
            holder(&img).is_none(),
            "{}: the image itself is not locked",
            f.name()
        );
        let vm3 = StandIn::spawn();
        let mut c = DomainLock::new(
            drv,
            domain("c", 3, vm3.pid()),
            vec![Disk::exclusive(&img)],
            vec![],
        );
        assert!(
            c.process_resume(None)
                .expect_err("exclusive vs shared")
                .is_busy()
        );
        a.process_pause().expect("a");
        b.process_pause().expect("b");
        assert!(!lease.exists(), "{}: autocreated lease unlinked", f.name());
        c.process_resume(None).expect("c");
    }
}

#[test]
fn hotplug_of_disks_and_leases() {
    for f in flavors() {
        let d = start(f);
        let drv = driver(&d, direct());
        let (img1, img2) = (disk(&d, "1.img"), disk(&d, "2.img"));
        let ls_parent = d.dir().to_string_lossy().into_owned();
        let ls_dir = d.dir().join("ls");
        // libvirt never creates a <lease> lockspace (docs/quirks.md #19): the admin does.
        Client::connect(d.socket_path())
            .and_then(|mut c| c.create_lockspace(&ls_dir.to_string_lossy()))
            .expect("create lease lockspace");
        std::fs::write(ls_dir.join("key1"), b"").expect("lease file");
        let vm = StandIn::spawn();
        let mut a = DomainLock::new(
            drv,
            domain("a", 1, vm.pid()),
            vec![Disk::exclusive(&img1)],
            vec![],
        );
        a.process_resume(None).expect("start");
        a.image_attach(Disk::exclusive(&img2)).expect("attach");
        assert!(holder(&img2).is_some());
        let lease = Lease {
            lockspace: Some("ls".into()),
            key: "key1".into(),
            path: Some(ls_parent),
            offset: 0,
        };
        a.lease_attach(lease).expect("lease attach");
        assert!(holder(ls_dir.join("key1")).is_some(), "{}", f.name());
        a.lease_detach("key1").expect("lease detach");
        assert!(holder(ls_dir.join("key1")).is_none());
        assert!(
            ls_dir.join("key1").exists(),
            "lease files are never unlinked"
        );
        a.image_detach(&img2).expect("detach");
        assert!(holder(&img2).is_none() && holder(&img1).is_some());
        assert_eq!(a.disks().len(), 1);
        // A second attach of a held disk is refused (not re-entrant, docs/quirks.md #4).
        assert!(
            a.image_attach(Disk::exclusive(&img1))
                .expect_err("again")
                .is_busy()
        );
    }
}

#[test]
fn migration_success_and_cancel() {
    for f in flavors() {
        let d = start(f);
        let drv = driver(&d, direct());
        let img = disk(&d, "m.img");
        let (src_vm, dst_vm) = (StandIn::spawn(), StandIn::spawn());
        let disks = vec![Disk::exclusive(&img)];
        let mut src = DomainLock::new(
            drv.clone(),
            domain("m", 1, src_vm.pid()),
            disks.clone(),
            vec![],
        );
        let mut dst = DomainLock::new(drv.clone(), domain("m", 2, dst_vm.pid()), disks, vec![]);
        src.process_start(false).expect("source runs");
        let cookie = src.migrate_begin().expect("begin");
        assert_eq!(cookie, None);
        dst.process_start(true).expect("destination registers only");
        assert!(
            dst.migrate_finish(cookie.as_deref())
                .expect_err("source still holds")
                .is_busy()
        );
        // Cancel after the handover: destination releases, source takes the disk back.
        let state = src.migrate_handover().expect("handover");
        dst.migrate_finish(state.as_deref()).expect("dest acquires");
        dst.migrate_cancel().expect("dest cancel");
        src.migrate_abort(state.as_deref()).expect("source resumes");
        // Success.
        let state = src.migrate_handover().expect("handover");
        assert!(
            holder(&img).is_none(),
            "{}: nothing held in the handover",
            f.name()
        );
        dst.migrate_finish(state.as_deref()).expect("dest acquires");
        src.migrate_complete().expect("complete");
        assert!(holder(&img).is_some());
    }
}

#[test]
fn attach_after_restart_releases_with_a_new_session() {
    for f in flavors() {
        let d = start(f);
        let img = disk(&d, "r.img");
        let vm = StandIn::spawn();
        let dom = domain("r", 5, vm.pid());
        let mut first = DomainLock::new(
            driver(&d, direct()),
            dom.clone(),
            vec![Disk::exclusive(&img)],
            vec![],
        );
        first.process_resume(None).expect("acquire");
        drop(first);
        // The manager restarts: a new driver and an attached session for the running VM.
        let mut again = DomainLock::attach(
            driver(&d, direct()),
            dom,
            vec![Disk::exclusive(&img)],
            vec![],
        );
        assert!(
            holder(&img).is_some(),
            "{}: still held across the restart",
            f.name()
        );
        again
            .process_pause()
            .expect("pause through the new session");
        assert!(holder(&img).is_none());
    }
}

#[test]
fn release_of_an_unheld_disk_reports_the_daemon_error() {
    for f in flavors() {
        let d = start(f);
        let img = disk(&d, "u.img");
        let vm = StandIn::spawn();
        let mut a = DomainLock::new(
            driver(&d, direct()),
            domain("u", 1, vm.pid()),
            vec![Disk::exclusive(&img)],
            vec![],
        );
        let e = a.process_pause().expect_err("not locked");
        let LockError::Resource { action, source, .. } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(*action, "release");
        let w = source.remote().expect("remote");
        assert_eq!((w.code, w.domain), (87, 51), "{}", f.name());
        assert!(!e.is_busy(), "87 on release means 'not locked'");
    }
}
