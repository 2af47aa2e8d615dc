//! The filesystem side of the engine: every syscall that may block.
//!
//! Nothing here touches the engine's tables; callers run these functions
//! without holding the table lock (a hung NFS mount may block any of them).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};

use vmlock_sys::lock::{self, LockKind, LockType};

use crate::Error;

/// Race injection for the unit tests: called at named points of acquire.
#[cfg(test)]
pub(crate) mod hook {
    use std::cell::RefCell;

    type Hook = Box<dyn FnMut(&'static str, &str)>;

    thread_local! {
        static HOOK: RefCell<Option<Hook>> = RefCell::new(None);
    }

    pub(crate) fn set(h: Option<Hook>) {
        HOOK.with(|c| *c.borrow_mut() = h);
    }

    pub(crate) fn call(stage: &'static str, path: &str) {
        let h = HOOK.with(|c| c.borrow_mut().take());
        if let Some(mut h) = h {
            h(stage, path);
            HOOK.with(|c| {
                let mut slot = c.borrow_mut();
                if slot.is_none() {
                    *slot = Some(h);
                }
            });
        }
    }
}

/// Race injection point (a no-op outside unit tests).
#[inline(always)]
pub(crate) fn race_point(_stage: &'static str, _path: &str) {
    #[cfg(test)]
    hook::call(_stage, _path);
}

/// A file identity: `(st_dev, st_ino)`.
pub(crate) type Ident = (u64, u64);

/// `stat(path)` (follows symlinks) as an identity.
pub(crate) fn stat_ident(path: &str) -> io::Result<Ident> {
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// `fstat(fd)` as an identity.
pub(crate) fn file_ident(file: &File) -> io::Result<Ident> {
    vmlock_sys::fd::identity(file.as_fd())
}

/// Opens a lease file: `O_RDWR|O_CLOEXEC|O_NOCTTY`, plus
/// `O_CREAT|O_NOFOLLOW` and mode 0600 for AUTOCREATE; without `O_CLOEXEC`
/// when `inherit` (see [`crate::EngineOptions::inherit_fds`]).
pub(crate) fn open_resource(path: &str, autocreate: bool, inherit: bool) -> Result<File, Error> {
    let opened = if inherit {
        let create = if autocreate {
            libc::O_CREAT | libc::O_NOFOLLOW
        } else {
            0
        };
        vmlock_sys::fd::open_inherited(path, libc::O_RDWR | libc::O_NOCTTY | create, 0o600)
    } else {
        let mut opts = OpenOptions::new();
        opts.read(true).write(true);
        if autocreate {
            opts.create(true)
                .mode(0o600)
                .custom_flags(libc::O_NOCTTY | libc::O_NOFOLLOW);
        } else {
            opts.custom_flags(libc::O_NOCTTY);
        }
        opts.open(path)
    };
    opened.map_err(|e| Error::Open {
        path: path.to_owned(),
        errno: Error::io(&e),
        create: autocreate,
    })
}

/// Takes the byte-0 lock without waiting: `Ok(false)` when busy.
pub(crate) fn lock_file(
    file: &File,
    path: &str,
    kind: LockKind,
    shared: bool,
) -> Result<bool, Error> {
    let ty = if shared {
        LockType::Shared
    } else {
        LockType::Exclusive
    };
    lock::try_lock(file.as_fd(), kind, ty).map_err(|e| Error::Lock {
        path: path.to_owned(),
        errno: Error::io(&e),
    })
}

/// What must happen to a lease file when its resource goes away.
#[derive(Debug)]
pub(crate) struct Disposal {
    pub file: File,
    pub path: String,
    pub shared: bool,
    pub autocreate: bool,
    pub lock_held: bool,
    pub kind: LockKind,
    /// Inherited duplicates of the same file, closed after `file`.
    pub extra: Vec<File>,
}

/// Unlinks an AUTOCREATE lease file if no one else can hold it, then closes.
///
/// Exclusive: unlink (ENOENT ignored). Shared: unlink only if a
/// non-blocking upgrade to a write lock on the same descriptor succeeds.
pub(crate) fn dispose(d: Disposal) {
    if d.lock_held && d.autocreate {
        let may_unlink = !d.shared
            || matches!(
                lock::try_lock(d.file.as_fd(), d.kind, LockType::Exclusive),
                Ok(true)
            );
        if may_unlink && !still_names(&d.path, &d.file) {
            // The path was unlinked, replaced, or now leads (through a
            // swapped directory or symlink) to some other file, maybe one
            // that somebody else locks: never unlink that.
            tracing::warn!(path = %d.path, "lease path no longer names the locked file, not unlinking");
        } else if may_unlink {
            match std::fs::remove_file(&d.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    tracing::warn!(path = %d.path, error = %e, "failed to unlink lease file");
                }
                _ => {}
            }
        } else {
            tracing::debug!(path = %d.path, "shared lease still held elsewhere, not unlinking");
        }
    }
    drop(d.file);
    drop(d.extra);
}

/// Whether `path` (its last component not followed) still names `file`.
fn still_names(path: &str, file: &File) -> bool {
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return false;
    };
    file_ident(file).is_ok_and(|id| id == (m.dev(), m.ino()))
}

/// CREATE_RESOURCE: `virFileTouch(path, 0600)`: create or open, then close.
pub(crate) fn touch(path: &str) -> Result<(), Error> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
        .map_err(|e| Error::Touch {
            path: path.to_owned(),
            errno: Error::io(&e),
            close: false,
        })?;
    vmlock_sys::fd::close(file.into()).map_err(|e| Error::Touch {
        path: path.to_owned(),
        errno: Error::io(&e),
        close: true,
    })
}

/// DELETE_RESOURCE: unlink, ENOENT is fine.
pub(crate) fn delete(path: &str) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::Delete {
            path: path.to_owned(),
            errno: Error::io(&e),
        }),
        _ => Ok(()),
    }
}

/// Makes a lockspace directory: `mkdir -p` with mode 0700, or checks that
/// the existing path is a directory.
pub(crate) fn make_lockspace_dir(path: &str) -> Result<(), Error> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(Error::NotADirectory {
                path: path.to_owned(),
            });
        }
        Err(_) => {}
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| Error::CreateLockspace {
            path: path.to_owned(),
            errno: Error::io(&e),
        })
}
