//! A tiny in-memory FUSE filesystem (one flat directory of empty files)
//! whose every operation can be made to hang on command, like an NFS
//! server that stopped answering.
//!
//! ```text
//! test ── Hang::set(true) ──► every FUSE request blocks in `gate()`
//!                              (the kernel keeps the caller waiting)
//! test ── Hang::set(false) ─► blocked requests proceed
//! ```
//! Entry and attribute TTLs are zero, so every `open`/`stat` of a path on
//! the mount reaches this process: nothing is answered from the kernel's
//! cache while the filesystem is hung. Byte-range locks are not forwarded
//! (no `FUSE_POSIX_LOCKS`), so the kernel handles `fcntl` locks locally.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyCreate, ReplyEmpty, ReplyEntry,
    ReplyOpen, Request,
};

const TTL: Duration = Duration::ZERO;

/// The hang switch, shared between the test and the filesystem thread.
#[derive(Debug, Clone, Default)]
pub struct Hang(Arc<(Mutex<HangState>, Condvar)>);

#[derive(Debug, Default)]
struct HangState {
    hung: bool,
    /// Requests that arrived while hung (and waited).
    blocked: u64,
}

impl Hang {
    /// Hangs (true) or releases (false) the filesystem.
    pub fn set(&self, hung: bool) {
        let (m, cv) = &*self.0;
        if let Ok(mut s) = m.lock() {
            s.hung = hung;
        }
        cv.notify_all();
    }

    /// How many requests have waited on the hang so far.
    pub fn blocked(&self) -> u64 {
        self.0.0.lock().map(|s| s.blocked).unwrap_or(0)
    }

    fn gate(&self) {
        let (m, cv) = &*self.0;
        let Ok(mut s) = m.lock() else { return };
        if s.hung {
            s.blocked += 1;
        }
        while s.hung {
            s = match cv.wait(s) {
                Ok(s) => s,
                Err(_) => return,
            };
        }
    }
}

/// Unhangs the filesystem when dropped, so a failing test never leaves
/// the daemon (or the unmount) stuck.
#[derive(Debug)]
pub struct Unhang(pub Hang);

impl Drop for Unhang {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

struct HangFs {
    hang: Hang,
    files: Mutex<(BTreeMap<String, u64>, u64)>,
}

fn attr(ino: u64, dir: bool) -> FileAttr {
    let now = SystemTime::now();
    FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: now,
        mtime: now,
        ctime: now,
        crtime: UNIX_EPOCH,
        kind: if dir {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: if dir { 0o755 } else { 0o600 },
        nlink: if dir { 2 } else { 1 },
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl HangFs {
    fn find(&self, name: &OsStr) -> Option<u64> {
        let files = self.files.lock().ok()?;
        files.0.get(name.to_str()?).copied()
    }

    fn exists(&self, ino: u64) -> bool {
        ino == 1
            || self
                .files
                .lock()
                .is_ok_and(|f| f.0.values().any(|i| *i == ino))
    }
}

impl Filesystem for HangFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.hang.gate();
        match self.find(name).filter(|_| parent.0 == 1) {
            Some(ino) => reply.entry(&TTL, &attr(ino, false), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.hang.gate();
        if self.exists(ino.0) {
            reply.attr(&TTL, &attr(ino.0, ino.0 == 1));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.hang.gate();
        reply.attr(&TTL, &attr(ino.0, ino.0 == 1));
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        self.hang.gate();
        let (Some(name), true, Ok(mut files)) = (name.to_str(), parent.0 == 1, self.files.lock())
        else {
            return reply.error(Errno::EACCES);
        };
        let (map, next) = &mut *files;
        let ino = *map.entry(name.to_string()).or_insert_with(|| {
            *next += 1;
            *next
        });
        reply.created(
            &TTL,
            &attr(ino, false),
            Generation(0),
            FileHandle(0),
            FopenFlags::empty(),
        );
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.hang.gate();
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.hang.gate();
        reply.ok();
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.hang.gate();
        let removed = parent.0 == 1
            && name
                .to_str()
                .is_some_and(|n| self.files.lock().is_ok_and(|mut f| f.0.remove(n).is_some()));
        if removed {
            reply.ok()
        } else {
            reply.error(Errno::ENOENT)
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        self.hang.gate();
        reply.ok();
    }
}

/// A mounted [`HangFs`]. Dropping it unhangs and lazily unmounts.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    mountpoint: std::path::PathBuf,
    /// The switch.
    pub hang: Hang,
}

impl Mounted {
    /// Mounts a fresh filesystem (type `fuse.vmlockhang`) on `mountpoint`.
    pub fn mount(mountpoint: &Path) -> std::io::Result<Mounted> {
        let hang = Hang::default();
        let fs = HangFs {
            hang: hang.clone(),
            files: Mutex::new((BTreeMap::new(), 1)),
        };
        let mut cfg = Config::default();
        cfg.mount_options = vec![
            MountOption::FSName("vmlockhang".into()),
            MountOption::Subtype("vmlockhang".into()),
        ];
        let session = fuser::spawn_mount(fs, mountpoint, &cfg)?;
        Ok(Mounted {
            session: Some(session),
            mountpoint: mountpoint.to_path_buf(),
            hang,
        })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.hang.set(false);
        // Lazy unmount: never fails on a busy mount, and nothing is left
        // in this namespace even if a descriptor is still open somewhere.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.mountpoint)
            .status();
        drop(self.session.take());
    }
}
