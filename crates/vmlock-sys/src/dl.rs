//! `dlopen`/`dlsym` for libraries loaded at run time (libvirt's plugins,
//! `libsanlock_client.so.1`), so that vmlock builds and runs on hosts
//! without them and reports their absence as an error.

use std::ffi::{CStr, CString, c_void};

/// Why a library or one of its symbols could not be loaded (the texts are
/// the dynamic loader's, from `dlerror`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DlError {
    /// The library name cannot be passed to C.
    #[error("library name contains NUL: {0:?}")]
    NulInLibrary(String),
    /// The symbol name cannot be passed to C.
    #[error("symbol name contains NUL: {0:?}")]
    NulInSymbol(String),
    /// `dlopen` failed.
    #[error("dlopen {path}: {reason}")]
    Open {
        /// The file path or soname.
        path: String,
        /// `dlerror`'s text.
        reason: String,
    },
    /// `dlsym` failed.
    #[error("dlsym {name}: {reason}")]
    Symbol {
        /// The symbol.
        name: String,
        /// `dlerror`'s text.
        reason: String,
    },
}

/// A loaded library; never closed, so symbols taken from it stay valid for
/// the life of the process.
#[derive(Debug, Clone, Copy)]
pub struct Library(*mut c_void);

// SAFETY: a dlopen handle is a process-wide token; dlsym may be called on it
// from any thread, and the library is never unloaded.
unsafe impl Send for Library {}
// SAFETY: as above; the handle itself is never mutated.
unsafe impl Sync for Library {}

fn dl_error() -> String {
    // SAFETY: dlerror has no preconditions; it returns NULL or a pointer to a
    // NUL-terminated string valid until the next dl* call on this thread,
    // and we copy it out at once.
    let p = unsafe { libc::dlerror() };
    if p.is_null() {
        return "unknown dynamic loader error".to_string();
    }
    // SAFETY: non-NULL result of dlerror, see above.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

impl Library {
    /// Loads `path` (a file path or a soname) with `RTLD_NOW | RTLD_LOCAL`.
    pub fn open(path: &str) -> Result<Library, DlError> {
        let c = CString::new(path).map_err(|_| DlError::NulInLibrary(path.to_owned()))?;
        // SAFETY: `c` is a valid NUL-terminated string for the call. Loading a
        // library runs its constructors; the libraries loaded here (libvirt's
        // lock plugins, libsanlock_client) are made to be loaded this way.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if h.is_null() {
            return Err(DlError::Open {
                path: path.to_owned(),
                reason: dl_error(),
            });
        }
        Ok(Library(h))
    }

    /// The address of the symbol `name`.
    pub fn symbol(&self, name: &str) -> Result<*mut c_void, DlError> {
        let c = CString::new(name).map_err(|_| DlError::NulInSymbol(name.to_owned()))?;
        // SAFETY: `self.0` came from a successful dlopen and is never closed;
        // `c` is a valid NUL-terminated string.
        let p = unsafe { libc::dlsym(self.0, c.as_ptr()) };
        if p.is_null() {
            return Err(DlError::Symbol {
                name: name.to_owned(),
                reason: dl_error(),
            });
        }
        Ok(p)
    }
}
