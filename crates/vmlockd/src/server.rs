//! The two servers (`virtlockd` and `admin`), their listeners and clients.
//!
//! ```text
//!  listener ─accept─► peer check (SO_PEERCRED: root daemon → uid 0 only,
//!     │               user daemon → own uid only; else close, log)
//!     │             ► max_clients (else close, log: refused cleanly)
//!     │             ► pidfd of the peer (SO_PEERPIDFD; peer gone → close)
//!     └──────────────► task: conn::serve(..)  — one task per connection
//! ```
//! A `watch` channel carries the daemon's [`Mode`]: `Running`, `Shutdown`
//! (connections close and run the holder logic; listeners stop) or `ReExec`
//! (connections park at a frame boundary and hand their socket back).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{Instrument, info_span, warn};

use crate::conn::{self, End};
use crate::ctx::{ClientEntry, Ctx, Mode, ServerKind};
use crate::lifeline::ConnCtl;
use crate::ratelimit::RateLimit;
use crate::session::Session;

static REFUSED_LOG: RateLimit = RateLimit::per_second(5);

/// Accepts connections on one listener until the mode leaves `Running`;
/// returns the listener (for a re-exec).
pub async fn accept_loop(
    ctx: Arc<Ctx>,
    kind: ServerKind,
    listener: UnixListener,
    mut mode: watch::Receiver<Mode>,
    conns: Arc<Mutex<JoinSet<()>>>,
) -> UnixListener {
    let mut reserve = spare_fd();
    loop {
        tokio::select! {
            biased;
            _ = mode.changed() => {
                if *mode.borrow() != Mode::Running {
                    return listener;
                }
            }
            r = listener.accept() => match r {
                Ok((stream, _)) => admit(&ctx, kind, stream, &mode, &conns),
                Err(e) => accept_failed(e, &listener, &mut reserve).await,
            }
        }
    }
}

/// A descriptor held in reserve for [`accept_failed`].
fn spare_fd() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

async fn accept_failed(
    e: std::io::Error,
    listener: &UnixListener,
    reserve: &mut Option<std::fs::File>,
) {
    if REFUSED_LOG.allow() {
        warn!("accept failed: {e}");
    }
    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
        // Out of descriptors: spend the reserve on accepting the waiting
        // client and closing it at once (a clean refusal it sees now, not a
        // hang in the backlog), then back off instead of spinning.
        if reserve.take().is_some() {
            let pending = tokio::time::timeout(Duration::from_millis(10), listener.accept());
            if let Ok(Ok((stream, _))) = pending.await {
                drop(stream);
                if REFUSED_LOG.allow() {
                    warn!("out of descriptors: refused a client");
                }
            }
            *reserve = spare_fd();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn admit(
    ctx: &Arc<Ctx>,
    kind: ServerKind,
    stream: UnixStream,
    mode: &watch::Receiver<Mode>,
    conns: &Arc<Mutex<JoinSet<()>>>,
) {
    let Some((session, gid)) = check_peer(ctx, kind, &stream) else {
        return;
    };
    start_connection(
        ctx,
        kind,
        stream,
        session,
        gid,
        (Vec::new(), Vec::new()),
        mode.clone(),
        conns,
    );
}

/// Starts serving a connection (new, or adopted after a re-exec); `gid` is
/// the peer's group from SO_PEERCRED, for virt-admin's `client-info`;
/// `buffers` are the bytes received and not processed and the end of a
/// reply not yet written (both empty for a new connection).
#[allow(clippy::too_many_arguments)]
pub fn start_connection(
    ctx: &Arc<Ctx>,
    kind: ServerKind,
    stream: UnixStream,
    mut session: Session,
    gid: u32,
    buffers: (Vec<u8>, Vec<u8>),
    mode: watch::Receiver<Mode>,
    conns: &Arc<Mutex<JoinSet<()>>>,
) {
    let st = ctx.server(kind);
    st.clients.fetch_add(1, Ordering::Relaxed);
    if let Some(o) = &session.owner {
        // Adopted after a re-exec: the owner registered with the old image.
        let engine = &ctx.shared.engine;
        ctx.shared.owners.register(o, || engine.owners());
    }
    let ctl = Arc::new(ConnCtl::default());
    st.registry().insert(
        session.id,
        ClientEntry {
            timestamp: session.conn_time,
            pid: session.peer_pid,
            uid: session.peer_uid,
            gid,
            ctl: Arc::clone(&ctl),
        },
    );
    let span = info_span!(
        "client",
        server = kind.name(),
        id = session.id,
        pid = session.peer_pid
    );
    if kind == ServerKind::Main {
        // A restored or resumed holder connection is its owner's lifeline
        // before it serves anything.
        conn::track_lifeline(ctx, &mut session, stream.as_fd(), &ctl);
    }
    let ctx2 = ctx.clone();
    let task = async move {
        if let End::Handover(h) =
            conn::serve(ctx2.clone(), kind, stream, session, buffers, mode, ctl).await
        {
            ctx2.client_gone(kind, h.session.id);
            ctx2.parked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((kind, *h));
        }
    };
    let mut set = conns.lock().unwrap_or_else(|p| p.into_inner());
    while set.try_join_next().is_some() {}
    set.spawn(task.instrument(span));
}

/// Applies the credential and client-count checks of docs/protocol.md §5.1 / §8.9;
/// returns the new session and the peer's gid.
fn check_peer(ctx: &Arc<Ctx>, kind: ServerKind, stream: &UnixStream) -> Option<(Session, u32)> {
    let cred = match vmlock_sys::cred::peer_cred(stream.as_fd()) {
        Ok(c) => c,
        Err(e) => {
            if REFUSED_LOG.allow() {
                warn!("cannot read peer credentials: {e}");
            }
            return None;
        }
    };
    let pid = if cred.pid == 0 { -1 } else { cred.pid };
    let allowed = if ctx.privileged {
        cred.uid == 0
    } else {
        cred.uid == ctx.euid
    };
    if !allowed {
        if REFUSED_LOG.allow() {
            warn!("Disallowing client {pid} with uid {}", cred.uid);
        }
        return None;
    }
    let st = ctx.server(kind);
    let max = st.max_clients.load(Ordering::Relaxed);
    if st.clients.load(Ordering::Relaxed) >= max {
        if REFUSED_LOG.allow() {
            warn!(
                server = kind.name(),
                max, "too many clients: refusing pid {pid}"
            );
        }
        return None;
    }
    let pidfd = match peer_pidfd(stream, pid) {
        Ok(fd) => Some(fd),
        Err(e) => {
            if REFUSED_LOG.allow() {
                warn!("client {pid} is gone or cannot be identified ({e}): refusing");
            }
            return None;
        }
    };
    let id = st.next_id.fetch_add(1, Ordering::Relaxed);
    Some((Session::new(id, pid, cred.uid, pidfd), cred.gid))
}

/// A pidfd for the peer: exact with SO_PEERPIDFD; otherwise pidfd_open by
/// pid, checked against the process start time seen now.
fn peer_pidfd(stream: &UnixStream, pid: i32) -> std::io::Result<OwnedFd> {
    match vmlock_sys::cred::peer_pidfd(stream.as_fd()) {
        Ok(fd) => Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {
            let fd = vmlock_sys::process::pidfd_open(pid)?;
            vmlock_sys::process::start_time(pid)?;
            Ok(fd)
        }
        Err(e) => Err(e),
    }
}
