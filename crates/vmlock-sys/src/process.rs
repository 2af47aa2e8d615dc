//! Processes: pidfds, signals, start times.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::cvt;

/// `pidfd_open(pid, 0)`.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    if pid <= 0 {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: plain syscall with integer arguments.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success the kernel returns a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as libc::c_int) })
}

/// `pidfd_send_signal(pidfd, sig, NULL, 0)`. `ESRCH` means the process is
/// gone (it can never mean another process: that is the point of a pidfd).
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    let raw = pidfd.as_raw_fd();
    // SAFETY: plain syscall; a NULL siginfo is allowed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            raw,
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `kill(pid, sig)`. Refuses pids ≤ 1 (as libvirt's `virProcessKill` does).
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    if pid <= 1 {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: plain syscall with integer arguments.
    cvt(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// The pid a pidfd refers to, from `/proc/self/fdinfo` (`-1` once it exited).
pub fn pidfd_pid(pidfd: BorrowedFd<'_>) -> io::Result<i32> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()))?;
    info.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Pid: line in fdinfo"))
}

/// The start time of `pid` in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`). Together with the pid it names a process uniquely.
pub fn start_time(pid: i32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_start_time(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/pid/stat"))
}

fn parse_start_time(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses: skip to
    // the last ')'. Field 3 is then the first after it; start time is field 22.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` exists (signal 0 succeeds, or fails with EPERM).
pub fn exists(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 performs only the permission and existence checks.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn start_time_parser_survives_odd_command_names() {
        let line = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_start_time(line), Some(98765));
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn own_start_time_is_readable_and_stable() {
        let me = std::process::id() as i32;
        assert_eq!(start_time(me).expect("a"), start_time(me).expect("b"));
    }

    #[test]
    fn pidfd_of_a_child_reports_its_death() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn");
        let pidfd = pidfd_open(child.id() as i32).expect("pidfd_open");
        assert_eq!(pidfd_pid(pidfd.as_fd()).expect("pid"), child.id() as i32);
        pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL).expect("kill");
        child.wait().expect("reap");
        let e = pidfd_send_signal(pidfd.as_fd(), 0).expect_err("gone");
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
        assert!(kill(1, 0).is_err(), "pid 1 is refused");
    }
}

/// The parent side of [`daemonize`] has exited; this is the grandchild's
/// handle to report start-up success or failure to the waiting parent.
#[derive(Debug)]
pub struct StartupReport {
    pipe: Option<std::fs::File>,
}

impl StartupReport {
    /// Tells the waiting parent that start-up worked (it exits 0).
    pub fn success(mut self) {
        if let Some(mut p) = self.pipe.take() {
            let _ = std::io::Write::write_all(&mut p, b"\0");
        }
    }

    /// Tells the waiting parent that start-up failed (it prints `why`, exits 1).
    pub fn failure(mut self, why: &str) {
        if let Some(mut p) = self.pipe.take() {
            let _ = std::io::Write::write_all(&mut p, format!("\x01{why}").as_bytes());
        }
    }
}

/// Forks into the background like `virDaemonForkIntoBackground`: double
/// fork, `setsid`, stdio on `/dev/null`, `chdir /`. Returns in the
/// grandchild only; the original process waits for the grandchild's
/// [`StartupReport`] and exits with 0 or 1.
///
/// Must be called while the process is single-threaded.
pub fn daemonize() -> io::Result<StartupReport> {
    use std::io::Read;
    let (mut rx, tx) = std::io::pipe()?;
    // SAFETY: the caller guarantees the process is single-threaded, so the
    // child is a complete copy and may run arbitrary code.
    let pid = cvt(unsafe { libc::fork() })?;
    if pid > 0 {
        drop(tx);
        let mut buf = Vec::new();
        let _ = rx.read_to_end(&mut buf);
        let code = match buf.first() {
            Some(0) => 0,
            Some(_) => {
                eprintln!("{}", String::from_utf8_lossy(&buf[1..]));
                1
            }
            None => {
                eprintln!("daemon exited during start-up");
                1
            }
        };
        std::process::exit(code);
    }
    drop(rx);
    // SAFETY: plain syscall; we are a fresh child, not a group leader.
    cvt(unsafe { libc::setsid() })?;
    // SAFETY: still single-threaded (we are the forked child).
    let pid2 = cvt(unsafe { libc::fork() })?;
    if pid2 > 0 {
        std::process::exit(0);
    }
    std::env::set_current_dir("/")?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for target in 0..3 {
        // SAFETY: dup2 onto the standard descriptors, which this process owns.
        cvt(unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), target) })?;
    }
    Ok(StartupReport {
        pipe: Some(std::fs::File::from(std::os::fd::OwnedFd::from(tx))),
    })
}

/// Waits up to `timeout` for the process behind `pidfd` to exit (the pidfd
/// polls readable then). Returns whether it exited.
pub fn pidfd_wait(pidfd: BorrowedFd<'_>, timeout: std::time::Duration) -> io::Result<bool> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms = left.as_millis().min(i32::MAX as u128) as libc::c_int;
        let mut pfd = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid, initialised pollfd and nfds is 1.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        match rc {
            -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
            -1 => return Err(io::Error::last_os_error()),
            0 if left.is_zero() => return Ok(false),
            0 => continue,
            _ => return Ok(true),
        }
    }
}

/// Waits up to `timeout` for any of the processes behind `pidfds` to exit;
/// returns the indexes of those that have (empty on timeout).
pub fn pidfd_wait_any(
    pidfds: &[BorrowedFd<'_>],
    timeout: std::time::Duration,
) -> io::Result<Vec<usize>> {
    let mut pfds: Vec<libc::pollfd> = pidfds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    let n = libc::nfds_t::try_from(pfds.len()).map_err(io::Error::other)?;
    // SAFETY: `pfds` holds `n` initialised pollfds of descriptors the
    // caller keeps open (borrowed) for the duration of the call.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), n, ms) };
    if rc == -1 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(Vec::new());
        }
        return Err(e);
    }
    Ok(pfds
        .iter()
        .enumerate()
        .filter(|(_, p)| p.revents != 0)
        .map(|(i, _)| i)
        .collect())
}

/// Where `argv0` may be: itself when it has a slash, else each directory of
/// `PATH` (default `/usr/bin:/bin`) joined with it, as `execvp` looks.
fn program_candidates(argv0: &std::ffi::OsStr) -> Vec<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    if argv0.as_bytes().contains(&b'/') {
        return vec![argv0.into()];
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(argv0))
        .collect()
}

/// Opens the program `argv0` names for reading (close-on-exec), searched in
/// `PATH` as [`exec_no_shell`] searches it, so that it can be inspected and
/// then run with [`exec_file`] — the very file inspected.
pub fn open_program(argv0: &std::ffi::OsStr) -> io::Result<std::fs::File> {
    let mut last = io::Error::from_raw_os_error(libc::ENOENT);
    for c in program_candidates(argv0) {
        match std::fs::File::open(&c) {
            Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => return Ok(f),
            Ok(_) => last = io::Error::from_raw_os_error(libc::EACCES),
            Err(e) => {
                let next = matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR));
                last = e;
                if !next {
                    break;
                }
            }
        }
    }
    Err(last)
}

/// Replaces this program with the open program file `prog`
/// (`execveat(fd, "", argv, environ, AT_EMPTY_PATH)`), with `argv` as its
/// arguments and this process's environment. Meant for ELF programs (a
/// `#!` script cannot be run from a close-on-exec descriptor). Returns
/// only on failure.
pub fn exec_file(prog: &std::fs::File, argv: &[std::ffi::OsString]) -> io::Error {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let args: Vec<CString> = match argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
    {
        Ok(a) => a,
        Err(e) => return io::Error::other(e),
    };
    let env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    let mut argp: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argp.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let empty = c"";
    // SAFETY: the descriptor is open for the borrow of `prog`; `empty`, every
    // element of `argp` and `envp` are NUL-terminated strings kept alive by
    // `args`/`env` across the call, and both arrays end with a null pointer
    // as execveat requires. On success it never returns.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            prog.as_raw_fd(),
            empty.as_ptr(),
            argp.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    io::Error::last_os_error()
}

/// Replaces this program with `argv[0]`, searched in `PATH` when it has no
/// slash, like `execvp` but **without** its fallback of running a file the
/// kernel refuses (`ENOEXEC`: another architecture, garbage) through
/// `/bin/sh`: for a lock daemon that fallback "succeeds" into a shell that
/// fails, and every lock is lost. Returns only on failure.
pub fn exec_no_shell(argv: &[std::ffi::OsString]) -> io::Error {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let Some(first) = argv.first() else {
        return io::Error::from_raw_os_error(libc::EINVAL);
    };
    let cstr = |s: &std::ffi::OsStr| CString::new(s.as_bytes()).map_err(io::Error::other);
    let args: Vec<CString> = match argv.iter().map(|a| cstr(a)).collect() {
        Ok(a) => a,
        Err(e) => return e,
    };
    let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let mut last = io::Error::from_raw_os_error(libc::ENOENT);
    for c in program_candidates(first) {
        let Ok(prog) = cstr(c.as_os_str()) else {
            continue;
        };
        // SAFETY: `prog` and every element of `ptrs` are NUL-terminated
        // strings kept alive by `args`/`prog` across the call; `ptrs` ends
        // with a null pointer as execv requires. On success it never returns.
        unsafe { libc::execv(prog.as_ptr(), ptrs.as_ptr()) };
        last = io::Error::last_os_error();
        if !matches!(last.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) {
            break;
        }
    }
    last
}
