//! The errors of a client call: transport, protocol, or an ERROR reply from the daemon.

use std::io;
use std::path::PathBuf;

use thiserror::Error;
use vmlock_proto::error::{WireError, code};
use vmlock_proto::frame::FrameError;
use vmlock_proto::xdr::DecodeError;

/// What went wrong talking to the lock daemon.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Connecting to the socket failed.
    #[error("cannot connect to the lock daemon at {}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading or writing the connection failed (including EOF).
    #[error("lock daemon connection failed")]
    Io(#[from] io::Error),
    /// The daemon sent something that is not a valid reply to our call.
    #[error("lock daemon protocol error")]
    Protocol(#[from] ProtocolError),
    /// The daemon answered with an ERROR reply; `code`, `domain` and `message` are
    /// libvirt's.
    #[error("{0}")]
    Remote(Box<WireError>),
}

/// A reply that does not fit the call it answers.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// The length word or header is invalid.
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    /// The reply payload (error body or non-empty OK body) does not decode.
    #[error("bad reply payload: {0}")]
    Payload(#[from] DecodeError),
    /// The reply is for another program, procedure or serial, or is not a REPLY.
    #[error(
        "unexpected reply (prog {prog:#x} proc {proc_} serial {serial}) to proc {want_proc} serial {want_serial}"
    )]
    Mismatch {
        /// Program number received.
        prog: u32,
        /// Procedure received.
        proc_: i32,
        /// Serial received.
        serial: u32,
        /// Procedure called.
        want_proc: i32,
        /// Serial sent.
        want_serial: u32,
    },
    /// The reply status is neither OK nor ERROR.
    #[error("unexpected reply status {0}")]
    Status(i32),
}

impl ClientError {
    /// The daemon's error, if this is an ERROR reply.
    pub fn remote(&self) -> Option<&WireError> {
        match self {
            ClientError::Remote(w) => Some(w.as_ref()),
            _ => None,
        }
    }

    /// The libvirt error code of an ERROR reply.
    pub fn code(&self) -> Option<i32> {
        self.remote().map(|w| w.code)
    }

    /// Whether the daemon said the resource is locked (`VIR_ERR_RESOURCE_BUSY`, 87).
    ///
    /// Note that libvirt also uses code 87 for "not locked" on RELEASE (docs/quirks.md #6).
    pub fn is_busy(&self) -> bool {
        self.code() == Some(code::RESOURCE_BUSY)
    }
}
