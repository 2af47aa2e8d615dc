//! Benchmark targets: a daemon (or the do-nothing server) started as root in a private
//! mount namespace whose `/run` is a fresh temp dir.
//!
//! ```text
//! unshare -m --propagation private sh -c \
//!   'mount --bind "$1" /run && mkdir -p /run/libvirt && shift && exec "$@"' sh <run-dir> <binary> [args]
//!                                   socket: <run-dir>/libvirt/virtlockd-sock
//! ```
//!
//! `unshare` and `sh` both `exec`, so the child's pid is the daemon's pid, which is
//! what `/proc/<pid>/status` (VmRSS) is read from. Dropping a [`Target`] kills and reaps
//! the daemon and removes its run dir.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::conn::Conn;
use crate::error::{BenchError, Result};

/// Shell snippet run inside the new mount namespace.
const NS_SCRIPT: &str = r#"mount --bind "$1" /run && mkdir -p /run/libvirt && shift && exec "$@""#;
/// How long a daemon may take to create its socket.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

/// A temporary directory removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `<tmp>/vmlock-bench-<tag>-<pid>-<nanos>`.
    pub fn new(tag: &str) -> Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("vmlock-bench-{tag}-{}-{nanos}", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path)
            .map_err(BenchError::io(format!("mkdir {}", path.display())))?;
        Ok(TempDir(path))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The socket path inside a run dir.
pub fn socket_in(run_dir: &Path) -> PathBuf {
    run_dir.join("libvirt").join("virtlockd-sock")
}

/// A command wrapped so that it runs with `/run` bound to `run_dir`.
pub fn in_namespace(run_dir: &Path, program: &Path) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args([
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        NS_SCRIPT,
        "sh",
    ])
    .arg(run_dir)
    .arg(program);
    cmd
}

/// A running target.
#[derive(Debug)]
pub struct Target {
    /// Short name used in tables (`null`, `vmlockd`, `virtlockd`).
    pub name: String,
    child: Child,
    run_dir: TempDir,
}

impl Target {
    /// Starts `program args...` in a namespace and waits until its socket answers.
    pub fn start(name: &str, program: &Path, args: &[&str]) -> Result<Target> {
        let run_dir = TempDir::new(name)?;
        let log = File::create(run_dir.path().join("daemon.log"))
            .map_err(BenchError::io("create daemon log"))?;
        let child = in_namespace(run_dir.path(), program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(BenchError::io(format!("spawn {}", program.display())))?;
        let mut t = Target {
            name: name.to_string(),
            child,
            run_dir,
        };
        let sock = t.socket();
        wait_for_socket(&sock, STARTUP_TIMEOUT, || t.check_alive())?;
        Ok(t)
    }

    /// The run dir bound over `/run` inside the namespace.
    pub fn run_dir(&self) -> &Path {
        self.run_dir.path()
    }

    /// The main socket, as seen from outside the namespace.
    pub fn socket(&self) -> PathBuf {
        socket_in(self.run_dir.path())
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// VmRSS in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        rss_kib(self.pid())
    }

    /// Fails if the process has exited, quoting the end of its log.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                let log = std::fs::read_to_string(self.run_dir.path().join("daemon.log"))
                    .unwrap_or_default();
                let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
                Err(BenchError::Process(format!(
                    "{} exited ({status}): {tail}",
                    self.name
                )))
            }
            Err(e) => Err(BenchError::io("wait for daemon")(e)),
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls until a connection to `sock` succeeds; `alive` can abort the wait.
pub fn wait_for_socket(
    sock: &Path,
    timeout: Duration,
    mut alive: impl FnMut() -> Result<()>,
) -> Result<Conn> {
    let start = Instant::now();
    loop {
        match Conn::connect(sock) {
            Ok(c) => return Ok(c),
            Err(e) if start.elapsed() > timeout => return Err(e),
            Err(_) => {
                alive()?;
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// VmRSS of `pid` in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(BenchError::io(format!("read {path}")))?;
    parse_vm_rss(&text).ok_or_else(|| BenchError::Process(format!("no VmRSS in {path}")))
}

/// The `VmRSS:` value (KiB) of a `/proc/<pid>/status` text.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_ascii_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_rss() {
        let text = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss(text), Some(1234));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        let own = rss_kib(std::process::id()).expect("own status");
        assert!(own > 0);
    }

    #[test]
    fn temp_dir_is_removed() {
        let p = {
            let d = TempDir::new("t").expect("tempdir");
            std::fs::write(d.path().join("f"), b"x").expect("write");
            d.path().to_path_buf()
        };
        assert!(!p.exists());
    }
}
