//! The running daemon: listeners, signals, idle timeout, orderly shutdown.
//!
//! ```text
//!  run(setup) ─► bind/adopt listeners ─► READY=1 ─► loop until a signal:
//!     SIGINT/SIGTERM/SIGQUIT → Mode::Shutdown: listeners stop, every connection
//!        closes (holders are released *and terminated*, as virtlockd does),
//!        wait ≤ 30 s, unlink self-bound sockets
//!     SIGHUP → logged and ignored (virtlockd dies of it)
//!     SIGUSR1 → re-exec (see `reexec`)
//!     --timeout → exit after SECS with no client on either server *and* no lock
//! ```

use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UnixListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::ctx::{Ctx, Handover, Mode, ServerKind};
use crate::server;

/// How long an orderly shutdown may take before the daemon exits anyway.
pub const SHUTDOWN_WATCHDOG: Duration = Duration::from_secs(30);

/// A listening socket and whether we bound it (and so unlink it on exit).
#[derive(Debug)]
pub struct Listener {
    /// Which server.
    pub kind: ServerKind,
    /// The socket.
    pub fd: OwnedFd,
    /// The path we bound, to unlink on exit (None for systemd's or inherited ones).
    pub unlink: Option<PathBuf>,
}

/// Why the daemon stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Signal or idle timeout: exit 0.
    Shutdown,
    /// SIGUSR1: re-exec.
    ReExec,
}

/// Binds a UNIX listening socket the way virtlockd does: stale path
/// unlinked, mode 0700 (umask around bind), backlog 30... raised to 128 here
/// since connections are cheap to accept.
pub fn bind(path: &Path) -> std::io::Result<OwnedFd> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let old = vmlock_sys::umask(0o077);
    let r = std::os::unix::net::UnixListener::bind(path);
    vmlock_sys::umask(old);
    Ok(OwnedFd::from(r?))
}

/// Runs until `stop` says why (the daemon's: [`wait_for_stop`]); returns
/// that, with the listeners (for a re-exec).
pub async fn serve(
    ctx: Arc<Ctx>,
    listeners: Vec<Listener>,
    resumed: Vec<(ServerKind, Handover)>,
    stop: impl std::future::Future<Output = std::io::Result<Stopped>>,
    timeout: Option<u32>,
) -> std::io::Result<(Stopped, Vec<Listener>)> {
    let (mode_tx, mode_rx) = watch::channel(Mode::Running);
    let conns = Arc::new(Mutex::new(JoinSet::new()));
    for (kind, h) in resumed {
        h.stream.set_nonblocking(true)?;
        let stream = tokio::net::UnixStream::from_std(h.stream)?;
        let gid = vmlock_sys::cred::peer_cred(stream.as_fd()).map_or(u32::MAX, |c| c.gid);
        server::start_connection(
            &ctx,
            kind,
            stream,
            h.session,
            gid,
            (h.unread, h.unsent),
            mode_rx.clone(),
            &conns,
        );
    }
    let mut accepts = JoinSet::new();
    for l in listeners {
        let std_l = std::os::unix::net::UnixListener::from(l.fd);
        std_l.set_nonblocking(true)?;
        let tl = UnixListener::from_std(std_l)?;
        let (ctx, rx, conns) = (ctx.clone(), mode_rx.clone(), conns.clone());
        accepts.spawn(async move {
            let back = server::accept_loop(ctx, l.kind, tl, rx, conns).await;
            (l.kind, back, l.unlink)
        });
    }
    if let Err(e) = crate::activation::notify("READY=1\n") {
        warn!("cannot notify the service manager: {e}");
    }
    info!("serving");
    ctx.idle_timeout
        .store(timeout.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
    let stopped = stop.await?;
    let _ = mode_tx.send(match stopped {
        Stopped::Shutdown => Mode::Shutdown,
        Stopped::ReExec => Mode::ReExec,
    });
    let listeners = collect_listeners(accepts).await?;
    drain(&ctx, &conns, stopped).await;
    Ok((stopped, listeners))
}

async fn collect_listeners(
    mut accepts: JoinSet<(ServerKind, UnixListener, Option<PathBuf>)>,
) -> std::io::Result<Vec<Listener>> {
    let mut out = Vec::new();
    while let Some(r) = accepts.join_next().await {
        let Ok((kind, l, unlink)) = r else { continue };
        let fd = OwnedFd::from(l.into_std()?);
        out.push(Listener { kind, fd, unlink });
    }
    Ok(out)
}

/// Waits for every connection task; on shutdown also for holder terminations.
async fn drain(ctx: &Arc<Ctx>, conns: &Arc<Mutex<JoinSet<()>>>, stopped: Stopped) {
    let deadline = Instant::now() + SHUTDOWN_WATCHDOG;
    let mut set = std::mem::take(&mut *conns.lock().unwrap_or_else(|p| p.into_inner()));
    while !set.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, set.join_next()).await.is_err() {
            error!("connections did not close within {SHUTDOWN_WATCHDOG:?}");
            return;
        }
    }
    if stopped == Stopped::Shutdown {
        let mut t = std::mem::take(
            &mut *ctx
                .shared
                .lifelines
                .terminations
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = tokio::time::timeout(left, async { while t.join_next().await.is_some() {} }).await;
    }
}

/// The signals the daemon handles, installed before any socket accepts.
#[derive(Debug)]
pub struct Signals {
    term: Signal,
    int: Signal,
    quit: Signal,
    hup: Signal,
    usr1: Signal,
    usr2: Signal,
}

impl Signals {
    /// Installs the handlers; call inside the runtime (`Runtime::enter`).
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }
}

/// The daemon's stop: a signal, or the idle timeout (`Ctx::idle_timeout`,
/// read again when changed).
pub async fn wait_for_stop(ctx: &Arc<Ctx>, sig: &mut Signals) -> std::io::Result<Stopped> {
    let Signals {
        term,
        int,
        quit,
        hup,
        usr1,
        usr2,
    } = sig;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut idle_since: Option<Instant> = None;
    loop {
        let timeout = ctx.idle_timeout.load(std::sync::atomic::Ordering::Relaxed);
        if timeout == 0 {
            idle_since = None;
        }
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: shutting down"); return Ok(Stopped::Shutdown) }
            _ = int.recv() => { info!("SIGINT: shutting down"); return Ok(Stopped::Shutdown) }
            _ = quit.recv() => { info!("SIGQUIT: shutting down"); return Ok(Stopped::Shutdown) }
            _ = usr1.recv() => { info!("SIGUSR1: re-exec"); return Ok(Stopped::ReExec) }
            _ = hup.recv() => warn!("SIGHUP ignored (use SIGUSR1 to re-exec, SIGTERM to stop)"),
            _ = usr2.recv() => warn!("SIGUSR2 ignored"),
            // virt-admin `daemon-timeout` changed it: look again.
            _ = ctx.timeout_changed.notified() => {}
            _ = tick.tick(), if timeout > 0 => {
                if idle_expired(ctx, &mut idle_since, timeout) {
                    info!("idle for {timeout}s with no clients and no locks: exiting");
                    return Ok(Stopped::Shutdown);
                }
            }
        }
    }
}

fn idle_expired(ctx: &Ctx, idle_since: &mut Option<Instant>, secs: u32) -> bool {
    let idle = ctx.total_clients() == 0 && ctx.shared.engine.counts().0 == 0;
    if !idle {
        *idle_since = None;
        return false;
    }
    let since = *idle_since.get_or_insert_with(Instant::now);
    since.elapsed() >= Duration::from_secs(u64::from(secs))
}
