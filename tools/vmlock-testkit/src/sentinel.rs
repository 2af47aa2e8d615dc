//! Proof that nothing was lost: a "sentinel" client holds a set of locks for
//! the whole test, and after every hostile case the test checks that they
//! are still held (by the daemon's table *and* by the kernel), that the
//! daemon is alive, and that a fresh client is served promptly.
//!
//! ```text
//! sentinel (owner pid 4000001, a pid that is not the peer: closing its
//! connection never releases anything)
//!   ""               /…/d/sentinel.img       exclusive, direct lease
//!   /…/d/sentinel-ls sentinel-x              exclusive, AUTOCREATE
//!   /…/d/sentinel-ls sentinel-s              shared, AUTOCREATE
//!
//! check():  a second owner's exclusive ACQUIRE of each → 87 busy
//!           F_OFD_GETLK and F_GETLK (write lock, byte 0) on each file → conflict
//! served(): connect, PING→PONG, REGISTER, ACQUIRE+RELEASE a fresh lease,
//!           all within a deadline
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use vmlock_sys::lock::{LockKind, LockType};

use crate::conn::RawConn;
use crate::daemon::Daemon;
use crate::frames::{self, FLAG_AUTOCREATE, FLAG_SHARED, decode_reply};

/// The sentinel's owner pid: no process has it, so no connection of the
/// sentinel is ever a holder connection.
pub const SENTINEL_PID: u32 = 4_000_001;

/// A lock held by the sentinel.
#[derive(Debug, Clone)]
pub struct Held {
    /// The lockspace path sent (`""` for the default one).
    pub lockspace: String,
    /// The resource name sent.
    pub name: String,
    /// The file the daemon locks.
    pub path: PathBuf,
    /// Shared (read) rather than exclusive.
    pub shared: bool,
}

/// A client holding locks for the whole test (see the module docs).
#[derive(Debug)]
pub struct Sentinel {
    conn: RawConn,
    /// What it holds.
    pub locks: Vec<Held>,
}

fn reply_code(reply: &[u8]) -> i32 {
    decode_reply(reply).1.map_or(0, |e| e.code)
}

fn call_ok(c: &mut RawConn, frame: &[u8], what: &str) -> Result<(), String> {
    let r = c.call(frame).map_err(|e| format!("{what}: {e}"))?;
    match decode_reply(&r).1 {
        None => Ok(()),
        Some(e) => Err(format!("{what}: error {} {}", e.code, e.text())),
    }
}

/// Registers a (fake) owner on `c`.
pub fn register(c: &mut RawConn, name: &str, pid: u32) -> Result<(), String> {
    let frame = frames::register(0, [0x5e; 16], name, 1, pid, 0);
    call_ok(c, &frame, "REGISTER")
}

impl Sentinel {
    /// Creates the lockspace and disk under `d.dir()` and takes the locks.
    pub fn take(d: &Daemon) -> Result<Sentinel, String> {
        let disk = d.dir().join("sentinel.img");
        std::fs::write(&disk, b"").map_err(|e| format!("disk: {e}"))?;
        let ls = d.dir().join("sentinel-ls");
        let ls_s = ls.to_string_lossy().into_owned();
        let mut conn = d.connect();
        call_ok(
            &mut conn,
            &frames::create_lockspace(0, &ls_s),
            "CREATE_LOCKSPACE",
        )?;
        register(&mut conn, "sentinel", SENTINEL_PID)?;
        let locks = vec![
            Held {
                lockspace: String::new(),
                name: disk.to_string_lossy().into_owned(),
                path: disk,
                shared: false,
            },
            Held {
                lockspace: ls_s.clone(),
                name: "sentinel-x".into(),
                path: ls.join("sentinel-x"),
                shared: false,
            },
            Held {
                lockspace: ls_s,
                name: "sentinel-s".into(),
                path: ls.join("sentinel-s"),
                shared: true,
            },
        ];
        for (i, h) in locks.iter().enumerate() {
            let mut flags = if h.lockspace.is_empty() {
                0
            } else {
                FLAG_AUTOCREATE
            };
            if h.shared {
                flags |= FLAG_SHARED;
            }
            let f = frames::acquire(i as u32 + 1, &h.lockspace, &h.name, flags);
            call_ok(&mut conn, &f, &format!("ACQUIRE {}", h.name))?;
        }
        Ok(Sentinel { conn, locks })
    }

    /// Checks every lock (see the module docs); `Err` says which one failed.
    pub fn check(&mut self, d: &Daemon) -> Result<(), String> {
        if !self.conn.barrier_is_pong() {
            return Err("the sentinel's own connection no longer answers".into());
        }
        let mut other = RawConn::connect(&d.socket_path()).map_err(|e| format!("connect: {e}"))?;
        register(&mut other, "intruder", SENTINEL_PID + 1)?;
        for (i, h) in self.locks.iter().enumerate() {
            let flags = if h.lockspace.is_empty() {
                0
            } else {
                FLAG_AUTOCREATE
            };
            let f = frames::acquire(i as u32 + 1, &h.lockspace, &h.name, flags);
            let r = other
                .call(&f)
                .map_err(|e| format!("ACQUIRE {}: {e}", h.name))?;
            if reply_code(&r) != 87 {
                return Err(format!(
                    "{} is not busy for another owner: {:?}",
                    h.name,
                    decode_reply(&r).1
                ));
            }
            kernel_holds(&h.path, h.shared)?;
        }
        Ok(())
    }
}

/// Checks with `F_OFD_GETLK` and `F_GETLK` that a conflicting lock of the
/// right type is held on byte 0 of `path` by someone else.
pub fn kernel_holds(path: &Path, shared: bool) -> Result<(), String> {
    let f = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let want = if shared {
        LockType::Shared
    } else {
        LockType::Exclusive
    };
    for kind in [LockKind::Ofd, LockKind::Posix] {
        let q = vmlock_sys::lock::query(std::os::fd::AsFd::as_fd(&f), kind, LockType::Exclusive)
            .map_err(|e| format!("{kind:?} GETLK {}: {e}", path.display()))?;
        match q {
            Some(h) if h.lock_type == want => {}
            other => {
                return Err(format!(
                    "{kind:?} GETLK on {}: expected a {want:?} holder, got {other:?}",
                    path.display()
                ));
            }
        }
    }
    Ok(())
}

static FRESH: AtomicU32 = AtomicU32::new(0);

/// A new client is served: connect, PING→PONG, REGISTER, ACQUIRE (AUTOCREATE
/// in `lockspace`, which must exist) and RELEASE a lease of its own, all
/// within `deadline`. Returns how long it took.
pub fn served(d: &Daemon, lockspace: &str, deadline: Duration) -> Result<Duration, String> {
    let t0 = Instant::now();
    let mut c = RawConn::connect(&d.socket_path()).map_err(|e| format!("connect: {e}"))?;
    c.stream()
        .set_read_timeout(Some(deadline + Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    if !c.barrier_is_pong() {
        return Err("PING was not answered with a PONG".into());
    }
    let n = FRESH.fetch_add(1, Ordering::Relaxed);
    register(&mut c, "fresh", 4_100_000 + n)?;
    let name = format!("fresh-{n}");
    call_ok(
        &mut c,
        &frames::acquire(1, lockspace, &name, FLAG_AUTOCREATE),
        "ACQUIRE",
    )?;
    call_ok(&mut c, &frames::release(2, lockspace, &name, 0), "RELEASE")?;
    let took = t0.elapsed();
    if took > deadline {
        return Err(format!("a fresh client took {took:?} (limit {deadline:?})"));
    }
    Ok(took)
}
