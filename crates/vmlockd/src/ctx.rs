//! What the connection tasks share: the daemon's [`Mode`], its two servers'
//! bookkeeping ([`ServerState`], with the client registry virt-admin reads)
//! and [`Ctx`], which holds them with the lock engine's [`Shared`] state.
//!
//! Data only, below everything that serves: the accept loop (`server`), the
//! connections (`conn`), the program dispatchers (`dispatch`) and the re-exec
//! all build on it, and it names none of them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use vmlock_proto::route::Program;

use crate::lifeline::ConnCtl;
use crate::session::{Session, Shared};

/// What the daemon is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Serving.
    Running,
    /// Orderly shutdown: close everything.
    Shutdown,
    /// Re-exec: park every connection.
    ReExec,
}

/// Which server a listener or connection belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ServerKind {
    /// `virtlockd`: the lock-space program.
    Main,
    /// `admin`.
    Admin,
}

impl ServerKind {
    /// The (program, version) pairs this server dispatches (keepalive is always handled).
    pub fn programs(self) -> &'static [Program] {
        match self {
            ServerKind::Main => &[Program::Lock],
            ServerKind::Admin => &[Program::Admin, Program::Inquiry],
        }
    }

    /// The server's name in the state file and for virt-admin.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Main => "virtlockd",
            ServerKind::Admin => "admin",
        }
    }
}

/// Per-server bookkeeping.
#[derive(Debug)]
pub struct ServerState {
    /// Connected clients.
    pub clients: AtomicUsize,
    /// Next client id.
    pub next_id: AtomicU64,
    /// Limit (changeable with virt-admin `srv-clients-set`).
    pub max_clients: AtomicUsize,
    /// libvirt's limit on clients waiting for authentication: kept and
    /// reported for virt-admin; no client here ever waits for it.
    pub max_unauth_clients: AtomicUsize,
    /// Priority workers asked for with `srv-threadpool-set` (reported only:
    /// calls run on the event loop, as virtlockd's do).
    pub prio_workers: AtomicU32,
    /// The connected clients, by id, for virt-admin.
    pub registry: Mutex<BTreeMap<u64, ClientEntry>>,
}

impl ServerState {
    fn new(max_clients: u32, next_id: u64) -> ServerState {
        ServerState {
            clients: AtomicUsize::new(0),
            next_id: AtomicU64::new(next_id.max(1)),
            max_clients: AtomicUsize::new(max_clients as usize),
            max_unauth_clients: AtomicUsize::new(max_clients as usize),
            prio_workers: AtomicU32::new(0),
            registry: Mutex::new(BTreeMap::new()),
        }
    }

    /// The registry, even if a panicking thread poisoned its lock.
    pub fn registry(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, ClientEntry>> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What virt-admin may learn about, and do to, one connection.
#[derive(Debug, Clone)]
pub struct ClientEntry {
    /// Connection time, seconds since the epoch.
    pub timestamp: i64,
    /// Peer pid (−1 if unknown), uid and gid from SO_PEERCRED.
    pub pid: i32,
    /// Peer uid.
    pub uid: u32,
    /// Peer gid.
    pub gid: u32,
    /// Asks the connection to close.
    pub ctl: Arc<ConnCtl>,
}

/// Everything the connection tasks share.
#[derive(Debug)]
pub struct Ctx {
    /// Engine and filesystem executor.
    pub shared: Arc<Shared>,
    /// `geteuid() == 0`.
    pub privileged: bool,
    /// Our euid.
    pub euid: u32,
    /// Main and admin server state.
    pub main: ServerState,
    /// Admin server state.
    pub admin: ServerState,
    /// Connections parked for re-exec.
    pub parked: Mutex<Vec<(ServerKind, Handover)>>,
    /// Receive-buffer bytes beyond the per-connection allowance, daemon-wide
    /// (see `conn::BIG_BUFFER_BUDGET`).
    pub big_buffers: std::sync::atomic::AtomicUsize,
    /// Seconds of idleness (no clients, no locks) after which the daemon
    /// exits; 0: never. `--timeout`, or virt-admin `daemon-timeout`.
    pub idle_timeout: AtomicU32,
    /// Wakes the idle-timeout watcher after `idle_timeout` changed.
    pub timeout_changed: tokio::sync::Notify,
}

impl Ctx {
    /// A new context.
    pub fn new(shared: Arc<Shared>, max_clients: u32, admin_max: u32) -> Ctx {
        let euid = vmlock_sys::geteuid();
        Ctx {
            shared,
            privileged: euid == 0,
            euid,
            main: ServerState::new(max_clients, 1),
            admin: ServerState::new(admin_max, 1),
            parked: Mutex::new(Vec::new()),
            big_buffers: std::sync::atomic::AtomicUsize::new(0),
            idle_timeout: AtomicU32::new(0),
            timeout_changed: tokio::sync::Notify::new(),
        }
    }

    /// The state of one server.
    pub fn server(&self, kind: ServerKind) -> &ServerState {
        match kind {
            ServerKind::Main => &self.main,
            ServerKind::Admin => &self.admin,
        }
    }

    /// Connected clients on both servers.
    pub fn total_clients(&self) -> usize {
        self.main.clients.load(Ordering::Relaxed) + self.admin.clients.load(Ordering::Relaxed)
    }

    /// Called by a connection when it closes (or is parked for re-exec).
    pub fn client_gone(&self, kind: ServerKind, id: u64) {
        let st = self.server(kind);
        st.registry().remove(&id);
        st.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection parked for re-exec.
#[derive(Debug)]
pub struct Handover {
    /// The socket.
    pub stream: std::os::unix::net::UnixStream,
    /// Bytes received but not yet processed.
    pub unread: Vec<u8>,
    /// The end of a reply the client has not read yet (it stopped reading
    /// while the daemon stopped): written first if the connection resumes in
    /// this process (a failed exec); a successful re-exec drops it, with a
    /// warning, as virtlockd drops its unsent replies.
    pub unsent: Vec<u8>,
    /// The session.
    pub session: Session,
}
