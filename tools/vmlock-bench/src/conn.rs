//! A blocking client connection that sends one call at a time and reads its reply.
//!
//! ```text
//! call:  set serial in the pre-encoded frame ─► write_all ─► [poll POLLIN] ─► read
//!        until the length word says done
//! ```
//!
//! The reply buffer is reused, and in the common case a reply arrives in one `read`, so
//! a call costs three system calls (two with [`Wait::Read`]) and no allocation.
//!
//! By default a client waits for its reply like libvirt's RPC client does (`poll` for
//! `POLLIN`, then `read`; seen with `strace` on `lockd.so`). A client blocked in `read`
//! instead is also woken each time the server merely consumes its request (the UNIX
//! socket's "writable" wake-up shares the wait queue, and only `poll` filters it), so
//! the server pays a second cross-CPU wake-up per call that no libvirt client causes;
//! [`Wait::Read`] keeps that behaviour for comparison with earlier runs.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use vmlock_proto::frame::body_len;

use crate::error::{BenchError, Result};
use crate::frames::{CallFrame, Outcome, parse_reply};

/// How long a single reply may take before the bench gives up.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// How a client waits for its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Wait {
    /// `poll(POLLIN)`, then `read`: what libvirt's client does.
    #[default]
    Poll,
    /// Block in `read` (earlier benchmark runs).
    Read,
}

/// One connection to a lock daemon.
#[derive(Debug)]
pub struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    serial: u32,
    wait: Wait,
}

impl Conn {
    /// Connects to the socket at `path`; replies are waited for with `poll`.
    pub fn connect(path: &Path) -> Result<Conn> {
        Conn::connect_waiting(path, Wait::Poll)
    }

    /// Connects to the socket at `path`, waiting for replies as `wait` says.
    pub fn connect_waiting(path: &Path, wait: Wait) -> Result<Conn> {
        let stream = UnixStream::connect(path)
            .map_err(BenchError::io(format!("connect {}", path.display())))?;
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(BenchError::io("set read timeout"))?;
        Ok(Conn {
            stream,
            buf: vec![0; 512],
            serial: 0,
            wait,
        })
    }

    /// Sends `frame` with the next serial and waits for its reply.
    pub fn call(&mut self, frame: &mut CallFrame) -> Result<Outcome> {
        let serial = self.serial;
        self.serial = self.serial.wrapping_add(1);
        frame.set_serial(serial);
        self.stream
            .write_all(frame.bytes())
            .map_err(BenchError::io("send call"))?;
        let len = self.read_frame()?;
        parse_reply(&self.buf[..len], frame.procedure(), serial)
    }

    /// Reads one whole frame into `buf`; returns its length.
    fn read_frame(&mut self) -> Result<usize> {
        let mut have = 0;
        let mut want = usize::MAX;
        while have < want {
            if have == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            if self.wait == Wait::Poll
                && !vmlock_sys::fd::wait_readable(self.stream.as_fd(), REPLY_TIMEOUT)
                    .map_err(BenchError::io("poll for reply"))?
            {
                return Err(BenchError::BadReply("no reply in time".into()));
            }
            let n = self
                .stream
                .read(&mut self.buf[have..])
                .map_err(BenchError::io("read reply"))?;
            if n == 0 {
                return Err(BenchError::BadReply("connection closed".into()));
            }
            have += n;
            if want == usize::MAX && have >= 4 {
                let word = [self.buf[0], self.buf[1], self.buf[2], self.buf[3]];
                want = 4 + body_len(word).map_err(|e| BenchError::BadReply(e.to_string()))?;
                if want > self.buf.len() {
                    self.buf.resize(want, 0);
                }
            }
        }
        if have > want {
            return Err(BenchError::BadReply("unsolicited bytes after reply".into()));
        }
        Ok(want)
    }

    /// REGISTER as synthetic owner `index` with `pid`; fails unless the reply is OK.
    pub fn register(&mut self, index: u32, pid: u32) -> Result<()> {
        self.call(&mut CallFrame::register(index, pid))?
            .require_ok("REGISTER")
    }
}
