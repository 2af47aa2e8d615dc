//! Unit tests that need no daemon: naming, local checks, registry, nop.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use vmlock_conf::LockdConfig;

use crate::lockd::naming::{disk_resource, lease_resource, trim_tool_output};
use crate::lockd::{DeviceKeys, LockdDriver, indirect_name};
use crate::*;

/// Device keys with canned answers; `None` for scsi means "cannot run".
#[derive(Debug)]
struct FakeKeys {
    lvm: Option<&'static str>,
    scsi: Option<Option<&'static str>>,
}

impl DeviceKeys for FakeKeys {
    fn lvm_uuid(&self, _path: &str) -> Option<String> {
        self.lvm.map(String::from)
    }
    fn scsi_id(&self, _path: &str) -> io::Result<Option<String>> {
        match self.scsi {
            Some(v) => Ok(v.map(String::from)),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }
}

fn dom(id: u32) -> Domain {
    Domain {
        uuid: Uuid::from_bytes([7; 16]),
        name: "vm1".into(),
        id,
        pid: 4242,
        uri: Some("qemu:///system".into()),
    }
}

fn cfg(file: bool, lvm: bool, scsi: bool) -> LockdConfig {
    LockdConfig {
        file_lockspace_dir: file.then(|| "/leases/files".into()),
        lvm_lockspace_dir: lvm.then(|| "/leases/lvm".into()),
        scsi_lockspace_dir: scsi.then(|| "/leases/scsi".into()),
        ..LockdConfig::file_read_defaults()
    }
}

const NO_KEYS: FakeKeys = FakeKeys {
    lvm: None,
    scsi: Some(None),
};

#[test]
fn sha256_vector_from_the_spec() {
    assert_eq!(
        indirect_name("/var/lib/libvirt/images/vm1.qcow2"),
        "f2f4417b8fe812d19e40421ca4d46765c702e950c54a3a74e967e48dc9812492"
    );
    // Not canonicalised: another spelling is another name (docs/quirks.md #15).
    assert_ne!(
        indirect_name("/var/lib/libvirt//images/vm1.qcow2"),
        indirect_name("/var/lib/libvirt/images/vm1.qcow2")
    );
}

#[test]
fn direct_and_indirect_disk_names() {
    let d = Disk::exclusive("/img/a.qcow2");
    let r = disk_resource(&cfg(false, false, false), &d, &NO_KEYS)
        .expect("ok")
        .expect("locked");
    assert_eq!(
        (r.lockspace.as_str(), r.name.as_str(), r.flags),
        ("", "/img/a.qcow2", 0)
    );
    assert_eq!(r.lease_file(), PathBuf::from("/img/a.qcow2"));
    let r = disk_resource(
        &cfg(true, false, false),
        &Disk::shared("/img/a.qcow2"),
        &NO_KEYS,
    )
    .expect("ok")
    .expect("locked");
    assert_eq!(r.lockspace, "/leases/files");
    assert_eq!(r.name, indirect_name("/img/a.qcow2"));
    assert_eq!(
        r.flags,
        vmlock_client::FLAG_AUTOCREATE | vmlock_client::FLAG_SHARED
    );
    assert_eq!(r.lease_file(), PathBuf::from("/leases/files").join(&r.name));
}

#[test]
fn readonly_disks_and_auto_disk_leases_off_lock_nothing() {
    let ro = Disk {
        readonly: true,
        ..Disk::exclusive("/img/a")
    };
    assert_eq!(
        disk_resource(&cfg(true, false, false), &ro, &NO_KEYS).expect("ok"),
        None
    );
    let off = LockdConfig {
        auto_disk_leases: false,
        ..cfg(true, false, false)
    };
    let d = Disk::exclusive("/img/a");
    assert_eq!(disk_resource(&off, &d, &NO_KEYS).expect("ok"), None);
}

#[test]
fn lvm_falls_through_but_scsi_fails_hard() {
    let lvm_ok = FakeKeys {
        lvm: Some("abc-def"),
        scsi: None,
    };
    let d = Disk::exclusive("/dev/vg/lv");
    let r = disk_resource(&cfg(true, true, true), &d, &lvm_ok)
        .expect("ok")
        .expect("locked");
    assert_eq!(
        (r.lockspace.as_str(), r.name.as_str()),
        ("/leases/lvm", "abc-def")
    );
    // lvs fails -> next mode (scsi), which cannot run -> hard error.
    let broken = FakeKeys {
        lvm: None,
        scsi: None,
    };
    let e = disk_resource(&cfg(true, true, true), &d, &broken).expect_err("scsi_id missing");
    assert!(matches!(e, LockError::Io { .. }), "{e:?}");
    // scsi prints nothing -> file mode.
    let r = disk_resource(&cfg(true, true, true), &d, &NO_KEYS)
        .expect("ok")
        .expect("locked");
    assert_eq!(r.lockspace, "/leases/files");
    let scsi = FakeKeys {
        lvm: None,
        scsi: Some(Some("36001405abc")),
    };
    let r = disk_resource(&cfg(true, true, true), &d, &scsi)
        .expect("ok")
        .expect("locked");
    assert_eq!(
        (r.lockspace.as_str(), r.name.as_str()),
        ("/leases/scsi", "36001405abc")
    );
    // Paths outside /dev never ask the tools.
    let f = Disk::exclusive("/img/x");
    let r = disk_resource(&cfg(false, true, true), &f, &broken)
        .expect("ok")
        .expect("locked");
    assert_eq!(r.lockspace, "");
}

#[test]
fn tool_output_trimming() {
    assert_eq!(trim_tool_output("  abc-123\n").as_deref(), Some("abc-123"));
    assert_eq!(trim_tool_output("\n"), None);
    assert_eq!(trim_tool_output(""), None);
}

#[test]
fn lease_rules_and_texts() {
    let mut l = Lease {
        lockspace: Some("ls".into()),
        key: "k1".into(),
        path: Some("/leases".into()),
        offset: 0,
    };
    let r = lease_resource(&l).expect("ok");
    assert_eq!(
        (r.lockspace.as_str(), r.name.as_str(), r.flags),
        ("/leases/ls", "k1", 0)
    );
    l.offset = 1024;
    let e = lease_resource(&l).expect_err("offset");
    assert_eq!(
        e.to_string(),
        "internal error: Offset must be zero for this lock manager"
    );
    assert_eq!(e.code(), Some(VIR_ERR_INTERNAL_ERROR));
    l.offset = 0;
    l.lockspace = None;
    let e = lease_resource(&l).expect_err("lockspace");
    assert_eq!(
        e.to_string(),
        "internal error: Missing path or lockspace for lease resource"
    );
}

fn unreachable_driver(config: LockdConfig) -> LockdDriver {
    LockdDriver::new(config, PathBuf::from("/nonexistent/virtlockd-sock"))
}

#[test]
fn domain_checks() {
    let d = unreachable_driver(LockdConfig::default());
    let e = d.new_manager(&dom(0)).expect_err("id 0");
    assert_eq!(
        e.to_string(),
        "internal error: Missing ID parameter for domain object"
    );
    let mut nameless = dom(1);
    nameless.name.clear();
    let e = d.new_manager(&nameless).expect_err("name");
    assert_eq!(
        e.to_string(),
        "internal error: Missing name parameter for domain object"
    );
    let mut pid0 = dom(1);
    pid0.pid = 0;
    assert!(d.new_manager(&pid0).is_ok(), "pid 0 is only logged");
}

#[test]
fn rw_disks_without_leases_fail_locally_before_connecting() {
    let config = LockdConfig {
        auto_disk_leases: false,
        require_lease_for_disks: true,
        ..LockdConfig::file_read_defaults()
    };
    let d = unreachable_driver(config.clone());
    let mut m = d.new_manager(&dom(1)).expect("manager");
    m.add_resource(&Resource::Disk(Disk::exclusive("/img/a")))
        .expect("add");
    let e = m
        .acquire(AcquireFlags::default(), None)
        .expect_err("no leases");
    assert_eq!(e.code(), Some(VIR_ERR_CONFIG_UNSUPPORTED));
    assert_eq!(
        e.to_string(),
        "unsupported configuration: Read/write, exclusive access, disks were present, but no leases specified"
    );
    // A shared disk is not "read/write exclusive": the sequence goes to the daemon.
    let mut m = d.new_manager(&dom(1)).expect("manager");
    m.add_resource(&Resource::Disk(Disk::shared("/img/a")))
        .expect("add");
    let e = m
        .acquire(AcquireFlags::default(), None)
        .expect_err("no daemon");
    assert!(
        matches!(
            e,
            LockError::Client(vmlock_client::ClientError::Connect { .. })
        ),
        "{e:?}"
    );
}

#[test]
fn init_creates_lockspaces_only_with_auto_disk_leases() {
    let d = unreachable_driver(cfg(true, true, false));
    assert_eq!(d.lockspace_dirs(), ["/leases/files", "/leases/lvm"]);
    assert!(d.init().is_err(), "init connects when dirs are configured");
    let off = LockdConfig {
        auto_disk_leases: false,
        ..cfg(true, true, true)
    };
    let d = unreachable_driver(off);
    assert!(d.lockspace_dirs().is_empty());
    d.init().expect("nothing to create, no connection");
}

#[test]
fn registry() {
    assert!(matches!(load("bogus", None), Err(LockError::UnknownDriver(n)) if n == "bogus"));
    // sanlock loads with the defaults (no automatic leases, nothing touched)
    // wherever its client library is installed, and says so where it is not.
    match load("sanlock", None) {
        Ok(d) => assert!(d.name() == "sanlock" && d.uses_state()),
        Err(e) => assert!(
            e.to_string()
                .starts_with("internal error: sanlock client library unavailable: dlopen"),
            "{e}"
        ),
    }
    assert!(matches!(
        load("cluster", None),
        Err(LockError::UnknownDriver(n)) if n == "cluster"
    ));
    assert_eq!(Driver::ALL.map(Driver::name), ["nop", "lockd", "sanlock"]);
    assert_eq!(Driver::from_name("lockd"), Some(Driver::Lockd));
    let nop = load("nop", None).expect("nop");
    assert_eq!(nop.name(), "nop");
    let mut m = nop.new_manager(&dom(0)).expect("nop accepts anything");
    m.add_resource(&Resource::Disk(Disk::exclusive("/x")))
        .expect("add");
    assert!(
        m.acquire(AcquireFlags::process_start(true), None)
            .expect("acquire")
            .is_none()
    );
    assert_eq!(m.release().expect("release"), None);
    assert_eq!(m.inquire().expect("inquire"), None);
}

#[test]
fn lockd_load_reads_the_config_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let conf = dir.path().join("qemu-lockd.conf");
    std::fs::write(&conf, "auto_disk_leases = 0\n").expect("write");
    let options = LoadOptions {
        config: Some(conf),
        socket: Some(PathBuf::from("/nonexistent/sock")),
    };
    let d = load_with("lockd", &options).expect("no lockspaces, no connection");
    assert_eq!(d.name(), "lockd");
    std::fs::write(dir.path().join("bad.conf"), "auto_disk_leases = \"x\"\n").expect("write");
    let bad = LoadOptions {
        config: Some(dir.path().join("bad.conf")),
        ..options
    };
    assert!(matches!(
        load_with("lockd", &bad),
        Err(LockError::Config(_))
    ));
}

#[test]
fn domain_lock_with_nop_tracks_hotplug() {
    let mut dl = DomainLock::new(Arc::new(NopDriver), dom(1), vec![], vec![]);
    dl.process_start(true).expect("start");
    assert!(dl.holder_fd().is_none());
    dl.image_attach(Disk::exclusive("/a")).expect("attach");
    dl.image_attach(Disk::exclusive("/b")).expect("attach");
    dl.image_detach("/a").expect("detach");
    assert_eq!(dl.disks(), [Disk::exclusive("/b")]);
    assert_eq!(dl.migrate_handover().expect("pause"), None);
    dl.migrate_abort(None).expect("resume");
}
