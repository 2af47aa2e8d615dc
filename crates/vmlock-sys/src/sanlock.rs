//! The client library of the sanlock daemon (`libsanlock_client.so.1`,
//! sanlock 3.x), loaded with `dlopen` on first use and driven through a
//! safe API. vmlock therefore builds without sanlock's headers and runs on
//! hosts without sanlock; the sanlock driver then fails with a clear error.
//!
//! The C structures, as `sanlock.h` lays them out (x86_64 and every other
//! LP64 target):
//!
//! ```text
//! struct sanlk_disk       1040 bytes  path[1024] (NUL-terminated), u64 offset, u32 pad1, pad2
//! struct sanlk_resource    128 bytes  lockspace_name[48], name[48], u64 lver, u64 data64,
//!                                     u32 data32, unused, flags, num_disks;
//!                                     then num_disks sanlk_disk (a flexible array)
//! struct sanlk_lockspace  1104 bytes  name[48], u64 host_id, u32 flags, (4), sanlk_disk
//! struct sanlk_options      56 bytes  owner_name[48], u32 flags, u32 len
//! ```
//!
//! Every call returns 0 (or a count, or a descriptor) on success and a
//! negative number on failure: `-errno`, or one of sanlock's own codes
//! (`SANLK_*`, -200 and below) that `sanlock_strerror` names. Which daemon
//! the library talks to comes from `SANLOCK_RUN_DIR` in this process's
//! environment (default `/run/sanlock`).

use std::ffi::{CStr, c_char, c_int, c_void};
use std::fmt;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

use crate::dl;

/// The library loaded.
pub const SONAME: &str = "libsanlock_client.so.1";
/// Room for a lockspace or resource name, terminating NUL included.
pub const NAME_LEN: usize = 48;
/// Room for a lease path, terminating NUL included.
pub const PATH_LEN: usize = 1024;
/// Most resources one acquire can take.
pub const MAX_RESOURCES: usize = 8;
/// Most disks (replicas) one resource can have.
pub const MAX_DISKS: usize = 4;
/// Room for a killpath program and for its arguments, NUL included.
pub const HELPER_LEN: usize = 128;

/// Resource flag: the `lver` field is set (acquire only that version).
pub const RES_LVER: u32 = 0x1;
/// Resource flag: a shared lease.
pub const RES_SHARED: u32 = 0x4;
/// `restrict` flag: no further calls on the registered connection.
pub const RESTRICT_ALL: u32 = 0x1;
/// `release` flag: every resource of the client; the list is ignored.
pub const REL_ALL: u32 = 0x1;
/// `inq_lockspace` flag: wait while the lockspace is being added or removed.
pub const INQ_WAIT: u32 = 0x1;
/// `rem_lockspace` flag: fail with `EBUSY` instead of killing its users.
pub const REM_UNUSED: u32 = 0x2;

/// `SANLK_ACQUIRE_IDLIVE`: the lease's owner is another host that is alive.
pub const ACQUIRE_IDLIVE: i32 = -243;
/// `SANLK_ACQUIRE_OWNED`: the lease is owned (not yet free).
pub const ACQUIRE_OWNED: i32 = -244;

#[repr(C)]
#[derive(Clone, Copy)]
struct RawDisk {
    path: [c_char; PATH_LEN],
    offset: u64,
    pad1: u32,
    pad2: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawResource {
    lockspace_name: [c_char; NAME_LEN],
    name: [c_char; NAME_LEN],
    lver: u64,
    data64: u64,
    data32: u32,
    unused: u32,
    flags: u32,
    num_disks: u32,
}

/// A resource with room for the most disks, so that the flexible array of
/// the C structure is an ordinary field here.
#[repr(C)]
struct RawResourceBuf {
    head: RawResource,
    disks: [RawDisk; MAX_DISKS],
}

#[repr(C)]
struct RawLockspace {
    name: [c_char; NAME_LEN],
    host_id: u64,
    flags: u32,
    host_id_disk: RawDisk,
}

#[repr(C)]
struct RawOptions {
    owner_name: [c_char; NAME_LEN],
    flags: u32,
    len: u32,
}

const _: () = {
    assert!(size_of::<RawDisk>() == 1040);
    assert!(size_of::<RawResource>() == 128);
    assert!(offset_of!(RawResourceBuf, disks) == 128);
    assert!(offset_of!(RawLockspace, host_id_disk) == 64);
    assert!(size_of::<RawLockspace>() == 1104);
    assert!(size_of::<RawOptions>() == 56);
};

type RegisterFn = unsafe extern "C" fn() -> c_int;
type RestrictFn = unsafe extern "C" fn(c_int, u32) -> c_int;
type KillpathFn = unsafe extern "C" fn(c_int, u32, *const c_char, *mut c_char) -> c_int;
type AcquireFn =
    unsafe extern "C" fn(c_int, c_int, u32, c_int, *mut *mut RawResource, *mut RawOptions) -> c_int;
type ReleaseFn = unsafe extern "C" fn(c_int, c_int, u32, c_int, *mut *mut RawResource) -> c_int;
type InquireFn = unsafe extern "C" fn(c_int, c_int, u32, *mut c_int, *mut *mut c_char) -> c_int;
type StateToArgsFn =
    unsafe extern "C" fn(*mut c_char, *mut c_int, *mut *mut *mut RawResource) -> c_int;
type LockspaceFn = unsafe extern "C" fn(*mut RawLockspace, u32) -> c_int;
type AddLockspaceFn = unsafe extern "C" fn(*mut RawLockspace, u32, u32) -> c_int;
type WriteLockspaceFn = unsafe extern "C" fn(*mut RawLockspace, c_int, u32, u32) -> c_int;
type WriteResourceFn = unsafe extern "C" fn(*mut RawResource, c_int, c_int, u32) -> c_int;
type AlignFn = unsafe extern "C" fn(*mut RawDisk) -> c_int;
type StrerrorFn = unsafe extern "C" fn(c_int) -> *const c_char;

/// A failed sanlock call: its return value and what it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SanlockError {
    /// The negative return value (`-errno` or `SANLK_*`).
    pub rv: i32,
    /// `sanlock_strerror(rv)` for sanlock's own codes, `strerror(-rv)` otherwise.
    pub message: String,
}

impl SanlockError {
    /// Whether this is one of sanlock's own codes (-200 and below), which
    /// libvirt reports by name rather than as a system error.
    pub fn is_sanlock_code(&self) -> bool {
        self.rv <= -200
    }

    /// The errno of a system error (`None` for sanlock's own codes).
    pub fn errno(&self) -> Option<i32> {
        (!self.is_sanlock_code()).then_some(-self.rv)
    }

    fn local(errno: i32) -> SanlockError {
        SanlockError {
            rv: -errno,
            message: crate::strerror(errno),
        }
    }
}

impl fmt::Display for SanlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SanlockError {}

/// One disk (replica) of a lease: a file or device and an offset in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// The lease file or device.
    pub path: String,
    /// Byte offset of the lease in it.
    pub offset: u64,
}

/// A resource lease (`struct sanlk_resource`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// The lockspace it belongs to.
    pub lockspace: String,
    /// Its name.
    pub name: String,
    /// Where it lives (1 to [`MAX_DISKS`]).
    pub disks: Vec<Disk>,
    /// The lease version (with [`RES_LVER`]).
    pub lver: u64,
    /// `RES_*` flags.
    pub flags: u32,
}

/// A lockspace (`struct sanlk_lockspace`): the delta lease of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lockspace {
    /// Its name.
    pub name: String,
    /// This host's id in it (1..=2000; 0 when only initialising).
    pub host_id: u64,
    /// `SANLK_LSF_*` flags.
    pub flags: u32,
    /// Where its host records live.
    pub disk: Disk,
}

/// Copies `s` into a fixed C buffer, NUL-terminated; refuses what does not
/// fit and inner NULs.
fn fill(dst: &mut [c_char], s: &str) -> Result<(), SanlockError> {
    if s.len() >= dst.len() {
        return Err(SanlockError::local(libc::ENAMETOOLONG));
    }
    if s.bytes().any(|b| b == 0) {
        return Err(SanlockError::local(libc::EINVAL));
    }
    for (d, b) in dst.iter_mut().zip(s.bytes()) {
        *d = b as c_char;
    }
    dst[s.len()] = 0;
    Ok(())
}

/// Reads a fixed C buffer that may lack its terminating NUL.
fn read(src: &[c_char]) -> String {
    let bytes: Vec<u8> = src
        .iter()
        .map(|&c| c as u8)
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

const EMPTY_DISK: RawDisk = RawDisk {
    path: [0; PATH_LEN],
    offset: 0,
    pad1: 0,
    pad2: 0,
};

fn raw_disk(d: &Disk) -> Result<RawDisk, SanlockError> {
    let mut raw = EMPTY_DISK;
    fill(&mut raw.path, &d.path)?;
    raw.offset = d.offset;
    Ok(raw)
}

fn raw_resource(r: &Resource) -> Result<Box<RawResourceBuf>, SanlockError> {
    if r.disks.is_empty() || r.disks.len() > MAX_DISKS {
        return Err(SanlockError::local(libc::EINVAL));
    }
    let mut buf = Box::new(RawResourceBuf {
        head: RawResource {
            lockspace_name: [0; NAME_LEN],
            name: [0; NAME_LEN],
            lver: r.lver,
            data64: 0,
            data32: 0,
            unused: 0,
            flags: r.flags,
            num_disks: r.disks.len() as u32,
        },
        disks: [EMPTY_DISK; MAX_DISKS],
    });
    fill(&mut buf.head.lockspace_name, &r.lockspace)?;
    fill(&mut buf.head.name, &r.name)?;
    for (raw, d) in buf.disks.iter_mut().zip(&r.disks) {
        *raw = raw_disk(d)?;
    }
    Ok(buf)
}

fn raw_lockspace(ls: &Lockspace) -> Result<Box<RawLockspace>, SanlockError> {
    let mut raw = Box::new(RawLockspace {
        name: [0; NAME_LEN],
        host_id: ls.host_id,
        flags: ls.flags,
        host_id_disk: raw_disk(&ls.disk)?,
    });
    fill(&mut raw.name, &ls.name)?;
    Ok(raw)
}

/// Resources laid out for a call, with the array of pointers C wants.
struct RawList {
    _bufs: Vec<Box<RawResourceBuf>>,
    ptrs: Vec<*mut RawResource>,
}

fn raw_list(res: &[Resource]) -> Result<RawList, SanlockError> {
    if res.len() > MAX_RESOURCES {
        return Err(SanlockError::local(libc::EINVAL));
    }
    let mut bufs = res
        .iter()
        .map(raw_resource)
        .collect::<Result<Vec<_>, _>>()?;
    let ptrs = bufs
        .iter_mut()
        .map(|b| std::ptr::from_mut::<RawResourceBuf>(b).cast::<RawResource>())
        .collect();
    Ok(RawList { _bufs: bufs, ptrs })
}

fn sock_arg(sock: Option<BorrowedFd<'_>>) -> c_int {
    sock.map_or(-1, |s| s.as_raw_fd())
}

/// The entry points of `libsanlock_client.so.1`.
#[derive(Debug)]
pub struct Sanlock {
    register: RegisterFn,
    restrict: RestrictFn,
    killpath: KillpathFn,
    acquire: AcquireFn,
    release: ReleaseFn,
    inquire: InquireFn,
    state_to_args: StateToArgsFn,
    add_lockspace: AddLockspaceFn,
    inq_lockspace: LockspaceFn,
    rem_lockspace: LockspaceFn,
    write_lockspace: WriteLockspaceFn,
    write_resource: WriteResourceFn,
    align: AlignFn,
    strerror: StrerrorFn,
}

/// The library, loaded on first use; the error says why it could not be.
pub fn library() -> Result<&'static Sanlock, dl::DlError> {
    static LIB: OnceLock<Result<Sanlock, dl::DlError>> = OnceLock::new();
    LIB.get_or_init(Sanlock::load)
        .as_ref()
        .map_err(Clone::clone)
}

macro_rules! symbols {
    ($lib:expr; $($field:ident: $ty:ty = $name:literal),* $(,)?) => {
        Sanlock { $(
            // SAFETY: `$name` is a function of libsanlock_client's public API
            // (sanlock_resource.h, sanlock_admin.h, sanlock.h of sanlock 3.x)
            // whose C signature is exactly `$ty`.
            $field: unsafe { std::mem::transmute::<*mut c_void, $ty>($lib.symbol($name)?) },
        )* }
    };
}

impl Sanlock {
    fn load() -> Result<Sanlock, dl::DlError> {
        let lib = dl::Library::open(SONAME)?;
        Ok(symbols!(lib;
            register: RegisterFn = "sanlock_register",
            restrict: RestrictFn = "sanlock_restrict",
            killpath: KillpathFn = "sanlock_killpath",
            acquire: AcquireFn = "sanlock_acquire",
            release: ReleaseFn = "sanlock_release",
            inquire: InquireFn = "sanlock_inquire",
            state_to_args: StateToArgsFn = "sanlock_state_to_args",
            add_lockspace: AddLockspaceFn = "sanlock_add_lockspace_timeout",
            inq_lockspace: LockspaceFn = "sanlock_inq_lockspace",
            rem_lockspace: LockspaceFn = "sanlock_rem_lockspace",
            write_lockspace: WriteLockspaceFn = "sanlock_write_lockspace",
            write_resource: WriteResourceFn = "sanlock_write_resource",
            align: AlignFn = "sanlock_align",
            strerror: StrerrorFn = "sanlock_strerror",
        ))
    }

    /// What `rv` means: `sanlock_strerror` for sanlock's codes, the C
    /// library's text for errno values.
    pub fn error(&self, rv: i32) -> SanlockError {
        if rv > -200 {
            return SanlockError::local(-rv);
        }
        // SAFETY: sanlock_strerror takes any int and returns a pointer to a
        // static, NUL-terminated string (never NULL in sanlock 3.x; checked).
        let p = unsafe { (self.strerror)(rv) };
        let text = if p.is_null() {
            String::new()
        } else {
            // SAFETY: non-NULL static string, see above.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        };
        // sanlock 3.8 names only some of its codes; keep the number for the rest.
        let message = match text.as_str() {
            "" => format!("sanlock error {rv}"),
            "Unknown error" => format!("Unknown error (sanlock error {rv})"),
            _ => text,
        };
        SanlockError { rv, message }
    }

    fn check(&self, rv: c_int) -> Result<c_int, SanlockError> {
        if rv < 0 { Err(self.error(rv)) } else { Ok(rv) }
    }

    /// `sanlock_register`: a new connection to the daemon that owns the
    /// leases acquired on it; they are released when it is closed.
    pub fn register(&self) -> Result<OwnedFd, SanlockError> {
        // SAFETY: no arguments; returns a new socket descriptor or -errno.
        let fd = self.check(unsafe { (self.register)() })?;
        // SAFETY: on success the return value is a freshly opened socket that
        // nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// `sanlock_restrict` on a registered connection.
    pub fn restrict(&self, sock: BorrowedFd<'_>, flags: u32) -> Result<(), SanlockError> {
        // SAFETY: `sock` is an open descriptor for the duration of the call.
        self.check(unsafe { (self.restrict)(sock.as_raw_fd(), flags) })?;
        Ok(())
    }

    /// `sanlock_killpath`: the program the daemon runs (with `args`) instead
    /// of killing the client when its leases are lost.
    pub fn killpath(
        &self,
        sock: BorrowedFd<'_>,
        path: &str,
        args: &str,
    ) -> Result<(), SanlockError> {
        let mut p = [0 as c_char; HELPER_LEN];
        let mut a = [0 as c_char; HELPER_LEN];
        fill(&mut p, path)?;
        fill(&mut a, args)?;
        // SAFETY: both buffers are NUL-terminated and live across the call;
        // the library copies them.
        self.check(unsafe { (self.killpath)(sock.as_raw_fd(), 0, p.as_ptr(), a.as_mut_ptr()) })?;
        Ok(())
    }

    /// `sanlock_acquire`: on the registered connection `sock`, or (with
    /// `None`) for the separately registered process `pid`.
    pub fn acquire(
        &self,
        sock: Option<BorrowedFd<'_>>,
        pid: i32,
        flags: u32,
        res: &[Resource],
        owner_name: &str,
    ) -> Result<(), SanlockError> {
        let mut list = raw_list(res)?;
        let mut opt = RawOptions {
            owner_name: [0; NAME_LEN],
            flags: 0,
            len: 0,
        };
        // sanlock only displays the owner name: cut it to fit, on a char boundary.
        let mut cut = owner_name.len().min(NAME_LEN - 1);
        while !owner_name.is_char_boundary(cut) {
            cut -= 1;
        }
        fill(&mut opt.owner_name, &owner_name[..cut].replace('\0', ""))?;
        // SAFETY: `list.ptrs` holds `res.len()` pointers to complete
        // resources (num_disks disks follow each header) that live across the
        // call; `opt` is a complete sanlk_options with len 0.
        self.check(unsafe {
            (self.acquire)(
                sock_arg(sock),
                pid,
                flags,
                list.ptrs.len() as c_int,
                list.ptrs.as_mut_ptr(),
                &mut opt,
            )
        })?;
        Ok(())
    }

    /// `sanlock_release`, addressed like [`Sanlock::acquire`].
    pub fn release(
        &self,
        sock: Option<BorrowedFd<'_>>,
        pid: i32,
        flags: u32,
        res: &[Resource],
    ) -> Result<(), SanlockError> {
        let mut list = raw_list(res)?;
        // SAFETY: as in `acquire`.
        self.check(unsafe {
            (self.release)(
                sock_arg(sock),
                pid,
                flags,
                list.ptrs.len() as c_int,
                list.ptrs.as_mut_ptr(),
            )
        })?;
        Ok(())
    }

    /// `sanlock_inquire`: how many leases the client holds and their state
    /// string (`RESOURCE RESOURCE …`, each `LS:NAME:PATH:OFFSET:LVER`).
    pub fn inquire(
        &self,
        sock: Option<BorrowedFd<'_>>,
        pid: i32,
    ) -> Result<(usize, String), SanlockError> {
        let mut count: c_int = 0;
        let mut state: *mut c_char = std::ptr::null_mut();
        // SAFETY: both out-pointers are valid; on success `state` is NULL or
        // a malloc'ed NUL-terminated string that we own.
        let rv = unsafe { (self.inquire)(sock_arg(sock), pid, 0, &mut count, &mut state) };
        let text = if state.is_null() {
            String::new()
        } else {
            // SAFETY: non-NULL, malloc'ed and NUL-terminated (see above);
            // copied out, then freed exactly once.
            let t = unsafe { CStr::from_ptr(state) }
                .to_string_lossy()
                .into_owned();
            // SAFETY: allocated by the library with malloc, owned by us.
            unsafe { libc::free(state.cast()) };
            t
        };
        self.check(rv)?;
        Ok((usize::try_from(count).unwrap_or(0), text))
    }

    /// `sanlock_state_to_args`: the resources of a state string from
    /// [`Sanlock::inquire`].
    pub fn state_to_resources(&self, state: &str) -> Result<Vec<Resource>, SanlockError> {
        let mut text: Vec<u8> = state.as_bytes().to_vec();
        if text.contains(&0) {
            return Err(SanlockError::local(libc::EINVAL));
        }
        text.push(0);
        let mut count: c_int = 0;
        let mut args: *mut *mut RawResource = std::ptr::null_mut();
        // SAFETY: `text` is a writable NUL-terminated buffer (the library may
        // write into it while splitting); on success `args` is a malloc'ed
        // array of `count` malloc'ed resources that we own.
        let rv = unsafe { (self.state_to_args)(text.as_mut_ptr().cast(), &mut count, &mut args) };
        self.check(rv)?;
        let mut out = Vec::new();
        let n = usize::try_from(count).unwrap_or(0);
        for i in 0..n {
            // SAFETY: `args` holds `count` valid pointers (see above).
            let p = unsafe { *args.add(i) };
            if p.is_null() {
                continue;
            }
            // SAFETY: `p` points to a complete resource header followed by
            // `num_disks` disks, allocated together by the library.
            let head = unsafe { &*p };
            let disks = (0..head.num_disks as usize)
                .map(|d| {
                    // SAFETY: disk `d` < num_disks lies inside the allocation.
                    let raw = unsafe { &*p.add(1).cast::<RawDisk>().add(d) };
                    Disk {
                        path: read(&raw.path),
                        offset: raw.offset,
                    }
                })
                .collect();
            out.push(Resource {
                lockspace: read(&head.lockspace_name),
                name: read(&head.name),
                disks,
                lver: head.lver,
                flags: head.flags,
            });
            // SAFETY: each resource was malloc'ed by the library and is
            // freed once, after the last read of it.
            unsafe { libc::free(p.cast()) };
        }
        if !args.is_null() {
            // SAFETY: the array was malloc'ed by the library; freed once.
            unsafe { libc::free(args.cast()) };
        }
        Ok(out)
    }

    fn lockspace_call(
        &self,
        ls: &Lockspace,
        call: impl FnOnce(*mut RawLockspace) -> c_int,
    ) -> Result<(), SanlockError> {
        let mut raw = raw_lockspace(ls)?;
        self.check(call(&mut *raw))?;
        Ok(())
    }

    /// `sanlock_add_lockspace_timeout`: join the lockspace as `ls.host_id`
    /// (blocks until the delta lease is held; `EEXIST` if it already is).
    pub fn add_lockspace(
        &self,
        ls: &Lockspace,
        flags: u32,
        io_timeout: u32,
    ) -> Result<(), SanlockError> {
        // SAFETY: `raw` is a complete sanlk_lockspace alive across the call.
        self.lockspace_call(ls, |raw| unsafe {
            (self.add_lockspace)(raw, flags, io_timeout)
        })
    }

    /// `sanlock_inq_lockspace`: `Ok` if the lockspace is joined, `ENOENT` if not.
    pub fn inq_lockspace(&self, ls: &Lockspace, flags: u32) -> Result<(), SanlockError> {
        // SAFETY: as in `add_lockspace`.
        self.lockspace_call(ls, |raw| unsafe { (self.inq_lockspace)(raw, flags) })
    }

    /// `sanlock_rem_lockspace`: leave the lockspace.
    pub fn rem_lockspace(&self, ls: &Lockspace, flags: u32) -> Result<(), SanlockError> {
        // SAFETY: as in `add_lockspace`.
        self.lockspace_call(ls, |raw| unsafe { (self.rem_lockspace)(raw, flags) })
    }

    /// `sanlock_write_lockspace`: initialise the lockspace's host records on
    /// disk (`max_hosts` 0: sanlock's default).
    pub fn write_lockspace(
        &self,
        ls: &Lockspace,
        max_hosts: i32,
        flags: u32,
        io_timeout: u32,
    ) -> Result<(), SanlockError> {
        // SAFETY: as in `add_lockspace`.
        self.lockspace_call(ls, |raw| unsafe {
            (self.write_lockspace)(raw, max_hosts, flags, io_timeout)
        })
    }

    /// `sanlock_write_resource`: initialise a resource lease on disk.
    pub fn write_resource(&self, res: &Resource) -> Result<(), SanlockError> {
        let mut raw = raw_resource(res)?;
        let p = std::ptr::from_mut::<RawResourceBuf>(&mut raw).cast::<RawResource>();
        // SAFETY: `p` points to a complete resource with its disks, alive
        // across the call.
        self.check(unsafe { (self.write_resource)(p, 0, 0, 0) })?;
        Ok(())
    }

    /// `sanlock_align`: the size of one lease area on `disk` (1 MiB for
    /// 512-byte sectors, 8 MiB for 4 KiB ones).
    pub fn align(&self, disk: &Disk) -> Result<u64, SanlockError> {
        let mut raw = raw_disk(disk)?;
        // SAFETY: `raw` is a complete sanlk_disk alive across the call.
        let rv = self.check(unsafe { (self.align)(&mut raw) })?;
        Ok(rv as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_leave_room_for_the_nul() {
        let mut buf = [0 as c_char; NAME_LEN];
        assert!(fill(&mut buf, &"x".repeat(NAME_LEN - 1)).is_ok());
        assert_eq!(read(&buf), "x".repeat(NAME_LEN - 1));
        let e = fill(&mut buf, &"x".repeat(NAME_LEN)).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENAMETOOLONG));
        assert_eq!(
            fill(&mut buf, "a\0b").unwrap_err().errno(),
            Some(libc::EINVAL)
        );
    }

    #[test]
    fn a_resource_is_laid_out_as_sanlock_h_says() {
        let r = Resource {
            lockspace: "LS".into(),
            name: "disk1".into(),
            disks: vec![
                Disk {
                    path: "/a".into(),
                    offset: 1 << 20,
                },
                Disk {
                    path: "/b".into(),
                    offset: 0,
                },
            ],
            lver: 7,
            flags: RES_SHARED,
        };
        let raw = raw_resource(&r).unwrap();
        assert_eq!(read(&raw.head.lockspace_name), "LS");
        assert_eq!(read(&raw.head.name), "disk1");
        assert_eq!(
            (raw.head.num_disks, raw.head.flags, raw.head.lver),
            (2, RES_SHARED, 7)
        );
        assert_eq!(read(&raw.disks[0].path), "/a");
        assert_eq!(raw.disks[0].offset, 1 << 20);
        assert_eq!(read(&raw.disks[1].path), "/b");
        let none = Resource { disks: vec![], ..r };
        assert_eq!(
            raw_resource(&none).err().and_then(|e| e.errno()),
            Some(libc::EINVAL)
        );
    }

    #[test]
    fn errors_name_errno_or_sanlock_codes() {
        let e = SanlockError::local(libc::EEXIST);
        assert_eq!(
            (e.rv, e.errno(), e.is_sanlock_code()),
            (-17, Some(17), false)
        );
        assert_eq!(e.message, "File exists");
        if let Ok(lib) = library() {
            let e = lib.error(ACQUIRE_IDLIVE);
            assert!(e.is_sanlock_code() && e.errno().is_none());
            assert!(!e.message.is_empty(), "{e:?}");
        }
    }
}
