//! The only crate of vmlock that contains `unsafe` code.
//!
//! Every function here is a thin, typed wrapper around one Linux system call
//! (or a tiny group of them) that returns [`std::io::Result`]. No policy and
//! no state live here: the lockspace engine and the daemon decide *what* to
//! lock and *when*; this crate only knows *how*.
//!
//! Each `unsafe` block carries a `// SAFETY:` comment saying why the call is
//! sound. `EINTR` is retried in exactly one place ([`cvt_retry`]).

#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod clock;
pub mod cred;
pub mod dl;
pub mod elfnote;
pub mod fd;
pub mod fence;
pub mod limits;
pub mod lock;
pub mod mem;
#[cfg(feature = "plugin")]
pub mod plugin;
pub mod process;
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

/// Removes an environment variable.
///
/// Only sound while the process has a single thread: call it from `main`
/// before any runtime or thread is started (used to consume systemd's
/// `LISTEN_PID`/`LISTEN_FDS`, as virtlockd does, so that a re-exec'd image
/// does not take them for a second activation).
pub fn unset_env_single_threaded(name: &str) {
    // SAFETY: the caller contract above: no other thread exists that could
    // read or write the environment concurrently.
    unsafe { std::env::remove_var(name) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strerror_matches_the_c_library_text() {
        assert_eq!(strerror(libc::ENOENT), "No such file or directory");
        assert_eq!(strerror(libc::EACCES), "Permission denied");
        assert_eq!(strerror(libc::EISDIR), "Is a directory");
    }
}
