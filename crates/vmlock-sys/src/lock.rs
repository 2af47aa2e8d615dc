//! Byte-range record locks, typed.
//!
//! libvirt's lock format is the interop contract with other hosts: a lock on
//! **byte 0, length 1**, a read lock for shared and a write lock for exclusive
//! ([`LIBVIRT_RANGE`]). Two flavours of the same lock exist:
//!
//! * [`LockKind::Ofd`] — open-file-description locks (`F_OFD_SETLK`). They
//!   belong to the open file description, so closing some *other* descriptor
//!   of the same file never drops them, and they survive `execve` as long as
//!   the descriptor is inherited. vmlock takes these.
//! * [`LockKind::Posix`] — classic process-associated locks (`F_SETLK`), as
//!   libvirt's virtlockd takes them. vmlock only ever *inherits* these (an
//!   in-place upgrade from virtlockd) and then must never open and close
//!   another descriptor of that file.
//!
//! The two kinds always conflict with each other, even inside one process,
//! so a vmlock daemon and a virtlockd on one lease directory exclude each
//! other.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::cvt_retry;

/// Which `fcntl` lock family a lock belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockKind {
    /// Open-file-description lock (`F_OFD_SETLK`).
    Ofd,
    /// Classic process-associated POSIX record lock (`F_SETLK`).
    Posix,
}

/// Shared (read) or exclusive (write) lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockType {
    /// `F_RDLCK`.
    Shared,
    /// `F_WRLCK`.
    Exclusive,
}

/// A byte range `[start, start + len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: i64,
    /// Number of bytes (0 would mean "to the end of the file").
    pub len: i64,
}

/// The range every libvirt lock manager locks: byte 0, length 1.
pub const LIBVIRT_RANGE: ByteRange = ByteRange { start: 0, len: 1 };

/// Who holds a conflicting lock, as `F_GETLK` / `F_OFD_GETLK` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict {
    /// The type of the conflicting lock.
    pub lock_type: LockType,
    /// The pid of a classic POSIX lock's owner; `-1` for an OFD lock.
    pub pid: i32,
}

fn flock(ty: libc::c_short, range: ByteRange) -> libc::flock {
    // l_pid must be 0 for the OFD commands.
    libc::flock {
        l_type: ty,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: range.start,
        l_len: range.len,
        l_pid: 0,
    }
}

fn raw_type(ty: LockType) -> libc::c_short {
    match ty {
        LockType::Shared => libc::F_RDLCK as libc::c_short,
        LockType::Exclusive => libc::F_WRLCK as libc::c_short,
    }
}

fn fcntl_lock(fd: BorrowedFd<'_>, cmd: libc::c_int, fl: &mut libc::flock) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    let ptr: *mut libc::flock = fl;
    // SAFETY: `raw` is a live descriptor for the duration of the borrow and
    // `ptr` points to a properly initialised `flock` that outlives the call;
    // the lock commands read and (for GETLK) write only that struct.
    cvt_retry(|| unsafe { libc::fcntl(raw, cmd, ptr) }).map(drop)
}

/// Tries to take `ty` on `range` without waiting.
///
/// Returns `Ok(true)` when the lock was taken, `Ok(false)` when another lock
/// conflicts (`EAGAIN`/`EACCES`, mapped here and nowhere else), and `Err` for
/// every other failure.
pub fn try_lock_range(
    fd: BorrowedFd<'_>,
    kind: LockKind,
    ty: LockType,
    range: ByteRange,
) -> io::Result<bool> {
    let cmd = match kind {
        LockKind::Ofd => libc::F_OFD_SETLK,
        LockKind::Posix => libc::F_SETLK,
    };
    let mut fl = flock(raw_type(ty), range);
    match fcntl_lock(fd, cmd, &mut fl) {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// [`try_lock_range`] on libvirt's byte 0, length 1.
pub fn try_lock(fd: BorrowedFd<'_>, kind: LockKind, ty: LockType) -> io::Result<bool> {
    try_lock_range(fd, kind, ty, LIBVIRT_RANGE)
}

/// Releases the lock on libvirt's byte 0, length 1.
pub fn unlock(fd: BorrowedFd<'_>, kind: LockKind) -> io::Result<()> {
    let cmd = match kind {
        LockKind::Ofd => libc::F_OFD_SETLK,
        LockKind::Posix => libc::F_SETLK,
    };
    let mut fl = flock(libc::F_UNLCK as libc::c_short, LIBVIRT_RANGE);
    fcntl_lock(fd, cmd, &mut fl)
}

/// Asks the kernel who would block a `ty` lock on `range` through `fd`.
///
/// `Ok(None)` means the lock could be taken now. Note the family rules: a
/// classic `F_GETLK` never reports locks of the calling process itself.
pub fn query_range(
    fd: BorrowedFd<'_>,
    kind: LockKind,
    ty: LockType,
    range: ByteRange,
) -> io::Result<Option<Conflict>> {
    let cmd = match kind {
        LockKind::Ofd => libc::F_OFD_GETLK,
        LockKind::Posix => libc::F_GETLK,
    };
    let mut fl = flock(raw_type(ty), range);
    fcntl_lock(fd, cmd, &mut fl)?;
    let lock_type = match fl.l_type as libc::c_int {
        libc::F_UNLCK => return Ok(None),
        libc::F_RDLCK => LockType::Shared,
        _ => LockType::Exclusive,
    };
    Ok(Some(Conflict {
        lock_type,
        pid: fl.l_pid,
    }))
}

/// [`query_range`] on libvirt's byte 0, length 1.
pub fn query(fd: BorrowedFd<'_>, kind: LockKind, ty: LockType) -> io::Result<Option<Conflict>> {
    query_range(fd, kind, ty, LIBVIRT_RANGE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::os::fd::AsFd;

    fn scratch() -> (tempdir_lite::Dir, std::path::PathBuf) {
        let d = tempdir_lite::Dir::new();
        let p = d.path().join("lease");
        std::fs::write(&p, b"").expect("create lease");
        (d, p)
    }

    #[test]
    fn ofd_locks_exclude_each_other_inside_one_process() {
        let (_d, p) = scratch();
        let a = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .expect("open a");
        let b = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .expect("open b");
        assert!(try_lock(a.as_fd(), LockKind::Ofd, LockType::Exclusive).expect("lock a"));
        assert!(!try_lock(b.as_fd(), LockKind::Ofd, LockType::Exclusive).expect("lock b"));
        assert!(!try_lock(b.as_fd(), LockKind::Ofd, LockType::Shared).expect("lock b shared"));
        let h = query(b.as_fd(), LockKind::Ofd, LockType::Shared).expect("query");
        assert_eq!(h.map(|h| h.lock_type), Some(LockType::Exclusive));
        // Closing another descriptor of the file must not drop an OFD lock.
        let c = OpenOptions::new().read(true).open(&p).expect("open c");
        drop(c);
        assert!(!try_lock(b.as_fd(), LockKind::Ofd, LockType::Shared).expect("still held"));
        unlock(a.as_fd(), LockKind::Ofd).expect("unlock");
        assert!(try_lock(b.as_fd(), LockKind::Ofd, LockType::Exclusive).expect("lock b after"));
    }

    #[test]
    fn shared_ofd_locks_coexist_and_block_exclusive() {
        let (_d, p) = scratch();
        let a = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .expect("open a");
        let b = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .expect("open b");
        assert!(try_lock(a.as_fd(), LockKind::Ofd, LockType::Shared).expect("a"));
        assert!(try_lock(b.as_fd(), LockKind::Ofd, LockType::Shared).expect("b"));
        // An upgrade of a shared lock fails while another reader is present.
        assert!(!try_lock(a.as_fd(), LockKind::Ofd, LockType::Exclusive).expect("upgrade"));
        unlock(b.as_fd(), LockKind::Ofd).expect("unlock b");
        assert!(try_lock(a.as_fd(), LockKind::Ofd, LockType::Exclusive).expect("upgrade now"));
    }

    #[test]
    fn a_lock_off_byte_zero_does_not_conflict() {
        let (_d, p) = scratch();
        let a = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .expect("open a");
        let b = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .expect("open b");
        assert!(try_lock(a.as_fd(), LockKind::Ofd, LockType::Exclusive).expect("a"));
        let qemu_range = ByteRange { start: 100, len: 1 };
        assert!(
            try_lock_range(b.as_fd(), LockKind::Ofd, LockType::Exclusive, qemu_range)
                .expect("b at 100")
        );
    }

    /// A minimal temp dir so this crate needs no dev-dependencies.
    mod tempdir_lite {
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static N: AtomicUsize = AtomicUsize::new(0);
                let n = N.fetch_add(1, Ordering::Relaxed);
                let p = std::env::temp_dir()
                    .join(format!("vmlock-sys-test-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&p).expect("mkdir");
                Dir(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}
