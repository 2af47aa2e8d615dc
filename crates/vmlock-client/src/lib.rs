//! `vmlock-client`: a blocking client of virtlockd's lock-space protocol
//! (program 0x0EA7BEEF v1), for `vmlockd` and libvirt's `virtlockd` alike.
//!
//! ```text
//! call:  [len][prog vers proc CALL serial OK][args...]   serial = 0, 1, 2, ... per connection
//! reply: [len][prog vers proc REPLY serial OK]           void body
//!        [len][prog vers proc REPLY serial ERROR][virNetMessageError] -> ClientError::Remote
//! ```
//!
//! One [`Client`] is one connection. Calls are strictly one at a time, as libvirt's
//! own client does. Keepalive MESSAGE frames (the daemon never sends them, but a
//! future one might) are skipped while waiting for a reply.
//!
//! The connection's lifetime matters to the daemon (docs/protocol.md §5.4): when the peer
//! that registered *itself* as owner hangs up, the daemon releases that pid's
//! locks and kills the pid. To hand a restricted connection to a VM process,
//! take its descriptor with [`Client::into_stream`] (or duplicate it through
//! [`AsFd`]), clear close-on-exec, and let the child inherit it.
//!
//! [`inquiry`] is the client of vmlockd's own program on the admin socket:
//! who holds what, the daemon's status, forced release (`docs/inquiry.md`).

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod error;
pub mod inquiry;
mod path;

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use vmlock_proto::error::WireError;
use vmlock_proto::frame::{body_len, encode_message, parse_body};
use vmlock_proto::header::{Header, MessageType, Status};
use vmlock_proto::keepalive;
use vmlock_proto::lock::{
    CreateLockspaceArgs, NewArgs, Owner, PROGRAM, Procedure, RegisterArgs, ResourceArgs,
    RestrictArgs, VERSION,
};
use vmlock_proto::xdr::{XdrDecode, XdrEncode};

pub use error::{ClientError, ProtocolError};
pub use path::{PRIVILEGED_SOCKET, SOCKET_NAME, default_socket_path, socket_path_for};
pub use vmlock_proto::lock::{FLAG_AUTOCREATE, FLAG_SHARED};

/// One connection to a lock daemon.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    serial: u32,
}

impl Client {
    /// Connects to the daemon socket at `path`.
    pub fn connect(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        let path = path.as_ref();
        match UnixStream::connect(path) {
            Ok(s) => Ok(Client::from_stream(s)),
            Err(source) => Err(ClientError::Connect {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Wraps an already connected stream; the next serial is 0.
    pub fn from_stream(stream: UnixStream) -> Client {
        Client { stream, serial: 0 }
    }

    /// The serial the next call will carry.
    pub fn next_serial(&self) -> u32 {
        self.serial
    }

    /// Gives up the client and returns the connection.
    pub fn into_stream(self) -> UnixStream {
        self.stream
    }

    /// The connection's descriptor (see the crate docs for handing it to a child).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    /// REGISTER (proc 1): records `owner` on this connection. flags are 0.
    pub fn register(&mut self, owner: &Owner) -> Result<(), ClientError> {
        let args = RegisterArgs {
            owner: owner.clone(),
            flags: 0,
        };
        self.call(Procedure::Register, &args)
    }

    /// RESTRICT (proc 2): from now on every call on this connection is refused.
    pub fn restrict(&mut self) -> Result<(), ClientError> {
        self.call(Procedure::Restrict, &RestrictArgs { flags: 0 })
    }

    /// NEW (proc 3): creates a named lockspace; fails if it exists.
    pub fn new_lockspace(&mut self, path: &str) -> Result<(), ClientError> {
        let args = NewArgs {
            path: path.to_owned(),
            flags: 0,
        };
        self.call(Procedure::New, &args)
    }

    /// CREATE_RESOURCE (proc 4): creates the (unlocked) resource file.
    pub fn create_resource(&mut self, path: &str, name: &str) -> Result<(), ClientError> {
        self.resource_call(Procedure::CreateResource, path, name, 0)
    }

    /// DELETE_RESOURCE (proc 5): unlinks the resource file.
    pub fn delete_resource(&mut self, path: &str, name: &str) -> Result<(), ClientError> {
        self.resource_call(Procedure::DeleteResource, path, name, 0)
    }

    /// ACQUIRE_RESOURCE (proc 6) with [`FLAG_SHARED`] and/or [`FLAG_AUTOCREATE`].
    pub fn acquire_resource(
        &mut self,
        path: &str,
        name: &str,
        flags: u32,
    ) -> Result<(), ClientError> {
        self.resource_call(Procedure::AcquireResource, path, name, flags)
    }

    /// RELEASE_RESOURCE (proc 7). The daemon accepts no flags here; libvirt strips them.
    pub fn release_resource(&mut self, path: &str, name: &str) -> Result<(), ClientError> {
        self.resource_call(Procedure::ReleaseResource, path, name, 0)
    }

    /// CREATE_LOCKSPACE (proc 8): creates a named lockspace if missing (no
    /// registration needed).
    pub fn create_lockspace(&mut self, path: &str) -> Result<(), ClientError> {
        let args = CreateLockspaceArgs {
            path: path.to_owned(),
        };
        self.call(Procedure::CreateLockspace, &args)
    }

    fn resource_call(
        &mut self,
        proc_: Procedure,
        path: &str,
        name: &str,
        flags: u32,
    ) -> Result<(), ClientError> {
        let args = ResourceArgs {
            path: path.to_owned(),
            name: name.to_owned(),
            flags,
        };
        self.call(proc_, &args)
    }

    /// Sends one call and waits for its reply.
    pub fn call(&mut self, proc_: Procedure, args: &impl XdrEncode) -> Result<(), ClientError> {
        let header = Header {
            prog: PROGRAM,
            vers: VERSION,
            proc_: proc_.to_i32(),
            mtype: MessageType::Call,
            serial: self.serial,
            status: Status::Ok,
        };
        self.serial = self.serial.wrapping_add(1);
        self.stream.write_all(&encode_message(&header, args))?;
        self.read_reply(&header)
    }

    fn read_reply(&mut self, call: &Header) -> Result<(), ClientError> {
        loop {
            let mut len = [0u8; 4];
            self.stream.read_exact(&mut len)?;
            let n = body_len(len).map_err(ProtocolError::from)?;
            let mut body = vec![0u8; n];
            self.stream.read_exact(&mut body)?;
            let msg = parse_body(&body).map_err(ProtocolError::from)?;
            if keepalive::is_keepalive(&msg.header) {
                self.answer_keepalive(&msg.header)?;
                continue;
            }
            check_reply(call, &msg.header)?;
            return match msg.header.status {
                Status::Ok if msg.payload.is_empty() => Ok(()),
                Status::Ok => Err(ProtocolError::Payload(
                    vmlock_proto::xdr::DecodeError::TrailingBytes(msg.payload.len()),
                )
                .into()),
                Status::Error => {
                    let err = WireError::from_xdr(&msg.payload).map_err(ProtocolError::from)?;
                    Err(ClientError::Remote(Box::new(err)))
                }
                other => Err(ProtocolError::Status(other.to_i32()).into()),
            };
        }
    }

    fn answer_keepalive(&mut self, h: &Header) -> Result<(), ClientError> {
        if h.proc_ == keepalive::PROC_PING {
            self.stream.write_all(&keepalive::pong())?;
        }
        Ok(())
    }
}

impl AsFd for Client {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

/// Checks that `reply` answers `call`.
fn check_reply(call: &Header, reply: &Header) -> Result<(), ProtocolError> {
    let same = reply.prog == call.prog
        && reply.vers == call.vers
        && reply.proc_ == call.proc_
        && reply.serial == call.serial
        && reply.mtype == MessageType::Reply;
    if same {
        return Ok(());
    }
    Err(ProtocolError::Mismatch {
        prog: reply.prog,
        proc_: reply.proc_,
        serial: reply.serial,
        want_proc: call.proc_,
        want_serial: call.serial,
    })
}

/// Builds an [`Owner`] from its parts.
pub fn owner(uuid: [u8; 16], name: &str, id: u32, pid: u32) -> Owner {
    Owner {
        uuid,
        name: name.to_owned(),
        id,
        pid,
    }
}

#[cfg(test)]
mod tests;
