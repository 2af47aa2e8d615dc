//! Private sanlock daemons for tests: one per simulated host, each with its
//! own run directory (`SANLOCK_RUN_DIR`), sharing lease files in a test
//! directory the way hosts share a storage volume.
//!
//! ```text
//! SanlockDaemon::start("hostA") ─► sanlock daemon -D -w 0 -l 0 -U <uid> -G <gid>
//!                                   SANLOCK_RUN_DIR=<tmp>/run, LD_PRELOAD=<rlimit shim>
//!   .env() ─► ("SANLOCK_RUN_DIR", <tmp>/run) for client processes
//! ```
//!
//! The daemon runs without a watchdog (`-w 0`: this kernel has no softdog),
//! so fencing relies on its SIGTERM/SIGKILL of lease holders. Its start-up
//! `setrlimit(RLIMIT_MEMLOCK/RTPRIO, ∞)` is clamped by a preloaded shim
//! (`sanlock/rlimit-shim.c`, compiled here with the system C compiler),
//! because the sandbox lacks CAP_SYS_RESOURCE.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The shim's source, compiled on first use.
const SHIM_SOURCE: &str = include_str!("../sanlock/rlimit-shim.c");

/// Whether the sanlock daemon and client library are installed; panics
/// with a clear message under CI, where install-deps provides them.
pub fn sanlock_available() -> bool {
    let daemon = Command::new("sanlock")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let ok = daemon && vmlock_sys::sanlock::library().is_ok();
    crate::ci::require(
        ok,
        "sanlock is not installed (apt-get install -y sanlock libvirt-sanlock)",
    )
}

/// The compiled shim (built once per process, kept until it exits).
fn shim() -> &'static Path {
    static SHIM: OnceLock<PathBuf> = OnceLock::new();
    SHIM.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("vmlock-sanlock-shim")
            .tempdir()
            .expect("shim dir")
            .keep();
        let src = dir.join("rlimit-shim.c");
        std::fs::write(&src, SHIM_SOURCE).expect("write shim source");
        let so = dir.join("rlimit-shim.so");
        let out = Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&so)
            .arg(&src)
            .arg("-ldl")
            .output()
            .expect("run cc");
        assert!(
            out.status.success(),
            "cc rlimit-shim.c: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        so
    })
}

/// One sanlock daemon (a simulated host); killed on drop.
#[derive(Debug)]
pub struct SanlockDaemon {
    child: Child,
    dir: tempfile::TempDir,
    run_dir: PathBuf,
}

impl SanlockDaemon {
    /// Starts a daemon named `host` (its delta-lease host name) and waits
    /// for its socket.
    pub fn start(host: &str) -> std::io::Result<SanlockDaemon> {
        let dir = tempfile::Builder::new()
            .prefix("vmlock-sanlockd")
            .tempdir()?;
        let run_dir = dir.path().join("run");
        std::fs::create_dir(&run_dir)?;
        let log = std::fs::File::create(dir.path().join("daemon.log"))?;
        let uid = vmlock_sys::geteuid().to_string();
        let gid = std::fs::metadata(dir.path())
            .map(|m| std::os::unix::fs::MetadataExt::gid(&m))?
            .to_string();
        let child = Command::new("sanlock")
            .args(["daemon", "-D", "-w", "0", "-l", "0", "-U", &uid, "-G", &gid])
            .args(["-e", host])
            .env("SANLOCK_RUN_DIR", &run_dir)
            .env("LD_PRELOAD", shim())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut d = SanlockDaemon {
            child,
            dir,
            run_dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !d.run_dir.join("sanlock.sock").exists() {
            if let Ok(Some(status)) = d.child.try_wait() {
                return Err(std::io::Error::other(format!(
                    "sanlock daemon exited ({status}): {}",
                    d.log()
                )));
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "sanlock daemon made no socket in 10 s: {}",
                    d.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(d)
    }

    /// The daemon's run directory: what `SANLOCK_RUN_DIR` must name for a
    /// client to reach it.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The environment variable that points a client process at this daemon.
    pub fn env(&self) -> (&'static str, &Path) {
        ("SANLOCK_RUN_DIR", &self.run_dir)
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the daemon has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// `sanlock client status` of this daemon: its lockspaces (`s …`),
    /// resources (`r … p PID`) and clients.
    pub fn status(&self) -> String {
        Command::new("sanlock")
            .args(["client", "status"])
            .env("SANLOCK_RUN_DIR", &self.run_dir)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for SanlockDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
