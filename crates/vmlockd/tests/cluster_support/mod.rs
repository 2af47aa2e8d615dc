//! Shared by `tests/cluster.rs` and `benches/cluster.rs`: vmlockd "hosts"
//! on one private etcd, VM-like holders, and raw ACQUIRE/RELEASE.
//!
//! Each host runs in its own mount namespace, so the lockspace path
//! `/run/leases` is a different directory on every host: only etcd can make
//! two hosts conflict, as with storage shared between hosts.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use vmlock_testkit::etcd::{self, Etcd};
use vmlock_testkit::frames::{self, FLAG_AUTOCREATE, FLAG_SHARED};
use vmlock_testkit::hold::RegisteredHolder;
use vmlock_testkit::{Daemon, DaemonSpec, Flavor, RawConn, decode_reply};

pub const LS: &str = "/run/leases";
pub const TTL: u64 = 3;

pub struct Host {
    pub daemon: Daemon,
}

pub fn config(url: &str, id: &str, state_dir: &Path, extra: &str) -> String {
    config_ttl(url, id, state_dir, extra, TTL)
}

/// [`config`] with another lease TTL (seconds). `url` may list several
/// endpoints, separated by commas.
pub fn config_ttl(url: &str, id: &str, state_dir: &Path, extra: &str, ttl: u64) -> String {
    let state = state_dir.join(format!("{id}.json"));
    config_state(url, id, &state, extra, ttl)
}

/// [`config_ttl`] with the etcd state file given.
pub fn config_state(url: &str, id: &str, state: &Path, extra: &str, ttl: u64) -> String {
    let urls: Vec<String> = url.split(',').map(|u| format!("\"{u}\"")).collect();
    format!(
        "lock_backend = \"etcd\"\netcd_endpoints = [ {} ]\netcd_prefix = \"/vmlockd-test\"\n\
         host_id = \"{id}\"\nlease_ttl = {ttl}\netcd_state_file = \"{}\"\n\
         holder_kill_grace_ms = 200\n{extra}",
        urls.join(", "),
        state.display()
    )
}

impl Host {
    pub fn start(url: &str, id: &str, state_dir: &Path, extra: &str) -> Host {
        Host::start_ttl(url, id, state_dir, extra, TTL)
    }

    /// [`Host::start`] with another lease TTL (seconds).
    pub fn start_ttl(url: &str, id: &str, state_dir: &Path, extra: &str, ttl: u64) -> Host {
        let spec =
            DaemonSpec::new(Flavor::Ours).config(&config_ttl(url, id, state_dir, extra, ttl));
        let daemon = Daemon::start(spec).expect("start vmlockd");
        let mut c = daemon.connect();
        let r = c
            .call(&frames::create_lockspace(1, LS))
            .expect("CREATE_LOCKSPACE");
        assert!(decode_reply(&r).1.is_none(), "{}", daemon.log_text());
        Host { daemon }
    }

    /// A client registered for a fake owner `pid`.
    pub fn client(&self, pid: u32) -> RawConn {
        let mut c = self.daemon.connect();
        let r = c
            .call(&frames::register(0, [7; 16], "probe", 1, pid, 0))
            .expect("REGISTER");
        assert!(decode_reply(&r).1.is_none());
        c
    }
}

/// `Ok` or the error (code, text) of an ACQUIRE.
pub fn acquire(c: &mut RawConn, name: &str, shared: bool) -> Result<(), (i32, String)> {
    let flags = FLAG_AUTOCREATE | if shared { FLAG_SHARED } else { 0 };
    let r = c
        .call(&frames::acquire(9, LS, name, flags))
        .expect("ACQUIRE");
    match decode_reply(&r).1 {
        None => Ok(()),
        Some(e) => Err((e.code, e.text().to_owned())),
    }
}

pub fn release(c: &mut RawConn, name: &str) {
    let r = c.call(&frames::release(9, LS, name, 0)).expect("RELEASE");
    assert!(decode_reply(&r).1.is_none(), "{:?}", decode_reply(&r).1);
}

/// A VM-like lock holder on `host`: registers its own pid and acquires.
pub struct Holder(RegisteredHolder);

impl Holder {
    pub fn start(host: &Host, name: &str, shared: bool) -> Holder {
        let mut extra = vec!["--autocreate"];
        if shared {
            extra.push("--shared");
        }
        let socket = host.daemon.socket_path();
        Holder(RegisteredHolder::start(&socket, LS, name, &extra, &|| {
            host.daemon.log_text()
        }))
    }

    pub fn pid(&self) -> u32 {
        self.0.pid()
    }

    pub fn alive(&mut self) -> bool {
        self.0.alive()
    }

    /// SIGKILL (not reaped: [`Holder::alive`] and [`Holder::death`] see it).
    pub fn kill(&mut self) {
        self.0.child.kill().expect("kill holder");
    }

    /// Waits for the holder's death; returns when it was seen and how it died.
    pub fn death(&mut self, limit: Duration) -> Option<(Instant, Option<i32>)> {
        use std::os::unix::process::ExitStatusExt;
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Some(st) = self.0.child.try_wait().expect("try_wait") {
                return Some((Instant::now(), st.signal()));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    }
}

pub fn setup() -> Option<(std::sync::MutexGuard<'static, ()>, Etcd, tempfile::TempDir)> {
    let g = etcd::serial();
    if !etcd::etcd_available() {
        return None;
    }
    Some((
        g,
        etcd::start_single(),
        tempfile::tempdir().expect("tempdir"),
    ))
}

/// A live process to stand for a fake owner (fencing signals real pids).
pub fn sleeper() -> Child {
    Command::new("sleep").arg("60").spawn().expect("sleep")
}

/// The fence helper's `status` for host `id` (its socket sits beside the
/// host's etcd state file): `key=value` pairs, or `None` when none answers.
pub fn helper_status(
    state_dir: &Path,
    id: &str,
) -> Option<std::collections::HashMap<String, String>> {
    use std::io::{BufRead, BufReader, Write};
    let sock = state_dir.join(format!("{id}.json.fence.sock"));
    let mut s = std::os::unix::net::UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    writeln!(s, "status").ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    let rest = line.trim().strip_prefix("ok ")?;
    Some(
        rest.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    )
}

/// Waits until host `id`'s helper guards `n` processes; returns its pid.
pub fn helper_guarding(state_dir: &Path, id: &str, n: usize) -> i32 {
    let want = n.to_string();
    let pid = etcd::poll(Duration::from_secs(5), || {
        let st = helper_status(state_dir, id)?;
        (st.get("guarded") == Some(&want)).then(|| st.get("pid")?.parse().ok())?
    });
    pid.unwrap_or_else(|| {
        panic!(
            "no helper of {id} guarding {n}: {:?}",
            helper_status(state_dir, id)
        )
    })
}

/// How a takeover went: when the holder on A was seen dead, when B's
/// successful acquire was *sent* (the grant happened after that), and how
/// the holder died.
#[derive(Debug)]
pub struct Takeover {
    pub died: Instant,
    pub granted_after: Instant,
    pub signal: Option<i32>,
}

/// Polls B for `disk` (every 5 ms) while watching A's holder, until B gets
/// it or `limit` passes.
pub fn race_for(vm_a: &mut Holder, cb: &mut RawConn, disk: &str, limit: Duration) -> Takeover {
    use std::os::unix::process::ExitStatusExt;
    let until = Instant::now() + limit;
    let mut died = None;
    let mut signal = None;
    while Instant::now() < until {
        if died.is_none()
            && let Some(st) = vm_a.0.child.try_wait().expect("try_wait")
        {
            died = Some(Instant::now());
            signal = st.signal();
        }
        let sent = Instant::now();
        if acquire(cb, disk, false).is_ok() {
            if died.is_none()
                && let Some(st) = vm_a.0.child.try_wait().expect("try_wait")
            {
                died = Some(Instant::now());
                signal = st.signal();
            }
            return Takeover {
                died: died.unwrap_or_else(|| panic!("B granted {disk} while A's holder runs")),
                granted_after: sent,
                signal,
            };
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("B never got {disk} (holder dead: {})", died.is_some());
}
