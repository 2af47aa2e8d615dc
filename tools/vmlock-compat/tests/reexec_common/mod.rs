//! A daemon with locks of every kind, started through an `argv[0]` symlink,
//! for the re-exec tests:
//!
//! ```text
//! plugin session 1 (libvirt's lockd.so, direct mode):
//!   vm1  exclusive disk vm1.img, owner = a QEMU stand-in that keeps its
//!        restricted holder connection (register-only, restrict)
//!   vm2, vm3  shared disk shared.img
//!   vm4  <lease> key1 in lockspace leases/space
//! plugin session 2 (file_lockspace_dir = files): vm5 indirect lease of vm5.qcow2
//! raw frames: owner PID_RAW holds raw.img on a connection kept open
//! vmlock-hold --register: a live process holding holder.img as its own owner
//! ```
//! [`World::assert_all_held`] proves every lock is held, by the daemon's
//! answers to another owner and by the kernel (another process finds each
//! file busy); [`World::assert_release_paths`] then releases everything in
//! the ways clients do and checks each lock goes away.

use std::path::{Path, PathBuf};
use std::time::Duration;

use vmlock_testkit::frames::{self, FLAG_AUTOCREATE, FLAG_SHARED};
use vmlock_testkit::hold::RegisteredHolder;
use vmlock_testkit::reexec::{PluginSession, Symlink, busy_for_other_process, kernel_holder};
use vmlock_testkit::{Daemon, DaemonSpec, Flavor, RawConn, decode_reply, lease_name};

/// Domain UUIDs.
pub const U: [&str; 6] = [
    "c7a5fdbd-edaf-9455-926a-d65c16db1809",
    "3e2b1c0a-5a4d-4f4e-9c2b-0a1b2c3d4e5f",
    "00112233-4455-6677-8899-aabbccddeeff",
    "44444444-2222-3333-4444-555555555555",
    "55555555-2222-3333-4444-555555555555",
    "99999999-2222-3333-4444-555555555555",
];
/// Fake owner pids (never connect, never get killed).
pub const PID_VM2: u32 = 4_194_010;
/// vm3.
pub const PID_VM3: u32 = 4_194_011;
/// vm4.
pub const PID_VM4: u32 = 4_194_012;
/// vm5.
pub const PID_VM5: u32 = 4_194_013;
/// The raw-frame owner.
pub const PID_RAW: u32 = 4_194_020;
/// The "other domain" that must be refused.
pub const PID_OTHER: u32 = 4_194_099;

/// Polls for up to `secs` seconds.
pub fn within(secs: u64, cond: impl FnMut() -> bool) -> bool {
    vmlock_testkit::wait_until(Duration::from_secs(secs), cond)
}

/// Writes an empty, world-writable file.
pub fn touch(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, b"").unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666));
}

/// Sends `frame` and returns (error code or 0, message).
pub fn call(c: &mut RawConn, frame: &[u8]) -> (i32, String) {
    let raw = c.call(frame).unwrap_or_else(|e| panic!("no reply: {e}"));
    match decode_reply(&raw) {
        (_, Some(e)) => (e.code, e.text().to_string()),
        (_, None) => (0, String::new()),
    }
}

/// A connection registered as `pid`.
pub fn owner(d: &Daemon, pid: u32, name: &str) -> RawConn {
    let mut c = d.connect();
    let uuid = *b"reexec-test-uuid";
    let r = call(&mut c, &frames::register(0, uuid, name, 1, pid, 0));
    assert_eq!(r.0, 0, "register {pid}: {}", r.1);
    c
}

/// The canonical path of a flavor's binary (what `/proc/<pid>/exe` shows).
pub fn real_binary(f: Flavor) -> PathBuf {
    let p = f.default_binary();
    std::fs::canonicalize(&p).unwrap_or(p)
}

/// A process holding a lock through its own registered connection.
#[derive(Debug)]
pub struct Holder(pub RegisteredHolder);

impl Holder {
    /// Starts a holder of `name` in `lockspace` and waits for its `ok`.
    pub fn start(d: &Daemon, lockspace: &str, name: &str) -> Holder {
        let none: [&str; 0] = [];
        Holder(RegisteredHolder::start(
            &d.socket_path(),
            lockspace,
            name,
            &none,
            &|| d.log_text(),
        ))
    }

    /// SIGKILLs and reaps the holder.
    pub fn kill(&mut self) {
        let _ = self.0.child.kill();
        let _ = self.0.child.wait();
    }
}

/// The daemon and everything holding locks in it.
#[derive(Debug)]
pub struct World {
    /// Holds the symlink; dropped last.
    pub bin_dir: tempfile::TempDir,
    /// The daemon's `argv[0]`.
    pub link: Symlink,
    /// The daemon.
    pub d: Daemon,
    /// Session 1 (direct mode, with the QEMU stand-in).
    pub p1: PluginSession,
    /// Session 2 (indirect leases).
    pub p2: PluginSession,
    /// The raw-frame owner's connection.
    pub raw: RawConn,
    /// A live holder process.
    pub holder: Holder,
    /// Pid of the QEMU stand-in.
    pub qemu_pid: u32,
}

fn ok(line: &str, what: &str) {
    assert!(line.starts_with("ok"), "{what}: {line}");
}

impl World {
    /// Starts `flavor` through a symlink and takes every kind of lock.
    pub fn start(flavor: Flavor) -> World {
        World::start_with(flavor, DaemonSpec::new(flavor))
    }

    /// Like [`World::start`] with a spec (its binary is replaced by the link).
    pub fn start_with(flavor: Flavor, spec: DaemonSpec) -> World {
        let (bin_dir, link) = flavor_link(flavor);
        let d = Daemon::start(spec.binary(link.path()).virtlockd_texts()).expect("daemon starts");
        World::around(bin_dir, link, d)
    }

    /// Like [`World::start_with`], but the daemon runs as the spec's own
    /// binary, which is its `argv[0]` (`link` then only names the flavor's
    /// binary): for the package tests, where `/usr/sbin/virtlockd` itself
    /// changes.
    pub fn start_unlinked(flavor: Flavor, spec: DaemonSpec) -> World {
        let (bin_dir, link) = flavor_link(flavor);
        let d = Daemon::start(spec.virtlockd_texts()).expect("daemon starts");
        World::around(bin_dir, link, d)
    }

    /// Takes every kind of lock in `d`.
    fn around(bin_dir: tempfile::TempDir, link: Symlink, d: Daemon) -> World {
        for f in [
            "vm1.img",
            "shared.img",
            "raw.img",
            "holder.img",
            "vm5.qcow2",
        ] {
            touch(&d.dir().join(f));
        }
        let mut raw = owner(&d, PID_RAW, "raw");
        let ls = d.dir().join("leases/space").to_string_lossy().into_owned();
        assert_eq!(call(&mut raw, &frames::create_lockspace(1, &ls)).0, 0);
        touch(&d.dir().join("leases/space/key1"));
        let disk = |n: &str| d.dir().join(n).to_string_lossy().into_owned();
        assert_eq!(
            call(&mut raw, &frames::acquire(2, "", &disk("raw.img"), 0)).0,
            0
        );
        let holder = Holder::start(&d, "", &disk("holder.img"));
        let (p1, qemu_pid) = session1(&d);
        let p2 = session2(&d);
        World {
            bin_dir,
            link,
            d,
            p1,
            p2,
            raw,
            holder,
            qemu_pid,
        }
    }

    /// A path in the scratch dir.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.d.dir().join(rel)
    }

    /// A path in the scratch dir as a string.
    pub fn p(&self, rel: &str) -> String {
        self.path(rel).to_string_lossy().into_owned()
    }

    /// The indirect lease file of vm5.
    pub fn indirect_file(&self) -> PathBuf {
        self.path("files").join(lease_name(&self.p("vm5.qcow2")))
    }

    /// Every file that must be locked while the world stands.
    pub fn locked_files(&self) -> Vec<PathBuf> {
        vec![
            self.path("vm1.img"),
            self.path("shared.img"),
            self.path("leases/space/key1"),
            self.indirect_file(),
            self.path("raw.img"),
            self.path("holder.img"),
        ]
    }

    /// Every lock is held: the daemon refuses another owner, the kernel
    /// shows the lock to other processes, a new plugin domain is refused.
    pub fn assert_all_held(&mut self) {
        let mut o = owner(&self.d, PID_OTHER, "other");
        let sha = lease_name(&self.p("vm5.qcow2"));
        let refusals: [(String, String, u32); 6] = [
            (String::new(), self.p("vm1.img"), 0),
            (String::new(), self.p("shared.img"), 0),
            (self.p("leases/space"), "key1".to_string(), 0),
            (self.p("files"), sha, FLAG_AUTOCREATE),
            (String::new(), self.p("raw.img"), 0),
            (String::new(), self.p("holder.img"), 0),
        ];
        for (i, (ls, name, fl)) in refusals.iter().enumerate() {
            let r = call(&mut o, &frames::acquire(10 + i as u32, ls, name, *fl));
            assert_eq!(
                r.0, 87,
                "another owner must be refused {ls:?}/{name}: {}",
                r.1
            );
        }
        let r = call(
            &mut o,
            &frames::acquire(20, "", &self.p("shared.img"), FLAG_SHARED),
        );
        assert_eq!(r.0, 0, "the shared disk still admits a sharer: {}", r.1);
        let r = call(&mut o, &frames::release(21, "", &self.p("shared.img"), 0));
        assert_eq!(r.0, 0, "{}", r.1);
        drop(o);
        for f in self.locked_files() {
            let h = kernel_holder(&f).expect("F_OFD_GETLK");
            assert!(h.is_some(), "no kernel lock on {}", f.display());
            assert!(
                busy_for_other_process(&f).expect("probe"),
                "{}",
                f.display()
            );
        }
        let vm1 = self.p("vm1.img");
        let out = self
            .p1
            .run(&format!(
                "new {} vm9 9 {PID_OTHER}\ndisk {vm1}\nacquire none",
                U[5]
            ))
            .expect("plugin");
        assert!(
            out[2].starts_with("err 87 "),
            "domain vm9 on vm1.img: {}",
            out[2]
        );
    }

    /// Releases everything the ways clients do and checks each lock goes.
    pub fn assert_release_paths(&mut self) {
        let (raw_img, shared) = (self.path("raw.img"), self.path("shared.img"));
        assert!(self.raw.barrier_is_pong(), "the raw connection survived");
        let rel = frames::release(50, "", &self.p("raw.img"), 0);
        let r = call(&mut self.raw, &rel);
        assert_eq!(r.0, 0, "release on the old connection: {}", r.1);
        assert_eq!(kernel_holder(&raw_img).expect("query"), None);
        let s = self.p("shared.img");
        for (u, n, id, pid) in [(U[1], "vm2", 2, PID_VM2), (U[2], "vm3", 3, PID_VM3)] {
            assert!(kernel_holder(&shared).expect("query").is_some());
            let out = self
                .p1
                .run(&format!("new {u} {n} {id} {pid}\ndisk {s} shared\nrelease"));
            ok(&out.expect("plugin")[2], "release shared");
        }
        assert_eq!(
            kernel_holder(&shared).expect("query"),
            None,
            "both sharers left"
        );
        let lease = format!(
            "new {} vm4 4 {PID_VM4}\nlease key1 {} space\nrelease",
            U[3],
            self.p("leases")
        );
        ok(&self.p1.run(&lease).expect("plugin")[2], "release lease");
        assert_eq!(
            kernel_holder(&self.path("leases/space/key1")).expect("q"),
            None
        );
        let ind = format!(
            "new {} vm5 5 {PID_VM5}\ndisk {}\nrelease",
            U[4],
            self.p("vm5.qcow2")
        );
        ok(&self.p2.run(&ind).expect("plugin")[2], "release indirect");
        assert!(
            !self.indirect_file().exists(),
            "indirect lease file unlinked"
        );
        self.assert_holders_freed();
    }

    /// The stand-in closes its holder connection and is terminated by the
    /// daemon; the killed holder process frees its lock.
    fn assert_holders_freed(&mut self) {
        let vm1 = self.path("vm1.img");
        assert!(kernel_holder(&vm1).expect("query").is_some());
        assert!(vmlock_sys::process::exists(self.qemu_pid as i32));
        let out = self.p1.exec("qemu-close").expect("plugin");
        assert_eq!(out, "ok died signal=15", "the daemon SIGTERMs the stand-in");
        assert!(within(10, || kernel_holder(&vm1).is_ok_and(|h| h.is_none())));
        let out = self
            .p1
            .run(&format!(
                "new {} vm9 9 {PID_OTHER}\ndisk {}\nacquire none",
                U[5],
                self.p("vm1.img")
            ))
            .expect("plugin");
        assert_eq!(out[2], "ok fd=none", "vm9 gets vm1's disk");
        let held = self.path("holder.img");
        self.holder.kill();
        assert!(
            within(10, || kernel_holder(&held).is_ok_and(|h| h.is_none())),
            "a killed holder's lock is released"
        );
        self.d.assert_alive();
    }
}

/// A temp dir with a `virtlockd` symlink to the flavor's binary.
fn flavor_link(flavor: Flavor) -> (tempfile::TempDir, Symlink) {
    let bin_dir = tempfile::Builder::new()
        .prefix("vmlock-bin")
        .tempdir_in("/tmp")
        .expect("bin dir");
    let link = Symlink::create(&bin_dir.path().join("virtlockd"), &flavor.default_binary())
        .expect("symlink");
    (bin_dir, link)
}

fn session1(d: &Daemon) -> (PluginSession, u32) {
    let mut p = PluginSession::start(d).expect("plugin-run");
    let dir = d.dir();
    let (vm1, shared) = (dir.join("vm1.img"), dir.join("shared.img"));
    let (vm1, shared, leases) = (vm1.display(), shared.display(), dir.join("leases"));
    let out = p
        .run(&format!(
            "init
new {u0} vm1 1 self
disk {vm1}
spawn-qemu
new {u0} vm1 1 child
disk {vm1}
acquire none
new {u1} vm2 2 {PID_VM2}
disk {shared} shared
acquire none
new {u2} vm3 3 {PID_VM3}
disk {shared} shared
acquire none
new {u3} vm4 4 {PID_VM4}
lease key1 {leases} space
acquire none",
            u0 = U[0],
            u1 = U[1],
            u2 = U[2],
            u3 = U[3],
            leases = leases.display(),
        ))
        .expect("plugin session 1");
    for (i, l) in out.iter().enumerate() {
        ok(l, &format!("session 1 line {i}"));
    }
    let pid = out[3]
        .strip_prefix("ok pid=")
        .and_then(|p| p.parse().ok())
        .expect("stand-in pid");
    (p, pid)
}

fn session2(d: &Daemon) -> PluginSession {
    let mut p = PluginSession::start(d).expect("plugin-run");
    let conf = d.root().join("qemu-lockd.conf");
    let files = d.dir().join("files");
    std::fs::write(
        &conf,
        format!("file_lockspace_dir = \"{}\"\n", files.display()),
    )
    .expect("conf");
    let vm5 = d.dir().join("vm5.qcow2");
    let out = p
        .run(&format!(
            "init {}\nnew {} vm5 5 {PID_VM5}\ndisk {}\nacquire none",
            conf.display(),
            U[4],
            vm5.display()
        ))
        .expect("plugin session 2");
    for (i, l) in out.iter().enumerate() {
        ok(l, &format!("session 2 line {i}"));
    }
    p
}
