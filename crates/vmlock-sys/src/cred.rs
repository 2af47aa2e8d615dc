//! Peer credentials of a connected UNIX socket.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::cvt;

/// `SO_PEERCRED` of a UNIX stream socket: who was at the other end when the
/// connection was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Peer process id (0 when the kernel cannot tell, e.g. across pid namespaces).
    pub pid: i32,
    /// Peer effective user id.
    pub uid: u32,
    /// Peer effective group id.
    pub gid: u32,
}

/// Reads `SO_PEERCRED`.
pub fn peer_cred(sock: BorrowedFd<'_>) -> io::Result<PeerCred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    let raw = sock.as_raw_fd();
    // SAFETY: `cred` and `len` are valid for writes of the sizes given, and
    // SO_PEERCRED writes at most `len` bytes of a `struct ucred`.
    cvt(unsafe {
        libc::getsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok(PeerCred {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// `SO_PEERPIDFD` (Linux 6.5+): a pidfd for exactly the process that
/// connected, immune to pid reuse. Fails with `ENOPROTOOPT` on older kernels.
pub fn peer_pidfd(sock: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    const SO_PEERPIDFD: libc::c_int = 77;
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    let raw = sock.as_raw_fd();
    // SAFETY: `fd`/`len` are valid for writes of one int; the kernel writes a
    // new descriptor number into `fd`.
    cvt(unsafe {
        libc::getsockopt(
            raw,
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&mut fd as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: the kernel just installed `fd` in our table for us; nothing
    // else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn peer_of_a_socketpair_is_this_process() {
        let (a, _b) = UnixStream::pair().expect("pair");
        let c = peer_cred(a.as_fd()).expect("cred");
        assert_eq!(c.pid, std::process::id() as i32);
        assert_eq!(c.uid, crate::geteuid());
    }

    #[test]
    fn peer_pidfd_names_this_process_when_supported() {
        let (a, _b) = UnixStream::pair().expect("pair");
        match peer_pidfd(a.as_fd()) {
            Ok(fd) => {
                let pid = crate::process::pidfd_pid(fd.as_fd()).expect("fdinfo");
                assert_eq!(pid, std::process::id() as i32);
            }
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOPROTOOPT)),
        }
    }
}
