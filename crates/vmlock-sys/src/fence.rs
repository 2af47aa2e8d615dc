//! What the fence helper (`vmlock-fenced`) needs from the kernel: locked
//! memory, a high scheduling priority, the watchdog device's ioctls, and a
//! clean spawn (no inherited descriptor survives into the helper).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use crate::{cvt, cvt_retry};

/// `mlockall(MCL_CURRENT | MCL_FUTURE)`: no page of the process is ever
/// paged out, so a host short of memory cannot stall it on a page fault.
pub fn lock_memory() -> io::Result<()> {
    // SAFETY: plain syscall with integer flags.
    cvt(unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) }).map(drop)
}

/// Runs the calling thread (and the threads it starts later, which inherit
/// it) under `SCHED_FIFO` at `priority` (1..=99).
pub fn realtime_priority(priority: i32) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `param` is a valid, initialised sched_param that outlives the call.
    cvt(unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) }).map(drop)
}

/// `setpriority(PRIO_PROCESS, 0, nice)`.
pub fn set_nice(nice: i32) -> io::Result<()> {
    // SAFETY: plain syscall with integer arguments.
    cvt(unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) }).map(drop)
}

/// `WDIOC_KEEPALIVE` = `_IOR('W', 5, int)` (linux/watchdog.h; the generic
/// ioctl encoding of x86 and arm).
const WDIOC_KEEPALIVE: libc::c_ulong = 0x8004_5705;
/// `WDIOC_SETTIMEOUT` = `_IOWR('W', 6, int)`.
const WDIOC_SETTIMEOUT: libc::c_ulong = 0xC004_5706;

/// Sets a watchdog device's timeout in seconds; returns the timeout the
/// driver actually set (it may round).
pub fn watchdog_set_timeout(dev: BorrowedFd<'_>, seconds: u32) -> io::Result<u32> {
    let mut t = libc::c_int::try_from(seconds).map_err(io::Error::other)?;
    let raw = dev.as_raw_fd();
    let ptr: *mut libc::c_int = &mut t;
    // SAFETY: `raw` is a live descriptor for the borrow; WDIOC_SETTIMEOUT
    // reads and writes one int through `ptr`, which points to `t`.
    cvt_retry(|| unsafe { libc::ioctl(raw, WDIOC_SETTIMEOUT, ptr) })?;
    u32::try_from(t).map_err(io::Error::other)
}

/// Pets a watchdog device.
pub fn watchdog_keepalive(dev: BorrowedFd<'_>) -> io::Result<()> {
    let mut dummy: libc::c_int = 0;
    let raw = dev.as_raw_fd();
    let ptr: *mut libc::c_int = &mut dummy;
    // SAFETY: `raw` is a live descriptor for the borrow; WDIOC_KEEPALIVE
    // ignores its argument, which points to a valid int anyway.
    cvt_retry(|| unsafe { libc::ioctl(raw, WDIOC_KEEPALIVE, ptr) }).map(drop)
}

/// Starts `cmd` with every inherited descriptor above stderr closed at its
/// `exec` (close-on-exec set on all of them in the child first), in a
/// process group of its own.
///
/// vmlockd keeps its lock descriptors inheritable (a re-exec hands them on
/// without one `fcntl` each); a child that kept copies would keep each OFD
/// lock alive after the daemon released it. Only the child's copies are
/// touched: the parent's descriptors keep their flags.
pub fn spawn_clean(cmd: &mut Command) -> io::Result<Child> {
    cmd.process_group(0);
    // SAFETY: the closure runs in the child between fork and exec and makes
    // one raw syscall (async-signal-safe), allocating nothing.
    unsafe {
        cmd.pre_exec(|| {
            let rc = libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    };
    cmd.spawn()
}

/// Reaps the process behind `pidfd` if it is an exited child of ours
/// (`waitid(P_PIDFD, WEXITED | WNOHANG)`). `Ok(false)`: not exited yet, or
/// not ours to reap (`ECHILD`).
pub fn pidfd_reap(pidfd: BorrowedFd<'_>) -> io::Result<bool> {
    const P_PIDFD: libc::idtype_t = 3;
    // SAFETY: an all-zero siginfo_t is a valid value of the C struct.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let raw = pidfd.as_raw_fd();
    let id = libc::id_t::try_from(raw).map_err(io::Error::other)?;
    // SAFETY: `info` is valid for writes of one siginfo_t.
    let rc = cvt_retry(|| unsafe {
        libc::waitid(P_PIDFD, id, &mut info, libc::WEXITED | libc::WNOHANG)
    });
    match rc {
        // SAFETY: waitid filled `info`; si_pid is 0 when nothing was reaped.
        Ok(_) => Ok(unsafe { info.si_pid() } != 0),
        Err(e) if e.raw_os_error() == Some(libc::ECHILD) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn spawn_clean_leaves_no_inherited_descriptor() {
        let dir = std::env::temp_dir();
        let f = std::fs::File::open(&dir).unwrap();
        crate::fd::set_cloexec(f.as_fd(), false).unwrap();
        let n = f.as_raw_fd();
        let out = spawn_clean(
            Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "test -e /proc/self/fd/{n} && echo open || echo closed"
                ))
                .stdout(std::process::Stdio::piped()),
        )
        .unwrap()
        .wait_with_output()
        .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "closed");
        // The parent's copy is untouched.
        assert!(!crate::fd::is_cloexec(f.as_fd()).unwrap());
    }

    #[test]
    fn pidfd_reap_reaps_an_exited_child_once() {
        let child = Command::new("true").spawn().unwrap();
        let fd = crate::process::pidfd_open(child.id() as i32).unwrap();
        assert!(crate::process::pidfd_wait(fd.as_fd(), std::time::Duration::from_secs(5)).unwrap());
        assert!(pidfd_reap(fd.as_fd()).unwrap());
        assert!(!pidfd_reap(fd.as_fd()).unwrap(), "already reaped");
        std::mem::forget(child);
    }

    #[test]
    fn watchdog_ioctls_fail_cleanly_on_a_plain_file() {
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        assert!(watchdog_set_timeout(f.as_fd(), 5).is_err());
        assert!(watchdog_keepalive(f.as_fd()).is_err());
    }
}
