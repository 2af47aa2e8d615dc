//! The bench's error type: one enum for every way a measurement can fail.

use std::io;

use thiserror::Error;

/// Why a benchmark step failed.
#[derive(Debug, Error)]
pub enum BenchError {
    /// A socket, file or process operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The server sent bytes that are not a valid reply to the call.
    #[error("bad reply: {0}")]
    BadReply(String),
    /// The server answered a call that must succeed with an error.
    #[error("{call} failed with error code {code}, domain {domain}")]
    CallFailed {
        /// Which call.
        call: &'static str,
        /// `virErrorNumber`.
        code: i32,
        /// `virErrorDomain`.
        domain: i32,
    },
    /// A daemon or helper process misbehaved.
    #[error("{0}")]
    Process(String),
    /// The lock-driver plugin failed.
    #[error("plugin: {0}")]
    Plugin(String),
    /// A command-line value is unusable.
    #[error("invalid argument: {0}")]
    Usage(String),
}

impl BenchError {
    /// Wraps an I/O error with a description of the step.
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> BenchError {
        let what = what.into();
        move |source| BenchError::Io { what, source }
    }
}

/// Result alias.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;
