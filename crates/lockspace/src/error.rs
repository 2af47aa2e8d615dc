//! The engine's one error type, with libvirt's exact detail texts.
//!
//! Every variant knows three things the daemon needs to build a wire error:
//! its closed [`ErrorKind`], the *detail* text libvirt puts in `str2` (and in
//! the message after the per-code template), and for system errors the
//! `errno` (libvirt's `int1`; the wire layer appends `": " + strerror`).
//!
//! # Wire mapping (pinned by a test in the daemon)
//!
//! | kind | code | domain | detail |
//! |---|---|---|---|
//! | `Busy` | 87 RESOURCE_BUSY | 51 LOCKSPACE | `Lockspace resource '<name>' is locked` |
//! | `NotLocked` | 87 RESOURCE_BUSY | 51 LOCKSPACE | `Lockspace resource '<name>' is not locked` |
//! | `NotOwner` | 1 INTERNAL_ERROR | 51 LOCKSPACE | `owner <pid> does not hold the resource lock` |
//! | `NoLockspace` | 1 INTERNAL_ERROR | 7 RPC | `Lockspace for path <path> does not exist` |
//! | `LockspaceExists` | 1 INTERNAL_ERROR | 7 RPC | `Lockspace for path <path> already exists` |
//! | `DefaultLockspaceExists` | 55 OPERATION_INVALID | 7 RPC | `the default lockspace already exists` |
//! | `NotADirectory` | 1 INTERNAL_ERROR | 51 LOCKSPACE | `Lockspace location <path> exists, but is not a directory` |
//! | `CreateLockspace` | 38 SYSTEM_ERROR | 51 LOCKSPACE | `Unable to create lockspace <path>` |
//! | `Open` | 38 SYSTEM_ERROR | 51 LOCKSPACE | `Unable to open/create resource <path>` (AUTOCREATE) or `Unable to open resource <path>` |
//! | `Lock` | 38 SYSTEM_ERROR | 51 LOCKSPACE | `Unable to acquire lock on '<path>'` |
//! | `Delete` | 38 SYSTEM_ERROR | 51 LOCKSPACE | `Unable to delete lockspace resource <path>` |
//! | `Touch` | 38 SYSTEM_ERROR | 0 NONE | `cannot create file '<path>'` (open) or `cannot save file '<path>'` (close) |
//! | `InvalidName` | 8 INVALID_ARG | 51 LOCKSPACE | `Resource name '<name>' is not valid: <reason>` (ours) |
//! | `AutocreateInDefault` | 55 OPERATION_INVALID | 51 LOCKSPACE | `Resource '<name>' cannot be auto-created in the default lockspace` (ours) |
//! | `ClusterBusy` | 87 RESOURCE_BUSY | 51 LOCKSPACE | `Lockspace resource '<name>' is locked by another host: <why>` (ours) |
//! | `Cluster` | 1 INTERNAL_ERROR | 51 LOCKSPACE | `Cluster lock manager failed for resource '<name>': <why>` (ours) |
//!
//! For code 38 the wire message is `<detail>: <strerror(errno)>`, which is
//! also what [`Error`]'s `Display` prints; for the other codes `Display`
//! prints the detail alone and the wire layer adds the per-code template.

use std::fmt;

/// The closed set of error kinds; one per [`Error`] variant (see the module
/// table for the wire code and domain of each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The resource (or an alias of the same file) is held, or in flight.
    Busy,
    /// Release of a resource nobody holds.
    NotLocked,
    /// Release by a pid that is not among the owners.
    NotOwner,
    /// The named lockspace does not exist.
    NoLockspace,
    /// NEW of a lockspace that exists.
    LockspaceExists,
    /// NEW of the default lockspace (`""`).
    DefaultLockspaceExists,
    /// The lockspace path exists and is not a directory.
    NotADirectory,
    /// mkdir of the lockspace directory failed (system error).
    CreateLockspace,
    /// open of the resource file failed (system error).
    Open,
    /// fcntl lock failed with something other than "busy" (system error).
    Lock,
    /// unlink in DELETE_RESOURCE failed (system error).
    Delete,
    /// CREATE_RESOURCE's touch failed (system error, domain NONE).
    Touch,
    /// A resource name refused by validation.
    InvalidName,
    /// AUTOCREATE asked for in the default lockspace.
    AutocreateInDefault,
    /// The cluster arbiter says another host holds the resource.
    ClusterBusy,
    /// The cluster arbiter failed.
    Cluster,
}

/// An engine error. See the module docs for the wire mapping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// `Lockspace resource '<name>' is locked`.
    #[error("Lockspace resource '{}' is locked", printable(name))]
    Busy {
        /// The resource name as the client sent it.
        name: String,
        /// The first owner pid of the resource held here that conflicts,
        /// if the conflict is with one (not with an acquire in flight or a
        /// lock taken outside this engine).
        holder: Option<u32>,
    },
    /// `Lockspace resource '<name>' is not locked`.
    #[error("Lockspace resource '{}' is not locked", printable(name))]
    NotLocked {
        /// The resource name as the client sent it.
        name: String,
    },
    /// `owner <pid> does not hold the resource lock`.
    #[error("owner {} does not hold the resource lock", *pid as i32)]
    NotOwner {
        /// The owner pid (printed as C's signed `pid_t`, as libvirt does).
        pid: u32,
    },
    /// `Lockspace for path <path> does not exist`.
    #[error("Lockspace for path {} does not exist", printable(path))]
    NoLockspace {
        /// The lockspace path.
        path: String,
    },
    /// `Lockspace for path <path> already exists`.
    #[error("Lockspace for path {} already exists", printable(path))]
    LockspaceExists {
        /// The lockspace path.
        path: String,
    },
    /// `the default lockspace already exists`.
    #[error("the default lockspace already exists")]
    DefaultLockspaceExists,
    /// `Lockspace location <path> exists, but is not a directory`.
    #[error(
        "Lockspace location {} exists, but is not a directory",
        printable(path)
    )]
    NotADirectory {
        /// The lockspace path.
        path: String,
    },
    /// `Unable to create lockspace <path>` + strerror.
    #[error("Unable to create lockspace {}: {}", printable(path), strerror(*errno))]
    CreateLockspace {
        /// The lockspace path.
        path: String,
        /// The failing errno.
        errno: i32,
    },
    /// `Unable to open/create resource <path>` or `Unable to open resource <path>`.
    #[error("{}: {}", open_detail(path, *create), strerror(*errno))]
    Open {
        /// The resource file path.
        path: String,
        /// The failing errno.
        errno: i32,
        /// Whether the open had `O_CREAT` (AUTOCREATE).
        create: bool,
    },
    /// `Unable to acquire lock on '<path>'` + strerror.
    #[error("Unable to acquire lock on '{}': {}", printable(path), strerror(*errno))]
    Lock {
        /// The resource file path.
        path: String,
        /// The failing errno.
        errno: i32,
    },
    /// `Unable to delete lockspace resource <path>` + strerror.
    #[error("Unable to delete lockspace resource {}: {}", printable(path), strerror(*errno))]
    Delete {
        /// The resource file path.
        path: String,
        /// The failing errno.
        errno: i32,
    },
    /// virFileTouch's `cannot create file '<path>'` / `cannot save file '<path>'`.
    #[error("{}: {}", touch_detail(path, *close), strerror(*errno))]
    Touch {
        /// The resource file path.
        path: String,
        /// The failing errno.
        errno: i32,
        /// Whether `close` (not `open`) failed.
        close: bool,
    },
    /// A name refused by validation (ours).
    #[error("Resource name '{}' is not valid: {reason}", printable(name))]
    InvalidName {
        /// The name as sent.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// AUTOCREATE in the default lockspace (ours; libvirt would unlink the disk).
    #[error(
        "Resource '{}' cannot be auto-created in the default lockspace",
        printable(name)
    )]
    AutocreateInDefault {
        /// The name as sent.
        name: String,
    },
    /// The cluster arbiter refused: another host holds the resource.
    #[error(
        "Lockspace resource '{}' is locked by another host: {why}",
        printable(name)
    )]
    ClusterBusy {
        /// The resource name.
        name: String,
        /// The arbiter's explanation.
        why: String,
    },
    /// The cluster arbiter failed.
    #[error(
        "Cluster lock manager failed for resource '{}': {why}",
        printable(name)
    )]
    Cluster {
        /// The resource name.
        name: String,
        /// The arbiter's explanation.
        why: String,
    },
}

/// Names may carry bytes a C string cannot: show NUL visibly.
fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        s.replace('\0', "\\0").into()
    } else {
        s.into()
    }
}

fn strerror(errno: i32) -> String {
    vmlock_sys::strerror(errno)
}

fn open_detail(path: &str, create: bool) -> String {
    if create {
        format!("Unable to open/create resource {}", printable(path))
    } else {
        format!("Unable to open resource {}", printable(path))
    }
}

fn touch_detail(path: &str, close: bool) -> String {
    let what = if close { "save" } else { "create" };
    format!("cannot {what} file '{}'", printable(path))
}

impl Error {
    /// The closed kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Busy { .. } => ErrorKind::Busy,
            Error::NotLocked { .. } => ErrorKind::NotLocked,
            Error::NotOwner { .. } => ErrorKind::NotOwner,
            Error::NoLockspace { .. } => ErrorKind::NoLockspace,
            Error::LockspaceExists { .. } => ErrorKind::LockspaceExists,
            Error::DefaultLockspaceExists => ErrorKind::DefaultLockspaceExists,
            Error::NotADirectory { .. } => ErrorKind::NotADirectory,
            Error::CreateLockspace { .. } => ErrorKind::CreateLockspace,
            Error::Open { .. } => ErrorKind::Open,
            Error::Lock { .. } => ErrorKind::Lock,
            Error::Delete { .. } => ErrorKind::Delete,
            Error::Touch { .. } => ErrorKind::Touch,
            Error::InvalidName { .. } => ErrorKind::InvalidName,
            Error::AutocreateInDefault { .. } => ErrorKind::AutocreateInDefault,
            Error::ClusterBusy { .. } => ErrorKind::ClusterBusy,
            Error::Cluster { .. } => ErrorKind::Cluster,
        }
    }

    /// The `errno` of a system error (`Some` exactly for the code-38 kinds).
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::CreateLockspace { errno, .. }
            | Error::Open { errno, .. }
            | Error::Lock { errno, .. }
            | Error::Delete { errno, .. }
            | Error::Touch { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// The exact detail text libvirt sends (without `": strerror"`).
    pub fn detail(&self) -> String {
        match self {
            Error::CreateLockspace { path, .. } => {
                format!("Unable to create lockspace {}", printable(path))
            }
            Error::Open { path, create, .. } => open_detail(path, *create),
            Error::Lock { path, .. } => format!("Unable to acquire lock on '{}'", printable(path)),
            Error::Delete { path, .. } => {
                format!("Unable to delete lockspace resource {}", printable(path))
            }
            Error::Touch { path, close, .. } => touch_detail(path, *close),
            other => other.to_string(),
        }
    }

    pub(crate) fn io(err: &std::io::Error) -> i32 {
        // std refuses a path with a NUL byte before any syscall, without an
        // errno: that is the caller's invalid argument, not an I/O error.
        err.raw_os_error().unwrap_or(match err.kind() {
            std::io::ErrorKind::InvalidInput => libc::EINVAL,
            _ => libc::EIO,
        })
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
