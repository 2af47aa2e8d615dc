//! The live hand-over the Debian package performs when it is installed,
//! upgraded or removed: the running lock daemon (libvirt's virtlockd or
//! vmlockd, whichever `/usr/sbin/virtlockd` started) is made to re-exec the
//! program that `/usr/sbin/virtlockd` names now, under the same pid, and
//! the result is checked.
//!
//! ```text
//! find the daemon      systemd's MainPID of virtlockd.service, else the pid file
//! check it             its argv[0] is the program (that is what it re-execs)
//! check the program    it runs (--version) and is the expected daemon
//! lock set before      every lock line of /proc/PID/fdinfo/* (POSIX and OFD)
//! signal               systemctl reload virtlockd, else SIGUSR1
//! wait                 /proc/PID/exe is the program's file; a keepalive PING
//!                      on the socket gets its PONG
//! lock set after       must equal the set before
//! ```
//!
//! Nothing is signalled unless every check before the signal passed, so a
//! failure there leaves the old daemon serving, untouched
//! ([`Failure::NotHandedOver`]); a failure after it is
//! [`Failure::HandedOverBadly`].

#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Which daemon the program must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// vmlockd: `--version` says `(vmlock)`.
    Vmlockd,
    /// libvirt's virtlockd: `--version` says `(libvirt)`.
    Virtlockd,
}

impl Target {
    /// The word `--version` prints in parentheses.
    pub fn marker(self) -> &'static str {
        match self {
            Target::Vmlockd => "(vmlock)",
            Target::Virtlockd => "(libvirt)",
        }
    }

    /// The daemon's name.
    pub fn name(self) -> &'static str {
        match self {
            Target::Vmlockd => "vmlockd",
            Target::Virtlockd => "libvirt's virtlockd",
        }
    }
}

/// Where to look and how long to wait.
#[derive(Debug, Clone)]
pub struct Options {
    /// The expected daemon.
    pub target: Target,
    /// The path the daemon was started as, and re-execs.
    pub program: PathBuf,
    /// The pid file (used where systemd does not run).
    pub pid_file: PathBuf,
    /// The main socket.
    pub socket: PathBuf,
    /// Ask systemd (`Some(true)`), do not (`Some(false)`), or decide by
    /// `/run/systemd/system` (`None`).
    pub systemd: Option<bool>,
    /// The systemd unit.
    pub unit: String,
    /// How long the re-exec and the first answer may take.
    pub timeout: Duration,
}

/// How a hand-over went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Nothing was signalled: the daemon runs on as before.
    NotHandedOver(String),
    /// The daemon was signalled and something after that is wrong.
    HandedOverBadly(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NotHandedOver(m) => write!(f, "{m}; nothing was handed over"),
            Failure::HandedOverBadly(m) => write!(f, "{m}"),
        }
    }
}

/// What happened when nothing went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No daemon runs (or the pid file is stale).
    NoDaemon(String),
    /// The daemon already runs the program's file.
    AlreadyThere {
        /// Its pid.
        pid: i32,
    },
    /// The daemon re-exec'd and kept every lock.
    HandedOver {
        /// Its pid (unchanged).
        pid: i32,
        /// Locks before and after.
        locks: usize,
        /// From the signal to the first PONG.
        took: Duration,
    },
}

/// One lock as `/proc/PID/fdinfo` shows it, without the holder pid and the
/// lock kind (a classic lock handed over stays classic, but the kind is not
/// what is being checked): device and inode, range, read or write.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LockKey {
    /// `MAJOR:MINOR:INODE` as the kernel prints it.
    pub file: String,
    /// First byte.
    pub start: String,
    /// Last byte, or `EOF`.
    pub end: String,
    /// `READ` or `WRITE`.
    pub mode: String,
}

impl fmt::Display for LockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} bytes {}-{}",
            self.file, self.mode, self.start, self.end
        )
    }
}

/// A multiset of locks.
pub type LockSet = BTreeMap<LockKey, usize>;

/// The number of locks in a set.
pub fn total(set: &LockSet) -> usize {
    set.values().sum()
}

/// Parses the `lock:` lines of one fdinfo file:
/// `lock:\t1: POSIX  ADVISORY  WRITE 1234 fe:01:5678 0 0` (an OFD lock has
/// `OFDLCK` and pid `-1`).
pub fn parse_fdinfo_locks(text: &str) -> Vec<LockKey> {
    text.lines()
        .filter_map(|l| l.strip_prefix("lock:"))
        .filter_map(|rest| {
            let w: Vec<&str> = rest.split_whitespace().collect();
            // id: kind advisory mode pid file start end
            match w.as_slice() {
                [_, _, _, mode, _, file, start, end, ..] => Some(LockKey {
                    file: (*file).to_string(),
                    start: (*start).to_string(),
                    end: (*end).to_string(),
                    mode: (*mode).to_string(),
                }),
                _ => None,
            }
        })
        .collect()
}

/// Every lock held through the open files of `pid`, except those on the file
/// `skip` (the pid file, which each image takes again itself).
pub fn daemon_locks(pid: i32, skip: Option<(u64, u64)>) -> io::Result<LockSet> {
    let mut set = LockSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let entry = entry?;
        let name = entry.file_name();
        let fd_path = Path::new("/proc")
            .join(pid.to_string())
            .join("fd")
            .join(&name);
        // A descriptor closed meanwhile is simply not counted.
        let Ok(meta) = std::fs::metadata(&fd_path) else {
            continue;
        };
        if skip == Some((meta.dev(), meta.ino())) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        for key in parse_fdinfo_locks(&text) {
            *set.entry(key).or_insert(0) += 1;
        }
    }
    Ok(set)
}

/// What differs between two lock sets, one line each (empty if equal).
pub fn diff(before: &LockSet, after: &LockSet) -> Vec<String> {
    let mut out = Vec::new();
    for (k, &n) in before {
        let m = after.get(k).copied().unwrap_or(0);
        if m < n {
            out.push(format!("lost: {k} ({n} before, {m} after)"));
        }
    }
    for (k, &m) in after {
        let n = before.get(k).copied().unwrap_or(0);
        if m > n {
            out.push(format!("new: {k} ({n} before, {m} after)"));
        }
    }
    out
}

/// Device and inode of a file (following symlinks).
pub fn file_id(path: &Path) -> io::Result<(u64, u64)> {
    std::fs::metadata(path).map(|m| (m.dev(), m.ino()))
}

/// `argv[0]` of a process.
pub fn argv0(pid: i32) -> io::Result<OsString> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    let first = raw.split(|&b| b == 0).next().unwrap_or_default();
    Ok(OsString::from_vec(first.to_vec()))
}

/// One keepalive PING on `socket`, which must be answered by a PONG.
pub fn ping(socket: &Path, timeout: Duration) -> io::Result<()> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(&vmlock_proto::keepalive::ping())?;
    let want = vmlock_proto::keepalive::pong();
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got)?;
    if got == want {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "answered {got:02x?} instead of a PONG"
        )))
    }
}

/// Runs `program --version` (at most `timeout`) and returns its output.
pub fn version_of(program: &Path, timeout: Duration) -> io::Result<String> {
    let mut child = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            let mut text = String::new();
            if let Some(mut o) = child.stdout.take() {
                o.read_to_string(&mut text)?;
            }
            if let Some(mut e) = child.stderr.take() {
                e.read_to_string(&mut text)?;
            }
            if !status.success() {
                return Err(io::Error::other(format!(
                    "`--version` failed ({status}): {}",
                    text.trim()
                )));
            }
            return Ok(text);
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!(
                "`--version` did not finish in {timeout:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The daemon to hand over, if one runs.
fn find_daemon(o: &Options) -> Result<Option<i32>, Failure> {
    let systemd = o
        .systemd
        .unwrap_or_else(|| Path::new("/run/systemd/system").is_dir());
    if systemd {
        let out = Command::new("systemctl")
            .args(["show", "--property", "MainPID", "--value", &o.unit])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Failure::NotHandedOver(format!("cannot run systemctl: {e}")))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let pid: i32 = text.trim().parse().map_err(|_| {
            Failure::NotHandedOver(format!("systemctl show {} said {:?}", o.unit, text.trim()))
        })?;
        return Ok((pid > 0).then_some(pid));
    }
    let text = match std::fs::read_to_string(&o.pid_file) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Failure::NotHandedOver(format!(
                "cannot read {}: {e}",
                o.pid_file.display()
            )));
        }
    };
    match text.trim().parse::<i32>() {
        Ok(pid) if pid > 1 && vmlock_sys::process::exists(pid) => Ok(Some(pid)),
        _ => Ok(None),
    }
}

/// Whether a process looks like a lock daemon (for telling a stale pid file
/// from a daemon started some other way).
fn is_lock_daemon(pid: i32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| {
        let s = p.to_string_lossy();
        s.contains("virtlockd") || s.contains("vmlockd")
    })
}

/// Hands the running daemon over to the program `o.program` names now.
pub fn hand_over(o: &Options) -> Result<Outcome, Failure> {
    let not = Failure::NotHandedOver;
    let Some(pid) = find_daemon(o)? else {
        return Ok(Outcome::NoDaemon("no lock daemon runs".to_string()));
    };
    let started_as = argv0(pid).map_err(|e| not(format!("cannot read pid {pid}'s argv: {e}")))?;
    if Path::new(&started_as) != o.program {
        if !is_lock_daemon(pid) {
            return Ok(Outcome::NoDaemon(format!(
                "{} names pid {pid}, which is not a lock daemon (a stale pid file)",
                o.pid_file.display()
            )));
        }
        return Err(not(format!(
            "the lock daemon (pid {pid}) was started as {}, not {}: its re-exec would not \
             run the new program",
            Path::new(&started_as).display(),
            o.program.display()
        )));
    }
    let program_id = file_id(&o.program)
        .map_err(|e| not(format!("{} cannot be used: {e}", o.program.display())))?;
    let version = version_of(&o.program, Duration::from_secs(10)).map_err(|e| {
        not(format!(
            "the new program {} does not run: {e}",
            o.program.display()
        ))
    })?;
    if !version.contains(o.target.marker()) {
        return Err(not(format!(
            "{} is not {}: its --version says {:?}",
            o.program.display(),
            o.target.name(),
            version.trim()
        )));
    }
    let exe = Path::new("/proc").join(pid.to_string()).join("exe");
    let deleted =
        std::fs::read_link(&exe).is_ok_and(|p| p.to_string_lossy().ends_with(" (deleted)"));
    if file_id(&exe).ok() == Some(program_id) && !deleted {
        return Ok(Outcome::AlreadyThere { pid });
    }
    ping(&o.socket, Duration::from_secs(5)).map_err(|e| {
        not(format!(
            "the lock daemon (pid {pid}) does not answer on {}: {e}",
            o.socket.display()
        ))
    })?;
    let pid_file_id = || file_id(&o.pid_file).ok();
    let before = daemon_locks(pid, pid_file_id())
        .map_err(|e| not(format!("cannot list pid {pid}'s locks: {e}")))?;
    signal(o, pid).map_err(|e| not(format!("cannot signal the lock daemon (pid {pid}): {e}")))?;
    let t0 = Instant::now();
    let bad = Failure::HandedOverBadly;
    let ran = wait_for(o.timeout, || {
        !vmlock_sys::process::exists(pid) || file_id(&exe).ok() == Some(program_id)
    });
    if !vmlock_sys::process::exists(pid) {
        return Err(bad(format!(
            "the lock daemon (pid {pid}) exited during the re-exec: its locks are gone"
        )));
    }
    if !ran {
        return Err(bad(format!(
            "the lock daemon (pid {pid}) did not re-exec {} within {:?} (see its log); it \
             runs on with its old program",
            o.program.display(),
            o.timeout
        )));
    }
    let mut last = None;
    let answered = wait_for(o.timeout, || {
        match ping(&o.socket, Duration::from_secs(5)) {
            Ok(()) => true,
            Err(e) => {
                last = Some(e);
                false
            }
        }
    });
    if !answered {
        return Err(bad(format!(
            "the lock daemon (pid {pid}) runs {} but does not answer on {}: {}",
            o.program.display(),
            o.socket.display(),
            last.map(|e| e.to_string()).unwrap_or_default()
        )));
    }
    let took = t0.elapsed();
    let after = daemon_locks(pid, pid_file_id()).map_err(|e| {
        bad(format!(
            "cannot list pid {pid}'s locks after the re-exec: {e}"
        ))
    })?;
    let d = diff(&before, &after);
    if !d.is_empty() {
        return Err(bad(format!(
            "the lock daemon (pid {pid}) held {} locks before the re-exec and {} after \
             (a VM that started or stopped meanwhile also changes them):\n  {}",
            total(&before),
            total(&after),
            d.join("\n  ")
        )));
    }
    Ok(Outcome::HandedOver {
        pid,
        locks: total(&after),
        took,
    })
}

fn signal(o: &Options, pid: i32) -> io::Result<()> {
    let systemd = o
        .systemd
        .unwrap_or_else(|| Path::new("/run/systemd/system").is_dir());
    if systemd {
        let st = Command::new("systemctl")
            .args(["reload", &o.unit])
            .stdin(Stdio::null())
            .status()?;
        if !st.success() {
            return Err(io::Error::other(format!(
                "systemctl reload {} failed ({st})",
                o.unit
            )));
        }
        Ok(())
    } else {
        vmlock_sys::process::kill(pid, libc::SIGUSR1)
    }
}

fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if t0.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn parses_posix_and_ofd_lock_lines() {
        let text = "pos:\t0\nflags:\t02100002\nmnt_id:\t30\nino:\t5678\n\
                    lock:\t1: POSIX  ADVISORY  WRITE 1234 fe:01:5678 0 0\n\
                    lock:\t2: OFDLCK ADVISORY  READ  -1 00:2c:99 0 EOF\n";
        let keys = parse_fdinfo_locks(text);
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].file, "fe:01:5678");
        assert_eq!(keys[0].mode, "WRITE");
        assert_eq!(
            (
                keys[1].file.as_str(),
                keys[1].mode.as_str(),
                keys[1].end.as_str()
            ),
            ("00:2c:99", "READ", "EOF")
        );
        assert!(parse_fdinfo_locks("lock:\t1: POSIX\n").is_empty());
    }

    #[test]
    fn counts_this_processs_own_locks_of_both_kinds() {
        use vmlock_sys::lock::{LockKind, LockType, try_lock};
        let dir = tempfile::tempdir().expect("tempdir");
        let me = i32::try_from(std::process::id()).expect("pid");
        let open = |n: &str| {
            let p = dir.path().join(n);
            std::fs::write(&p, b"").expect("write");
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&p)
                .expect("open")
        };
        let skip_file = open("pid");
        let before = daemon_locks(me, None).expect("locks");
        let (a, b) = (open("a"), open("b"));
        assert!(try_lock(a.as_fd(), LockKind::Ofd, LockType::Exclusive).expect("ofd"));
        assert!(try_lock(b.as_fd(), LockKind::Posix, LockType::Shared).expect("posix"));
        assert!(try_lock(skip_file.as_fd(), LockKind::Posix, LockType::Exclusive).expect("pid"));
        let skip = file_id(&dir.path().join("pid")).expect("id");
        let after = daemon_locks(me, Some(skip)).expect("locks");
        let d = diff(&before, &after);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d.iter().all(|l| l.starts_with("new: ")), "{d:?}");
        assert!(d.iter().any(|l| l.contains(" WRITE ")), "{d:?}");
        assert!(d.iter().any(|l| l.contains(" READ ")), "{d:?}");
        assert_eq!(total(&after), total(&before) + 2);
        drop(a);
        let fewer = daemon_locks(me, Some(skip)).expect("locks");
        let d = diff(&after, &fewer);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].starts_with("lost: "), "{d:?}");
    }

    #[test]
    fn no_daemon_behind_a_missing_or_stale_pid_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = Options {
            target: Target::Vmlockd,
            program: "/usr/sbin/virtlockd".into(),
            pid_file: dir.path().join("virtlockd.pid"),
            socket: dir.path().join("sock"),
            systemd: Some(false),
            unit: "virtlockd.service".into(),
            timeout: Duration::from_secs(1),
        };
        assert!(matches!(hand_over(&o), Ok(Outcome::NoDaemon(_))));
        // This test process: alive, but not a lock daemon.
        std::fs::write(&o.pid_file, std::process::id().to_string()).expect("write");
        match hand_over(&o) {
            Ok(Outcome::NoDaemon(m)) => assert!(m.contains("stale"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_program_that_does_not_run_is_refused_before_any_signal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bad = dir.path().join("broken");
        std::fs::write(&bad, b"\x7fELF garbage").expect("write");
        std::fs::set_permissions(&bad, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let e = version_of(&bad, Duration::from_secs(5)).expect_err("must not run");
        assert!(!e.to_string().is_empty());
    }
}
