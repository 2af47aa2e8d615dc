//! One client connection: framing, routing and the close logic.
//!
//! ```text
//!  read ─► [len:4][header:24][payload] ─► route (protocol.md §1.7)
//!            │ len < 4, len-4 > 32 MiB, header < 24 bytes → close, no reply
//!            ├ keepalive PING (MESSAGE) → PONG;  other keepalive → nothing
//!            ├ lock program CALL → dispatch → 28-byte OK or error reply
//!            ├ unknown program CALL → error "Cannot find program P version V"
//!            └ anything else → dropped silently
//! ```
//! One request at a time per connection (virtlockd's `nrequests_client_max = 1`):
//! the next frame is not looked at until the reply has been written.
//! Memory per connection grows with the bytes actually received, never with
//! a claimed length. Receive buffers beyond `RETAIN_MAX` (256 KiB; only frames
//! far larger than any lock request need them) draw on one daemon-wide budget,
//! [`BIG_BUFFER_BUDGET`]; a connection that would exceed it is closed, so
//! a crowd of clients each sending a 32 MiB frame cannot exhaust memory
//! (and get the daemon, with every lock, OOM-killed).

use std::future::Future;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::sync::watch;
use tracing::warn;

use vmlock_proto::frame;

use crate::ctx::{Ctx, Handover, Mode, ServerKind};
use crate::dispatch::{self, Reply};
use crate::lifeline::ConnCtl;
use crate::lifeline::Lifeline;
use crate::ratelimit::RateLimit;
use crate::session::Session;

/// Read buffer growth step.
const READ_CHUNK: usize = 16 * 1024;
/// Largest spare read-buffer capacity an idle connection keeps: after a
/// big frame (up to 32 MiB) the buffer shrinks back, or every connection
/// that ever sent one would pin that much memory for its whole life.
const RETAIN_MAX: usize = 256 * 1024;

/// Daemon-wide cap on receive-buffer capacity beyond `RETAIN_MAX` per
/// connection: 128 MiB, room for a few frames of the largest size the
/// protocol allows (a buffer may reach twice a frame's size as it grows).
pub const BIG_BUFFER_BUDGET: usize = 128 * 1024 * 1024;

/// This connection's share of the big-buffer budget, given back on drop.
struct Charge<'a> {
    pool: &'a std::sync::atomic::AtomicUsize,
    held: usize,
}

impl Charge<'_> {
    /// Accounts for a buffer of `capacity`; false if the budget is spent.
    fn set(&mut self, capacity: usize) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let want = capacity.saturating_sub(RETAIN_MAX);
        if want > self.held {
            let more = want - self.held;
            if self.pool.fetch_add(more, Relaxed) + more > BIG_BUFFER_BUDGET {
                self.pool.fetch_sub(more, Relaxed);
                return false;
            }
        } else {
            self.pool.fetch_sub(self.held - want, Relaxed);
        }
        self.held = want;
        true
    }
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// How a connection ended.
#[derive(Debug)]
pub enum End {
    /// Closed (EOF, error, protocol violation or shutdown): the close logic ran.
    Closed,
    /// Stopped for a re-exec: the socket, its unread bytes and the session survive.
    Handover(Box<Handover>),
}

static BAD_FRAME_LOG: RateLimit = RateLimit::per_second(5);

/// Serves one connection until it ends.
pub async fn serve(
    ctx: Arc<Ctx>,
    kind: ServerKind,
    mut stream: UnixStream,
    mut session: Session,
    (mut unread, mut unsent): (Vec<u8>, Vec<u8>),
    mut mode: watch::Receiver<Mode>,
    ctl: Arc<ConnCtl>,
) -> End {
    // A second receiver, only ever asked `has_changed` (one atomic load):
    // the first one's `changed` future is polled once per mode change to
    // register the wake-up, not on every read (each poll takes a lock).
    let mut probe = mode.clone();
    loop {
        let changed = {
            let changed = mode.changed();
            tokio::pin!(changed);
            let killed = ctl.notified();
            tokio::pin!(killed);
            let mut io = Io {
                stream: &mut stream,
                ctl: &ctl,
                session: &mut session,
                unread: &mut unread,
                unsent: &mut unsent,
                charge: Charge {
                    pool: &ctx.big_buffers,
                    held: 0,
                },
            };
            let r = io
                .serve_until(&ctx, kind, Wakers { changed, killed }, &probe, &ctl)
                .await;
            // A parked buffer is small again or goes with the connection.
            drop(io);
            r
        };
        let Some(changed) = changed else {
            break;
        };
        probe.mark_unchanged();
        let m = if changed {
            *mode.borrow_and_update()
        } else {
            Mode::Shutdown
        };
        match m {
            Mode::Running => continue,
            Mode::Shutdown => break,
            Mode::ReExec => return park(stream, unread, unsent, session),
        }
    }
    close(&ctx, kind, session).await;
    End::Closed
}

/// The parts of a connection the frame loop works on.
struct Io<'a> {
    stream: &'a mut UnixStream,
    /// The connection's close request (admin CLIENT_CLOSE).
    ctl: &'a Arc<ConnCtl>,
    session: &'a mut Session,
    unread: &'a mut Vec<u8>,
    /// The part of the last reply the socket did not take yet.
    unsent: &'a mut Vec<u8>,
    charge: Charge<'a>,
}

impl Io<'_> {
    /// Serves frames until the connection must close (`None`: EOF, error,
    /// protocol violation, admin CONNECT_CLOSE or CLIENT_CLOSE) or the mode
    /// watch fires (`Some(false)` if its sender is gone).
    async fn serve_until<F, K>(
        &mut self,
        ctx: &Arc<Ctx>,
        kind: ServerKind,
        mut w: Wakers<'_, F, K>,
        probe: &watch::Receiver<Mode>,
        ctl: &ConnCtl,
    ) -> Option<bool>
    where
        F: Future<Output = Result<(), watch::error::RecvError>>,
        K: Future<Output = ()>,
    {
        let mut armed = false;
        loop {
            // A reply the client has not taken yet is finished before the
            // next frame is looked at (one request at a time).
            match self.flush(&mut w, probe, ctl, &mut armed).await {
                Flush::Done => {}
                Flush::Close => return None,
                Flush::Interrupted => return Some(probe.has_changed().is_ok()),
            }
            while self.unsent.is_empty() && self.serve_one(ctx, kind).await? {}
            if ctl.closing() {
                return None;
            }
            if !self.unsent.is_empty() {
                continue;
            }
            if self.unread.capacity() - self.unread.len() < 4096 {
                self.unread.reserve(READ_CHUNK);
            }
            if !self.charge.set(self.unread.capacity()) {
                if BAD_FRAME_LOG.allow() {
                    let s = &*self.session;
                    warn!(
                        client = s.id,
                        pid = s.peer_pid,
                        "closing connection: too much memory in large frames being received"
                    );
                }
                return None;
            }
            match self.wait(&mut w, probe, ctl, &mut armed).await {
                Wake::Mode(alive) => return Some(alive),
                Wake::Read(Ok(0) | Err(_)) | Wake::Killed => return None,
                Wake::Read(Ok(_)) => {}
            }
        }
    }

    /// Waits for bytes, a mode change or a close request, the mode first.
    /// `changed` and `killed` are polled until they have registered this
    /// task's waker (`armed`); after that they still wake the task, and
    /// `probe` and `ctl` (one atomic load each) tell which.
    async fn wait<F, K>(
        &mut self,
        w: &mut Wakers<'_, F, K>,
        probe: &watch::Receiver<Mode>,
        ctl: &ConnCtl,
        armed: &mut bool,
    ) -> Wake
    where
        F: Future<Output = Result<(), watch::error::RecvError>>,
        K: Future<Output = ()>,
    {
        std::future::poll_fn(|cx| {
            if let Some(stop) = Stop::seen(probe, ctl) {
                return Poll::Ready(stop.into());
            }
            let read = self.stream.read_buf(self.unread);
            tokio::pin!(read);
            if let Poll::Ready(r) = read.poll(cx) {
                return Poll::Ready(Wake::Read(r));
            }
            match w.arm(cx, armed) {
                Some(stop) => Poll::Ready(stop.into()),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// Answers the frame at the front of the buffer: `Some(true)` if one
    /// was served, `Some(false)` if more bytes are needed, `None` to close.
    async fn serve_one(&mut self, ctx: &Arc<Ctx>, kind: ServerKind) -> Option<bool> {
        let s = &mut *self.session;
        let len = match frame_len(self.unread) {
            Err(why) => {
                if BAD_FRAME_LOG.allow() {
                    warn!(client = s.id, pid = s.peer_pid, "closing connection: {why}");
                }
                return None;
            }
            Ok(None) => return Some(false),
            Ok(Some(len)) => len,
        };
        if s.lifeline.as_ref().is_some_and(|l| l.ending()) {
            // The close of this lifeline was applied on behalf of a later
            // request of its owner: its client has closed, and nothing read
            // from it now may take a lock (see `crate::lifeline`).
            return None;
        }
        // The frame is handled where it lies and consumed afterwards.
        let body = self.unread.get(4..4 + len).unwrap_or_default();
        let Some(reply) = dispatch::handle(ctx, kind, s, body).await else {
            if BAD_FRAME_LOG.allow() {
                warn!(client = s.id, "closing connection: short header");
            }
            return None;
        };
        if kind == ServerKind::Main {
            track_lifeline(ctx, s, self.stream.as_fd(), self.ctl);
        }
        consume(self.unread, 4 + len);
        let bytes = match &reply {
            Reply::Nothing => return Some(true),
            Reply::Ok(b) => b.as_slice(),
            Reply::Frame(v) | Reply::FrameThenClose(v) => v.as_slice(),
        };
        // Written at once as a rule (a reply is small, the socket's buffer
        // has room). What a client that is not reading leaves over is kept
        // and written by `flush`, which a mode change or an admin close
        // can interrupt, so such a client delays no re-exec or shutdown.
        let sent = match self.stream.try_write(bytes) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(_) => return None,
        };
        if matches!(reply, Reply::FrameThenClose(_)) {
            return None;
        }
        self.unsent
            .extend_from_slice(bytes.get(sent..).unwrap_or_default());
        Some(true)
    }

    /// Writes `unsent` out as the socket takes it. Stops early when the
    /// mode changes (`Interrupted`: the rest stays in `unsent`) or the
    /// connection must close.
    async fn flush<F, K>(
        &mut self,
        w: &mut Wakers<'_, F, K>,
        probe: &watch::Receiver<Mode>,
        ctl: &ConnCtl,
        armed: &mut bool,
    ) -> Flush
    where
        F: Future<Output = Result<(), watch::error::RecvError>>,
        K: Future<Output = ()>,
    {
        while !self.unsent.is_empty() {
            let stream = &*self.stream;
            let ready = std::future::poll_fn(|cx| {
                if let Some(stop) = Stop::seen(probe, ctl) {
                    return Poll::Ready(stop.into());
                }
                if let Poll::Ready(r) = stream.poll_write_ready(cx) {
                    return Poll::Ready(if r.is_ok() { Flush::Done } else { Flush::Close });
                }
                match w.arm(cx, armed) {
                    Some(stop) => Poll::Ready(stop.into()),
                    None => Poll::Pending,
                }
            })
            .await;
            if !matches!(ready, Flush::Done) {
                return ready;
            }
            match self.stream.try_write(self.unsent) {
                Ok(n) => {
                    self.unsent.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return Flush::Close,
            }
        }
        if self.unsent.capacity() > RETAIN_MAX {
            self.unsent.shrink_to(0);
        }
        Flush::Done
    }
}

/// How [`Io::flush`] ended.
enum Flush {
    /// Everything written.
    Done,
    /// The mode changed first.
    Interrupted,
    /// The connection must close.
    Close,
}

/// The futures besides the socket that wake a waiting connection.
struct Wakers<'a, F, K> {
    /// The daemon's mode changed.
    changed: Pin<&'a mut F>,
    /// An admin asked this connection to close.
    killed: Pin<&'a mut K>,
}

impl<F, K> Wakers<'_, F, K>
where
    F: Future<Output = Result<(), watch::error::RecvError>>,
    K: Future<Output = ()>,
{
    /// Polls the two futures until they have registered this task's waker
    /// (`armed`; each poll of `changed` takes a lock, so only once per
    /// wait loop). Call after the socket said pending; afterwards a mode
    /// change or close request wakes the task and [`Stop::seen`] tells.
    fn arm(&mut self, cx: &mut std::task::Context<'_>, armed: &mut bool) -> Option<Stop> {
        if *armed {
            return None;
        }
        if let Poll::Ready(c) = self.changed.as_mut().poll(cx) {
            return Some(Stop::Mode(c.is_ok()));
        }
        if self.killed.as_mut().poll(cx).is_ready() {
            return Some(Stop::Killed);
        }
        *armed = true;
        None
    }
}

/// Why a connection stops waiting, other than for its socket.
enum Stop {
    /// The mode changed (`false`: its sender is gone).
    Mode(bool),
    /// An admin closed the connection.
    Killed,
}

impl Stop {
    /// What is already known, one atomic load each: the mode first.
    fn seen(probe: &watch::Receiver<Mode>, ctl: &ConnCtl) -> Option<Stop> {
        match probe.has_changed() {
            Ok(false) => {}
            Ok(true) => return Some(Stop::Mode(true)),
            Err(_) => return Some(Stop::Mode(false)),
        }
        ctl.closing().then_some(Stop::Killed)
    }
}

impl From<Stop> for Wake {
    fn from(s: Stop) -> Wake {
        match s {
            Stop::Mode(alive) => Wake::Mode(alive),
            Stop::Killed => Wake::Killed,
        }
    }
}

impl From<Stop> for Flush {
    fn from(s: Stop) -> Flush {
        match s {
            Stop::Mode(_) => Flush::Interrupted,
            Stop::Killed => Flush::Close,
        }
    }
}

/// What woke [`Io::wait`].
enum Wake {
    /// The mode changed (`false`: its sender is gone).
    Mode(bool),
    /// A read finished.
    Read(std::io::Result<usize>),
    /// An admin closed the connection.
    Killed,
}

fn park(stream: UnixStream, unread: Vec<u8>, unsent: Vec<u8>, session: Session) -> End {
    match stream.into_std() {
        Ok(stream) => End::Handover(Box::new(Handover {
            stream,
            unread,
            unsent,
            session,
        })),
        Err(e) => {
            warn!(client = session.id, "cannot hand over connection: {e}");
            End::Closed
        }
    }
}

/// The body length of the complete frame at the front of `buf` (without
/// the length word), `Ok(None)` if more bytes are needed, `Err` if the
/// connection must be closed.
fn frame_len(buf: &[u8]) -> Result<Option<usize>, frame::FrameError> {
    let Some(word) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = frame::body_len(*word)?;
    Ok((buf.len() >= 4 + len).then_some(len))
}

/// Drops the first `n` (handled) bytes; a buffer grown for a big frame
/// shrinks back.
fn consume(buf: &mut Vec<u8>, n: usize) {
    buf.drain(..n.min(buf.len()));
    if buf.capacity() > RETAIN_MAX && buf.len() < RETAIN_MAX {
        buf.shrink_to(READ_CHUNK.max(buf.len()));
    }
}

/// The close logic of docs/protocol.md §5.4: a holder's locks are released and, if it
/// held any, the holder process is terminated (asynchronously). A lifeline
/// whose close was already applied for a later request of its owner is not
/// closed twice.
pub async fn close(ctx: &Arc<Ctx>, kind: ServerKind, s: Session) {
    ctx.client_gone(kind, s.id);
    if let Some(l) = &s.lifeline {
        ctx.shared.end_lifeline(l).await;
    } else if s.is_holder() {
        let l = lifeline_of(&s, None, Arc::default());
        ctx.shared.end_lifeline(&Arc::new(l)).await;
    }
}

/// Keeps the session's lifeline in step with its registration: a
/// connection whose peer registered itself becomes (or stays) its owner's
/// lifeline; one that registered another owner stops being one.
pub fn track_lifeline(ctx: &Ctx, s: &mut Session, sock: BorrowedFd<'_>, ctl: &Arc<ConnCtl>) {
    let want = s.is_holder().then_some(s.peer_pid as u32);
    if s.lifeline.as_ref().map(|l| l.owner) == want {
        return;
    }
    if let Some(old) = s.lifeline.take() {
        ctx.shared.lifelines.remove(&old);
    }
    if want.is_some() {
        let l = Arc::new(lifeline_of(s, Some(sock), Arc::clone(ctl)));
        ctx.shared.lifelines.add(Arc::clone(&l));
        s.lifeline = Some(l);
    }
}

fn lifeline_of(s: &Session, sock: Option<BorrowedFd<'_>>, ctl: Arc<ConnCtl>) -> Lifeline {
    let name = s.owner.as_ref().map(|o| o.name.clone()).unwrap_or_default();
    Lifeline::new(s.peer_pid as u32, s.id, name, sock, ctl, s.pidfd.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_len_waits_for_the_whole_frame() {
        assert_eq!(frame_len(&[]), Ok(None));
        assert_eq!(frame_len(&[0, 0, 0]), Ok(None));
        let mut buf = vec![0, 0, 0, 8, 1, 2, 3];
        assert_eq!(frame_len(&buf), Ok(None));
        buf.push(4);
        assert_eq!(frame_len(&buf), Ok(Some(4)));
        buf.extend_from_slice(&[0, 0]);
        assert_eq!(frame_len(&buf), Ok(Some(4)), "bytes of the next frame");
        assert!(frame_len(&[0, 0, 0, 3]).is_err());
        assert!(frame_len(&[0xff; 4]).is_err());
    }

    #[test]
    fn consume_keeps_the_rest_and_shrinks_big_buffers() {
        let mut buf = vec![0, 0, 0, 5, 9, 7, 7];
        consume(&mut buf, 5);
        assert_eq!(buf, [7, 7]);
        let mut big = Vec::with_capacity(2 * RETAIN_MAX);
        big.resize(RETAIN_MAX + 10, 1u8);
        consume(&mut big, RETAIN_MAX);
        assert_eq!(big.len(), 10);
        assert!(big.capacity() <= RETAIN_MAX, "shrunk: {}", big.capacity());
        consume(&mut big, 100);
        assert!(big.is_empty());
    }
}
