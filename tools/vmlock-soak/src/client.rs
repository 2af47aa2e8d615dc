//! A blocking lock client on the testkit's hand-encoded frames (not the
//! daemon's codec): REGISTER, CREATE_LOCKSPACE, ACQUIRE, RELEASE, with the
//! outcome reduced to granted / busy / failed.

use std::path::Path;
use std::time::{Duration, Instant};

use vmlock_testkit::frames::{self, FLAG_AUTOCREATE, FLAG_SHARED};
use vmlock_testkit::{RawConn, frames::try_decode_reply};

/// `VIR_ERR_RESOURCE_BUSY`: the only error a contender expects.
pub const BUSY: i32 = 87;

/// Where a disk's lock lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Short name used in the logs.
    pub disk: String,
    /// Lockspace path (`""` for the default, direct lockspace).
    pub lockspace: String,
    /// Resource name (a file path for the default lockspace).
    pub resource: String,
    /// AUTOCREATE (lease files in a named lockspace).
    pub autocreate: bool,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// OK reply.
    Ok,
    /// Error 87.
    Busy,
    /// Anything else: a wire error, an I/O error, a bad reply.
    Failed(String),
}

/// One connection, registered as `owner_pid`.
#[derive(Debug)]
pub struct Client {
    conn: RawConn,
    serial: u32,
    /// The slowest call so far.
    pub max_latency: Duration,
}

impl Client {
    /// Connects and registers `owner_pid` under `name`.
    pub fn connect(sock: &Path, name: &str, owner_pid: u32) -> Result<Client, String> {
        let conn = RawConn::connect(sock).map_err(|e| format!("connect: {e}"))?;
        let mut c = Client {
            conn,
            serial: 0,
            max_latency: Duration::ZERO,
        };
        let mut uuid = [0u8; 16];
        for (u, b) in uuid
            .iter_mut()
            .zip(name.bytes().chain(std::iter::repeat(b'.')))
        {
            *u = b;
        }
        let id = c.next_serial();
        match c.call(&frames::register(id, uuid, name, 1, owner_pid, 0)) {
            Outcome::Ok => Ok(c),
            other => Err(format!("register: {other:?}")),
        }
    }

    fn next_serial(&mut self) -> u32 {
        self.serial = self.serial.wrapping_add(1);
        self.serial
    }

    fn call(&mut self, frame: &[u8]) -> Outcome {
        let start = Instant::now();
        let reply = self.conn.call(frame);
        self.max_latency = self.max_latency.max(start.elapsed());
        match reply {
            Ok(bytes) => judge(&bytes, self.serial),
            Err(e) => Outcome::Failed(format!("i/o: {e}")),
        }
    }

    /// CREATE_LOCKSPACE (idempotent).
    pub fn create_lockspace(&mut self, path: &str) -> Outcome {
        let s = self.next_serial();
        self.call(&frames::create_lockspace(s, path))
    }

    /// ACQUIRE `t`, shared or exclusive.
    pub fn acquire(&mut self, t: &Target, shared: bool) -> Outcome {
        let mut flags = if shared { FLAG_SHARED } else { 0 };
        if t.autocreate {
            flags |= FLAG_AUTOCREATE;
        }
        let s = self.next_serial();
        self.call(&frames::acquire(s, &t.lockspace, &t.resource, flags))
    }

    /// RELEASE `t`.
    pub fn release(&mut self, t: &Target) -> Outcome {
        let s = self.next_serial();
        self.call(&frames::release(s, &t.lockspace, &t.resource, 0))
    }
}

fn judge(bytes: &[u8], serial: u32) -> Outcome {
    match try_decode_reply(bytes) {
        Err(e) => Outcome::Failed(format!("bad reply: {e}")),
        Ok((h, _)) if h.serial != serial => {
            Outcome::Failed(format!("reply serial {} for call {serial}", h.serial))
        }
        Ok((_, None)) => Outcome::Ok,
        Ok((_, Some(e))) if e.code == BUSY => Outcome::Busy,
        Ok((_, Some(e))) => {
            Outcome::Failed(format!("code {} domain {}: {}", e.code, e.domain, e.text()))
        }
    }
}
