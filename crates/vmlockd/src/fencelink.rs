//! The daemon's end of the fence helper (`vmlock-fenced`, see
//! [`crate::fenced`]).
//!
//! ```text
//!  arbiter ── resync / guard / renewed ──► FenceLink ── one line, one reply ──► helper
//!                                            │ mirror: pid → start time, deadlines
//!  monitor thread: the helper's pidfd ──────►│ exited? spawn a new one, sync the mirror;
//!                                            │ cannot? fence here (EtcdArbiter::expire)
//! ```
//!
//! The mirror is updated before each request is sent, so whatever helper
//! runs next is synced with the truth. A helper that does not answer within
//! [`REPLY_TIMEOUT`] is SIGKILLed (through the pidfd taken from the
//! connection) before another is started: a helper the daemon cannot reach
//! must not go on guarding a process whose locks were released.
//!
//! Nothing is sent before the arbiter's first `resync`: across a re-exec or
//! a restart the running helper keeps its set and deadline until the new
//! daemon has adopted its locks.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tracing::{error, info, warn};
use vmlock_etcd::Deadlines;

/// How long the helper may take to answer one request.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a freshly started helper may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(3);

/// What the status surface shows of the fence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceStatus {
    /// The helper's pid, when connected.
    pub helper_pid: Option<i32>,
    /// How many processes the helper guards (as the daemon told it).
    pub guarded: usize,
    /// The daemon's own fencing deadline, from now (`None`: no lease).
    pub daemon_deadline: Option<Duration>,
    /// The helper's fencing deadline, from now.
    pub helper_deadline: Option<Duration>,
    /// The watchdog deadline, from now.
    pub watchdog_deadline: Option<Duration>,
    /// The watchdog device, when configured.
    pub watchdog_device: Option<PathBuf>,
    /// The timeout set on the watchdog, seconds.
    pub watchdog_timeout_s: Option<u32>,
    /// The helper's own report (`key=value …`: deadlines, mode, fences,
    /// watchdog off/petting/withheld/disarmed), when it answered.
    pub helper_report: Option<String>,
}

impl FenceStatus {
    /// One `key=value` of the helper's own report.
    pub fn helper_field(&self, key: &str) -> Option<&str> {
        self.helper_report
            .as_deref()?
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// The status surface's view at `now_ns` (CLOCK_MONOTONIC, the clock of
    /// the helper's report). The helper's word wins where it answered; else
    /// what the daemon last told it.
    pub fn report(&self, now_ns: u64) -> crate::stats::FenceReport {
        let mono = |key: &str| -> Option<u64> { self.helper_field(key)?.parse().ok() };
        let until = |at: u64| Duration::from_nanos(at.saturating_sub(now_ns));
        let answered = self.helper_report.is_some();
        let (deadline, dog_deadline) = if answered {
            (mono("fence_at").map(until), mono("watchdog_at").map(until))
        } else {
            (self.helper_deadline, self.watchdog_deadline)
        };
        let dog = self.watchdog_device.is_some();
        crate::stats::FenceReport {
            helper_pid: self.helper_pid,
            helper_answered: answered,
            mode: self.helper_field("mode").map(str::to_owned),
            deadline_left: deadline,
            guarded: self
                .helper_field("guarded")
                .and_then(|g| g.parse().ok())
                .unwrap_or(self.guarded),
            fences: self.helper_field("fences").and_then(|n| n.parse().ok()),
            watchdog_device: self
                .watchdog_device
                .as_ref()
                .map(|d| d.display().to_string()),
            watchdog_timeout_s: self.watchdog_timeout_s,
            watchdog_state: self.helper_field("watchdog").map(str::to_owned),
            watchdog_deadline_left: dog_deadline.filter(|_| dog),
            watchdog_last_pet_ago: mono("last_pet")
                .filter(|_| dog)
                .map(|t| Duration::from_nanos(now_ns.saturating_sub(t))),
        }
    }
}

/// How to start a helper.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// The helper program.
    pub program: PathBuf,
    /// Its socket.
    pub socket: PathBuf,
    /// SIGSTOP instead of SIGKILL.
    pub pause: bool,
    /// The watchdog device and its timeout (seconds).
    pub watchdog: Option<(PathBuf, u32)>,
}

#[derive(Debug)]
struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    pid: i32,
    pidfd: Arc<OwnedFd>,
}

#[derive(Debug, Default)]
struct Inner {
    conn: Option<Conn>,
    /// Owner pid → start time: what the helper must guard.
    mirror: BTreeMap<u32, u64>,
    deadlines: Option<Deadlines>,
    /// The arbiter's first resync happened.
    synced: bool,
    /// Why the last start or sync failed.
    last_error: Option<String>,
}

/// The daemon's link to its fence helper.
pub struct FenceLink {
    cfg: LinkConfig,
    inner: Mutex<Inner>,
    /// Called when no helper can be had: fence from the daemon instead.
    on_lost: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for FenceLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FenceLink")
            .field("cfg", &self.cfg)
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

fn ns(at: Instant) -> u64 {
    let now = Instant::now();
    let base = vmlock_sys::clock::monotonic_ns();
    let ahead = at.saturating_duration_since(now).as_nanos();
    let behind = now.saturating_duration_since(at).as_nanos();
    let ahead = u64::try_from(ahead).unwrap_or(u64::MAX);
    let behind = u64::try_from(behind).unwrap_or(u64::MAX);
    base.saturating_add(ahead).saturating_sub(behind)
}

fn start_time(pid: u32) -> Result<u64, String> {
    let raw = i32::try_from(pid).map_err(|e| e.to_string())?;
    vmlock_sys::process::start_time(raw).map_err(|e| format!("pid {pid}: {e}"))
}

impl FenceLink {
    /// A link; nothing is started or sent until the first `resync`.
    pub fn new(cfg: LinkConfig) -> Arc<FenceLink> {
        Arc::new(FenceLink {
            cfg,
            inner: Mutex::new(Inner::default()),
            on_lost: OnceLock::new(),
        })
    }

    /// Whether a helper is connected (else why not, as far as known).
    pub fn connected(&self) -> Result<(), String> {
        let g = self.lock();
        match (&g.conn, &g.last_error) {
            (Some(_), _) => Ok(()),
            (None, Some(e)) => Err(e.clone()),
            (None, None) => Err("not connected".into()),
        }
    }

    /// What to do when no helper can be started.
    pub fn set_on_lost(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.on_lost.set(f);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the helper's set and deadlines (start-up, after adoption).
    pub fn resync(self: &Arc<Self>, owners: &[u32], deadlines: Option<Deadlines>) {
        let mut g = self.lock();
        g.mirror = owners
            .iter()
            .filter_map(|&p| start_time(p).ok().map(|s| (p, s)))
            .collect();
        g.deadlines = deadlines;
        g.synced = true;
        let first = g.conn.is_none();
        if let Err(e) = self.ensure(&mut g) {
            drop(g);
            self.lost(&e);
            return;
        }
        drop(g);
        if first {
            self.spawn_monitor();
        }
    }

    /// Adds (`held`) or removes an owner.
    pub fn guard(&self, owner: u32, held: bool) -> Result<(), String> {
        let mut g = self.lock();
        let line = if held {
            if g.mirror.contains_key(&owner) {
                return Ok(());
            }
            let start = start_time(owner)?;
            g.mirror.insert(owner, start);
            format!("add {owner} {start}")
        } else {
            if g.mirror.remove(&owner).is_none() {
                return Ok(());
            }
            format!("del {owner}")
        };
        match self.send(&mut g, &line) {
            Ok(_) => Ok(()),
            Err(e) if held && e.starts_with("helper: ") => {
                g.mirror.remove(&owner);
                Err(e)
            }
            Err(e) => {
                // Unreachable: replace the helper (the new one gets the mirror).
                warn!("fence helper: {e}; starting another");
                let r = self.replace(&mut g);
                drop(g);
                if let Err(e2) = &r {
                    self.lost(e2);
                }
                r
            }
        }
    }

    /// Moves the deadlines (after a renewal).
    pub fn renewed(&self, d: Deadlines) {
        let mut g = self.lock();
        // Calls may arrive out of order: keep the latest.
        let d = match g.deadlines {
            Some(old) if old.daemon > d.daemon => old,
            _ => d,
        };
        g.deadlines = Some(d);
        if !g.synced {
            return;
        }
        let line = format!("renew {} {}", ns(d.helper), ns(d.watchdog));
        if let Err(e) = self.send(&mut g, &line) {
            warn!("fence helper: {e}; starting another");
            if let Err(e2) = self.replace(&mut g) {
                drop(g);
                self.lost(&e2);
            }
        }
    }

    /// The fence's state for the status surface (asks the helper).
    pub fn status(&self) -> FenceStatus {
        let mut g = self.lock();
        let now = Instant::now();
        let left = |t: Instant| t.saturating_duration_since(now);
        let d = g.deadlines;
        let report = self
            .send(&mut g, "status")
            .ok()
            .map(|r| r.trim_start_matches("ok").trim().to_owned());
        FenceStatus {
            helper_pid: g.conn.as_ref().map(|c| c.pid),
            guarded: g.mirror.len(),
            daemon_deadline: d.map(|d| left(d.daemon)),
            helper_deadline: d.map(|d| left(d.helper)),
            watchdog_deadline: d.map(|d| left(d.watchdog)),
            watchdog_device: self.cfg.watchdog.as_ref().map(|w| w.0.clone()),
            watchdog_timeout_s: self.cfg.watchdog.as_ref().map(|w| w.1),
            helper_report: report,
        }
    }

    /// One request; `Err("helper: …")` when the helper refused it, any
    /// other `Err` when it could not be reached (the connection is dropped).
    fn send(&self, g: &mut Inner, line: &str) -> Result<String, String> {
        let Some(c) = g.conn.as_mut() else {
            return Err("not connected".into());
        };
        let r = (|| -> io::Result<String> {
            writeln!(c.writer, "{line}")?;
            let mut reply = String::new();
            if c.reader.read_line(&mut reply)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
            }
            Ok(reply.trim_end().to_owned())
        })();
        match r {
            Ok(reply) if reply.starts_with("ok") => Ok(reply),
            Ok(reply) => Err(format!("helper: {reply}")),
            Err(e) => {
                g.conn = None;
                Err(format!("{line:?}: {e}"))
            }
        }
    }

    /// Connects (starting a helper if none listens) and syncs the mirror.
    fn ensure(&self, g: &mut Inner) -> Result<(), String> {
        let mut r = self.try_ensure(g);
        if r.is_err() {
            // Once more, from a fresh helper (one that died mid-sync, say).
            self.drop_helper(g);
            r = self.try_ensure(g);
        }
        g.last_error = r.as_ref().err().cloned();
        r
    }

    fn try_ensure(&self, g: &mut Inner) -> Result<(), String> {
        if g.conn.is_none() {
            g.conn = Some(self.connect_or_start()?);
        }
        self.sync(g)
    }

    /// SIGKILLs the connected helper (if any) and waits for it to go.
    fn drop_helper(&self, g: &mut Inner) {
        if let Some(c) = g.conn.take() {
            let _ = vmlock_sys::process::pidfd_send_signal(c.pidfd.as_fd(), libc::SIGKILL);
            let _ = vmlock_sys::process::pidfd_wait(c.pidfd.as_fd(), REPLY_TIMEOUT);
            let _ = vmlock_sys::fence::pidfd_reap(c.pidfd.as_fd());
        }
    }

    fn sync(&self, g: &mut Inner) -> Result<(), String> {
        let mode = if self.cfg.pause { "pause" } else { "kill" };
        self.send(g, &format!("mode {mode}"))?;
        let (f, w) = g.deadlines.map_or(("-".to_owned(), "-".to_owned()), |d| {
            (ns(d.helper).to_string(), ns(d.watchdog).to_string())
        });
        let owners: Vec<String> = g.mirror.iter().map(|(p, s)| format!("{p}:{s}")).collect();
        let r = self.send(g, &format!("sync {f} {w} {}", owners.join(" ")))?;
        let n = r.trim_start_matches("ok").trim();
        if n != g.mirror.len().to_string() {
            warn!(
                "fence helper guards {n} of {} lock holders (the others exited)",
                g.mirror.len()
            );
        }
        Ok(())
    }

    /// Kills the current helper (if any) and starts and syncs another.
    fn replace(&self, g: &mut Inner) -> Result<(), String> {
        self.drop_helper(g);
        self.ensure(g)
    }

    fn connect_or_start(&self) -> Result<Conn, String> {
        if let Ok(c) = self.connect() {
            return Ok(c);
        }
        let mut cmd = std::process::Command::new(&self.cfg.program);
        cmd.arg("--socket")
            .arg(&self.cfg.socket)
            .stdin(std::process::Stdio::null());
        if let Some((dev, t)) = &self.cfg.watchdog {
            cmd.arg("--watchdog")
                .arg(dev)
                .arg("--watchdog-timeout")
                .arg(t.to_string());
        }
        let mut child = vmlock_sys::fence::spawn_clean(&mut cmd)
            .map_err(|e| format!("cannot start {}: {e}", self.cfg.program.display()))?;
        let until = Instant::now() + START_TIMEOUT;
        loop {
            match self.connect() {
                Ok(c) => {
                    info!(pid = c.pid, "fence helper started");
                    return Ok(c);
                }
                Err(e) => {
                    if let Ok(Some(st)) = child.try_wait() {
                        return Err(format!(
                            "{} exited at start ({st})",
                            self.cfg.program.display()
                        ));
                    }
                    if Instant::now() >= until {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(format!("fence helper did not listen: {e}"));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn connect(&self) -> io::Result<Conn> {
        let s = UnixStream::connect(&self.cfg.socket)?;
        s.set_read_timeout(Some(REPLY_TIMEOUT))?;
        s.set_write_timeout(Some(REPLY_TIMEOUT))?;
        let pidfd = vmlock_sys::cred::peer_pidfd(s.as_fd()).or_else(|_| {
            let pid = vmlock_sys::cred::peer_cred(s.as_fd())?.pid;
            vmlock_sys::process::pidfd_open(pid)
        })?;
        let writer = s.try_clone()?;
        let mut c = Conn {
            reader: BufReader::new(s),
            writer,
            pid: 0,
            pidfd: Arc::new(pidfd),
        };
        writeln!(c.writer, "hello {}", crate::fenced::PROTOCOL)?;
        let mut reply = String::new();
        c.reader.read_line(&mut reply)?;
        c.pid = reply
            .strip_prefix("ok ")
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| io::Error::other(format!("fence helper said {reply:?}")))?;
        Ok(c)
    }

    /// No helper can be had: the daemon fences by itself.
    fn lost(&self, why: &str) {
        error!("no fence helper ({why}): fencing this host's lock holders now");
        if let Some(f) = self.on_lost.get() {
            f();
        }
    }

    /// Watches the helper's pidfd; a helper that exits is replaced at once.
    fn spawn_monitor(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let job = move || {
            loop {
                let Some(link) = weak.upgrade() else { return };
                let mut g = link.lock();
                let fd = g.conn.as_ref().map(|c| (c.pid, c.pidfd.clone()));
                let Some((pid, fd)) = fd else {
                    // A request found the helper unreachable and could not
                    // replace it: try again, and fence here if that fails.
                    warn!("no fence helper connected; starting one");
                    if let Err(e) = link.replace(&mut g) {
                        drop(g);
                        link.lost(&e);
                        drop(link);
                        std::thread::sleep(Duration::from_secs(1));
                    }
                    continue;
                };
                drop(g);
                drop(link);
                let exited =
                    vmlock_sys::process::pidfd_wait(fd.as_fd(), Duration::from_millis(500))
                        .unwrap_or(false);
                if !exited {
                    continue;
                }
                let _ = vmlock_sys::fence::pidfd_reap(fd.as_fd());
                let Some(link) = weak.upgrade() else { return };
                let mut g = link.lock();
                let same = g.conn.as_ref().is_some_and(|c| Arc::ptr_eq(&c.pidfd, &fd));
                if !same {
                    continue;
                }
                error!(pid, "fence helper exited; starting another");
                g.conn = None;
                if let Err(e) = link.replace(&mut g) {
                    drop(g);
                    link.lost(&e);
                }
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("vmlock-fence-link".into())
            .spawn(job)
        {
            error!("cannot watch the fence helper: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn status(report: Option<&str>, watchdog: bool) -> FenceStatus {
        FenceStatus {
            helper_pid: Some(77),
            guarded: 3,
            daemon_deadline: Some(Duration::from_millis(900)),
            helper_deadline: Some(Duration::from_millis(1500)),
            watchdog_deadline: Some(Duration::from_millis(2500)),
            watchdog_device: watchdog.then(|| PathBuf::from("/dev/watchdog")),
            watchdog_timeout_s: watchdog.then_some(1),
            helper_report: report.map(str::to_owned),
        }
    }

    /// The helper's own deadlines and counts win over the daemon's mirror;
    /// times are turned into time left (or ago) at the given instant.
    #[test]
    fn report_takes_the_helpers_word() {
        let line = "pid=77 fence_at=12000000000 watchdog_at=13000000000 guarded=1 mode=kill \
                    daemons=1 fences=2 watchdog=petting watchdog_timeout=1 last_pet=9950000000";
        let r = status(Some(line), true).report(10 * S);
        assert!(r.helper_answered);
        assert_eq!(r.helper_pid, Some(77));
        assert_eq!(r.mode.as_deref(), Some("kill"));
        assert_eq!(r.deadline_left, Some(Duration::from_secs(2)));
        assert_eq!(r.guarded, 1);
        assert_eq!(r.fences, Some(2));
        assert_eq!(r.watchdog_device.as_deref(), Some("/dev/watchdog"));
        assert_eq!(r.watchdog_timeout_s, Some(1));
        assert_eq!(r.watchdog_state.as_deref(), Some("petting"));
        assert_eq!(r.watchdog_deadline_left, Some(Duration::from_secs(3)));
        assert_eq!(r.watchdog_last_pet_ago, Some(Duration::from_millis(50)));
        // A deadline already passed reads as zero time left.
        let r = status(Some(line), true).report(20 * S);
        assert_eq!(r.deadline_left, Some(Duration::ZERO));
    }

    /// No answer from the helper: the daemon's mirror, and nothing about
    /// the watchdog's state; no watchdog configured: no watchdog times.
    #[test]
    fn report_without_the_helper_or_the_watchdog() {
        let r = status(None, true).report(10 * S);
        assert!(!r.helper_answered);
        assert_eq!(r.guarded, 3);
        assert_eq!(r.deadline_left, Some(Duration::from_millis(1500)));
        assert_eq!(r.watchdog_state, None);
        assert_eq!(r.mode, None);
        let line = "pid=77 fence_at=- watchdog_at=- guarded=0 mode=pause daemons=1 fences=0 \
                    watchdog=off watchdog_timeout=- last_pet=-";
        let r = status(Some(line), false).report(10 * S);
        assert_eq!(r.deadline_left, None);
        assert_eq!(r.watchdog_deadline_left, None);
        assert_eq!(r.watchdog_last_pet_ago, None);
        assert_eq!(r.watchdog_device, None);
        assert_eq!(r.mode.as_deref(), Some("pause"));
    }
}
