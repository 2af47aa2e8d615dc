//! A client of vmlockd's inquiry program on the admin socket
//! (`docs/inquiry.md`): the daemon's status, the held locks, forced release.
//!
//! ```text
//! admin socket: virtlockd-admin-sock beside the main socket (root only)
//! call  [len][prog 0x766d6c6b][vers 1][proc][CALL][serial][OK][args]
//! reply the same header, REPLY, status OK + result | ERROR + virErrorPtr
//! ```
//!
//! Each call opens its own connection, sends one frame and reads one reply.
//! libvirt's virtlockd does not serve this program: it closes the
//! connection, which reads as [`InquiryError::Closed`].
//!
//! ```no_run
//! use vmlock_client::inquiry::{self, ListFilter};
//!
//! let admin = inquiry::admin_socket_for(&vmlock_client::default_socket_path());
//! let (rows, _total) = inquiry::list(&admin, ListFilter::default())?;
//! for r in rows {
//!     println!("{} held by pid {} ({})", r.name, r.pid, r.owner_name);
//! }
//! # Ok::<(), inquiry::InquiryError>(())
//! ```

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use thiserror::Error;
use vmlock_proto::error::WireError;
use vmlock_proto::frame::{FrameError, body_len, encode_frame, parse_body};
use vmlock_proto::header::{Header, MessageType, Status};
use vmlock_proto::inquiry::{PROGRAM, VERSION};
use vmlock_proto::xdr::{DecodeError, XdrDecode, XdrEncode};

pub use vmlock_proto::admin::{TypedParam, TypedValue};
pub use vmlock_proto::inquiry::{Call, ListFilter, LockRow, Procedure, RELEASE_TERMINATE, Ret};

/// The admin socket's file name.
pub const ADMIN_SOCKET_NAME: &str = "virtlockd-admin-sock";

/// The admin socket beside the main socket `main`.
pub fn admin_socket_for(main: &Path) -> PathBuf {
    main.with_file_name(ADMIN_SOCKET_NAME)
}

/// Why an inquiry failed.
#[derive(Debug, Error)]
pub enum InquiryError {
    /// The daemon cannot be reached (no daemon, no such socket, not root).
    #[error("cannot connect to {}: {source}{}", path.display(),
        if source.kind() == io::ErrorKind::PermissionDenied {
            " (the admin socket serves root only)"
        } else {
            ""
        })]
    Connect {
        /// The admin socket.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The daemon hung up without replying.
    #[error(
        "{} closed the connection: the daemon serves root only there (or is not vmlockd)",
        path.display()
    )]
    Closed {
        /// The admin socket.
        path: PathBuf,
    },
    /// Reading or writing the connection failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The admin socket.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The reply frame is malformed.
    #[error("bad reply frame: {0}")]
    Frame(#[from] FrameError),
    /// The reply payload does not decode.
    #[error("bad reply: {0}")]
    Payload(#[from] DecodeError),
    /// The reply answers another procedure.
    #[error("unexpected reply to {0}")]
    Unexpected(&'static str),
    /// The daemon answered with an error (libvirt's code, domain, message).
    #[error("{0}")]
    Daemon(Box<WireError>),
}

impl InquiryError {
    /// The daemon's error, if it answered with one.
    pub fn remote(&self) -> Option<&WireError> {
        match self {
            Self::Daemon(e) => Some(e),
            _ => None,
        }
    }
}

/// One call on a fresh connection to the admin socket `socket`.
pub fn call(socket: &Path, call: &Call) -> Result<Ret, InquiryError> {
    let mut s = UnixStream::connect(socket).map_err(|source| InquiryError::Connect {
        path: socket.into(),
        source,
    })?;
    let p = call.procedure();
    let h = Header {
        prog: PROGRAM,
        vers: VERSION,
        proc_: p.to_i32(),
        mtype: MessageType::Call,
        serial: 1,
        status: Status::Ok,
    };
    let broken = |source: io::Error| {
        if source.kind() == io::ErrorKind::UnexpectedEof {
            InquiryError::Closed {
                path: socket.into(),
            }
        } else {
            InquiryError::Io {
                path: socket.into(),
                source,
            }
        }
    };
    s.write_all(&encode_frame(&h, &call.to_xdr()))
        .map_err(broken)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).map_err(broken)?;
    let mut body = vec![0u8; body_len(len)?];
    s.read_exact(&mut body).map_err(broken)?;
    let msg = parse_body(&body)?;
    if msg.header.status == Status::Error {
        let e = WireError::from_xdr(&msg.payload)?;
        return Err(InquiryError::Daemon(Box::new(e)));
    }
    Ok(Ret::decode(p, &msg.payload)?)
}

/// STATUS: the daemon's named values (`docs/inquiry.md` lists them).
pub fn status(socket: &Path) -> Result<Vec<TypedParam>, InquiryError> {
    match call(socket, &Call::Status { flags: 0 })? {
        Ret::Status(params) => Ok(params),
        _ => Err(InquiryError::Unexpected("STATUS")),
    }
}

/// LIST: the rows matching `filter`, and how many matched in all (more
/// than the rows when the reply was full).
pub fn list(socket: &Path, filter: ListFilter) -> Result<(Vec<LockRow>, u32), InquiryError> {
    match call(socket, &Call::List { filter, flags: 0 })? {
        Ret::List { rows, total } => Ok((rows, total)),
        _ => Err(InquiryError::Unexpected("LIST")),
    }
}

/// RELEASE: forced release of `name` in `lockspace` (`""`: the default
/// lockspace, where the name is the disk path) held by `pid` (0: every
/// owner). A live holder is refused unless `terminate`, which ends it
/// first. Returns (owner occurrences released, holders terminated).
pub fn release(
    socket: &Path,
    lockspace: &str,
    name: &str,
    pid: u32,
    terminate: bool,
) -> Result<(u32, u32), InquiryError> {
    let c = Call::Release {
        lockspace: lockspace.to_owned(),
        name: name.to_owned(),
        pid,
        flags: if terminate { RELEASE_TERMINATE } else { 0 },
    };
    match call(socket, &c)? {
        Ret::Release {
            released,
            terminated,
        } => Ok((released, terminated)),
        _ => Err(InquiryError::Unexpected("RELEASE")),
    }
}

/// The value of the STATUS parameter `field`, if present.
pub fn param<'a>(params: &'a [TypedParam], field: &str) -> Option<&'a TypedValue> {
    params.iter().find(|p| p.field == field).map(|p| &p.value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use vmlock_proto::error::{code, domain};
    use vmlock_proto::route;

    #[test]
    fn admin_socket_sits_beside_the_main_one() {
        assert_eq!(
            admin_socket_for(Path::new("/run/libvirt/virtlockd-sock")),
            Path::new("/run/libvirt/virtlockd-admin-sock")
        );
    }

    /// Serves one connection with `answer(call header, payload)`.
    fn serve_once(
        answer: impl FnOnce(&Header, &[u8]) -> Vec<u8> + Send + 'static,
    ) -> (tempfile::TempDir, PathBuf, std::thread::JoinHandle<()>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin");
        let l = UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut len = [0u8; 4];
            c.read_exact(&mut len).unwrap();
            let mut body = vec![0u8; body_len(len).unwrap()];
            c.read_exact(&mut body).unwrap();
            let msg = parse_body(&body).unwrap();
            c.write_all(&answer(&msg.header, &msg.payload)).unwrap();
        });
        (dir, path, t)
    }

    #[test]
    fn a_list_call_and_its_reply() {
        let row = LockRow {
            name: "/d/a.img".into(),
            path: "/d/a.img".into(),
            owner_known: true,
            owner_name: "web1".into(),
            pid: 4242,
            ..LockRow::default()
        };
        let sent = row.clone();
        let (_d, path, t) = serve_once(move |h, payload| {
            assert_eq!((h.prog, h.vers, h.proc_), (PROGRAM, VERSION, 2));
            let Ok(Call::List { filter, .. }) =
                vmlock_proto::inquiry::decode_call(Procedure::List, payload)
            else {
                panic!("not a LIST call");
            };
            assert_eq!(filter.pid, Some(4242));
            let ret = Ret::List {
                rows: vec![sent],
                total: 1,
            };
            route::reply_with(h, &ret.to_xdr())
        });
        let filter = ListFilter {
            pid: Some(4242),
            ..ListFilter::default()
        };
        let (rows, total) = list(&path, filter).unwrap();
        t.join().unwrap();
        assert_eq!((rows, total), (vec![row], 1));
    }

    #[test]
    fn an_error_reply_is_the_daemons_error() {
        let (_d, path, t) = serve_once(|h, _| {
            let e = WireError::new(code::OPERATION_INVALID, domain::LOCKING, "not locked");
            route::reply_error(h, &e)
        });
        let e = release(&path, "", "/d/a.img", 0, false).unwrap_err();
        t.join().unwrap();
        assert_eq!(e.remote().map(|w| w.code), Some(code::OPERATION_INVALID));
        assert!(e.to_string().contains("not locked"), "{e}");
    }

    #[test]
    fn a_daemon_that_hangs_up_and_one_that_is_absent() {
        let (_d, path, t) = serve_once(|_, _| Vec::new());
        let e = status(&path).unwrap_err();
        t.join().unwrap();
        assert!(matches!(e, InquiryError::Closed { .. }), "{e:?}");
        assert!(e.to_string().contains("root only"), "{e}");
        let e = status(&path.with_file_name("absent")).unwrap_err();
        assert!(matches!(e, InquiryError::Connect { .. }), "{e:?}");
    }

    #[test]
    fn a_reply_for_another_procedure_is_refused() {
        let (_d, path, t) = serve_once(|h, _| {
            let ret = Ret::Release {
                released: 1,
                terminated: 0,
            };
            route::reply_with(h, &ret.to_xdr())
        });
        // A RELEASE body decoded as STATUS: a params count of 1 and too
        // few bytes after it.
        assert!(status(&path).is_err());
        t.join().unwrap();
    }
}
