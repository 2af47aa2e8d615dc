//! A raw client connection: send bytes, read whole frames, observe closes.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::frames;

/// How long a read waits by default before giving up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest frame accepted from a daemon (the daemons send < 1 KiB).
const MAX_REPLY: usize = 1 << 20;

/// A blocking connection to a daemon socket.
#[derive(Debug)]
pub struct RawConn {
    stream: UnixStream,
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl RawConn {
    /// Connects to `path` with the default read timeout.
    pub fn connect(path: &Path) -> io::Result<RawConn> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(DEFAULT_TIMEOUT))?;
        Ok(RawConn { stream })
    }

    /// The underlying stream.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Writes all of `bytes`.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one whole frame, length word included.
    pub fn recv_frame(&mut self) -> io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let n = u32::from_be_bytes(len) as usize;
        if !(28..=MAX_REPLY).contains(&n) {
            let msg = format!("implausible frame length {n}");
            return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
        }
        let mut buf = vec![0u8; n];
        buf[..4].copy_from_slice(&len);
        self.stream.read_exact(&mut buf[4..])?;
        Ok(buf)
    }

    /// Sends `frame` and reads the next frame.
    pub fn call(&mut self, frame: &[u8]) -> io::Result<Vec<u8>> {
        self.send(frame)?;
        self.recv_frame()
    }

    /// True if the daemon closes the connection within `timeout` without
    /// sending anything first (EOF or reset). False if bytes arrive or the
    /// connection is still open at the deadline.
    pub fn expect_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 256];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                return false;
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_timeout(&e) => return false,
                Err(_) => return true,
            }
        }
    }

    /// True if no byte arrives for `duration` and the connection stays
    /// open. Prefer [`RawConn::barrier`], which needs no waiting.
    pub fn expect_silence(&mut self, duration: Duration) -> bool {
        let mut buf = [0u8; 1];
        if self.stream.set_read_timeout(Some(duration)).is_err() {
            return false;
        }
        let quiet = matches!(self.stream.read(&mut buf), Err(e) if is_timeout(&e));
        let _ = self.stream.set_read_timeout(Some(DEFAULT_TIMEOUT));
        quiet
    }

    /// Sends a keepalive PING and returns the next frame. Daemons process a
    /// connection's frames in order, so if an earlier frame was dropped
    /// silently, the returned frame is the PONG.
    pub fn barrier(&mut self) -> io::Result<Vec<u8>> {
        self.call(&frames::ping())
    }

    /// [`RawConn::barrier`] returned exactly a PONG.
    pub fn barrier_is_pong(&mut self) -> bool {
        self.barrier().is_ok_and(|f| f == frames::pong())
    }
}
