//! `vmlock-fenced`: the fence that outlives the daemon.
//!
//! vmlockd (etcd back end) starts this small helper and keeps it told of two
//! things: which processes hold cluster locks on this host, and until when
//! the host's etcd lease is proven (a deadline it moves forward only after
//! each successful renewal). If that deadline passes, the helper stops those
//! processes itself (SIGKILL, or SIGSTOP with `on_lease_loss = "pause"`),
//! whatever the daemon is doing: frozen, crashed, re-executing, stopped.
//!
//! ```text
//!  vmlockd ──(UNIX socket <etcd_state_file>.fence.sock, one line each way)──► vmlock-fenced
//!    hello 1                       → ok <helper pid>
//!    mode kill|pause               → ok
//!    sync <fence> <wd> [pid:start…]→ ok <n>      (the whole set, after (re)connecting)
//!    add <pid> <start>             → ok | err …  (before the etcd acquire)
//!    del <pid>                     → ok          (before the etcd release)
//!    renew <fence> <wd>            → ok          (after each successful renewal)
//!    status                        → ok <key=value …>
//!    quit                          → ok | err …  (only with nothing to guard)
//!  <fence>, <wd>: CLOCK_MONOTONIC nanoseconds; `-` for none.
//! ```
//!
//! The helper locks its memory, runs at a real-time priority where allowed
//! (else nice -20, else as it is, with a warning), and owns a pidfd for
//! every guarded process (opened by pid and checked against the start time
//! the daemon sent, so a recycled pid is never signalled). A daemon that
//! disconnects (re-exec, crash) leaves the set and the deadline in force;
//! the next daemon connects to the same socket and replaces both with
//! `sync`. With nothing to guard and no daemon connected the helper exits.
//!
//! With a watchdog device, the helper pets it every tick while either
//! nothing is guarded or `now + timeout` is before the watchdog deadline,
//! so a host frozen as a whole (helper included) is reset no later than
//! that deadline. `docs/cluster.md` has the timing rule.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The protocol version in `hello`.
pub const PROTOCOL: u32 = 1;

/// How often the helper checks the deadline (and pets the watchdog).
pub const TICK: Duration = Duration::from_millis(10);

/// How often the watchdog is petted while the rule allows it.
const PET_EVERY_NS: u64 = 100_000_000;

/// A helper whose daemon never said hello exits after this long.
const NO_DAEMON_NS: u64 = 30_000_000_000;

/// How often exited processes are dropped from the set.
const PRUNE_EVERY_NS: u64 = 1_000_000_000;

/// Stack of the helper's threads: small, because `mlockall` pins it whole.
const STACK: usize = 64 * 1024;

/// The socket of the helper that guards the holders of `state_path`'s record.
#[cfg(feature = "etcd")]
pub fn socket_path(state_path: &Path) -> PathBuf {
    let mut p = state_path.as_os_str().to_owned();
    p.push(".fence.sock");
    PathBuf::from(p)
}

/// A kernel watchdog, or a stand-in for tests.
pub trait Watchdog: Send {
    /// Resets the watchdog's timer.
    fn pet(&mut self) -> io::Result<()>;
    /// Orderly close: the magic 'V', so the driver stops the timer.
    fn disarm(&mut self) -> io::Result<()>;
}

/// A watchdog device (`/dev/watchdog`).
#[derive(Debug)]
pub struct DevWatchdog {
    file: std::fs::File,
}

impl DevWatchdog {
    /// Opens `path` (which arms it) and sets its timeout; returns the
    /// timeout the driver set.
    pub fn open(path: &Path, timeout_s: u32) -> io::Result<(DevWatchdog, u32)> {
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        let mut dog = DevWatchdog { file };
        match vmlock_sys::fence::watchdog_set_timeout(dog.file.as_fd(), timeout_s) {
            Ok(set) => {
                dog.pet()?;
                Ok((dog, set))
            }
            Err(e) => {
                let _ = dog.disarm();
                Err(e)
            }
        }
    }
}

impl Watchdog for DevWatchdog {
    fn pet(&mut self) -> io::Result<()> {
        vmlock_sys::fence::watchdog_keepalive(self.file.as_fd())
    }

    fn disarm(&mut self) -> io::Result<()> {
        self.file.write_all(b"V")
    }
}

/// One guarded process.
#[derive(Debug)]
struct Guarded {
    start: u64,
    pidfd: OwnedFd,
}

/// What the watchdog is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchdogState {
    /// None configured.
    Off,
    /// Petted (at this monotonic time, ns).
    Petting(u64),
    /// Petting withheld: the deadline is near and processes are guarded.
    Withheld,
    /// Closed with the magic character.
    Disarmed,
}

impl std::fmt::Display for WatchdogState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatchdogState::Off => f.write_str("off"),
            WatchdogState::Petting(_) => f.write_str("petting"),
            WatchdogState::Withheld => f.write_str("withheld"),
            WatchdogState::Disarmed => f.write_str("disarmed"),
        }
    }
}

/// The helper's state: the guarded set, the deadlines, the watchdog.
pub struct Core {
    guarded: BTreeMap<u32, Guarded>,
    fence_at: Option<u64>,
    watchdog_at: Option<u64>,
    pause: bool,
    daemons: usize,
    had_daemon: bool,
    fences: u64,
    dog: Option<(Box<dyn Watchdog>, u64)>,
    dog_state: WatchdogState,
    last_pet: u64,
    last_prune: u64,
    /// The first tick.
    born: Option<u64>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("guarded", &self.guarded.keys().collect::<Vec<_>>())
            .field("fence_at", &self.fence_at)
            .field("watchdog_at", &self.watchdog_at)
            .field("dog_state", &self.dog_state)
            .finish_non_exhaustive()
    }
}

/// What one tick did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tick {
    /// Processes signalled by a fence.
    pub fenced: Vec<u32>,
    /// Whether the watchdog was petted.
    pub petted: bool,
    /// Whether the helper should exit now.
    pub exit: bool,
}

impl Core {
    /// A core with an optional watchdog (and its timeout in seconds).
    pub fn new(dog: Option<(Box<dyn Watchdog>, u32)>) -> Core {
        let dog_state = if dog.is_some() {
            WatchdogState::Petting(0)
        } else {
            WatchdogState::Off
        };
        Core {
            guarded: BTreeMap::new(),
            fence_at: None,
            watchdog_at: None,
            pause: false,
            daemons: 0,
            had_daemon: false,
            fences: 0,
            dog: dog.map(|(d, s)| (d, u64::from(s) * 1_000_000_000)),
            dog_state,
            last_pet: 0,
            last_prune: 0,
            born: None,
        }
    }

    /// Starts guarding `pid` if it is still the process started at `start`.
    pub fn add(&mut self, pid: u32, start: u64) -> Result<(), String> {
        if self.guarded.get(&pid).is_some_and(|g| g.start == start) {
            return Ok(());
        }
        let raw = i32::try_from(pid).map_err(|e| e.to_string())?;
        let pidfd = vmlock_sys::process::pidfd_open(raw).map_err(|e| format!("pid {pid}: {e}"))?;
        // Read after the pidfd exists: if the start time still matches, the
        // pidfd names that very process (a recycled pid starts later).
        match vmlock_sys::process::start_time(raw) {
            Ok(s) if s == start => {
                self.guarded.insert(pid, Guarded { start, pidfd });
                Ok(())
            }
            Ok(s) => Err(format!("pid {pid} started at {s}, not {start}")),
            Err(e) => Err(format!("pid {pid}: {e}")),
        }
    }

    /// Stops guarding `pid`.
    pub fn del(&mut self, pid: u32) {
        self.guarded.remove(&pid);
    }

    /// Sets both deadlines (monotonic ns).
    pub fn renew(&mut self, fence_at: Option<u64>, watchdog_at: Option<u64>) {
        self.fence_at = fence_at;
        self.watchdog_at = watchdog_at;
    }

    /// The guarded pids.
    #[cfg(test)]
    fn pids(&self) -> Vec<u32> {
        self.guarded.keys().copied().collect()
    }

    /// One look at the clock: fence if the deadline passed, pet the
    /// watchdog if the rule allows, say whether to exit.
    pub fn tick(&mut self, now: u64) -> Tick {
        let mut out = Tick::default();
        // Forget processes that exited (nothing to stop there), about once
        // a second: one poll per process.
        if now.saturating_sub(self.last_prune) >= PRUNE_EVERY_NS {
            self.last_prune = now;
            self.guarded.retain(|_, g| {
                !vmlock_sys::process::pidfd_wait(g.pidfd.as_fd(), Duration::ZERO).unwrap_or(false)
            });
        }
        let due = self.fence_at.is_none_or(|d| now >= d);
        if due && !self.guarded.is_empty() {
            out.fenced = self.fence();
        }
        if let Some((dog, timeout)) = &mut self.dog {
            let allowed =
                self.guarded.is_empty() || self.watchdog_at.is_some_and(|w| now + *timeout <= w);
            if !allowed {
                self.dog_state = WatchdogState::Withheld;
            } else if now.saturating_sub(self.last_pet) >= PET_EVERY_NS
                || self.dog_state == WatchdogState::Withheld
            {
                match dog.pet() {
                    Ok(()) => {
                        self.last_pet = now;
                        self.dog_state = WatchdogState::Petting(now);
                        out.petted = true;
                    }
                    Err(e) => log(&format!("cannot pet the watchdog: {e}")),
                }
            }
        }
        let born = *self.born.get_or_insert(now);
        let orphaned = self.had_daemon || now.saturating_sub(born) >= NO_DAEMON_NS;
        out.exit = self.daemons == 0 && orphaned && self.guarded.is_empty();
        out
    }

    /// Signals every guarded process and forgets it.
    fn fence(&mut self) -> Vec<u32> {
        let sig = if self.pause {
            libc::SIGSTOP
        } else {
            libc::SIGKILL
        };
        let set = std::mem::take(&mut self.guarded);
        let mut done = Vec::new();
        for (pid, g) in &set {
            match vmlock_sys::process::pidfd_send_signal(g.pidfd.as_fd(), sig) {
                Ok(()) => done.push(*pid),
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => log(&format!("cannot fence pid {pid}: {e}")),
            }
        }
        // Wait (briefly, 0.5 s for all of them) until they are gone or
        // stopped: a signalled process can write until the kernel has acted.
        let until = std::time::Instant::now() + Duration::from_millis(500);
        for (pid, g) in &set {
            loop {
                let left = until.saturating_duration_since(std::time::Instant::now());
                if !self.pause {
                    let _ = vmlock_sys::process::pidfd_wait(g.pidfd.as_fd(), left);
                    break;
                }
                let gone = vmlock_sys::process::pidfd_wait(g.pidfd.as_fd(), Duration::ZERO)
                    .unwrap_or(true);
                if gone || is_stopped(*pid) || left.is_zero() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.fences += 1;
        let action = if self.pause { "stopped" } else { "killed" };
        log(&format!(
            "lease deadline passed with no renewal: {action} lock holder(s) {done:?}"
        ));
        done
    }

    /// The orderly end: the watchdog closed with the magic character.
    pub fn disarm(&mut self) {
        if let Some((dog, _)) = &mut self.dog {
            if let Err(e) = dog.disarm() {
                log(&format!("cannot disarm the watchdog: {e}"));
            }
            self.dog_state = WatchdogState::Disarmed;
        }
        self.dog = None;
    }

    /// The `status` line. Times are CLOCK_MONOTONIC nanoseconds (`-`:
    /// none); `watchdog_timeout` is in seconds, `last_pet` is the last
    /// successful pet (`-` before the first or without a watchdog).
    pub fn status(&self) -> String {
        let t = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |n| n.to_string());
        let pet = match self.dog_state {
            WatchdogState::Off | WatchdogState::Disarmed => None,
            _ => (self.last_pet > 0).then_some(self.last_pet),
        };
        format!(
            "pid={} fence_at={} watchdog_at={} guarded={} mode={} daemons={} fences={} watchdog={} \
             watchdog_timeout={} last_pet={}",
            std::process::id(),
            t(self.fence_at),
            t(self.watchdog_at),
            self.guarded.len(),
            if self.pause { "pause" } else { "kill" },
            self.daemons,
            self.fences,
            self.dog_state,
            t(self.dog.as_ref().map(|d| d.1 / 1_000_000_000)),
            t(pet)
        )
    }

    /// Handles one request line; `daemon` is set once the peer said hello.
    fn request(&mut self, line: &str, daemon: &mut bool) -> String {
        let mut words = line.split_whitespace();
        let verb = words.next().unwrap_or("");
        let args: Vec<&str> = words.collect();
        match (verb, args.as_slice()) {
            ("hello", [v]) if v.parse() == Ok(PROTOCOL) => {
                if !*daemon {
                    *daemon = true;
                    self.daemons += 1;
                    self.had_daemon = true;
                }
                format!("ok {}", std::process::id())
            }
            ("hello", _) => format!("err protocol {PROTOCOL} only"),
            ("mode", ["kill"]) => {
                self.pause = false;
                "ok".into()
            }
            ("mode", ["pause"]) => {
                self.pause = true;
                "ok".into()
            }
            ("sync", [f, w, rest @ ..]) => {
                let mut want = BTreeMap::new();
                for item in rest {
                    match item
                        .split_once(':')
                        .and_then(|(p, s)| Some((p.parse().ok()?, s.parse().ok()?)))
                    {
                        Some((p, s)) => {
                            want.insert(p, s);
                        }
                        None => return format!("err bad owner {item}"),
                    }
                }
                let (Some(f), Some(w)) = (time(f), time(w)) else {
                    return "err bad deadline".into();
                };
                self.guarded.retain(|p, g| want.get(p) == Some(&g.start));
                for (p, s) in want {
                    if let Err(e) = self.add(p, s) {
                        log(&format!("sync: not guarding {e}"));
                    }
                }
                self.renew(f, w);
                format!("ok {}", self.guarded.len())
            }
            ("add", [p, s]) => match (p.parse(), s.parse()) {
                (Ok(p), Ok(s)) => match self.add(p, s) {
                    Ok(()) => "ok".into(),
                    Err(e) => format!("err {e}"),
                },
                _ => "err bad add".into(),
            },
            ("del", [p]) => match p.parse() {
                Ok(p) => {
                    self.del(p);
                    "ok".into()
                }
                Err(_) => "err bad del".into(),
            },
            ("renew", [f, w]) => match (time(f), time(w)) {
                (Some(f), Some(w)) => {
                    self.renew(f, w);
                    "ok".into()
                }
                _ => "err bad deadline".into(),
            },
            ("status", []) => format!("ok {}", self.status()),
            ("quit", []) if self.guarded.is_empty() => "ok".into(),
            ("quit", []) => "err processes are guarded".into(),
            _ => format!("err unknown request {line:?}"),
        }
    }
}

/// Whether `pid` is stopped (state T or t in `/proc/<pid>/stat`).
pub fn is_stopped(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|s| s == "T" || s == "t")
}

/// `-` or a number of nanoseconds; `None` for bad input.
fn time(s: &str) -> Option<Option<u64>> {
    if s == "-" {
        return Some(None);
    }
    s.parse().ok().map(Some)
}

fn log(msg: &str) {
    let _ = writeln!(io::stderr(), "vmlock-fenced[{}]: {msg}", std::process::id());
}

fn lock(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves one connection until it closes.
fn serve(core: &Arc<Mutex<Core>>, stream: UnixStream) {
    let Ok(write) = stream.try_clone() else {
        return;
    };
    let mut write = write;
    let mut daemon = false;
    let mut quit = false;
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        let reply = {
            let mut c = lock(core);
            let r = c.request(&line, &mut daemon);
            if line.trim() == "quit" && r == "ok" {
                c.disarm();
                quit = true;
            }
            r
        };
        if writeln!(write, "{reply}").is_err() {
            break;
        }
        if quit {
            log("asked to quit: nothing guarded");
            std::process::exit(0);
        }
    }
    if daemon {
        lock(core).daemons -= 1;
    }
}

/// The helper's command line: `--socket PATH [--watchdog DEV --watchdog-timeout S]`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Args {
    /// Where to listen.
    pub socket: PathBuf,
    /// The watchdog device and the timeout to set.
    pub watchdog: Option<(PathBuf, u32)>,
}

/// Parses the helper's arguments.
pub fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut out = Args::default();
    let (mut dev, mut timeout) = (None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--socket" => out.socket = PathBuf::from(val()?),
            "--watchdog" => dev = Some(PathBuf::from(val()?)),
            "--watchdog-timeout" => {
                timeout = Some(
                    val()?
                        .parse::<u32>()
                        .map_err(|e| format!("--watchdog-timeout: {e}"))?,
                )
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if out.socket.as_os_str().is_empty() {
        return Err("--socket is required".into());
    }
    out.watchdog = match (dev, timeout) {
        (Some(d), Some(t)) if t > 0 => Some((d, t)),
        (None, None) => None,
        _ => return Err("--watchdog and a positive --watchdog-timeout go together".into()),
    };
    Ok(out)
}

/// Makes the process hard to stall: memory locked, real-time priority.
fn harden() {
    if let Err(e) = vmlock_sys::fence::lock_memory() {
        log(&format!("warning: cannot lock memory (mlockall): {e}"));
    }
    if let Err(e) = vmlock_sys::fence::realtime_priority(10) {
        match vmlock_sys::fence::set_nice(-20) {
            Ok(()) => log(&format!(
                "warning: no SCHED_FIFO ({e}); running at nice -20"
            )),
            Err(e2) => log(&format!(
                "warning: no SCHED_FIFO ({e}) and no nice -20 ({e2}): normal priority"
            )),
        }
    }
}

/// The helper program; returns its exit code.
/// What `--help` prints.
pub const USAGE: &str = "\
usage: vmlock-fenced --socket PATH [--watchdog DEVICE --watchdog-timeout SECS]

The fence that outlives vmlockd: started by vmlockd (etcd back end), it stops
this host's cluster lock holders when the daemon's lease deadline passes.
Not meant to be run by hand; see vmlock-fenced(8).

  --socket PATH             where vmlockd connects (<etcd_state_file>.fence.sock)
  --watchdog DEVICE         a watchdog device to pet while the lease is proven
  --watchdog-timeout SECS   the timeout to set on it (with --watchdog)
  --help                    this text
";

pub fn main_entry() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return 0;
    }
    let args = match parse_args(&args) {
        Ok(a) => a,
        Err(e) => {
            log(&e);
            return 2;
        }
    };
    let dog = match &args.watchdog {
        None => None,
        Some((dev, want)) => match DevWatchdog::open(dev, *want) {
            Ok((_, set)) if set > *want => {
                log(&format!(
                    "{}: the driver set a {set} s timeout, longer than the {want} s the lease allows",
                    dev.display()
                ));
                return 3;
            }
            Ok((d, set)) => Some((Box::new(d) as Box<dyn Watchdog>, set)),
            Err(e) => {
                log(&format!("{}: {e}", dev.display()));
                return 3;
            }
        },
    };
    // Before any thread exists: threads inherit the scheduling policy.
    harden();
    let _ = std::fs::remove_file(&args.socket);
    let listener = match UnixListener::bind(&args.socket) {
        Ok(l) => l,
        Err(e) => {
            log(&format!("{}: {e}", args.socket.display()));
            return 1;
        }
    };
    let core = Arc::new(Mutex::new(Core::new(dog)));
    let ticker = core.clone();
    let spawned = std::thread::Builder::new()
        .name("fence".into())
        .stack_size(STACK)
        .spawn(move || {
            loop {
                std::thread::sleep(TICK);
                let mut c = lock(&ticker);
                let t = c.tick(vmlock_sys::clock::monotonic_ns());
                if t.exit {
                    c.disarm();
                    log("no daemon and nothing to guard: exiting");
                    std::process::exit(0);
                }
            }
        });
    if let Err(e) = spawned {
        log(&format!("cannot start the fence thread: {e}"));
        return 1;
    }
    log(&format!(
        "guarding lock holders; listening on {}",
        args.socket.display()
    ));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let core = core.clone();
        let r = std::thread::Builder::new()
            .name("conn".into())
            .stack_size(STACK)
            .spawn(move || serve(&core, stream));
        if let Err(e) = r {
            log(&format!("cannot serve a connection: {e}"));
        }
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command};

    /// Records pets and disarms, with the time of each pet.
    #[derive(Clone, Default)]
    struct FakeDog(Arc<Mutex<Vec<String>>>);

    impl Watchdog for FakeDog {
        fn pet(&mut self) -> io::Result<()> {
            self.0.lock().unwrap().push("pet".into());
            Ok(())
        }
        fn disarm(&mut self) -> io::Result<()> {
            self.0.lock().unwrap().push("V".into());
            Ok(())
        }
    }

    impl FakeDog {
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    /// A child killed and reaped on drop (a failed test leaves none
    /// behind, stopped or not).
    struct Proc(Child);

    impl std::ops::Deref for Proc {
        type Target = Child;
        fn deref(&self) -> &Child {
            &self.0
        }
    }

    impl std::ops::DerefMut for Proc {
        fn deref_mut(&mut self) -> &mut Child {
            &mut self.0
        }
    }

    impl Drop for Proc {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn sleeper() -> (Proc, u64) {
        let c = Command::new("sleep").arg("30").spawn().unwrap();
        let s = vmlock_sys::process::start_time(c.id() as i32).unwrap();
        (Proc(c), s)
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn deadline_kills_only_what_is_still_guarded() {
        let mut core = Core::new(None);
        let (mut kept, ks) = sleeper();
        let (mut released, rs) = sleeper();
        core.add(kept.id(), ks).unwrap();
        core.add(released.id(), rs).unwrap();
        core.renew(Some(10 * S), Some(11 * S));
        assert!(core.tick(9 * S).fenced.is_empty(), "not yet due");
        core.del(released.id());
        let t = core.tick(10 * S);
        assert_eq!(t.fenced, vec![kept.id()]);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(kept.wait().unwrap().signal(), Some(libc::SIGKILL));
        assert!(
            released.try_wait().unwrap().is_none(),
            "released: not killed"
        );
        assert!(core.pids().is_empty());
        let _ = (released.kill(), released.wait());
    }

    #[test]
    fn a_recycled_pid_is_refused() {
        let mut core = Core::new(None);
        let (mut c, s) = sleeper();
        let err = core.add(c.id(), s + 1).unwrap_err();
        assert!(err.contains("started at"), "{err}");
        assert!(core.pids().is_empty());
        let _ = (c.kill(), c.wait());
    }

    #[test]
    fn pause_mode_stops_instead() {
        let mut core = Core::new(None);
        let mut daemon = true;
        assert_eq!(core.request("mode pause", &mut daemon), "ok");
        let (mut c, s) = sleeper();
        let line = format!("sync 5 6 {}:{s}", c.id());
        assert_eq!(core.request(&line, &mut daemon), "ok 1");
        assert_eq!(core.tick(5).fenced, vec![c.id()]);
        // The fence waited for the stop.
        assert!(is_stopped(c.id()), "stopped before tick returned");
        assert!(c.try_wait().unwrap().is_none(), "stopped, not killed");
    }

    /// The petting rule: petted while nothing is guarded or `now + timeout`
    /// is still before the watchdog deadline; withheld in between; resumed
    /// once the fence has emptied the set; the magic close at the end.
    #[test]
    fn watchdog_is_petted_only_while_the_lease_is_proven() {
        let dog = FakeDog::default();
        let mut core = Core::new(Some((Box::new(dog.clone()), 2)));
        let (mut c, s) = sleeper();
        core.add(c.id(), s).unwrap();
        // Fence at 10 s, watchdog deadline 11 s, timeout 2 s: pets up to 9 s.
        core.renew(Some(10 * S), Some(11 * S));
        let mut pets = Vec::new();
        let mut t = S;
        while t < 12 * S {
            let r = core.tick(t);
            if r.petted {
                pets.push(t);
            }
            t += S / 10;
        }
        let last_before_fence = pets.iter().copied().filter(|&p| p < 10 * S).max().unwrap();
        assert!(last_before_fence <= 9 * S, "{pets:?}");
        assert!(last_before_fence + 2 * S <= 11 * S);
        assert!(
            pets.iter().any(|&p| p >= 10 * S),
            "petted again after the fence: {pets:?}"
        );
        assert!(
            !pets.iter().any(|&p| p > 9 * S && p < 10 * S),
            "withheld: {pets:?}"
        );
        let st = core.status();
        assert!(st.contains(" watchdog_timeout=2 "), "{st}");
        assert!(
            st.ends_with(&format!(" last_pet={}", pets.last().unwrap())),
            "{st}"
        );
        let _ = c.wait();
        // A renewal lets it pet again at once, even with a guarded process.
        let (mut c2, s2) = sleeper();
        core.add(c2.id(), s2).unwrap();
        core.renew(Some(20 * S), Some(21 * S));
        dog.take();
        assert!(core.tick(12 * S + 1).petted || core.tick(12 * S + S / 5).petted);
        core.disarm();
        assert_eq!(dog.take().last().map(String::as_str), Some("V"));
        let _ = (c2.kill(), c2.wait());
    }

    #[test]
    fn exits_only_after_a_daemon_left_with_nothing_guarded() {
        let mut core = Core::new(None);
        assert!(!core.tick(1).exit, "waits for its first daemon");
        assert!(core.tick(NO_DAEMON_NS + 1).exit, "but not forever");
        let mut core = Core::new(None);
        assert!(!core.tick(1).exit);
        let mut d = false;
        core.request("hello 1", &mut d);
        assert!(!core.tick(2).exit);
        core.daemons -= 1;
        assert!(core.tick(3).exit);
    }

    #[test]
    fn requests_and_arguments() {
        let mut core = Core::new(None);
        let mut d = false;
        assert!(core.request("hello 9", &mut d).starts_with("err"));
        assert!(core.request("renew x 1", &mut d).starts_with("err"));
        assert!(core.request("sync 1 2 nope", &mut d).starts_with("err"));
        assert!(core.request("frobnicate", &mut d).starts_with("err"));
        assert_eq!(core.request("renew - -", &mut d), "ok");
        let st = core.request("status", &mut d);
        assert!(st.contains("fence_at=- "), "{st}");
        assert!(
            st.contains(" watchdog=off watchdog_timeout=- last_pet=-"),
            "{st}"
        );
        let a = parse_args(&["--socket".into(), "/s".into()]).unwrap();
        assert_eq!(a.socket, Path::new("/s"));
        assert!(
            parse_args(&[
                "--watchdog".into(),
                "/dev/w".into(),
                "--socket".into(),
                "/s".into()
            ])
            .is_err()
        );
        assert!(parse_args(&[]).is_err());
    }
}
