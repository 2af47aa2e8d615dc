//! Helpers for re-exec (SIGUSR1) tests: a retargetable `argv[0]` symlink,
//! `/proc` probes, waiting for a new program image, an interactive
//! `vmlock-plugin-run` session and kernel lock probes.
//!
//! How a finished re-exec is recognised without sleeping blindly:
//!
//! ```text
//! before SIGUSR1: image id = start address of [vdso] in /proc/<pid>/maps
//! after:          image id differs      (execve mapped a new image; ASLR)
//!            and  SigCgt has SIGUSR1    (the new image installed its handler,
//!                                        so the next SIGUSR1 is safe)
//!            and  a new client gets a PONG
//! ```
//! A failed re-exec leaves the image id unchanged; tests wait for the
//! daemon's log line instead.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use vmlock_sys::lock::{Conflict, LockKind, LockType, query};

use crate::daemon::Daemon;
use crate::flavor::tool_binary;

/// `SIGUSR1` on Linux.
pub const SIGUSR1: i32 = 10;

/// A symlink used as the daemon's `argv[0]`, retargeted between re-execs.
#[derive(Debug)]
pub struct Symlink {
    path: PathBuf,
}

impl Symlink {
    /// Creates `path` pointing to `target`.
    pub fn create(path: &Path, target: &Path) -> io::Result<Symlink> {
        std::os::unix::fs::symlink(target, path)?;
        Ok(Symlink {
            path: path.to_path_buf(),
        })
    }

    /// The link's own path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Points the link at `target` atomically (new link, then rename).
    pub fn retarget(&self, target: &Path) -> io::Result<()> {
        let tmp = self.path.with_extension("new");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(target, &tmp)?;
        std::fs::rename(&tmp, &self.path)
    }
}

/// The program image of `pid` (`/proc/<pid>/exe`).
pub fn exe(pid: u32) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
}

/// Number of open descriptors of `pid`.
pub fn fd_count(pid: u32) -> io::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

fn status_field(pid: u32, key: &str) -> io::Result<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
        .ok_or_else(|| io::Error::other(format!("no {key} in /proc/{pid}/status")))
}

/// Resident set size of `pid` in KiB.
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let v = status_field(pid, "VmRSS:")?;
    let num = v.split_whitespace().next().unwrap_or("");
    num.parse()
        .map_err(|_| io::Error::other(format!("bad VmRSS {v:?}")))
}

/// Whether `pid` has a handler installed for `sig` (`SigCgt`).
pub fn catches(pid: u32, sig: i32) -> bool {
    status_field(pid, "SigCgt:")
        .ok()
        .and_then(|m| u64::from_str_radix(&m, 16).ok())
        .is_some_and(|mask| mask & (1u64 << (sig - 1)) != 0)
}

/// Whether the main thread of `pid` blocks `sig` (`SigBlk`).
pub fn blocks(pid: u32, sig: i32) -> bool {
    status_field(pid, "SigBlk:")
        .ok()
        .and_then(|m| u64::from_str_radix(&m, 16).ok())
        .is_some_and(|mask| mask & (1u64 << (sig - 1)) != 0)
}

/// An identifier of the current program image of `pid`: the `[vdso]`
/// mapping's address, which ASLR picks anew at every `execve`.
pub fn image_id(pid: u32) -> io::Result<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    maps.lines()
        .find(|l| l.ends_with("[vdso]"))
        .and_then(|l| l.split('-').next())
        .map(str::to_string)
        .ok_or_else(|| io::Error::other("no [vdso] mapping"))
}

/// The pids whose parent is `pid` (from `/proc/*/stat`; zombies included).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let name = e.ok()?.file_name().into_string().ok()?;
        let child: u32 = name.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
        // "pid (comm) state ppid ...": the comm may hold spaces or ')'.
        let ppid: u32 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (ppid == pid).then_some(child)
    })
    .collect()
}

/// A re-exec in progress: the image it started from.
#[derive(Debug)]
pub struct ExecWatch {
    pid: u32,
    before: String,
    sent: Instant,
}

/// Records the daemon's image and sends it SIGUSR1.
pub fn send_reexec(d: &Daemon) -> io::Result<ExecWatch> {
    let pid = d.pid();
    let before = image_id(pid)?;
    let sent = Instant::now();
    d.signal(SIGUSR1)?;
    Ok(ExecWatch { pid, before, sent })
}

impl ExecWatch {
    /// True once a new image runs and has installed its SIGUSR1 handler.
    pub fn new_image_ready(&self) -> bool {
        image_id(self.pid).is_ok_and(|id| id != self.before) && catches(self.pid, SIGUSR1)
    }

    /// Waits (polling) until a new image is ready and serves a new client.
    /// Returns the time from SIGUSR1 to that client's PONG.
    pub fn wait(&self, d: &Daemon, timeout: Duration) -> Result<Duration, String> {
        let ready = crate::wait_until(timeout, || self.new_image_ready());
        if !ready {
            return Err(format!(
                "no new image of pid {} within {timeout:?} (alive: {}); log:\n{}",
                self.pid,
                vmlock_sys::process::exists(self.pid as i32),
                d.log_text()
            ));
        }
        self.served(d)
    }

    /// Like [`ExecWatch::wait`] but spinning (no back-off), for timing.
    pub fn wait_tight(&self, d: &Daemon, timeout: Duration) -> Result<Duration, String> {
        while !self.new_image_ready() {
            if self.sent.elapsed() > timeout {
                return Err(format!("no new image within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        self.served(d)
    }

    fn served(&self, d: &Daemon) -> Result<Duration, String> {
        let mut c = crate::RawConn::connect(&d.socket_path())
            .map_err(|e| format!("connect after re-exec: {e}"))?;
        if !c.barrier_is_pong() {
            return Err(format!("no PONG after re-exec; log:\n{}", d.log_text()));
        }
        Ok(self.sent.elapsed())
    }
}

/// Who holds a lock on byte 0 of `path` that would block an exclusive
/// lock, as the kernel reports it to this process (`F_OFD_GETLK`, which
/// sees classic POSIX and OFD locks of every other process).
pub fn kernel_holder(path: &Path) -> io::Result<Option<Conflict>> {
    let f = File::open(path)?;
    query(f.as_fd(), LockKind::Ofd, LockType::Exclusive)
}

/// True if another process (`vmlock-hold --posix --exclusive`) finds
/// `path` busy. If it got the lock, it is released again at once.
pub fn busy_for_other_process(path: &Path) -> io::Result<bool> {
    let mut child = Command::new(tool_binary("vmlock-hold"))
        .args(["--posix", "--exclusive"])
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        BufReader::new(out).read_line(&mut line)?;
    }
    drop(child.stdin.take());
    let _ = child.wait();
    match line.trim() {
        "busy" => Ok(true),
        "locked" => Ok(false),
        other => Err(io::Error::other(format!("vmlock-hold said {other:?}"))),
    }
}

/// How long a plugin session waits for one result line.
const PLUGIN_LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// A long-lived `vmlock-plugin-run` in the daemon's namespace, driven one
/// command at a time (its stand-in QEMU and kept descriptors stay alive).
#[derive(Debug)]
pub struct PluginSession {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl PluginSession {
    /// Starts `vmlock-plugin-run` with `d`'s view of `/run`.
    pub fn start(d: &Daemon) -> io::Result<PluginSession> {
        let mut child = d
            .run_in_ns(&tool_binary("vmlock-plugin-run"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        let out = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(PluginSession {
            child,
            stdin,
            lines,
        })
    }

    /// Runs one command and returns its result line.
    pub fn exec(&mut self, cmd: &str) -> io::Result<String> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::other("session closed"))?;
        writeln!(stdin, "{cmd}")?;
        stdin.flush()?;
        self.lines
            .recv_timeout(PLUGIN_LINE_TIMEOUT)
            .map_err(|e| io::Error::other(format!("no result for {cmd:?}: {e}")))
    }

    /// Runs every non-empty, non-comment line of `script`.
    pub fn run(&mut self, script: &str) -> io::Result<Vec<String>> {
        script
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| self.exec(l))
            .collect()
    }
}

impl Drop for PluginSession {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let exited = crate::wait_until(Duration::from_secs(5), || {
            self.child.try_wait().ok().flatten().is_some()
        });
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Writes an executable `#!/bin/sh` script.
pub fn write_script(path: &Path, body: &str) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_read_this_process() {
        let me = std::process::id();
        assert!(fd_count(me).expect("fds") >= 3);
        assert!(rss_kib(me).expect("rss") > 0);
        assert!(exe(me).expect("exe").exists());
        let id = image_id(me).expect("image id");
        assert_eq!(image_id(me).expect("again"), id, "stable within one image");
        assert!(
            !catches(me, SIGUSR1),
            "the test harness has no SIGUSR1 handler"
        );
    }

    #[test]
    fn symlink_retargets_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let link = Symlink::create(&dir.path().join("l"), Path::new("/a")).expect("create");
        link.retarget(Path::new("/b")).expect("retarget");
        assert_eq!(
            std::fs::read_link(link.path()).expect("read"),
            Path::new("/b")
        );
        assert!(!dir.path().join("l.new").exists());
    }

    #[test]
    fn kernel_holder_sees_a_lock_of_another_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        std::fs::write(&p, b"").expect("write");
        assert_eq!(kernel_holder(&p).expect("query"), None);
        assert!(!busy_for_other_process(&p).expect("probe"));
        let mut hold = Command::new(tool_binary("vmlock-hold"))
            .args(["--posix", "--shared"])
            .arg(&p)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("vmlock-hold runs");
        let mut line = String::new();
        let out = hold.stdout.take().expect("stdout");
        BufReader::new(out).read_line(&mut line).expect("line");
        assert_eq!(line.trim(), "locked");
        let h = kernel_holder(&p).expect("query").expect("a holder");
        assert_eq!((h.pid, h.lock_type), (hold.id() as i32, LockType::Shared));
        assert!(busy_for_other_process(&p).expect("probe"));
        drop(hold.stdin.take());
        let _ = hold.wait();
        assert_eq!(kernel_holder(&p).expect("query"), None);
    }
}
