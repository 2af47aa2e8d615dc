//! Two libvirt "hosts" on one machine, for `tests/libvirt_cluster.rs`.
//!
//! Each host is a private mount and UTS namespace (its own hostname) kept
//! alive by a `sleep` process; every daemon of the host is started into it
//! with `nsenter`:
//!
//! ```text
//!  host A (unshare -m -u)                        host B (unshare -m -u)
//!   /run            -> $ROOT/A/run                /run            -> $ROOT/B/run
//!   /etc/libvirt    -> $ROOT/A/etc                /etc/libvirt    -> $ROOT/B/etc
//!   /var/lib        -> $ROOT/A/var-lib            /var/lib        -> $ROOT/B/var-lib
//!   (/var/log, /var/cache likewise; the lockspace is /var/lib/libvirt/lockd/files)
//!   libvirtd ─lockd.so─► vmlockd | virtlockd      libvirtd ─lockd.so─► vmlockd | virtlockd
//!        └─► QEMU (TCG) ──► $ROOT/shared/gN.img ◄── QEMU (TCG) ◄─┘
//! ```
//!
//! The lease files live in `/var/lib/libvirt/lockd/files`, a directory
//! private to each host: nothing but the lock daemons' cluster back end can
//! keep the two hosts apart. The disks are in one directory both hosts
//! see. QEMU's own image locking (OFD locks on the image, which would keep
//! two QEMUs on one machine apart by itself) is switched off by a wrapper
//! that adds `"locking":"off"` to every `-blockdev` of the `file` driver, so
//! the only exclusion left is the lock manager's, as between two machines.
//!
//! The test talks to each libvirtd from outside through its socket
//! (`qemu:///system?socket=$ROOT/A/run/libvirt/libvirt-sock`); a live
//! migration goes from A's libvirtd to B's over that URI, and the memory
//! over TCP on loopback (`--migrateuri`).

#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use vmlock_testkit::ci;

/// Sets up the host's private view and parks in `sleep` (the namespace's
/// anchor). `$1` is the host's root dir, `$2` its hostname. libvirtd's QEMU
/// driver insists on its build-time user and group (`libvirt-qemu`), which
/// only the `libvirt-daemon-system` package creates: a private copy of
/// `/etc/passwd` and `/etc/group` adds them inside the namespace.
const NS_SCRIPT: &str = r#"set -e
R=$1
cp /etc/passwd "$R/passwd"
cp /etc/group "$R/group"
grep -q '^libvirt-qemu:' "$R/passwd" || echo 'libvirt-qemu:x:64055:64055::/var/lib/libvirt:/usr/sbin/nologin' >> "$R/passwd"
grep -q '^libvirt-qemu:' "$R/group" || echo 'libvirt-qemu:x:64055:' >> "$R/group"
grep -q '^kvm:' "$R/group" || echo 'kvm:x:64056:' >> "$R/group"
mount --bind "$R/passwd" /etc/passwd
mount --bind "$R/group" /etc/group
mount --bind "$R/run" /run
mkdir -p /run/libvirt
mount --bind "$R/etc" /etc/libvirt
mount --bind "$R/var-lib" /var/lib
mount --bind "$R/var-log" /var/log
mount --bind "$R/var-cache" /var/cache
mkdir -p /var/lib/libvirt /var/log/libvirt /var/cache/libvirt
hostname "$2"
echo ready
exec sleep 1000000
"#;

/// The QEMU binary libvirt runs, through [`QEMU_WRAPPER`].
pub const QEMU: &str = "/usr/bin/qemu-system-x86_64";

/// `exec`s QEMU with its image locking off on every `file` blockdev.
const QEMU_WRAPPER: &str = r#"#!/bin/bash
args=()
for a in "$@"; do
  args+=("${a//\"driver\":\"file\",/\"driver\":\"file\",\"locking\":\"off\",}")
done
exec /usr/bin/qemu-system-x86_64 "${args[@]}"
"#;

/// Which lock daemon a host runs.
#[derive(Debug, Clone)]
pub enum LockDaemon {
    /// vmlockd with this config text (the etcd back end).
    Vmlockd(String),
    /// libvirt's virtlockd, default config.
    Virtlockd,
}

/// Whether everything the test needs is here; panics under CI when not.
pub fn available() -> bool {
    let have = |p: &str| Path::new(p).exists();
    let ok = have("/usr/sbin/libvirtd")
        && have("/usr/sbin/virtlockd")
        && have("/usr/bin/virsh")
        && have(QEMU)
        && have("/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so")
        && have("/usr/lib/x86_64-linux-gnu/libvirt/lock-driver/lockd.so")
        && have("/etc/libvirt");
    ci::require(
        ok,
        "libvirtd with its QEMU driver and qemu-system-x86 are not installed \
         (apt-get install -y libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86)",
    ) && ci::require(
        {
            use std::os::unix::fs::MetadataExt;
            fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
        },
        "the libvirt hosts need root (mount namespaces, libvirtd)",
    )
}

/// The directory shared by the hosts: disks, the QEMU wrapper, host roots.
pub struct World {
    pub dir: tempfile::TempDir,
}

impl World {
    pub fn new() -> World {
        let dir = tempfile::Builder::new()
            .prefix("vmlock-lv")
            .tempdir()
            .expect("tempdir");
        fs::create_dir(dir.path().join("shared")).unwrap();
        let w = dir.path().join("qemu-shared-storage");
        fs::write(&w, QEMU_WRAPPER).unwrap();
        fs::set_permissions(&w, fs::Permissions::from_mode(0o755)).unwrap();
        World { dir }
    }

    pub fn wrapper(&self) -> PathBuf {
        self.dir.path().join("qemu-shared-storage")
    }

    /// A 1 MiB raw disk on the shared storage.
    pub fn disk(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join("shared").join(format!("{name}.img"));
        let f = fs::File::create(&p).unwrap();
        f.set_len(1 << 20).unwrap();
        p
    }

    /// A domain `name` (fixed UUID per name) with one disk on `disk`.
    pub fn domain_xml(&self, name: &str, disk: &Path) -> String {
        let n: u32 = name.bytes().map(u32::from).sum();
        format!(
            "<domain type='qemu'>\n  <name>{name}</name>\n  \
             <uuid>5c0ffee0-0000-4000-8000-{n:012x}</uuid>\n  \
             <memory unit='MiB'>32</memory>\n  <vcpu>1</vcpu>\n  \
             <os><type arch='x86_64' machine='pc'>hvm</type></os>\n  \
             <devices>\n    <emulator>{}</emulator>\n    \
             <disk type='file' device='disk'>\n      <driver name='qemu' type='raw'/>\n      \
             <source file='{}'/>\n      <target dev='vda' bus='virtio'/>\n    </disk>\n    \
             <memballoon model='none'/>\n  </devices>\n</domain>\n",
            self.wrapper().display(),
            disk.display()
        )
    }
}

/// One libvirt host.
pub struct LvHost {
    pub name: String,
    pub root: PathBuf,
    keeper: Child,
    lockd: Option<Child>,
    libvirtd: Option<Child>,
    kind: LockDaemon,
}

fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

impl LvHost {
    /// Starts host `name` (its root under `world`): namespace, lock daemon,
    /// libvirtd. `uuid` is libvirtd's host UUID (migration refuses a
    /// destination with the source's UUID); `port` the first of the 64
    /// migration ports this host's QEMU may listen on.
    pub fn start(world: &World, name: &str, uuid: &str, port: u16, kind: LockDaemon) -> LvHost {
        let root = world.dir.path().join(name);
        for d in ["run", "etc", "var-lib", "var-log", "var-cache"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        let etc = root.join("etc");
        fs::write(
            etc.join("libvirtd.conf"),
            format!(
                "host_uuid = \"{uuid}\"\nauth_unix_rw = \"none\"\n\
                 log_outputs = \"3:file:/var/log/libvirt/libvirtd.log\"\n"
            ),
        )
        .unwrap();
        fs::write(
            etc.join("qemu.conf"),
            format!(
                "user = \"root\"\ngroup = \"root\"\ndynamic_ownership = 0\nremember_owner = 0\n\
                 security_driver = \"none\"\ncgroup_controllers = [ ]\nnamespaces = [ ]\n\
                 lock_manager = \"lockd\"\nstdio_handler = \"file\"\n\
                 migration_port_min = {port}\nmigration_port_max = {}\n",
                port + 63
            ),
        )
        .unwrap();
        fs::write(
            etc.join("qemu-lockd.conf"),
            "auto_disk_leases = 1\nrequire_lease_for_disks = 1\n\
             file_lockspace_dir = \"/var/lib/libvirt/lockd/files\"\n",
        )
        .unwrap();
        let mut keeper = Command::new("unshare")
            .args([
                "-m",
                "-u",
                "--propagation",
                "private",
                "sh",
                "-c",
                NS_SCRIPT,
                "sh",
            ])
            .arg(&root)
            .arg(format!("host{name}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("unshare");
        let mut line = String::new();
        BufReader::new(keeper.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "host {name}: namespace set-up failed");
        let mut h = LvHost {
            name: name.to_owned(),
            root,
            keeper,
            lockd: None,
            libvirtd: None,
            kind,
        };
        h.start_lockd();
        h.start_libvirtd();
        h
    }

    /// `program` run inside this host's namespaces.
    pub fn in_ns(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("-t")
            .arg(self.keeper.id().to_string())
            .args(["-m", "-u", "--"])
            .arg(program);
        c
    }

    fn spawn_logged(&self, mut c: Command, log: &str) -> Child {
        let f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join(log))
            .unwrap();
        c.stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn in namespace")
    }

    pub fn lockd_socket(&self) -> PathBuf {
        self.root.join("run/libvirt/virtlockd-sock")
    }

    /// Starts the lock daemon and waits for its socket.
    pub fn start_lockd(&mut self) {
        let _ = fs::remove_file(self.lockd_socket());
        let c = match &self.kind {
            LockDaemon::Vmlockd(conf) => {
                let path = self.root.join("vmlockd.conf");
                fs::write(&path, conf).unwrap();
                let mut c = self.in_ns(vmlock_testkit::vmlockd_binary());
                c.arg("-f").arg(path);
                c
            }
            LockDaemon::Virtlockd => self.in_ns("/usr/sbin/virtlockd"),
        };
        self.lockd = Some(self.spawn_logged(c, "lockd.log"));
        let sock = self.lockd_socket();
        assert!(
            wait_for(Duration::from_secs(20), || UnixStream::connect(&sock)
                .is_ok()),
            "host {}: lock daemon did not listen: {}",
            self.name,
            self.lockd_log()
        );
    }

    /// The lock daemon's pid.
    pub fn lockd_pid(&self) -> u32 {
        self.lockd.as_ref().expect("lock daemon").id()
    }

    /// The libvirt URI of this host's libvirtd.
    pub fn uri(&self) -> String {
        format!(
            "qemu:///system?socket={}",
            self.root.join("run/libvirt/libvirt-sock").display()
        )
    }

    /// Starts libvirtd and waits until it answers.
    pub fn start_libvirtd(&mut self) {
        let _ = fs::remove_file(self.root.join("run/libvirt/libvirt-sock"));
        let c = self.in_ns("/usr/sbin/libvirtd");
        self.libvirtd = Some(self.spawn_logged(c, "libvirtd.out"));
        let ok = wait_for(Duration::from_secs(60), || {
            self.virsh(&["uri"]).status.success()
        });
        assert!(
            ok,
            "host {}: libvirtd did not answer: {}",
            self.name,
            self.libvirtd_log()
        );
    }

    /// SIGTERM to libvirtd and waits for it (its guests keep running).
    pub fn stop_libvirtd(&mut self) {
        if let Some(mut c) = self.libvirtd.take() {
            let _ = vmlock_sys::process::kill(c.id() as i32, libc::SIGTERM);
            let until = Instant::now() + Duration::from_secs(30);
            while Instant::now() < until && c.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn virsh(&self, args: &[&str]) -> Output {
        Command::new("virsh")
            .arg("-q")
            .arg("-c")
            .arg(self.uri())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("virsh")
    }

    /// `virsh args`, which must succeed; its stdout.
    pub fn virsh_ok(&self, args: &[&str]) -> String {
        let o = self.virsh(args);
        assert!(
            o.status.success(),
            "host {}: virsh {args:?}: {}\n{}",
            self.name,
            String::from_utf8_lossy(&o.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Defines `name` from `xml` on this host.
    pub fn define(&self, xml: &str) {
        let p = self.root.join("domain.xml");
        fs::write(&p, xml).unwrap();
        self.virsh_ok(&["define", p.to_str().unwrap()]);
    }

    /// `virsh start dom`: `Ok` or virsh's error text.
    pub fn start_domain(&self, dom: &str) -> Result<(), String> {
        let o = self.virsh(&["start", dom]);
        if o.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
    }

    pub fn state(&self, dom: &str) -> String {
        self.virsh_ok(&["domstate", dom]).trim().to_owned()
    }

    /// The running QEMU's pid, from libvirt's pid file.
    pub fn qemu_pid(&self, dom: &str) -> Option<i32> {
        let p = self.root.join(format!("run/libvirt/qemu/{dom}.pid"));
        let pid: i32 = fs::read_to_string(p).ok()?.trim().parse().ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }

    /// Live-migrates `dom` to `dst`, memory over loopback TCP on a port the
    /// destination's libvirtd picks from its range (it checks the port is
    /// free: a fixed port could be some other process's ephemeral port);
    /// `Ok` or virsh's error text.
    pub fn migrate(&self, dom: &str, dst: &LvHost) -> Result<(), String> {
        let o = self.migrate_cmd(dom, dst).output().expect("virsh");
        if o.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
    }

    /// The `virsh migrate --live` command (storage is shared, so `--unsafe`
    /// only silences libvirt's check for a cluster file system).
    pub fn migrate_cmd(&self, dom: &str, dst: &LvHost) -> Command {
        let mut c = Command::new("virsh");
        c.arg("-q")
            .arg("-c")
            .arg(self.uri())
            .args(["migrate", "--live", "--unsafe", dom])
            .arg(dst.uri())
            .arg("--migrateuri")
            .arg("tcp://127.0.0.1")
            .stdin(Stdio::null());
        c
    }

    /// libvirt's "Total downtime" of the last completed migration of `dom`
    /// from this host, in ms.
    pub fn last_downtime_ms(&self, dom: &str) -> u64 {
        let out = self.virsh_ok(&["domjobinfo", "--completed", dom]);
        out.lines()
            .find_map(|l| {
                let rest = l.strip_prefix("Total downtime:")?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .unwrap_or_else(|| panic!("no downtime in: {out}"))
    }

    pub fn lockd_log(&self) -> String {
        read_lossy(&self.root.join("lockd.log"))
    }

    pub fn libvirtd_log(&self) -> String {
        let mut s = read_lossy(&self.root.join("libvirtd.out"));
        s.push_str(&read_lossy(&self.root.join("var-log/libvirt/libvirtd.log")));
        s
    }

    /// Every log of the host, for a failure message.
    pub fn logs(&self) -> String {
        let mut s = format!(
            "--- host {} lock daemon:\n{}",
            self.name,
            tail(&self.lockd_log())
        );
        s.push_str(&format!(
            "--- host {} libvirtd:\n{}",
            self.name,
            tail(&self.libvirtd_log())
        ));
        if let Ok(rd) = fs::read_dir(self.root.join("var-log/libvirt/qemu")) {
            for e in rd.flatten() {
                let t = read_lossy(&e.path());
                s.push_str(&format!("--- {}:\n{}", e.path().display(), tail(&t)));
            }
        }
        s
    }

    /// Kills every QEMU of this host (by libvirt's pid files).
    fn kill_guests(&self) {
        if let Ok(rd) = fs::read_dir(self.root.join("run/libvirt/qemu")) {
            for e in rd.flatten() {
                if e.path().extension().is_some_and(|x| x == "pid")
                    && let Some(pid) = fs::read_to_string(e.path())
                        .ok()
                        .and_then(|t| t.trim().parse::<i32>().ok())
                {
                    let _ = vmlock_sys::process::kill(pid, libc::SIGKILL);
                }
            }
        }
    }

    pub fn kill_lockd(&mut self) {
        if let Some(mut c) = self.lockd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for LvHost {
    fn drop(&mut self) {
        self.stop_libvirtd_hard();
        self.kill_guests();
        self.kill_lockd();
        // Whatever else still runs in the host's namespace (a QEMU whose
        // pid file was not written yet, a fence helper).
        if let Ok(ns) = fs::read_link(format!("/proc/{}/ns/mnt", self.keeper.id())) {
            for _ in 0..3 {
                for pid in pids_in_ns(&ns) {
                    if pid != self.keeper.id() as i32 {
                        let _ = vmlock_sys::process::kill(pid, libc::SIGKILL);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.keeper.kill();
        let _ = self.keeper.wait();
    }
}

/// Every process whose mount namespace is `ns` (a `/proc/*/ns/mnt` link).
fn pids_in_ns(ns: &Path) -> Vec<i32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok_and(|l| l.as_path() == ns))
        .collect()
}

impl LvHost {
    fn stop_libvirtd_hard(&mut self) {
        if let Some(mut c) = self.libvirtd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn read_lossy(p: &Path) -> String {
    fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let from = lines.len().saturating_sub(40);
    let mut t = lines[from..].join("\n");
    t.push('\n');
    t
}

/// Whether `pid` still runs (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
