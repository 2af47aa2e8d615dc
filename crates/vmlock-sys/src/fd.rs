//! Descriptor flags and adoption of inherited descriptors (re-exec, systemd).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::cvt;

/// Whether `fd` has `FD_CLOEXEC` set.
pub fn is_cloexec(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let raw = fd.as_raw_fd();
    // SAFETY: F_GETFD on a descriptor that is live for the borrow; no memory
    // is passed.
    let flags = cvt(unsafe { libc::fcntl(raw, libc::F_GETFD) })?;
    Ok(flags & libc::FD_CLOEXEC != 0)
}

/// Sets or clears `FD_CLOEXEC` on `fd`.
///
/// Clearing it is how a descriptor is handed to the next program image on
/// re-exec; setting it again is the first thing the new image does.
pub fn set_cloexec(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    set_cloexec_raw(fd.as_raw_fd(), on)
}

/// One `F_SETFD` (FD_CLOEXEC is the only descriptor flag Linux has, so no
/// read-modify-write is needed); `EBADF` for a number that is not open.
fn set_cloexec_raw(raw: RawFd, on: bool) -> io::Result<()> {
    let flags = if on { libc::FD_CLOEXEC } else { 0 };
    // SAFETY: F_SETFD with an integer argument only touches the descriptor
    // table entry of `raw`; no memory is passed.
    cvt(unsafe { libc::fcntl(raw, libc::F_SETFD, flags) }).map(drop)
}

/// Whether the raw descriptor number is open in this process.
pub fn is_open(raw: RawFd) -> bool {
    // SAFETY: F_GETFD only inspects the descriptor table; an unused number
    // makes it fail with EBADF, which is the answer we want.
    raw >= 0 && unsafe { libc::fcntl(raw, libc::F_GETFD) } != -1
}

/// Which of `raws` are open, in one system call: `poll` with no events and
/// no wait reports `POLLNVAL` exactly for numbers that are not open (and a
/// negative number is skipped by `poll`: reported closed here). At a
/// re-exec with 10,000 lock descriptors this is about a tenth of the cost
/// of one `fcntl` each.
pub fn open_mask(raws: &[RawFd]) -> io::Result<Vec<bool>> {
    let mut fds: Vec<libc::pollfd> = raws
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: 0,
            revents: 0,
        })
        .collect();
    let n = libc::nfds_t::try_from(fds.len())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `fds` is a valid, writable array of `n` pollfd structures;
    // a timeout of 0 never blocks.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), n, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fds
        .iter()
        .map(|p| p.fd >= 0 && p.revents & libc::POLLNVAL == 0)
        .collect())
}

/// [`adopt_inherited`] for many numbers at once, checked with one
/// [`open_mask`]: `None` for a number that is not open. `raws` must be
/// strictly increasing (so none is taken twice; `EINVAL` otherwise), and,
/// as for [`adopt_inherited`], owned by nothing else in the process.
pub fn adopt_inherited_all(raws: &[RawFd]) -> io::Result<Vec<Option<OwnedFd>>> {
    if raws.windows(2).any(|w| w[0] >= w[1]) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let open = open_mask(raws)?;
    Ok(raws
        .iter()
        .zip(open)
        .map(|(&raw, open)| {
            // SAFETY: `raw` is open (poll did not report POLLNVAL), taken
            // once (the numbers are strictly increasing) and, by this
            // function's contract, owned by nothing else in the process.
            open.then(|| unsafe { OwnedFd::from_raw_fd(raw) })
        })
        .collect())
}

/// Takes ownership of a descriptor this process inherited by number (from
/// the previous program image on re-exec, or from systemd).
///
/// The number must be open (checked: `EBADF` otherwise) and must not be
/// owned by anything else in this process. Callers guarantee the latter by
/// adopting each number named in a state file at most once and before any
/// other code opens descriptors; [`adopt`] sets `FD_CLOEXEC` on it.
pub fn adopt(raw: RawFd) -> io::Result<OwnedFd> {
    if raw < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // Setting FD_CLOEXEC doubles as the check that the number is open (EBADF).
    set_cloexec_raw(raw, true)?;
    // SAFETY: `raw` is open (F_SETFD succeeded) and, by this function's
    // contract, owned by nothing else in the process, so the new `OwnedFd`
    // is its only owner and will close it exactly once.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Opens `path` like `open(2)` with `flags` (never `O_CLOEXEC`) and `mode`:
/// the descriptor is inherited across `execve`. For lock descriptors a
/// daemon hands to its next image on re-exec and never to any other
/// program (it starts none); std's `OpenOptions` always sets close-on-exec,
/// which the re-exec would then clear one `fcntl` at a time.
pub fn open_inherited(
    path: &str,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<std::fs::File> {
    let c = std::ffi::CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let flags = flags & !libc::O_CLOEXEC;
    // SAFETY: `c` is a NUL-terminated string alive across the call; open
    // reads it and returns a new descriptor or -1.
    let fd =
        crate::cvt_retry(|| unsafe { libc::open(c.as_ptr(), flags, libc::c_uint::from(mode)) })?;
    // SAFETY: on success `fd` is a fresh descriptor nobody else owns.
    Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// [`adopt`] for a descriptor that must stay inheritable (a lock
/// descriptor vmlockd keeps without close-on-exec, see [`open_inherited`]):
/// checked to be open (`F_GETFD`), its flags left as they are — anything
/// that came through `execve` has no close-on-exec anyway.
pub fn adopt_inherited(raw: RawFd) -> io::Result<OwnedFd> {
    if !is_open(raw) {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: `raw` is open (checked) and, by the contract of [`adopt`],
    // owned by nothing else in the process.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Closes `fd` and reports the error of `close(2)`, which dropping an
/// [`OwnedFd`] ignores. The descriptor is gone either way (Linux never
/// leaves it open after a failed close, so `EINTR` is not retried).
pub fn close(fd: OwnedFd) -> io::Result<()> {
    let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
    // SAFETY: `raw` came from an `OwnedFd` we consumed, so this is its only
    // owner and it is closed exactly once, here.
    cvt(unsafe { libc::close(raw) }).map(drop)
}

/// Duplicates a descriptor given by number (`F_DUPFD_CLOEXEC`) without
/// taking ownership of the original. The copy shares the open file
/// description, so OFD locks held through the original stay held while
/// either is open.
pub fn dup_raw(raw: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC only reads the descriptor table; an unused
    // number fails with EBADF. No memory is passed.
    let new = cvt(unsafe { libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: on success `new` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Waits until `fd` is readable (or hung up, or in error) the way libvirt's
/// RPC client waits for a reply: `poll` for `POLLIN` alone. `Ok(false)` if
/// `timeout` passed first; `EINTR` is retried with the whole timeout.
///
/// Unlike blocking in `read`, a `poll` waiter is not woken when the peer
/// merely consumes bytes this side sent (a UNIX stream socket signals
/// "writable" on the same wait queue; `poll` filters it by event, a sleeping
/// `read` does not).
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: std::time::Duration) -> io::Result<bool> {
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid `pollfd` for a descriptor live for the borrow.
    let n = crate::cvt_retry(|| unsafe { libc::poll(&mut pfd, 1, ms) })?;
    Ok(n > 0)
}

/// Whether the peer of a stream socket has hung up (closed its end or shut
/// down its writing), asked without waiting: `poll` with a zero timeout for
/// `POLLRDHUP`. Bytes still buffered do not hide the hang-up, unlike a
/// peeking `recv`. The kernel marks the socket inside the peer's `close(2)`,
/// so anything the peer sends elsewhere afterwards finds the mark set.
pub fn peer_hung_up(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid `pollfd` for a descriptor live for the borrow; a
    // zero timeout never sleeps.
    let n = crate::cvt_retry(|| unsafe { libc::poll(&mut pfd, 1, 0) })?;
    Ok(n > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0)
}

/// `fstat` identity of an open file: `(st_dev, st_ino)`.
pub fn identity(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    let raw = fd.as_raw_fd();
    // SAFETY: `st` is a valid out-pointer for one `struct stat`; `raw` is live.
    cvt(unsafe { libc::fstat(raw, st.as_mut_ptr()) })?;
    // SAFETY: fstat returned 0, so it initialised the whole struct.
    let st = unsafe { st.assume_init() };
    Ok((st.st_dev, st.st_ino))
}

#[cfg(test)]
mod tests {
    #[test]
    fn wait_readable_sees_data_and_times_out_without() {
        use std::io::Write;
        use std::os::fd::AsFd;
        let (mut a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let short = std::time::Duration::from_millis(20);
        assert!(!super::wait_readable(b.as_fd(), short).expect("poll"));
        a.write_all(b"x").expect("write");
        assert!(super::wait_readable(b.as_fd(), short).expect("poll"));
        drop(a);
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
        drop(a);
        assert!(
            super::wait_readable(b.as_fd(), short).expect("poll"),
            "hang-up counts"
        );
    }

    #[test]
    fn peer_hung_up_sees_a_close_behind_buffered_bytes() {
        use std::io::Write;
        use std::os::fd::AsFd;
        let (mut a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
        assert!(!super::peer_hung_up(b.as_fd()).expect("poll"), "open, idle");
        a.write_all(b"frame").expect("write");
        assert!(!super::peer_hung_up(b.as_fd()).expect("poll"), "open, data");
        drop(a);
        assert!(
            super::peer_hung_up(b.as_fd()).expect("poll"),
            "closed after data"
        );
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let copy = a.try_clone().expect("dup");
        drop(a);
        assert!(
            !super::peer_hung_up(b.as_fd()).expect("poll"),
            "a second descriptor keeps the socket open"
        );
        drop(copy);
        assert!(super::peer_hung_up(b.as_fd()).expect("poll"));
    }

    #[test]
    fn open_mask_tells_open_from_closed_numbers() {
        // Numbers far above anything this test process opens (other tests
        // run on other threads and may reuse a number just closed).
        let (hi, hi2) = (0x7fff_0000, 0x7fff_0001);
        let a = std::fs::File::open("/dev/null").unwrap();
        let ra = a.as_raw_fd();
        let mask = super::open_mask(&[-1, ra, hi]).unwrap();
        assert_eq!(mask, vec![false, true, false]);
        // Taking many: unsorted or repeated numbers are refused.
        assert!(super::adopt_inherited_all(&[ra, ra]).is_err());
        assert!(super::adopt_inherited_all(&[hi2, hi]).is_err());
        let raw = std::os::fd::IntoRawFd::into_raw_fd(a);
        let got = super::adopt_inherited_all(&[raw, hi]).unwrap();
        assert!(got[0].is_some() && got[1].is_none());
        // The one taken is owned (closed with it): a fresh open gets a
        // number again, and the descriptor is a real one until then.
        assert!(super::is_open(raw));
        drop(got);
    }

    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn cloexec_round_trip() {
        let f = std::fs::File::open("/proc/self/status").expect("open");
        assert!(is_cloexec(f.as_fd()).expect("get"));
        set_cloexec(f.as_fd(), false).expect("clear");
        assert!(!is_cloexec(f.as_fd()).expect("get"));
        set_cloexec(f.as_fd(), true).expect("set");
        assert!(is_cloexec(f.as_fd()).expect("get"));
    }

    #[test]
    fn adopt_refuses_a_closed_number() {
        assert!(!is_open(100_000));
        let e = adopt(100_000).expect_err("closed fd");
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
    }

    #[test]
    fn dup_raw_shares_the_file_and_refuses_a_closed_number() {
        let f = std::fs::File::open("/proc/self/status").expect("open");
        let d = dup_raw(f.as_raw_fd()).expect("dup");
        assert_ne!(d.as_raw_fd(), f.as_raw_fd());
        assert_eq!(
            identity(d.as_fd()).expect("a"),
            identity(f.as_fd()).expect("b")
        );
        assert!(is_cloexec(d.as_fd()).expect("cloexec"));
        assert_eq!(
            dup_raw(100_000).expect_err("closed").raw_os_error(),
            Some(libc::EBADF)
        );
    }

    #[test]
    fn close_reports_success() {
        let f = std::fs::File::open("/proc/self/status").expect("open");
        close(OwnedFd::from(f)).expect("close");
    }

    #[test]
    fn identity_matches_metadata() {
        use std::os::unix::fs::MetadataExt;
        let f = std::fs::File::open("/proc/self/status").expect("open");
        let m = f.metadata().expect("meta");
        assert_eq!(identity(f.as_fd()).expect("fstat"), (m.dev(), m.ino()));
    }
}
