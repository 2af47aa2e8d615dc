//! The only crate of vmlock that contains `unsafe` code.
//!
//! Every function here is a thin, typed wrapper around one Linux system call
//! (or a tiny group of them) that returns [`std::io::Result`]. No policy and
//! no state live here: the lockspace engine and the daemon decide *what* to
//! lock and *when*; this crate only knows *how*.
//!
//! Each `unsafe` block carries a `// SAFETY:` comment saying why the call is
//! sound. `EINTR` is retried in exactly one place (`cvt_retry`).

#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod clock;
pub mod cred;
#[cfg(any(feature = "plugin", feature = "sanlock", feature = "dlm"))]
pub mod dl;
#[cfg(feature = "dlm")]
pub mod dlm;
pub mod elfnote;
pub mod fd;
pub mod fence;
pub mod limits;
pub mod lock;
pub mod mem;
#[cfg(feature = "plugin")]
pub mod plugin;
pub mod process;
#[cfg(feature = "sanlock")]
pub mod sanlock;
pub mod signal;
pub mod user;

use std::ffi::CStr;
use std::io;

/// Turns a `-1`-on-error libc return value into an [`io::Result`].
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Like [`cvt`], but retries the call while it fails with `EINTR`.
pub(crate) fn cvt_retry(mut call: impl FnMut() -> libc::c_int) -> io::Result<libc::c_int> {
    loop {
        match cvt(call()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// The C library's text for `errno`, exactly as `strerror(3)` gives it in
/// the C locale (libvirt puts this text on the wire in system errors).
pub fn strerror(errno: i32) -> String {
    let mut buf = [0 as libc::c_char; 256];
    // SAFETY: `buf` is a valid, writable buffer of the length passed; the
    // XSI/GNU `strerror_r` exposed by the libc crate (`__xpg_strerror_r`)
    // writes a NUL-terminated string into it and touches nothing else.
    let rc = unsafe { libc::strerror_r(errno, buf.as_mut_ptr(), buf.len()) };
    if rc != 0 {
        return format!("Unknown error {errno}");
    }
    // SAFETY: on success `strerror_r` left a NUL-terminated string in `buf`,
    // which outlives this borrow.
    let text = unsafe { CStr::from_ptr(buf.as_ptr()) };
    text.to_string_lossy().into_owned()
}

/// The effective user id of this process.
pub fn geteuid() -> u32 {
    // SAFETY: `geteuid` has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Sets the process umask and returns the previous one.
pub fn umask(mask: u32) -> u32 {
    // SAFETY: `umask` has no preconditions and cannot fail.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

/// The pid of this process.
pub fn getpid() -> i32 {
    std::process::id() as i32
}

/// Removes an environment variable, if this process has a single thread
/// (used to consume systemd's `LISTEN_PID`/`LISTEN_FDS`, as virtlockd does,
/// so that a re-exec'd image does not take them for a second activation).
///
/// Changing the environment is only sound while no other thread can read
/// it, so the thread count is checked first (`/proc/self/status`): with a
/// second thread the variable is left alone and an error says why. Only
/// this thread could start another one between the check and the removal.
pub fn unset_env_single_threaded(name: &str) -> io::Result<()> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(io::Error::other(format!(
            "not removing {name} from the environment: {threads} threads are running"
        )));
    }
    // SAFETY: checked just above: this is the only thread, so nothing can
    // read or write the environment concurrently.
    unsafe { std::env::remove_var(name) };
    Ok(())
}

/// The number of threads of this process, from `/proc/self/status`.
pub fn thread_count() -> io::Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no Threads: line in /proc/self/status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_is_left_alone_while_other_threads_run() {
        // The test harness runs tests on threads of their own: more than one.
        assert!(thread_count().expect("threads") > 1);
        let e = unset_env_single_threaded("VMLOCK_SYS_TEST_NEVER_SET")
            .expect_err("refused with other threads");
        assert!(e.to_string().contains("threads are running"), "{e}");
    }

    #[test]
    fn strerror_matches_the_c_library_text() {
        assert_eq!(strerror(libc::ENOENT), "No such file or directory");
        assert_eq!(strerror(libc::EACCES), "Permission denied");
        assert_eq!(strerror(libc::EISDIR), "Is a directory");
    }
}
