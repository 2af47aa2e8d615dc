//! Errors and exit codes.
//!
//! ```text
//! 0  success                    2  usage error (bad flags or arguments)
//! 1  any other error            3  busy: a resource is locked by another owner
//! exec only: CMD's own status, 128+N if CMD died of signal N,
//!            126 if CMD cannot be executed, 127 if it is not found
//! ```

use std::io;

use thiserror::Error;
use vmlock::LockError;
use vmlock_client::ClientError;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: an error.
pub const EXIT_ERROR: u8 = 1;
/// Exit code: usage error (also what clap uses).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: a resource is locked by another owner.
pub const EXIT_BUSY: u8 = 3;
/// Exit code: CMD exists but cannot be executed.
pub const EXIT_CANNOT_EXEC: u8 = 126;
/// Exit code: CMD not found.
pub const EXIT_NOT_FOUND: u8 = 127;

/// What can make vmlockctl fail.
#[derive(Debug, Error)]
pub enum CtlError {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// A resource is locked; the message names it and, where visible, the holder.
    #[error("{0}")]
    Busy(String),
    /// Naming or a local check of the lock driver failed.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The daemon refused or the connection failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The daemon's inquiry program failed or refused (`status`, `list`,
    /// `release --force`).
    #[error("{0}")]
    Inquiry(String),
    /// A local operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// CMD could not be run.
    #[error("cannot run {cmd}")]
    Exec {
        /// The command.
        cmd: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl CtlError {
    /// The documented exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage(_) => EXIT_USAGE,
            CtlError::Busy(_) => EXIT_BUSY,
            CtlError::Exec { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                EXIT_NOT_FOUND
            }
            CtlError::Exec { .. } => EXIT_CANNOT_EXEC,
            _ => EXIT_ERROR,
        }
    }

    /// The message with its chain of causes, `a: b: c`.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cur = std::error::Error::source(self);
        while let Some(e) = cur {
            let text = e.to_string();
            if !out.ends_with(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            cur = e.source();
        }
        out
    }
}
