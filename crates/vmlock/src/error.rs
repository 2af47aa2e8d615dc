//! Errors of the lock-manager API.
//!
//! Errors that libvirt's drivers report locally (before or without talking to a
//! daemon) keep libvirt's error code and exact text in [`LockError::Local`], so a
//! caller can show the same message virsh would.

use std::io;

use thiserror::Error;
use vmlock_client::ClientError;
use vmlock_conf::ConfError;

/// `VIR_ERR_INTERNAL_ERROR`.
pub const VIR_ERR_INTERNAL_ERROR: i32 = 1;
/// `VIR_ERR_CONFIG_UNSUPPORTED`.
pub const VIR_ERR_CONFIG_UNSUPPORTED: i32 = 67;
/// `VIR_ERR_RESOURCE_BUSY`.
pub const VIR_ERR_RESOURCE_BUSY: i32 = 87;

/// What a lock-manager operation can fail with.
#[derive(Debug, Error)]
pub enum LockError {
    /// `load` was given a name no driver is registered under.
    #[error("lock driver '{0}' is not known (available: nop, lockd, sanlock)")]
    UnknownDriver(String),
    /// The driver does not implement this operation.
    #[error("lock driver '{driver}' does not support {operation}")]
    Unsupported {
        /// Driver name.
        driver: &'static str,
        /// What was asked.
        operation: &'static str,
    },
    /// A check libvirt's driver makes itself; `code` is libvirt's error number and
    /// `message` its full text (template included).
    #[error("{message}")]
    Local {
        /// `virErrorNumber`.
        code: i32,
        /// Text as libvirt prints it.
        message: String,
    },
    /// The driver's config file could not be read or parsed.
    #[error("lock driver config")]
    Config(#[source] ConfError),
    /// A call about one resource failed; `resource` is the disk path or lease as the
    /// caller named it.
    #[error("cannot {action} {resource}")]
    Resource {
        /// `acquire` or `release`.
        action: &'static str,
        /// The disk path, or `lease KEY in LOCKSPACE`.
        resource: String,
        /// The daemon's answer.
        #[source]
        source: ClientError,
    },
    /// Any other exchange with the daemon failed (connect, REGISTER, RESTRICT, ...).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A local system operation failed (running `lvs`, duplicating the socket, ...).
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl LockError {
    /// An internal error with libvirt's `internal error: ` prefix.
    pub fn internal(detail: &str) -> LockError {
        LockError::Local {
            code: VIR_ERR_INTERNAL_ERROR,
            message: format!("internal error: {detail}"),
        }
    }

    /// Whether the failure is "somebody else holds the lock" (code 87 from the
    /// daemon on an acquire).
    pub fn is_busy(&self) -> bool {
        match self {
            LockError::Resource { action, source, .. } => *action == "acquire" && source.is_busy(),
            LockError::Client(c) => c.is_busy(),
            _ => false,
        }
    }

    /// The resource (disk path or lease) a [`LockError::Resource`] is about.
    pub fn resource(&self) -> Option<&str> {
        match self {
            LockError::Resource { resource, .. } => Some(resource),
            _ => None,
        }
    }

    /// libvirt's error code, where there is one.
    pub fn code(&self) -> Option<i32> {
        match self {
            LockError::Local { code, .. } => Some(*code),
            LockError::Resource { source, .. } | LockError::Client(source) => source.code(),
            _ => None,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = LockError> = std::result::Result<T, E>;
