//! The Linux kernel DLM through `libdlm_lt.so.3` (the single-threaded
//! libdlm of the `libdlm3` package), loaded with `dlopen` on first use and
//! driven through a safe API. vmlock therefore builds without libdlm's
//! headers and runs on hosts without it; the DLM back end then fails to
//! start with a clear error.
//!
//! Facts from `libdlm.h` and the kernel's user interface that this relies on:
//!
//! ```text
//! struct dlm_lksb   24 bytes  int sb_status, u32 sb_lkid, char sb_flags, char *sb_lvbptr
//! modes             LKM_PRMODE 3 (protected read), LKM_EXMODE 5 (exclusive)
//! flags             LKF_NOQUEUE 0x1, LKF_PERSISTENT 0x80, LKF_ORPHAN 0x4000
//! resource names    at most 64 bytes (DLM_RESNAME_MAXLEN)
//! dlm_ls_lock_wait / dlm_ls_unlock_wait
//!                   0, or -1 with errno = the lock's status (EAGAIN: refused
//!                   under LKF_NOQUEUE; EDEADLK: deadlock)
//! LKF_ORPHAN        a request with this flag adopts a persistent lock of
//!                   that name and mode that its process left behind; the
//!                   kernel answers at once (the lock id is the return value
//!                   of the write, no completion is queued): ENOENT when no
//!                   such orphan exists, EAGAIN when one exists in the other
//!                   mode
//! ```
//!
//! The `_lt` library completes a synchronous call by reading the
//! lockspace's device until that call's completion arrives, so two threads
//! must never be inside it at once for one lockspace: every call on a
//! [`Lockspace`] holds its mutex.

use std::ffi::{CString, c_char, c_int, c_void};
use std::fmt;
use std::mem::size_of;
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::dl;

/// The library loaded.
pub const SONAME: &str = "libdlm_lt.so.3";
/// The longest resource name the DLM accepts (`DLM_RESNAME_MAXLEN`).
pub const RESNAME_MAXLEN: usize = 64;
/// The longest lockspace name (`DLM_LOCKSPACE_LEN`).
pub const LOCKSPACE_MAXLEN: usize = 64;
/// `LKF_NOQUEUE`: fail with `EAGAIN` instead of waiting for a conflict.
pub const LKF_NOQUEUE: u32 = 0x1;
/// `LKF_PERSISTENT`: the lock outlives its process (it becomes an orphan).
pub const LKF_PERSISTENT: u32 = 0x80;
/// `LKF_ORPHAN`: adopt an orphan of this name and mode.
pub const LKF_ORPHAN: u32 = 0x4000;
/// `EUNLOCK`: the status of a successful unlock.
const EUNLOCK: c_int = 0x10002;

/// A lock mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// `LKM_PRMODE`: protected read, compatible with other PR locks.
    Pr,
    /// `LKM_EXMODE`: exclusive.
    Ex,
}

impl Mode {
    fn raw(self) -> u32 {
        match self {
            Mode::Pr => 3,
            Mode::Ex => 5,
        }
    }

    /// `"PR"` or `"EX"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Pr => "PR",
            Mode::Ex => "EX",
        }
    }
}

#[repr(C)]
struct RawLksb {
    sb_status: c_int,
    sb_lkid: u32,
    sb_flags: c_char,
    sb_lvbptr: *mut c_char,
}

const _: () = assert!(size_of::<RawLksb>() == 24);

impl RawLksb {
    fn new() -> RawLksb {
        RawLksb {
            sb_status: 0,
            sb_lkid: 0,
            sb_flags: 0,
            sb_lvbptr: std::ptr::null_mut(),
        }
    }
}

type Handle = *mut c_void;
type Ast = unsafe extern "C" fn(*mut c_void);
type OpenFn = unsafe extern "C" fn(*const c_char) -> Handle;
type CreateFn = unsafe extern "C" fn(*const c_char, libc::mode_t) -> Handle;
type CloseFn = unsafe extern "C" fn(Handle) -> c_int;
type GetFdFn = unsafe extern "C" fn(Handle) -> c_int;
type LockWaitFn = unsafe extern "C" fn(
    Handle,
    u32,
    *mut RawLksb,
    u32,
    *const c_void,
    u32,
    u32,
    *mut c_void,
    Option<Ast>,
    *mut c_void,
) -> c_int;
type LockFn = unsafe extern "C" fn(
    Handle,
    u32,
    *mut RawLksb,
    u32,
    *const c_void,
    u32,
    u32,
    Option<Ast>,
    *mut c_void,
    Option<Ast>,
    *mut c_void,
) -> c_int;
type UnlockWaitFn = unsafe extern "C" fn(Handle, u32, u32, *mut RawLksb) -> c_int;

struct Api {
    open: OpenFn,
    create: CreateFn,
    close: CloseFn,
    get_fd: GetFdFn,
    lock_wait: LockWaitFn,
    lock: LockFn,
    unlock_wait: UnlockWaitFn,
}

fn api() -> Result<&'static Api, DlmError> {
    static API: OnceLock<Result<Api, dl::DlError>> = OnceLock::new();
    API.get_or_init(load)
        .as_ref()
        .map_err(|e| DlmError::Library(e.to_string()))
}

fn load() -> Result<Api, dl::DlError> {
    let lib = dl::Library::open(SONAME)?;
    // SAFETY: each symbol is the libdlm function of that name, whose C
    // prototype in libdlm.h is the function type it is transmuted to; the
    // library is never unloaded, so the pointers stay valid.
    unsafe {
        Ok(Api {
            open: std::mem::transmute::<*mut c_void, OpenFn>(lib.symbol("dlm_open_lockspace")?),
            create: std::mem::transmute::<*mut c_void, CreateFn>(
                lib.symbol("dlm_create_lockspace")?,
            ),
            close: std::mem::transmute::<*mut c_void, CloseFn>(lib.symbol("dlm_close_lockspace")?),
            get_fd: std::mem::transmute::<*mut c_void, GetFdFn>(lib.symbol("dlm_ls_get_fd")?),
            lock_wait: std::mem::transmute::<*mut c_void, LockWaitFn>(
                lib.symbol("dlm_ls_lock_wait")?,
            ),
            lock: std::mem::transmute::<*mut c_void, LockFn>(lib.symbol("dlm_ls_lock")?),
            unlock_wait: std::mem::transmute::<*mut c_void, UnlockWaitFn>(
                lib.symbol("dlm_ls_unlock_wait")?,
            ),
        })
    }
}

/// Whether libdlm can be loaded here.
pub fn available() -> bool {
    api().is_ok()
}

/// A failed DLM call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DlmError {
    /// `libdlm_lt.so.3` cannot be loaded (package `libdlm3` missing).
    Library(String),
    /// A resource or lockspace name the DLM cannot take.
    BadName(String),
    /// The call failed with this errno.
    Os {
        /// What was attempted.
        op: &'static str,
        /// The errno (`EAGAIN` busy, `EDEADLK`, `ENOENT`, ...).
        errno: i32,
    },
}

impl DlmError {
    /// The errno of a failed call, if it was one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            DlmError::Os { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// The lock is held in a conflicting mode elsewhere (`EAGAIN` under
    /// `LKF_NOQUEUE`).
    pub fn is_busy(&self) -> bool {
        self.errno() == Some(libc::EAGAIN)
    }
}

impl fmt::Display for DlmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DlmError::Library(e) => write!(f, "libdlm is not available ({e}; package libdlm3)"),
            DlmError::BadName(e) => write!(f, "{e}"),
            DlmError::Os { op, errno } => {
                write!(f, "{op}: {}", std::io::Error::from_raw_os_error(*errno))
            }
        }
    }
}

impl std::error::Error for DlmError {}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// The completion routine of an adoption: nothing to do (the kernel queues
/// no completion for one; this is only there so that a stray one would be
/// harmless).
unsafe extern "C" fn ignore_ast(_arg: *mut c_void) {}

/// An open DLM lockspace. Locks taken through it with
/// [`LKF_PERSISTENT`] stay held (as orphans) when it is closed or the
/// process ends. The lockspace's descriptor is close-on-exec, so an `exec`
/// orphans them too.
pub struct Lockspace {
    handle: Handle,
    name: String,
    calls: Mutex<Box<RawLksb>>,
}

// SAFETY: the handle is libdlm's heap record of one lockspace; every call
// that uses it is made under `calls`, so no two threads use it at once.
unsafe impl Send for Lockspace {}
// SAFETY: as above.
unsafe impl Sync for Lockspace {}

impl fmt::Debug for Lockspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lockspace")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Lockspace {
    /// Opens the lockspace `name`, creating it (mode 0600, needs root) if
    /// it does not exist yet. Creating one joins it cluster-wide through
    /// `dlm_controld`, which must be running. libdlm then waits (up to
    /// 10 s) for udev to make `/dev/misc/dlm_<name>`.
    pub fn open_or_create(name: &str) -> Result<Lockspace, DlmError> {
        if name.is_empty() || name.len() > LOCKSPACE_MAXLEN - 1 || name.contains('/') {
            return Err(DlmError::BadName(format!(
                "DLM lockspace name {name:?} must be 1 to {} bytes without '/'",
                LOCKSPACE_MAXLEN - 1
            )));
        }
        let api = api()?;
        let c = CString::new(name)
            .map_err(|_| DlmError::BadName(format!("lockspace name contains NUL: {name:?}")))?;
        // Creating an existing lockspace opens it; only without the
        // privilege to create is plain opening tried.
        // SAFETY: `c` is a valid NUL-terminated string for the call.
        let mut h = unsafe { (api.create)(c.as_ptr(), 0o600) };
        if h.is_null() {
            // libdlm returns without setting errno when /proc/misc has no
            // dlm-control device (the dlm module is not loaded).
            let create_errno = match errno() {
                0 => libc::ENODEV,
                n => n,
            };
            if create_errno != libc::EPERM && create_errno != libc::EACCES {
                return Err(DlmError::Os {
                    op: "dlm_create_lockspace",
                    errno: create_errno,
                });
            }
            // SAFETY: as above.
            h = unsafe { (api.open)(c.as_ptr()) };
            if h.is_null() {
                return Err(DlmError::Os {
                    op: "dlm_open_lockspace",
                    errno: errno(),
                });
            }
        }
        // SAFETY: `h` is a lockspace handle libdlm just returned.
        let fd = unsafe { (api.get_fd)(h) };
        if fd >= 0 {
            // SAFETY: fcntl on a descriptor this process owns (libdlm's),
            // only adding FD_CLOEXEC to its descriptor flags.
            unsafe {
                let fl = libc::fcntl(fd, libc::F_GETFD);
                if fl >= 0 {
                    libc::fcntl(fd, libc::F_SETFD, fl | libc::FD_CLOEXEC);
                }
            }
        }
        Ok(Lockspace {
            handle: h,
            name: name.to_owned(),
            calls: Mutex::new(Box::new(RawLksb::new())),
        })
    }

    /// The lockspace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn calls(&self) -> MutexGuard<'_, Box<RawLksb>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a new lock on `resource` and returns its lock id; waits for
    /// the answer (never for a conflicting holder when `flags` has
    /// [`LKF_NOQUEUE`]).
    pub fn lock(&self, resource: &[u8], mode: Mode, flags: u32) -> Result<u32, DlmError> {
        check_resource(resource)?;
        let api = api()?;
        let _g = self.calls();
        let mut lksb = RawLksb::new();
        // SAFETY: the handle is open; `lksb` and `resource` outlive the
        // call, which returns only once the lock's completion has been read
        // (the `_lt` library dispatches it into `lksb`); the guard keeps
        // other calls off the lockspace's descriptor meanwhile. No blocking
        // callback is registered.
        let rv = unsafe {
            (api.lock_wait)(
                self.handle,
                mode.raw(),
                &mut lksb,
                flags & !LKF_ORPHAN,
                resource.as_ptr().cast(),
                resource.len() as u32,
                0,
                std::ptr::null_mut(),
                None,
                std::ptr::null_mut(),
            )
        };
        if rv != 0 {
            return Err(DlmError::Os {
                op: "dlm_ls_lock_wait",
                errno: errno(),
            });
        }
        if lksb.sb_status != 0 {
            return Err(DlmError::Os {
                op: "dlm_ls_lock_wait",
                errno: lksb.sb_status,
            });
        }
        Ok(lksb.sb_lkid)
    }

    /// Adopts the orphan lock of `resource` in `mode` (a persistent lock
    /// whose process ended) and returns its new lock id.
    pub fn adopt(&self, resource: &[u8], mode: Mode) -> Result<u32, DlmError> {
        check_resource(resource)?;
        let api = api()?;
        let mut g = self.calls();
        let lksb: &mut RawLksb = &mut g;
        lksb.sb_lkid = 0;
        // SAFETY: the handle is open; the status block lives as long as the
        // lockspace (a stray completion for it would land there, not in a
        // freed frame); `resource` outlives the call. The kernel returns the
        // adopted lock's id from the write itself.
        let rv = unsafe {
            (api.lock)(
                self.handle,
                mode.raw(),
                lksb,
                LKF_ORPHAN | LKF_PERSISTENT | LKF_NOQUEUE,
                resource.as_ptr().cast(),
                resource.len() as u32,
                0,
                Some(ignore_ast),
                std::ptr::null_mut(),
                None,
                std::ptr::null_mut(),
            )
        };
        if rv != 0 {
            return Err(DlmError::Os {
                op: "adopting an orphan lock",
                errno: errno(),
            });
        }
        match lksb.sb_lkid {
            0 => Err(DlmError::Os {
                op: "adopting an orphan lock",
                errno: libc::ENOENT,
            }),
            id => Ok(id),
        }
    }

    /// Releases the lock `lkid` (one this process took or adopted).
    pub fn unlock(&self, lkid: u32) -> Result<(), DlmError> {
        let api = api()?;
        let _g = self.calls();
        let mut lksb = RawLksb::new();
        // SAFETY: the handle is open; `lksb` outlives the call, which
        // returns once the unlock's completion has been read into it.
        let rv = unsafe { (api.unlock_wait)(self.handle, lkid, 0, &mut lksb) };
        if rv != 0 {
            return Err(DlmError::Os {
                op: "dlm_ls_unlock_wait",
                errno: errno(),
            });
        }
        if lksb.sb_status != 0 && lksb.sb_status != EUNLOCK {
            return Err(DlmError::Os {
                op: "dlm_ls_unlock_wait",
                errno: lksb.sb_status,
            });
        }
        Ok(())
    }
}

impl Drop for Lockspace {
    fn drop(&mut self) {
        if let Ok(api) = api() {
            let _g = self.calls();
            // SAFETY: the handle is open and used by no other call (the
            // guard); it is not used again. Closing leaves the lockspace
            // and its persistent locks in place.
            unsafe { (api.close)(self.handle) };
        }
    }
}

fn check_resource(resource: &[u8]) -> Result<(), DlmError> {
    if resource.is_empty() || resource.len() > RESNAME_MAXLEN {
        return Err(DlmError::BadName(format!(
            "DLM resource names are 1 to {RESNAME_MAXLEN} bytes, not {}",
            resource.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_any_call() {
        assert!(matches!(
            Lockspace::open_or_create(""),
            Err(DlmError::BadName(_))
        ));
        assert!(matches!(
            Lockspace::open_or_create(&"x".repeat(64)),
            Err(DlmError::BadName(_))
        ));
        assert!(matches!(
            Lockspace::open_or_create("a/b"),
            Err(DlmError::BadName(_))
        ));
        assert!(check_resource(&[b'a'; 64]).is_ok());
        assert!(check_resource(&[b'a'; 65]).is_err());
        assert!(check_resource(b"").is_err());
    }

    #[test]
    fn errors_say_what_failed() {
        let busy = DlmError::Os {
            op: "dlm_ls_lock_wait",
            errno: libc::EAGAIN,
        };
        assert!(busy.is_busy());
        assert!(busy.to_string().starts_with("dlm_ls_lock_wait: "));
        let lib = DlmError::Library("dlopen libdlm_lt.so.3: not found".into());
        assert!(!lib.is_busy());
        assert!(lib.to_string().contains("libdlm3"), "{lib}");
    }
}
