//! Loads a libvirt lock-driver plugin (`lockd.so`) with `dlopen` and drives
//! it through a safe API, exactly as libvirt's `lock_manager.c` would.
//!
//! The plugin exports one data symbol, `virLockDriverImpl`, a driver table
//! (`src/locking/lock_driver.h`, ABI version 1000000):
//!
//! ```text
//! offset  field            C type
//!      0  version          unsigned int
//!      4  flags            unsigned int
//!      8  drvInit          int (*)(unsigned version, const char *configFile, unsigned flags)
//!     16  drvDeinit        int (*)(void)
//!     24  drvNew           int (*)(virLockManager *, unsigned type, size_t n, virLockManagerParam *, unsigned flags)
//!     32  drvFree          void (*)(virLockManager *)
//!     40  drvAddResource   int (*)(virLockManager *, unsigned type, const char *name, size_t n, virLockManagerParam *, unsigned flags)
//!     48  drvAcquire       int (*)(virLockManager *, const char *state, unsigned flags, int action, int *fd)
//!     56  drvRelease       int (*)(virLockManager *, char **state, unsigned flags)
//!     64  drvInquire       int (*)(virLockManager *, char **state, unsigned flags)
//! ```
//!
//! A parameter (`virLockManagerParam`) is 32 bytes: `int type` (then 4
//! bytes of padding), `const char *key`, and a 16-byte union of int, long
//! long, unsigned, unsigned long long, double, `char *` and `uuid[16]`.
//!
//! Errors come from libvirt's thread-local last error, read through
//! `virGetLastError` / `virGetLastErrorMessage` of `libvirt.so.0` (which the
//! plugin links against anyway). Everything here is single-threaded by
//! construction: the types hold raw pointers and are neither `Send` nor
//! `Sync`.

use std::cell::Cell;
use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::fmt;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

/// The plugin ABI version libvirt 9.0 asks for.
pub const LOCK_MANAGER_VERSION: u32 = 1_000_000;
/// `drvNew` flag: the domain has just been started.
pub const NEW_STARTED: u32 = 1;
/// `drvAcquire` flag: only register the owner, acquire nothing.
pub const ACQUIRE_REGISTER_ONLY: u32 = 1;
/// `drvAcquire` flag: restrict the connection handed out as fd.
pub const ACQUIRE_RESTRICT: u32 = 2;
/// Resource flag: read-only disk (lockd never locks these).
pub const RESOURCE_READONLY: u32 = 1;
/// Resource flag: shared, writable disk.
pub const RESOURCE_SHARED: u32 = 2;

const OBJECT_TYPE_DOMAIN: c_uint = 0;
const RESOURCE_TYPE_DISK: c_uint = 0;
const RESOURCE_TYPE_LEASE: c_uint = 1;
const PARAM_STRING: c_int = 0;
const PARAM_CSTRING: c_int = 1;
const PARAM_UINT: c_int = 4;
const PARAM_ULONG: c_int = 5;
const PARAM_UUID: c_int = 7;

#[repr(C)]
#[derive(Clone, Copy)]
union ParamValue {
    i: c_int,
    l: i64,
    ui: c_uint,
    ul: u64,
    d: f64,
    str_: *const c_char,
    uuid: [u8; 16],
}

#[repr(C)]
struct RawParam {
    ty: c_int,
    key: *const c_char,
    value: ParamValue,
}

#[repr(C)]
struct RawManager {
    driver: *const RawDriver,
    private_data: *mut c_void,
}

type InitFn = unsafe extern "C" fn(c_uint, *const c_char, c_uint) -> c_int;
type DeinitFn = unsafe extern "C" fn() -> c_int;
type NewFn = unsafe extern "C" fn(*mut RawManager, c_uint, usize, *mut RawParam, c_uint) -> c_int;
type FreeFn = unsafe extern "C" fn(*mut RawManager);
type AddFn = unsafe extern "C" fn(
    *mut RawManager,
    c_uint,
    *const c_char,
    usize,
    *mut RawParam,
    c_uint,
) -> c_int;
type AcquireFn =
    unsafe extern "C" fn(*mut RawManager, *const c_char, c_uint, c_int, *mut c_int) -> c_int;
type StateFn = unsafe extern "C" fn(*mut RawManager, *mut *mut c_char, c_uint) -> c_int;

#[repr(C)]
struct RawDriver {
    version: c_uint,
    flags: c_uint,
    init: Option<InitFn>,
    deinit: Option<DeinitFn>,
    new: Option<NewFn>,
    free: Option<FreeFn>,
    add_resource: Option<AddFn>,
    acquire: Option<AcquireFn>,
    release: Option<StateFn>,
    inquire: Option<StateFn>,
}

/// The leading fields of libvirt's `virError`; only these are read.
#[repr(C)]
struct RawErrorPrefix {
    code: c_int,
    domain: c_int,
    message: *const c_char,
}

type GetLastErrorFn = unsafe extern "C" fn() -> *const RawErrorPrefix;
type GetLastErrorMessageFn = unsafe extern "C" fn() -> *const c_char;
type VoidFn = unsafe extern "C" fn();
type InitializeFn = unsafe extern "C" fn() -> c_int;

/// A failure reported by the plugin (libvirt's last error) or by loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    /// `virErrorNumber` (0 when libvirt set no error, e.g. a load failure).
    pub code: i32,
    /// `virErrorDomain`.
    pub domain: i32,
    /// `virGetLastErrorMessage()`, or the loader's own text.
    pub message: String,
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "error {} (domain {}): {}",
            self.code, self.domain, self.message
        )
    }
}

impl std::error::Error for PluginError {}

fn local_error(message: impl Into<String>) -> PluginError {
    PluginError {
        code: 0,
        domain: 0,
        message: message.into(),
    }
}

fn cstring(s: &str) -> Result<CString, PluginError> {
    CString::new(s).map_err(|_| local_error(format!("string contains NUL: {s:?}")))
}

fn dlopen(path: &str) -> Result<crate::dl::Library, PluginError> {
    crate::dl::Library::open(path).map_err(|e| local_error(e.to_string()))
}

fn dlsym(handle: crate::dl::Library, name: &str) -> Result<*mut c_void, PluginError> {
    handle.symbol(name).map_err(|e| local_error(e.to_string()))
}

/// Entry points of `libvirt.so.0` used for error reporting.
struct Libvirt {
    last_error: GetLastErrorFn,
    last_message: GetLastErrorMessageFn,
    reset: VoidFn,
}

impl Libvirt {
    fn load() -> Result<Libvirt, PluginError> {
        let h = dlopen("libvirt.so.0")?;
        let init = dlsym(h, "virInitialize")?;
        let last_error = dlsym(h, "virGetLastError")?;
        let last_message = dlsym(h, "virGetLastErrorMessage")?;
        let reset = dlsym(h, "virResetLastError")?;
        // SAFETY: these symbols are functions of libvirt's public API with
        // exactly these C signatures (libvirt-host.h, virterror.h).
        let (init, last_error, last_message, reset) = unsafe {
            (
                std::mem::transmute::<*mut c_void, InitializeFn>(init),
                std::mem::transmute::<*mut c_void, GetLastErrorFn>(last_error),
                std::mem::transmute::<*mut c_void, GetLastErrorMessageFn>(last_message),
                std::mem::transmute::<*mut c_void, VoidFn>(reset),
            )
        };
        // SAFETY: virInitialize takes no arguments and may be called more
        // than once; it sets up libvirt's error and thread-local machinery.
        if unsafe { init() } < 0 {
            return Err(local_error("virInitialize failed"));
        }
        Ok(Libvirt {
            last_error,
            last_message,
            reset,
        })
    }

    fn reset(&self) {
        // SAFETY: virResetLastError has no preconditions.
        unsafe { (self.reset)() }
    }

    /// libvirt's last error of this thread, as a [`PluginError`].
    fn error(&self) -> PluginError {
        // SAFETY: virGetLastError returns NULL or a pointer to this thread's
        // error object, valid until the next libvirt call; we only read the
        // two leading ints.
        let e = unsafe { (self.last_error)() };
        let (code, domain) = if e.is_null() {
            (0, 0)
        } else {
            // SAFETY: non-NULL, points to a live virError (see above).
            unsafe { ((*e).code, (*e).domain) }
        };
        // SAFETY: virGetLastErrorMessage never returns NULL; the string is
        // valid until the next libvirt call, and is copied out at once.
        let m = unsafe { (self.last_message)() };
        let message = if m.is_null() {
            String::new()
        } else {
            // SAFETY: non-NULL, NUL-terminated (see above).
            unsafe { CStr::from_ptr(m) }.to_string_lossy().into_owned()
        };
        PluginError {
            code,
            domain,
            message,
        }
    }
}

/// A loaded lock-driver plugin.
///
/// The library is never unloaded: libvirt's own loader also keeps plugins
/// for the life of the process, and unloading code that registered
/// thread-local destructors is unsound.
pub struct Plugin {
    driver: *const RawDriver,
    libvirt: Libvirt,
    initialized: Cell<bool>,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("version", &self.version())
            .field("initialized", &self.initialized.get())
            .finish()
    }
}

impl Plugin {
    /// `dlopen`s the plugin at `path` (`RTLD_NOW|RTLD_LOCAL`) and reads its
    /// `virLockDriverImpl` table. Also loads and initialises `libvirt.so.0`.
    pub fn load(path: &Path) -> Result<Plugin, PluginError> {
        let libvirt = Libvirt::load()?;
        let text = path
            .to_str()
            .ok_or_else(|| local_error("plugin path is not UTF-8"))?;
        let handle = dlopen(text)?;
        let driver = dlsym(handle, "virLockDriverImpl")? as *const RawDriver;
        let plugin = Plugin {
            driver,
            libvirt,
            initialized: Cell::new(false),
        };
        let complete = {
            let d = plugin.table();
            d.init.is_some()
                && d.deinit.is_some()
                && d.new.is_some()
                && d.free.is_some()
                && d.add_resource.is_some()
                && d.acquire.is_some()
                && d.release.is_some()
                && d.inquire.is_some()
        };
        if !complete {
            return Err(local_error("driver table has NULL entries"));
        }
        Ok(plugin)
    }

    fn table(&self) -> &RawDriver {
        // SAFETY: `driver` is the address of the plugin's static
        // `virLockDriverImpl` (a `virLockDriver`, layout mirrored by
        // `RawDriver`); the library is never unloaded, so it lives forever.
        unsafe { &*self.driver }
    }

    /// The ABI version the plugin implements (1000000 for lockd).
    pub fn version(&self) -> u32 {
        self.table().version
    }

    /// The driver's flags word (`USES_STATE = 1`; lockd has 0).
    pub fn flags(&self) -> u32 {
        self.table().flags
    }

    /// `drvInit(1000000, config_file, flags)`.
    pub fn init(&self, config_file: Option<&Path>, flags: u32) -> Result<(), PluginError> {
        let init = self.table().init.ok_or_else(|| local_error("no drvInit"))?;
        let conf = match config_file {
            Some(p) => Some(cstring(
                p.to_str()
                    .ok_or_else(|| local_error("config path is not UTF-8"))?,
            )?),
            None => None,
        };
        let conf_ptr = conf.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
        self.libvirt.reset();
        // SAFETY: drvInit has the signature `InitFn`; `conf_ptr` is NULL or a
        // NUL-terminated string that outlives the call.
        let rc = unsafe { init(LOCK_MANAGER_VERSION, conf_ptr, flags) };
        if rc < 0 {
            return Err(self.libvirt.error());
        }
        self.initialized.set(true);
        Ok(())
    }

    fn check(&self, rc: c_int) -> Result<(), PluginError> {
        if rc < 0 {
            Err(self.libvirt.error())
        } else {
            Ok(())
        }
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if let (true, Some(deinit)) = (self.initialized.get(), self.table().deinit) {
            // SAFETY: drvDeinit takes no arguments; it is called once, after
            // every Manager (which borrows the plugin) has been freed.
            unsafe { deinit() };
        }
    }
}

/// The owner of the locks: libvirt's domain parameters for `drvNew`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainParams {
    /// Domain UUID.
    pub uuid: [u8; 16],
    /// Domain name.
    pub name: String,
    /// Runtime domain id (lockd refuses 0).
    pub id: u32,
    /// The QEMU pid that owns the locks.
    pub pid: u32,
    /// Driver URI (ignored by lockd).
    pub uri: String,
}

/// One lock-manager object (`virLockManager`) for one domain.
pub struct Manager<'p> {
    plugin: &'p Plugin,
    raw: Box<RawManager>,
}

impl fmt::Debug for Manager<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager").finish_non_exhaustive()
    }
}

fn param(key: &CStr, ty: c_int, value: ParamValue) -> RawParam {
    RawParam {
        ty,
        key: key.as_ptr(),
        value,
    }
}

impl<'p> Manager<'p> {
    /// `drvNew(DOMAIN, [uuid, name, id, pid, uri], flags)`, with the params
    /// built as libvirt's `virDomainLockManagerNew` does.
    pub fn new(
        plugin: &'p Plugin,
        uuid: [u8; 16],
        name: &str,
        id: u32,
        pid: u32,
        flags: u32,
    ) -> Result<Manager<'p>, PluginError> {
        let params = DomainParams {
            uuid,
            name: name.to_string(),
            id,
            pid,
            uri: "qemu:///system".to_string(),
        };
        Self::with_params(plugin, &params, flags)
    }

    /// [`Manager::new`] with every parameter explicit.
    pub fn with_params(
        plugin: &'p Plugin,
        p: &DomainParams,
        flags: u32,
    ) -> Result<Manager<'p>, PluginError> {
        let new = plugin.table().new.ok_or_else(|| local_error("no drvNew"))?;
        let name = cstring(&p.name)?;
        let uri = cstring(&p.uri)?;
        let mut params = [
            param(c"uuid", PARAM_UUID, ParamValue { uuid: p.uuid }),
            param(
                c"name",
                PARAM_STRING,
                ParamValue {
                    str_: name.as_ptr(),
                },
            ),
            param(c"id", PARAM_UINT, ParamValue { ui: p.id }),
            param(c"pid", PARAM_UINT, ParamValue { ui: p.pid }),
            param(c"uri", PARAM_CSTRING, ParamValue { str_: uri.as_ptr() }),
        ];
        let mut raw = Box::new(RawManager {
            driver: plugin.driver,
            private_data: std::ptr::null_mut(),
        });
        plugin.libvirt.reset();
        // SAFETY: drvNew has the signature `NewFn`; `raw` is a valid
        // virLockManager that stays at a fixed heap address; `params` and
        // the strings it points into outlive the call (the plugin copies
        // what it keeps).
        let rc = unsafe {
            new(
                &mut *raw,
                OBJECT_TYPE_DOMAIN,
                params.len(),
                params.as_mut_ptr(),
                flags,
            )
        };
        plugin.check(rc)?;
        Ok(Manager { plugin, raw })
    }

    fn add(
        &mut self,
        ty: c_uint,
        name: &str,
        params: &mut [RawParam],
        flags: u32,
    ) -> Result<(), PluginError> {
        let add = self.plugin.table().add_resource;
        let add = add.ok_or_else(|| local_error("no drvAddResource"))?;
        let cname = cstring(name)?;
        let ptr = if params.is_empty() {
            std::ptr::null_mut()
        } else {
            params.as_mut_ptr()
        };
        self.plugin.libvirt.reset();
        // SAFETY: drvAddResource has the signature `AddFn`; the manager was
        // set up by drvNew; `cname` and `params` outlive the call.
        let rc = unsafe { add(&mut *self.raw, ty, cname.as_ptr(), params.len(), ptr, flags) };
        self.plugin.check(rc)
    }

    /// `drvAddResource(DISK, path, [], flags)`.
    pub fn add_disk(
        &mut self,
        path: &str,
        readonly: bool,
        shared: bool,
    ) -> Result<(), PluginError> {
        let mut flags = 0;
        if readonly {
            flags |= RESOURCE_READONLY;
        }
        if shared {
            flags |= RESOURCE_SHARED;
        }
        self.add(RESOURCE_TYPE_DISK, path, &mut [], flags)
    }

    /// `drvAddResource(LEASE, key, [path, offset, lockspace?], 0)`, as
    /// `virDomainLockManagerAddLease` builds it (no lockspace param if none).
    pub fn add_lease(
        &mut self,
        key: &str,
        path: &str,
        offset: u64,
        lockspace: Option<&str>,
    ) -> Result<(), PluginError> {
        let cpath = cstring(path)?;
        let cls = lockspace.map(cstring).transpose()?;
        let mut params = vec![
            param(
                c"path",
                PARAM_STRING,
                ParamValue {
                    str_: cpath.as_ptr(),
                },
            ),
            param(c"offset", PARAM_ULONG, ParamValue { ul: offset }),
        ];
        if let Some(ls) = &cls {
            params.push(param(
                c"lockspace",
                PARAM_STRING,
                ParamValue { str_: ls.as_ptr() },
            ));
        }
        self.add(RESOURCE_TYPE_LEASE, key, &mut params, 0)
    }

    /// `drvAcquire(NULL, flags, 0, &fd)`: asks for the leaked fd when the
    /// flags contain RESTRICT or REGISTER_ONLY (as at domain start), and
    /// passes a NULL fd pointer otherwise (as on resume or hot-plug).
    pub fn acquire(&mut self, flags: u32) -> Result<Option<OwnedFd>, PluginError> {
        let want_fd = flags & (ACQUIRE_RESTRICT | ACQUIRE_REGISTER_ONLY) != 0;
        self.acquire_with(flags, want_fd)
    }

    /// `drvAcquire` with an explicit choice of the fd out-parameter.
    pub fn acquire_with(
        &mut self,
        flags: u32,
        want_fd: bool,
    ) -> Result<Option<OwnedFd>, PluginError> {
        let acquire = self.plugin.table().acquire;
        let acquire = acquire.ok_or_else(|| local_error("no drvAcquire"))?;
        let mut fd: c_int = -1;
        let fd_ptr: *mut c_int = if want_fd {
            &mut fd
        } else {
            std::ptr::null_mut()
        };
        self.plugin.libvirt.reset();
        // SAFETY: drvAcquire has the signature `AcquireFn`; a NULL state is
        // allowed; `fd_ptr` is NULL or points to a live int.
        let rc = unsafe { acquire(&mut *self.raw, std::ptr::null(), flags, 0, fd_ptr) };
        self.plugin.check(rc)?;
        if fd < 0 {
            return Ok(None);
        }
        // SAFETY: on success the plugin stored a fresh dup()ed descriptor in
        // `fd` that nobody else owns (it is "leaked" to the caller).
        Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn state_call(&mut self, f: Option<StateFn>) -> Result<Option<String>, PluginError> {
        let f = f.ok_or_else(|| local_error("no drvRelease/drvInquire"))?;
        let mut state: *mut c_char = std::ptr::null_mut();
        self.plugin.libvirt.reset();
        // SAFETY: drvRelease/drvInquire have the signature `StateFn`;
        // `state` is a valid out-pointer.
        let rc = unsafe { f(&mut *self.raw, &mut state, 0) };
        self.plugin.check(rc)?;
        if state.is_null() {
            return Ok(None);
        }
        // SAFETY: a non-NULL state is a NUL-terminated string allocated with
        // g_malloc (= malloc) that the caller owns; copy it, then free it.
        let text = unsafe { CStr::from_ptr(state) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: see above; freed exactly once.
        unsafe { libc::free(state.cast()) };
        Ok(Some(text))
    }

    /// `drvRelease(&state, 0)`; returns the state string (always `None`
    /// for lockd).
    pub fn release(&mut self) -> Result<Option<String>, PluginError> {
        let f = self.plugin.table().release;
        self.state_call(f)
    }

    /// `drvInquire(&state, 0)`; returns the state string.
    pub fn inquire(&mut self) -> Result<Option<String>, PluginError> {
        let f = self.plugin.table().inquire;
        self.state_call(f)
    }
}

impl Drop for Manager<'_> {
    fn drop(&mut self) {
        if let Some(free) = self.plugin.table().free {
            // SAFETY: drvFree has the signature `FreeFn`; the manager was set
            // up by a successful drvNew and is freed exactly once.
            unsafe { free(&mut *self.raw) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_layout_matches_libvirt() {
        assert_eq!(std::mem::size_of::<ParamValue>(), 16);
        assert_eq!(std::mem::size_of::<RawParam>(), 32);
        assert_eq!(std::mem::offset_of!(RawParam, key), 8);
        assert_eq!(std::mem::offset_of!(RawParam, value), 16);
        assert_eq!(std::mem::offset_of!(RawDriver, init), 8);
        assert_eq!(std::mem::offset_of!(RawDriver, inquire), 64);
        assert_eq!(std::mem::size_of::<RawManager>(), 16);
    }

    const LOCKD: &str = "/usr/lib/x86_64-linux-gnu/libvirt/lock-driver/lockd.so";

    #[test]
    fn lockd_plugin_loads_and_checks_domain_params() {
        if !Path::new(LOCKD).exists() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{LOCKD} missing in CI"
            );
            return;
        }
        let p = Plugin::load(Path::new(LOCKD)).expect("load lockd.so");
        assert_eq!(p.version(), LOCK_MANAGER_VERSION);
        assert_eq!(p.flags(), 0);
        // libvirt always passes a config path; lockd refuses NULL but
        // accepts a path that does not exist.
        let e = p.init(None, 0).expect_err("NULL config path");
        assert_eq!((e.code, e.domain), (38, 42), "{e}");
        p.init(Some(Path::new("/nonexistent/qemu-lockd.conf")), 0)
            .expect("init with a missing config file");
        let e = Manager::new(&p, [7; 16], "vm", 0, 1, 0).expect_err("id 0 is refused");
        assert_eq!(
            e.message,
            "internal error: Missing ID parameter for domain object"
        );
        assert_eq!((e.code, e.domain), (1, 42));
        // virUUIDIsValid refuses a homogeneous UUID.
        let e = Manager::new(&p, [7; 16], "vm", 1, 1, 0).expect_err("homogeneous uuid");
        assert!(e.message.contains("Missing UUID parameter"), "{e}");
        let uuid = *b"0123456789abcdef";
        let mut m = Manager::new(&p, uuid, "vm", 1, 1, 0).expect("new");
        m.add_disk("/nonexistent/ro.img", true, false)
            .expect("read-only disk");
        assert_eq!(m.inquire().expect("inquire"), None);
        let e = m
            .add_lease("key", "/x", 4096, Some("ls"))
            .expect_err("offset must be 0");
        assert!(e.message.contains("Offset must be zero"), "{e}");
    }
}
