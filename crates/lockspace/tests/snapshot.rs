//! Restart snapshots: JSON key names, round trip through serde_json into a
//! second engine from dup'ed descriptors, libvirt's own file, odd entries.

use std::os::fd::{AsFd, OwnedFd};

use lockspace::{
    AcquireFlags, Engine, EngineOptions, LockKind, LockspaceSnap, ResourceSnap, RestoreProblem,
    Snapshot, binfmt,
};
use vmlock_sys::lock::{self, LockType};

fn foreign_lock_possible(path: &str, ty: LockType) -> bool {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let got = lock::try_lock(f.as_fd(), LockKind::Ofd, ty).expect("fcntl");
    if got {
        lock::unlock(f.as_fd(), LockKind::Ofd).expect("unlock");
    }
    got
}

const SA: AcquireFlags = AcquireFlags {
    shared: true,
    autocreate: true,
};
const S: AcquireFlags = AcquireFlags {
    shared: true,
    autocreate: false,
};

#[test]
fn round_trip_through_json_into_a_second_engine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf8").to_owned();
    let (disk, link, ls) = (format!("{d}/disk"), format!("{d}/link"), format!("{d}/ls"));
    std::fs::write(&disk, b"img").expect("disk");
    std::os::unix::fs::symlink(&disk, &link).expect("symlink");
    let one = Engine::new(EngineOptions::default());
    one.create_lockspace(&ls).expect("ls");
    one.create_lockspace(&format!("{d}/empty")).expect("ls2");
    one.acquire("", &disk, 10, S).expect("disk");
    one.acquire("", &link, 11, S).expect("alias");
    one.acquire(&ls, "lease", 10, SA).expect("lease");
    one.acquire(&ls, "lease", 12, SA).expect("lease 2");
    one.acquire(
        &ls,
        "x",
        12,
        AcquireFlags {
            shared: false,
            autocreate: true,
        },
    )
    .expect("x");

    let snap = one.snapshot();
    let before = one.inspect(&ls, "lease").expect("lease");
    let json = serde_json::to_value(&snap).expect("json");
    let res = &json["lockspaces"][1]["resources"][0];
    for key in [
        "name",
        "path",
        "fd",
        "lockHeld",
        "flags",
        "owners",
        "vmlockLockKind",
    ] {
        assert!(res.get(key).is_some(), "missing key {key} in {res}");
    }
    assert_eq!(res["flags"], 3);
    assert_eq!(json["defaultLockspace"].get("directory"), None);
    assert_eq!(
        json["defaultLockspace"]["resources"][0]["vmlockAliases"][0][1],
        link.as_str()
    );

    let back: Snapshot = serde_json::from_str(&json.to_string()).expect("parse");
    assert_eq!(back, snap);
    let (two, report) =
        Engine::restore(EngineOptions::default(), back, vmlock_sys::fd::dup_raw).expect("restore");
    assert_eq!(report.problems, vec![]);
    assert_eq!(report.restored, 3);
    drop(one); // its descriptors close; the dup'ed ones keep the OFD locks

    assert_eq!(two.snapshot().lockspaces.len(), 2);
    assert!(two.has_lockspace(&format!("{d}/empty")));
    // When each owner acquired survives (vmlockSince), owner by owner.
    let after = two.inspect(&ls, "lease").expect("lease");
    assert!(
        before.since.iter().all(|&t| t > 1_600_000_000),
        "{before:?}"
    );
    assert_eq!(after.since, before.since);
    assert_eq!(
        res.get("vmlockSince").map(|v| v.as_array().map(Vec::len)),
        Some(Some(2))
    );
    assert_eq!(two.inspect("", &link).expect("alias").owners, vec![10, 11]);
    assert!(
        !foreign_lock_possible(&disk, LockType::Exclusive),
        "disk lock survived"
    );
    assert!(
        !foreign_lock_possible(&format!("{ls}/x"), LockType::Shared),
        "x lock survived"
    );
    assert_eq!(two.release_owner(10).expect("release"), 2);
    assert_eq!(two.release_owner(12).expect("release"), 2);
    assert!(
        !std::path::Path::new(&format!("{ls}/lease")).exists(),
        "autocreate kept"
    );
    two.release("", &disk, 11)
        .expect("release by the other name");
    assert!(foreign_lock_possible(&disk, LockType::Exclusive));
    assert_eq!(two.stats().resources, 0);
}

/// The lockspace part of a state file as Debian's virtlockd 9.0 writes it
/// (shape of crates/vmlockd/tests/fixtures/virtlockd-9.0-restart-state.json).
const LIBVIRT_STATE: &str = r#"{
  "defaultLockspace": { "resources": [
      { "name": "/d/direct-disk", "path": "/d/direct-disk", "fd": 18,
        "lockHeld": true, "flags": 0, "owners": [ 30620 ] } ] },
  "lockspaces": [ { "directory": "/d/ls", "resources": [
      { "name": "8ea6", "path": "/d/ls/8ea6", "fd": 13, "lockHeld": true,
        "flags": 3, "owners": [ 30608, 18446744073709551615 ] } ] } ],
  "daemon": { "servers": {} },
  "magic": "1234"
}"#;

#[test]
fn libvirts_state_file_parses_as_posix_locks() {
    let snap: Snapshot = serde_json::from_str(LIBVIRT_STATE).expect("snapshot keys");
    let r = &snap.default.resources[0];
    assert_eq!(
        (r.fd, r.lock_held, r.flags, r.lock_kind),
        (18, true, 0, LockKind::Posix)
    );
    assert!(r.aliases.is_empty() && snap.lingering.is_empty());
    // libvirt records no acquire times: every owner's is unknown.
    assert!(r.since.is_empty());
    assert_eq!(r.since_of(0), 0);
    let l = &snap.lockspaces[0];
    assert_eq!(l.directory.as_deref(), Some("/d/ls"));
    // A C pid_t of -1 written as unsigned 64-bit comes back as u32::MAX.
    assert_eq!(l.resources[0].owners, vec![30608, u32::MAX]);
}

fn res(name: &str, path: &str, fd: i32, owners: &[u32]) -> ResourceSnap {
    ResourceSnap {
        name: name.into(),
        path: path.into(),
        fd,
        lock_held: true,
        flags: 0,
        owners: owners.to_vec(),
        lock_kind: LockKind::Posix,
        aliases: vec![],
        ident: None,
        since: vec![],
    }
}

#[test]
fn odd_entries_are_reported_not_fatal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf8").to_owned();
    let (a, b) = (format!("{d}/a"), format!("{d}/b"));
    std::fs::write(&a, b"").expect("a");
    std::fs::write(&b, b"").expect("b");
    let fa = std::fs::File::open(&a).expect("open a");
    let fb = std::fs::File::open(&b).expect("open b");
    let fa2 = std::fs::File::open(&a).expect("open a again");
    let (na, nb, na2) = (
        std::os::fd::AsRawFd::as_raw_fd(&fa),
        std::os::fd::AsRawFd::as_raw_fd(&fb),
        std::os::fd::AsRawFd::as_raw_fd(&fa2),
    );
    let ls = LockspaceSnap {
        directory: Some(d.clone()),
        resources: vec![],
    };
    let snap = Snapshot {
        default: LockspaceSnap {
            directory: None,
            resources: vec![
                res(&a, &a, na, &[1]),
                res(&format!("{d}//a"), &a, na2, &[2]), // same file as the first
                res(&b, &a, nb, &[3]),                  // fd is not the file at path
                res(&b, &b, na, &[4]),                  // fd number used twice
                res(&format!("{d}/gone"), &format!("{d}/gone"), 1_000_000, &[5]),
            ],
        },
        lockspaces: vec![
            ls.clone(),
            LockspaceSnap {
                directory: Some(d.clone()),
                resources: vec![],
            },
        ],
        lingering: vec![],
    };
    let mut owned = vec![fa, fb, fa2];
    let adopt = |n: i32| -> std::io::Result<OwnedFd> {
        let at = owned
            .iter()
            .position(|f| std::os::fd::AsRawFd::as_raw_fd(f) == n);
        at.map(|i| OwnedFd::from(owned.remove(i)))
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EBADF))
    };
    let (e, report) = Engine::restore(EngineOptions::default(), snap, adopt).expect("restore");
    let p = &report.problems;
    assert_eq!(report.restored, 3, "{p:?}");
    assert!(p.contains(&RestoreProblem::DuplicateIdentity {
        lockspace: String::new(),
        name: format!("{d}//a")
    }));
    assert!(p.contains(&RestoreProblem::IdentityMismatch {
        name: b.clone(),
        path: a.clone()
    }));
    assert!(p.contains(&RestoreProblem::DuplicateFd {
        fd: na,
        name: b.clone()
    }));
    assert!(p.contains(&RestoreProblem::AdoptFailed {
        fd: 1_000_000,
        name: format!("{d}/gone"),
        errno: libc::EBADF
    }));
    assert!(p.contains(&RestoreProblem::DuplicateLockspace {
        directory: d.clone()
    }));
    // Releasing one of two resources on the same file keeps its descriptor
    // open (lingering) until the other goes.
    e.release("", &a, 1).expect("release");
    assert_eq!(e.snapshot().lingering.len(), 1);
    e.release("", &format!("{d}//a"), 2).expect("release");
    assert_eq!(e.snapshot().lingering.len(), 0);
    assert!(std::path::Path::new(&a).exists());
}

/// The engine stores no path for a resource whose lockspace and name give
/// it; one from a foreign state that names another file keeps its own,
/// through inspection, both snapshot forms and release.
#[test]
fn a_path_the_name_does_not_give_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf8").to_owned();
    let (ls, elsewhere) = (format!("{d}/ls"), format!("{d}/elsewhere"));
    std::fs::create_dir(&ls).expect("ls");
    std::fs::write(&elsewhere, b"").expect("file");
    std::fs::write(format!("{ls}/plain"), b"").expect("plain");
    let odd = std::fs::File::open(&elsewhere).expect("open");
    let plain = std::fs::File::open(format!("{ls}/plain")).expect("open");
    let fd = |f: &std::fs::File| std::os::fd::AsRawFd::as_raw_fd(f);
    let snap = Snapshot {
        default: LockspaceSnap::default(),
        lockspaces: vec![LockspaceSnap {
            directory: Some(ls.clone()),
            resources: vec![
                res("odd", &elsewhere, fd(&odd), &[7]),
                res("plain", &format!("{ls}/plain"), fd(&plain), &[8]),
            ],
        }],
        lingering: vec![],
    };
    let want = snap.clone();
    let (e, report) =
        Engine::restore(EngineOptions::default(), snap, vmlock_sys::fd::dup_raw).expect("restore");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.restored, 2);
    let info = e.inspect(&ls, "odd").expect("odd");
    assert_eq!(info.path, elsewhere);
    assert_eq!(
        e.inspect(&ls, "plain").expect("plain").path,
        format!("{ls}/plain")
    );
    let mut got = e.snapshot();
    for r in &mut got.lockspaces[0].resources {
        // The engine's own snapshot adds what it learnt.
        (r.ident, r.fd) = (None, want_fd(&want, &r.name));
    }
    assert_eq!(got, want);
    let view = e.snapshot_view_unordered();
    let json = serde_json::to_string(&view.lockspaces()).expect("json");
    assert!(
        json.contains(&format!("\"path\":\"{elsewhere}\"")),
        "{json}"
    );
    assert!(json.contains(&format!("\"path\":\"{ls}/plain\"")), "{json}");
    let bin = binary_of_view(&view);
    drop(view);
    let decoded = binfmt::decode(&mut binfmt::Reader::new(&bin)).expect("decode");
    let paths: Vec<_> = decoded.lockspaces[0]
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.path.clone()))
        .collect();
    assert!(
        paths.contains(&("odd".into(), elsewhere.clone())),
        "{paths:?}"
    );
    assert!(
        paths.contains(&("plain".into(), format!("{ls}/plain"))),
        "{paths:?}"
    );
    e.release(&ls, "odd", 7).expect("release");
    assert!(e.inspect(&ls, "odd").is_none());
    assert!(std::path::Path::new(&elsewhere).exists());
    drop((odd, plain));
}

fn want_fd(s: &Snapshot, name: &str) -> i32 {
    s.lockspaces[0]
        .resources
        .iter()
        .find(|r| r.name == name)
        .map_or(-1, |r| r.fd)
}

/// vmlockd records each file's identity; a restore that finds the same
/// identity on the descriptor trusts it and does not walk the path again
/// (so a renamed-away lease is not noticed, exactly as a daemon that never
/// re-exec'd would not notice). Without a matching record the path is
/// checked as for libvirt's files.
#[test]
fn a_recorded_identity_spares_the_path_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf8").to_owned();
    let ls = format!("{d}/ls");
    let one = Engine::new(EngineOptions::default());
    one.create_lockspace(&ls).expect("ls");
    let auto = AcquireFlags {
        shared: false,
        autocreate: true,
    };
    one.acquire(&ls, "a", 7, auto).expect("a");
    one.acquire(&ls, "b", 7, auto).expect("b");
    let snap = one.snapshot();
    let json = serde_json::to_value(&snap).expect("json");
    let recorded = &json["lockspaces"][0]["resources"][0]["vmlockIdent"];
    let meta = std::fs::metadata(format!("{ls}/a")).expect("a exists");
    use std::os::unix::fs::MetadataExt;
    let ident_a = (meta.dev(), meta.ino());
    assert_eq!(recorded, &serde_json::json!([ident_a.0, ident_a.1]));

    // Both paths now name other files; only "b" lost its record.
    for n in ["a", "b"] {
        std::fs::rename(format!("{ls}/{n}"), format!("{ls}/{n}.old")).expect("rename");
        std::fs::write(format!("{ls}/{n}"), b"").expect("replacement");
    }
    let mut back: Snapshot = serde_json::from_value(json).expect("parse");
    back.lockspaces[0].resources[1].ident = None;
    let (two, report) =
        Engine::restore(EngineOptions::default(), back, vmlock_sys::fd::dup_raw).expect("restore");
    assert_eq!(report.restored, 2);
    assert_eq!(
        report.problems,
        vec![RestoreProblem::IdentityMismatch {
            name: "b".into(),
            path: format!("{ls}/b"),
        }]
    );
    assert!(two.inspect(&ls, "a").expect("a").autocreate, "trusted");
    assert!(!two.inspect(&ls, "b").expect("b").autocreate, "checked");
    // A caller that fstats the descriptor wins over a record that
    // disagrees, and the path is checked again.
    let mut snap3 = two.snapshot();
    snap3.lockspaces[0].resources[0].ident = Some((1, 2));
    let fstat_adopt = |n: i32| {
        let fd = vmlock_sys::fd::dup_raw(n)?;
        let ident = Some(vmlock_sys::fd::identity(fd.as_fd())?);
        Ok(lockspace::Adopted { fd, ident })
    };
    let (three, report3) =
        Engine::restore_adopted(EngineOptions::default(), snap3, fstat_adopt).expect("again");
    assert_eq!(
        three.snapshot().lockspaces[0].resources[0].ident,
        Some(ident_a)
    );
    assert!(
        report3
            .problems
            .contains(&RestoreProblem::IdentityMismatch {
                name: "a".into(),
                path: format!("{ls}/a"),
            }),
        "{:?}",
        report3.problems
    );
    drop(one);
}

/// The borrowed view writes exactly what the owned snapshot writes.
#[test]
fn the_view_serialises_like_the_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf8").to_owned();
    let (disk, link, ls) = (format!("{d}/disk"), format!("{d}/link"), format!("{d}/ls"));
    std::fs::write(&disk, b"img").expect("disk");
    std::os::unix::fs::symlink(&disk, &link).expect("symlink");
    let e = Engine::new(EngineOptions::default());
    e.create_lockspace(&ls).expect("ls");
    e.create_lockspace(&format!("{d}/empty")).expect("ls2");
    e.acquire("", &disk, 10, S).expect("disk");
    e.acquire("", &link, 11, S).expect("alias");
    e.acquire(&ls, "lease", 10, SA).expect("lease");
    e.acquire(&ls, "lease", 12, SA).expect("lease 2");
    let snap = e.snapshot();
    let want = (
        serde_json::to_string(&snap.default).expect("a"),
        serde_json::to_string(&snap.lockspaces).expect("b"),
        serde_json::to_string(&snap.lingering).expect("c"),
    );
    let view = e.snapshot_view();
    let got = (
        serde_json::to_string(&view.default_lockspace()).expect("a"),
        serde_json::to_string(&view.lockspaces()).expect("b"),
        serde_json::to_string(&view.lingering()).expect("c"),
    );
    assert_eq!(got, want);
    assert!(want.0.contains("vmlockAliases") && want.1.contains("vmlockIdent"));
    assert!(view.lingering_is_empty());
    assert_eq!(binary_of_view(&view), binary_of(&snap));
    drop(view);

    // A second entry under the same name restores as a lingering descriptor.
    let mut twice = e.snapshot();
    let mut again = twice.default.resources[0].clone();
    let other = vmlock_sys::fd::dup_raw(again.fd).expect("dup");
    again.fd = std::os::fd::IntoRawFd::into_raw_fd(other);
    twice.default.resources.push(again);
    let (r, _) =
        Engine::restore(EngineOptions::default(), twice, vmlock_sys::fd::dup_raw).expect("restore");
    let owned = serde_json::to_string(&r.snapshot().lingering).expect("owned");
    let view = r.snapshot_view();
    assert!(!view.lingering_is_empty());
    assert_eq!(
        serde_json::to_string(&view.lingering()).expect("view"),
        owned
    );
    assert!(owned.starts_with("[{\"path\":"), "{owned}");
    let bin = binary_of_view(&view);
    drop(view);
    let snap = r.snapshot();
    assert_eq!(bin, binary_of(&snap));
    let decoded = binfmt::decode(&mut binfmt::Reader::new(&bin)).expect("decode");
    assert_eq!(decoded, snap);
}

/// The unordered view (the binary hand-over) walks the table in memory
/// order: the same lockspaces and resources as the snapshot, in another
/// order, whether written as binary or as JSON.
#[test]
fn the_unordered_view_holds_the_same_resources() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf8").to_owned();
    let (disk, link) = (format!("{d}/disk"), format!("{d}/link"));
    std::fs::write(&disk, b"img").expect("disk");
    std::os::unix::fs::symlink(&disk, &link).expect("symlink");
    let e = Engine::new(EngineOptions::default());
    let (ls1, ls2) = (format!("{d}/ls1"), format!("{d}/ls2"));
    for ls in [&ls1, &ls2, &format!("{d}/empty")] {
        e.create_lockspace(ls).expect("ls");
    }
    e.acquire("", &disk, 10, S).expect("disk");
    e.acquire("", &link, 11, S).expect("alias");
    for i in 0..40 {
        let ls = if i % 3 == 0 { &ls1 } else { &ls2 };
        e.acquire(ls, &format!("r{i}"), 20 + i, SA).expect("lease");
    }
    let sorted = |mut s: lockspace::Snapshot| {
        for ls in std::iter::once(&mut s.default).chain(&mut s.lockspaces) {
            ls.resources.sort_by(|a, b| a.name.cmp(&b.name));
        }
        s
    };
    let want = sorted(e.snapshot());
    assert_eq!(want.lockspaces.len(), 3);
    let view = e.snapshot_view_unordered();
    let bin = binary_of_view(&view);
    let decoded = binfmt::decode(&mut binfmt::Reader::new(&bin)).expect("decode");
    assert_eq!(sorted(decoded), want);
    let json = format!(
        r#"{{"defaultLockspace":{},"lockspaces":{}}}"#,
        serde_json::to_string(&view.default_lockspace()).expect("a"),
        serde_json::to_string(&view.lockspaces()).expect("b"),
    );
    drop(view);
    let from_json: lockspace::Snapshot = serde_json::from_str(&json).expect("json");
    assert_eq!(sorted(from_json), want);
}

fn binary_of(s: &lockspace::Snapshot) -> Vec<u8> {
    let mut w = binfmt::Writer::default();
    binfmt::encode(&mut w, s);
    w.buf
}

fn binary_of_view(v: &lockspace::SnapshotView<'_>) -> Vec<u8> {
    let mut w = binfmt::Writer::default();
    v.encode(&mut w);
    w.buf
}

/// `inherit_fds`: lease files are opened without close-on-exec (vmlockd
/// hands them to its next image as they are); by default they have it.
#[test]
fn inherit_fds_decides_close_on_exec() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf8").to_owned();
    let ls = format!("{d}/ls");
    let cloexec = |fd: i32| {
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).expect("fdinfo");
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .expect("flags line");
        u32::from_str_radix(flags.trim(), 8).expect("octal") & 0o2_000_000 != 0
    };
    for inherit in [false, true] {
        let e = Engine::new(EngineOptions {
            inherit_fds: inherit,
            ..EngineOptions::default()
        });
        assert_eq!(e.inherits_fds(), inherit);
        e.create_lockspace(&ls).expect("ls");
        e.acquire(&ls, "lease", 10, SA).expect("autocreate");
        let disk = format!("{d}/disk-{inherit}");
        std::fs::write(&disk, b"").expect("disk");
        e.acquire("", &disk, 10, S).expect("direct");
        let snap = e.snapshot();
        let fds = snap
            .lockspaces
            .iter()
            .chain([&snap.default])
            .flat_map(|l| l.resources.iter().map(|r| r.fd));
        for fd in fds {
            assert_eq!(cloexec(fd), !inherit, "fd {fd} with inherit_fds {inherit}");
        }
        e.release(&ls, "lease", 10).expect("release");
    }
}
