//! The sanlock driver against real sanlock daemons, side by side with
//! libvirt's own `sanlock.so` (driven by the test kit's `vmlock-plugin-run`).
//!
//! ```text
//! outer process: daemon A ("hostA", host_id 1) + daemon B ("hostB", host_id 2),
//!                one lease directory both use (a shared volume);
//!                runs this binary again with SANLOCK_RUN_DIR=A (libsanlock
//!                reads the daemon's place from the environment, which a
//!                threaded test harness must not change)
//! inner process: the tests, one after another; our driver in process on A;
//!                libvirt's plugin in child processes on A or B;
//!                "VM" children: this binary again, holding leases with our driver
//! ```
//!
//! Every comparison is of the lines `vmlock-plugin-run` prints (`ok …` or
//! `err <code> <message>`): ours are formatted the same way.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vmlock::sanlock::{SanlockDriver, auto_lease_name};
use vmlock::{AcquireFlags, Disk, Domain, LockDriver, LockManager, Resource, Uuid};
use vmlock_testkit::sanlockd::{SanlockDaemon, sanlock_available};
use vmlock_testkit::script::Session;

const SANLOCK_SO: &str = "/usr/lib/x86_64-linux-gnu/libvirt/lock-driver/sanlock.so";
const INNER: &str = "VMLOCK_SANLOCK_TEST_INNER";
const RUN_B: &str = "VMLOCK_SANLOCK_TEST_RUN_B";
const DIR: &str = "VMLOCK_SANLOCK_TEST_DIR";
const ROLE_VM: &str = "VMLOCK_SANLOCK_TEST_VM";

fn main() {
    if let Ok(spec) = std::env::var(ROLE_VM) {
        vm_role(&spec);
        return;
    }
    if std::env::var_os(INNER).is_some() {
        inner();
    } else {
        outer();
    }
}

/// Starts the two hosts and runs the tests in a child that talks to host A.
fn outer() {
    if !sanlock_available() {
        return;
    }
    if !vmlock_testkit::ci::require(
        Path::new(SANLOCK_SO).exists(),
        &format!("{SANLOCK_SO} is missing (apt-get install -y libvirt-sanlock)"),
    ) {
        return;
    }
    let a = SanlockDaemon::start("hostA").expect("sanlock daemon A");
    let b = SanlockDaemon::start("hostB").expect("sanlock daemon B");
    let shared = tempfile::Builder::new()
        .prefix("vmlock-sanlock-leases")
        .tempdir()
        .expect("lease dir");
    let status = Command::new(std::env::current_exe().expect("current exe"))
        .args(std::env::args_os().skip(1))
        .env(INNER, "1")
        .env(a.env().0, a.env().1)
        .env(RUN_B, b.run_dir())
        .env(DIR, shared.path())
        .status()
        .expect("run the tests");
    if !status.success() {
        eprintln!("--- sanlock daemon A ---\n{}\n{}", a.status(), a.log());
        eprintln!("--- sanlock daemon B ---\n{}\n{}", b.status(), b.log());
        std::process::exit(status.code().unwrap_or(101));
    }
}

/// What every test gets: where the leases live and the two hosts' configs.
struct Env {
    dir: PathBuf,
    run_a: PathBuf,
    run_b: PathBuf,
    conf_a: PathBuf,
    conf_b: PathBuf,
}

type Test = fn(&Env);

const TESTS: &[(&str, Test)] = &[
    (
        "an_exclusive_disk_excludes_every_other_domain_on_both_hosts",
        exclusive_on_both_hosts,
    ),
    (
        "libvirts_plugin_and_ours_share_leases_and_errors",
        leases_are_shared_with_libvirt,
    ),
    (
        "shared_disks_are_shared_and_read_only_disks_untouched",
        shared_and_read_only,
    ),
    ("a_dead_vm_frees_its_leases", holder_death),
    (
        "paused_start_resume_pause_and_migration_state",
        lifecycle_with_state,
    ),
    ("explicit_leases_in_a_lockspace", explicit_leases),
    ("configuration_errors_match_libvirt", config_errors),
];

fn inner() {
    let dir = PathBuf::from(std::env::var_os(DIR).expect("lease dir"));
    let conf = |name: &str, host: u32| {
        let p = dir.join(name);
        std::fs::write(
            &p,
            format!(
                "auto_disk_leases = 1\nhost_id = {host}\ndisk_lease_dir = \"{}\"\nio_timeout = 1\n",
                dir.display()
            ),
        )
        .expect("conf");
        p
    };
    let env = Env {
        conf_a: conf("host-a.conf", 1),
        conf_b: conf("host-b.conf", 2),
        run_a: PathBuf::from(std::env::var_os("SANLOCK_RUN_DIR").expect("run dir A")),
        run_b: PathBuf::from(std::env::var_os(RUN_B).expect("run dir B")),
        dir,
    };
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, test) in TESTS {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        ran += 1;
        let started = Instant::now();
        let result = std::panic::catch_unwind(|| test(&env));
        let verdict = if result.is_ok() { "ok" } else { "FAILED" };
        println!(
            "test {name} ... {verdict} ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
        if result.is_err() {
            failed.push(*name);
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        ran - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}

// ---- helpers ----------------------------------------------------------

/// A fresh UUID for each domain of this run.
fn uuid() -> Uuid {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Uuid::from_u128((u128::from(std::process::id()) << 64) | u128::from(n))
}

fn domain(name: &str, id: u32, pid: u32) -> Domain {
    Domain {
        uuid: uuid(),
        name: name.to_owned(),
        id,
        pid,
        uri: None,
    }
}

fn disk_path(env: &Env, name: &str) -> String {
    let p = env.dir.join(name);
    std::fs::write(&p, b"").expect("disk image");
    p.to_string_lossy().into_owned()
}

/// Our driver on host A (this process's daemon).
fn ours(env: &Env) -> SanlockDriver {
    SanlockDriver::load(Some(&env.conf_a)).expect("load our sanlock driver")
}

/// The line `vmlock-plugin-run` would print for this outcome.
fn line<T>(r: &vmlock::Result<T>, ok: impl Fn(&T) -> String) -> String {
    match r {
        Ok(v) => ok(v),
        Err(e) => format!("err {} {e}", e.code().unwrap_or(0)),
    }
}

fn fd_line(r: &vmlock::Result<Option<OwnedFd>>) -> String {
    line(r, |fd| {
        if fd.is_some() {
            "ok fd".into()
        } else {
            "ok fd=none".into()
        }
    })
}

fn state_line(r: &vmlock::Result<Option<String>>) -> String {
    line(r, |s| {
        format!("ok state={}", s.as_deref().unwrap_or("none"))
    })
}

/// Drops the fd number from `ok fd=N` so lines of two processes compare.
fn no_fd_number(l: &str) -> String {
    match l.strip_prefix("ok fd=") {
        Some("none") => "ok fd=none".into(),
        Some(_) => "ok fd".into(),
        None => l.to_owned(),
    }
}

/// Our driver taking `disks` for this process (the VM is us), restricted.
fn take(
    driver: &SanlockDriver,
    name: &str,
    disks: &[Disk],
) -> (Box<dyn LockManager>, vmlock::Result<Option<OwnedFd>>) {
    let mut m = driver
        .new_manager(&domain(name, 1, std::process::id()))
        .expect("new manager");
    for d in disks {
        m.add_resource(&Resource::Disk(d.clone()))
            .expect("add disk");
    }
    let r = m.acquire(
        AcquireFlags {
            restrict: true,
            register_only: false,
        },
        None,
    );
    (m, r.map(keep_here))
}

/// The VM's connection comes without close-on-exec, for the VM program to
/// inherit. Here the "VM" is this test process, which spawns other
/// programs: keep the connection out of them (as the library docs say a
/// long-lived parent must), or they would hold the leases too.
fn keep_here(fd: Option<OwnedFd>) -> Option<OwnedFd> {
    if let Some(fd) = &fd {
        vmlock_sys::fd::set_cloexec(std::os::fd::AsFd::as_fd(fd), true).expect("cloexec");
    }
    fd
}

/// libvirt's plugin in a child process on the host whose run dir is given,
/// initialised with `conf`.
fn theirs(run_dir: &Path, conf: &Path) -> Session {
    let mut cmd = Command::new(vmlock_testkit::tool_binary("vmlock-plugin-run"));
    cmd.args(["--plugin", SANLOCK_SO])
        .env("SANLOCK_RUN_DIR", run_dir);
    let mut s = Session::spawn(cmd);
    assert_eq!(s.cmd(&format!("init {}", conf.display())), "ok");
    s
}

/// libvirt's plugin trying `disks` for its own process (pid = itself).
fn theirs_try(run_dir: &Path, conf: &Path, disks: &[&str]) -> (Session, String) {
    let mut s = theirs(run_dir, conf);
    let uuid = uuid();
    assert_eq!(s.cmd(&format!("new {uuid} theirs 2 self")), "ok");
    for d in disks {
        assert_eq!(s.cmd(&format!("disk {d}")), "ok");
    }
    let out = no_fd_number(&s.cmd("acquire restrict"));
    (s, out)
}

/// Retries `f` until it returns true or 10 s pass.
fn within(f: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A VM process: this binary again, taking leases with our driver for
/// itself (`spec` = config path, mode, disks) and holding them until killed.
struct Vm {
    child: Child,
}

impl Vm {
    fn start(env: &Env, mode: &str, disks: &[&str]) -> Vm {
        let spec = format!("{}\n{mode}\n{}", env.conf_a.display(), disks.join("\n"));
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .env(ROLE_VM, spec)
            .env_remove(INNER)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn vm");
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut first)
            .expect("vm answer");
        assert_eq!(first.trim_end(), "ok fd", "the VM could not start");
        Vm { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The VM child: acquire for itself, say how it went, hold until killed.
fn vm_role(spec: &str) {
    let mut lines = spec.lines();
    let conf = PathBuf::from(lines.next().expect("conf"));
    let register_only = lines.next() == Some("paused");
    let driver = SanlockDriver::load(Some(&conf)).expect("load");
    let mut m = driver
        .new_manager(&domain("vm", 3, std::process::id()))
        .expect("manager");
    for d in lines {
        let disk = match d.strip_suffix(":shared") {
            Some(p) => Disk::shared(p),
            None => Disk::exclusive(d),
        };
        m.add_resource(&Resource::Disk(disk)).expect("add");
    }
    let r = m.acquire(
        AcquireFlags {
            restrict: true,
            register_only,
        },
        None,
    );
    println!("{}", fd_line(&r));
    let _ = std::io::stdout().flush();
    let _keep = r;
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

// ---- the tests --------------------------------------------------------

fn exclusive_on_both_hosts(env: &Env) {
    let img = disk_path(env, "excl.img");
    let driver = ours(env);
    let (_m, r) = take(&driver, "ours", &[Disk::exclusive(&img)]);
    assert_eq!(fd_line(&r), "ok fd");
    // The lease file libvirt would use: DIR/<md5 of the path>.
    assert!(env.dir.join(auto_lease_name(&img)).is_file());

    // Another domain on the same host, through libvirt's plugin.
    let (_s, same_host) = theirs_try(&env.run_a, &env.conf_a, &[&img]);
    assert!(same_host.starts_with("err "), "{same_host}");
    // The same attempt through our driver gives the same error.
    let (_m2, again) = take(&driver, "ours-too", &[Disk::exclusive(&img)]);
    assert_eq!(fd_line(&again), same_host);

    // A domain on the other host: the owner (host A) is alive.
    let (_s, other_host) = theirs_try(&env.run_b, &env.conf_b, &[&img]);
    assert!(
        other_host.starts_with("err 87 resource busy: Failed to acquire lock: "),
        "{other_host}"
    );

    // Our lease goes with our connection.
    drop(r);
    assert!(within(
        || theirs_try(&env.run_b, &env.conf_b, &[&img]).1 == "ok fd"
    ));
}

fn leases_are_shared_with_libvirt(env: &Env) {
    let img = disk_path(env, "theirs-first.img");
    // libvirt's plugin holds the disk on host B.
    let (_holder, held) = theirs_try(&env.run_b, &env.conf_b, &[&img]);
    assert_eq!(held, "ok fd");
    // Ours on host A is refused as libvirt's plugin on host A is.
    let driver = ours(env);
    let (_m, r) = take(&driver, "ours", &[Disk::exclusive(&img)]);
    let (_s, theirs_line) = theirs_try(&env.run_a, &env.conf_a, &[&img]);
    assert!(theirs_line.starts_with("err 87 "), "{theirs_line}");
    assert_eq!(fd_line(&r), theirs_line);
}

fn shared_and_read_only(env: &Env) {
    let img = disk_path(env, "shared.img");
    let ro = disk_path(env, "ro.iso");
    let driver = ours(env);
    let ro_disk = Disk {
        readonly: true,
        ..Disk::exclusive(&ro)
    };
    let (_m, r) = take(&driver, "ours", &[Disk::shared(&img), ro_disk]);
    assert_eq!(fd_line(&r), "ok fd");
    // Read-only disks get no lease at all.
    assert!(!env.dir.join(auto_lease_name(&ro)).exists());
    let shared_too = |run: &Path, conf: &Path| {
        let mut s = theirs(run, conf);
        assert_eq!(s.cmd(&format!("new {} theirs 2 self", uuid())), "ok");
        assert_eq!(s.cmd(&format!("disk {img} shared")), "ok");
        let out = no_fd_number(&s.cmd("acquire restrict"));
        (s, out)
    };
    let (_a, on_a) = shared_too(&env.run_a, &env.conf_a);
    assert_eq!(on_a, "ok fd");
    let (_b, on_b) = shared_too(&env.run_b, &env.conf_b);
    assert_eq!(on_b, "ok fd");
    // Exclusive is refused while it is shared, by both drivers alike.
    let (_s, theirs_excl) = theirs_try(&env.run_a, &env.conf_a, &[&img]);
    let (_m2, ours_excl) = take(&driver, "ours-excl", &[Disk::exclusive(&img)]);
    assert!(theirs_excl.starts_with("err "), "{theirs_excl}");
    assert_eq!(fd_line(&ours_excl), theirs_excl);
}

fn holder_death(env: &Env) {
    let img = disk_path(env, "vm-dies.img");
    let vm = Vm::start(env, "running", &[&img]);
    let (_s, refused) = theirs_try(&env.run_a, &env.conf_a, &[&img]);
    assert!(refused.starts_with("err "), "{refused}");
    drop(vm); // SIGKILL: the kernel closes its sanlock connection
    assert!(within(
        || theirs_try(&env.run_a, &env.conf_a, &[&img]).1 == "ok fd"
    ));
}

fn lifecycle_with_state(env: &Env) {
    let img = disk_path(env, "lifecycle.img");
    // Paused start: the VM registers itself and takes nothing.
    let vm = Vm::start(env, "paused", &[&img]);
    let driver = ours(env);
    let manager = |pid: u32| {
        let mut m = driver.new_manager(&domain("vm", 3, pid)).expect("manager");
        m.add_resource(&Resource::Disk(Disk::exclusive(&img)))
            .expect("add");
        m
    };
    let mut m = manager(vm.pid());
    assert_eq!(state_line(&m.inquire()), "ok state=none");
    // Resume: acquire on the VM's behalf.
    assert_eq!(
        fd_line(&m.acquire(AcquireFlags::default(), None)),
        "ok fd=none"
    );
    let (_s, refused) = theirs_try(&env.run_a, &env.conf_a, &[&img]);
    assert!(refused.starts_with("err "), "{refused}");
    let ours_state = state_line(&m.inquire());
    // libvirt's plugin sees the same state for the same pid.
    let mut t = theirs(&env.run_a, &env.conf_a);
    assert_eq!(
        t.cmd(&format!("new {} vm 3 {} running", uuid(), vm.pid())),
        "ok"
    );
    assert_eq!(t.cmd(&format!("disk {img}")), "ok");
    assert_eq!(t.cmd("inquire"), ours_state);
    let name = auto_lease_name(&img);
    assert!(
        ours_state.starts_with(&format!("ok state=__LIBVIRT__DISKS__:{name}:")),
        "{ours_state}"
    );
    // Pause: release, keeping the state for the next acquire.
    let released = m.release().expect("release").expect("a state");
    assert_eq!(format!("ok state={released}"), ours_state);
    // Resume with that state: nobody took the lease meanwhile, so it is
    // granted at the version the state names...
    let mut m2 = manager(vm.pid());
    assert_eq!(
        fd_line(&m2.acquire(AcquireFlags::default(), Some(&released))),
        "ok fd=none"
    );
    let second = m2.release().expect("release").expect("a state");
    // ...but once another host has held it in between, the old state no
    // longer matches and the resume is refused (SANLK_ACQUIRE_LVER, -240).
    // libvirt 9.0's plugin parses the state and then ignores it.
    assert!(within(
        || theirs_try(&env.run_b, &env.conf_b, &[&img]).1 == "ok fd"
    ));
    let mut m3 = manager(vm.pid());
    let stale = fd_line(&m3.acquire(AcquireFlags::default(), Some(&second)));
    assert!(
        stale.starts_with("err 87 resource busy: Failed to acquire lock: "),
        "{stale}"
    );
    assert!(stale.contains("-240"), "{stale}");
    drop(vm);
}

fn explicit_leases(env: &Env) {
    // A lease area the management application made in the auto lockspace.
    let lease_file = env.dir.join("explicit.lease");
    let area = vmlock_sys::sanlock::Resource {
        lockspace: "__LIBVIRT__DISKS__".into(),
        name: "vm-lease".into(),
        disks: vec![vmlock_sys::sanlock::Disk {
            path: lease_file.to_string_lossy().into_owned(),
            offset: 0,
        }],
        lver: 0,
        flags: 0,
    };
    std::fs::write(&lease_file, vec![0u8; 1 << 20]).expect("lease file");
    let lib = vmlock_sys::sanlock::library().expect("libsanlock");
    lib.write_resource(&area).expect("init the lease");
    let lease = vmlock::Lease {
        lockspace: Some("__LIBVIRT__DISKS__".into()),
        key: "vm-lease".into(),
        path: Some(lease_file.to_string_lossy().into_owned()),
        offset: 0,
    };
    let driver = ours(env);
    let mut m = driver
        .new_manager(&domain("ours", 1, std::process::id()))
        .expect("manager");
    m.add_resource(&Resource::Lease(lease)).expect("add lease");
    let r = m
        .acquire(AcquireFlags::process_start(false), None)
        .map(keep_here);
    assert_eq!(fd_line(&r), "ok fd");
    let mut t = theirs(&env.run_b, &env.conf_b);
    assert_eq!(t.cmd(&format!("new {} theirs 2 self", uuid())), "ok");
    assert_eq!(
        t.cmd(&format!(
            "lease vm-lease {} __LIBVIRT__DISKS__ 0",
            lease_file.display()
        )),
        "ok"
    );
    let refused = no_fd_number(&t.cmd("acquire restrict"));
    assert!(refused.starts_with("err 87 "), "{refused}");
}

fn config_errors(env: &Env) {
    // Automatic leases without a host id: refused at load, with libvirt's text.
    let no_id = env.dir.join("no-host-id.conf");
    std::fs::write(&no_id, "auto_disk_leases = 1\n").expect("conf");
    let ours_err = SanlockDriver::load(Some(&no_id)).expect_err("no host id");
    let mut cmd = Command::new(vmlock_testkit::tool_binary("vmlock-plugin-run"));
    cmd.args(["--plugin", SANLOCK_SO])
        .env("SANLOCK_RUN_DIR", &env.run_a);
    let mut t = Session::spawn(cmd);
    assert_eq!(
        t.cmd(&format!("init {}", no_id.display())),
        format!("err {} {ours_err}", ours_err.code().unwrap_or(0))
    );
    // Without automatic leases, a writable disk needs a lease.
    let manual = env.dir.join("manual.conf");
    std::fs::write(&manual, "").expect("conf");
    let img = disk_path(env, "unleased.img");
    let driver = SanlockDriver::load(Some(&manual)).expect("load");
    let (_m, r) = take(&driver, "ours", &[Disk::exclusive(&img)]);
    let (_s, theirs_line) = theirs_try(&env.run_a, &manual, &[&img]);
    assert!(theirs_line.starts_with("err 67 "), "{theirs_line}");
    assert_eq!(fd_line(&r), theirs_line);
}
