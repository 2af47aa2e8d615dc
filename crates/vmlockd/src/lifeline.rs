//! Lifelines: connections whose close releases their owner's locks, and the
//! order in which that close takes effect.
//!
//! A connection whose peer registered *itself* as the owner (peer pid equal
//! to owner pid) is that owner's *lifeline* (docs/protocol.md §5.4). When it closes,
//! every lock of the owner pid is released, whichever connection took it,
//! and a process that still held any is terminated. libvirt hands QEMU such
//! a connection, restricted, so that a dying QEMU loses its disks.
//!
//! # The ordering rule
//!
//! virtlockd serves one event at a time in arrival order, so a close is
//! applied before anything its client sent after closing. vmlockd serves
//! each connection in a task of its own and releases on a thread pool, so
//! the close of a lifeline could otherwise be applied after requests the
//! same owner sent later on another connection: it would release a lock
//! taken *after* the close and terminate a healthy process. The rule:
//!
//! > Before a resource call acts on the locks of owner P, every lifeline of
//! > P that has ended (its peer hung up, an admin closed it, or its task is
//! > closing it) has had its close applied completely.
//!
//! Why it is enough: a client closes a socket before it sends its next
//! request, and the kernel marks the hang-up on the daemon's end of the
//! socket inside the client's `close(2)`. When the daemon reads the later
//! request, asking the kernel ([`vmlock_sys::fd::peer_hung_up`]: `poll`,
//! zero timeout) sees the hang-up, however the event loop ordered the two
//! connections' wake-ups. Whichever task gets there first (the lifeline's
//! own task on EOF, or a request of the same owner) runs the close, once;
//! any other waits until it has finished. Once a lifeline's close has run,
//! its task serves none of the frames left in its buffer: its client has
//! closed, and a lock granted after the release would be held by an owner
//! whose lifeline is gone.
//!
//! The rule also covers a close pending across a re-exec (the socket is
//! handed over with its hang-up, and the new process registers the
//! lifeline again before serving) and the etcd back end (the release goes
//! through the same engine call, which tells the arbiter).
//!
//! Cost on the request path: an atomic load per resource call while there
//! is no lifeline; otherwise a B-tree look-up under a mutex, and a `poll`
//! only when the owner has a lifeline besides the calling connection
//! (libvirtd acting for a running QEMU: hotplug, pause, resume).

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::{error, info, warn};

/// A request to close one connection from outside it (admin CLIENT_CLOSE).
/// The connection sees it at its next wait and closes as on EOF, running
/// the lifeline logic.
#[derive(Debug, Default)]
pub struct ConnCtl {
    kill: AtomicBool,
    notify: tokio::sync::Notify,
}

impl ConnCtl {
    /// Asks the connection to close.
    pub fn close(&self) {
        self.kill.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn closing(&self) -> bool {
        self.kill.load(Ordering::Acquire)
    }

    /// A future that completes after the next [`close`](Self::close).
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

/// One lifeline.
#[derive(Debug)]
pub struct Lifeline {
    /// The owner pid (the peer itself).
    pub owner: u32,
    /// The connection's client id on the main server.
    pub conn: u64,
    /// The owner's name, for the log.
    pub name: String,
    /// A duplicate of the connection's socket, to ask the kernel whether
    /// the peer hung up (`None` if it could not be duplicated: then only the
    /// connection's own task and an admin close end the lifeline).
    sock: Option<OwnedFd>,
    /// The connection's close request (admin CLIENT_CLOSE).
    ctl: Arc<ConnCtl>,
    /// The peer's pidfd, taken at accept.
    pidfd: Option<Arc<OwnedFd>>,
    /// Set when anyone starts the close.
    ending: AtomicBool,
    /// Completed when the close has been applied.
    closed: tokio::sync::OnceCell<Option<usize>>,
}

impl Lifeline {
    /// A lifeline of `owner` on connection `conn`.
    pub fn new(
        owner: u32,
        conn: u64,
        name: String,
        sock: Option<BorrowedFd<'_>>,
        ctl: Arc<ConnCtl>,
        pidfd: Option<Arc<OwnedFd>>,
    ) -> Lifeline {
        Lifeline {
            owner,
            conn,
            name,
            sock: sock.and_then(|s| s.try_clone_to_owned().ok()),
            ctl,
            pidfd,
            ending: AtomicBool::new(false),
            closed: tokio::sync::OnceCell::new(),
        }
    }

    /// Whether the close has started (by anyone). The connection's task
    /// serves no further frame once it has.
    pub fn ending(&self) -> bool {
        self.ending.load(Ordering::Acquire)
    }

    /// Whether the connection has ended: its close started, an admin asked
    /// for it, or the peer hung up.
    fn ended(&self) -> bool {
        self.ending()
            || self.ctl.closing()
            || self
                .sock
                .as_ref()
                .is_some_and(|s| vmlock_sys::fd::peer_hung_up(s.as_fd()).unwrap_or(false))
    }
}

/// The lifelines by owner pid, and the terminations they started.
#[derive(Debug)]
pub struct Lifelines {
    /// By owner pid (a B-tree: a look-up compares a few integers, where a
    /// hash map would hash the key on every resource call).
    by_owner: Mutex<BTreeMap<u32, Vec<Arc<Lifeline>>>>,
    /// How many lifelines there are: none (a daemon serving only libvirtd's
    /// own connections, or a benchmark) skips the look-up.
    count: AtomicUsize,
    /// SIGTERM → SIGKILL delay.
    grace: Duration,
    /// Terminations in flight.
    pub terminations: Mutex<JoinSet<()>>,
    /// Terminations started since the daemon started.
    terminated: std::sync::atomic::AtomicU64,
}

impl Lifelines {
    /// An empty registry; terminations wait `grace` between SIGTERM and SIGKILL.
    pub fn new(grace: Duration) -> Lifelines {
        Lifelines {
            by_owner: Mutex::new(BTreeMap::new()),
            count: AtomicUsize::new(0),
            grace,
            terminations: Mutex::new(JoinSet::new()),
            terminated: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn map(&self) -> MutexGuard<'_, BTreeMap<u32, Vec<Arc<Lifeline>>>> {
        self.by_owner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a lifeline.
    pub fn add(&self, l: Arc<Lifeline>) {
        self.map().entry(l.owner).or_default().push(l);
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    /// Forgets a lifeline (its close was applied, or its connection
    /// registered another owner).
    pub fn remove(&self, l: &Arc<Lifeline>) {
        let mut map = self.map();
        if let Some(v) = map.get_mut(&l.owner) {
            let before = v.len();
            v.retain(|x| !Arc::ptr_eq(x, l));
            self.count.fetch_sub(before - v.len(), Ordering::AcqRel);
            if v.is_empty() {
                map.remove(&l.owner);
            }
        }
    }

    /// The lifelines of `owner`, other than connection `me`, that have
    /// ended and whose close must be applied before `me` acts for `owner`.
    /// Each one returned is marked as ending, so its own task stops serving.
    pub fn ended_before(&self, owner: u32, me: u64) -> Vec<Arc<Lifeline>> {
        if self.count.load(Ordering::Acquire) == 0 {
            return Vec::new();
        }
        let map = self.map();
        let Some(v) = map.get(&owner) else {
            return Vec::new();
        };
        if v.len() == 1 && v.first().is_some_and(|l| l.conn == me) {
            return Vec::new();
        }
        v.iter()
            .filter(|l| l.conn != me && l.ended())
            .map(|l| {
                l.ending.store(true, Ordering::Release);
                Arc::clone(l)
            })
            .collect()
    }

    /// Applies the closes of the `ended` lifelines (from
    /// [`Lifelines::ended_before`]), one after the other. Together the two
    /// are the ordering rule: the caller may act on the owner's locks once
    /// this returns.
    pub async fn end_all<F, Fut>(&self, ended: Vec<Arc<Lifeline>>, release: F)
    where
        F: Fn(u32) -> Fut,
        Fut: std::future::Future<Output = Result<usize, String>>,
    {
        for l in ended {
            self.end(&l, &release).await;
        }
    }

    /// Applies the close of `l` once: `release` releases every lock of the
    /// owner and returns how many there were; if any (or on an error) the
    /// owner process is terminated in the background. Concurrent callers
    /// wait for the one that runs it; all get its result (`None`: the
    /// release failed). The lifeline is forgotten afterwards.
    pub async fn end<F, Fut>(&self, l: &Arc<Lifeline>, release: F) -> Option<usize>
    where
        F: FnOnce(u32) -> Fut,
        Fut: std::future::Future<Output = Result<usize, String>>,
    {
        l.ending.store(true, Ordering::Release);
        let released = *l
            .closed
            .get_or_init(|| async {
                let pid = l.owner;
                let name = &l.name;
                let released = match release(pid).await {
                    Ok(0) => return Some(0),
                    Ok(n) => {
                        info!(pid, owner = %name, "holder connection closed: released {n} resources");
                        Some(n)
                    }
                    Err(e) => {
                        warn!(pid, owner = %name, "holder connection closed: release failed: {e}");
                        None
                    }
                };
                match &l.pidfd {
                    Some(fd) => self.terminate(pid, Arc::clone(fd)),
                    None => warn!(pid, "no pidfd for holder: not signalling a bare pid"),
                }
                released
            })
            .await;
        self.remove(l);
        released
    }

    /// Starts the termination of a holder process in the background.
    pub fn terminate(&self, pid: u32, pidfd: Arc<OwnedFd>) {
        self.terminated.fetch_add(1, Ordering::Relaxed);
        let grace = self.grace;
        let job = async move {
            match crate::terminate::terminate(pidfd, grace).await {
                Ok(out) => info!(pid, ?out, "terminated lock holder"),
                Err(e) => error!(pid, "cannot terminate lock holder: {e}"),
            }
        };
        let mut set = self.terminations.lock().unwrap_or_else(|p| p.into_inner());
        while set.try_join_next().is_some() {}
        set.spawn(job);
    }

    /// The SIGTERM → SIGKILL delay of a termination.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Terminations started since the daemon started (status, metrics).
    pub fn terminated(&self) -> u64 {
        self.terminated.load(Ordering::Relaxed)
    }

    /// Terminations still in flight.
    pub fn in_flight(&self) -> usize {
        let mut set = self.terminations.lock().unwrap_or_else(|p| p.into_inner());
        while set.try_join_next().is_some() {}
        set.len()
    }

    /// Whether no lifeline is recorded (the model check's bookkeeping).
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0
    }
}

#[cfg(test)]
mod tests {
    //! A model check of the ordering rule on the real registry: one owner,
    //! its lifeline A holding lock "a", the client closing A and then
    //! acquiring "b" through connection B. The daemon's three moves (A's
    //! task seeing the hang-up, the release on the thread pool finishing,
    //! B's acquire) are run in every order the event loop allows.

    use std::cell::RefCell;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;
    use std::rc::Rc;

    use super::*;

    const OWNER: u32 = 4242;

    /// The locks held, as (owner, name): a stand-in for the engine.
    type Locks = Rc<RefCell<Vec<(u32, &'static str)>>>;

    /// The daemon's moves.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Move {
        /// A's own task sees EOF and runs its close.
        TaskSeesEof,
        /// The thread pool lets releases finish.
        PoolRuns,
        /// B's acquire of "b" arrives (the client sent it after closing A).
        Acquire,
    }

    /// What one run ended with.
    #[derive(Debug, PartialEq)]
    struct Outcome {
        locks: Vec<(u32, &'static str)>,
        released: Vec<Option<usize>>,
    }

    /// Runs the moves in `order` on a single-threaded event loop, letting
    /// every task run until it blocks after each move. `settle` false runs
    /// B's acquire without the rule, to show the check can fail.
    fn run(order: &[Move], hang_up: bool, settle: bool) -> Outcome {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let reg = Rc::new(Lifelines::new(Duration::from_millis(1)));
            let locks: Locks = Rc::new(RefCell::new(vec![(OWNER, "a")]));
            let pool = Rc::new(tokio::sync::Semaphore::new(0));
            let (client, daemon_end) = UnixStream::pair().expect("pair");
            let a = Arc::new(Lifeline::new(
                OWNER,
                1,
                "vm".into(),
                Some(daemon_end.as_fd()),
                Arc::default(),
                None,
            ));
            reg.add(Arc::clone(&a));
            if hang_up {
                drop(client);
            } else {
                std::mem::forget(client);
            }
            let release = {
                let (locks, pool) = (Rc::clone(&locks), Rc::clone(&pool));
                move |pid: u32| {
                    let (locks, pool) = (Rc::clone(&locks), Rc::clone(&pool));
                    async move {
                        // The engine call runs on the pool, later.
                        let permit = pool.acquire().await.map_err(|e| e.to_string())?;
                        permit.forget();
                        let mut l = locks.borrow_mut();
                        let before = l.len();
                        l.retain(|(o, _)| *o != pid);
                        Ok(before - l.len())
                    }
                }
            };
            let released = Rc::new(RefCell::new(Vec::new()));
            let mut tasks = Vec::new();
            for m in order {
                match m {
                    Move::TaskSeesEof => {
                        let (reg, a, rel, out) = (
                            Rc::clone(&reg),
                            Arc::clone(&a),
                            release.clone(),
                            Rc::clone(&released),
                        );
                        tasks.push(tokio::task::spawn_local(async move {
                            let n = reg.end(&a, rel).await;
                            out.borrow_mut().push(n);
                        }));
                    }
                    Move::PoolRuns => pool.add_permits(16),
                    Move::Acquire => {
                        let (reg, rel, locks) =
                            (Rc::clone(&reg), release.clone(), Rc::clone(&locks));
                        tasks.push(tokio::task::spawn_local(async move {
                            if settle {
                                let ended = reg.ended_before(OWNER, 2);
                                reg.end_all(ended, rel).await;
                            }
                            locks.borrow_mut().push((OWNER, "b"));
                        }));
                    }
                }
                for _ in 0..16 {
                    tokio::task::yield_now().await;
                }
            }
            // Whatever has not happened yet happens now.
            pool.add_permits(16);
            for t in tasks {
                t.await.expect("task");
            }
            if !order.contains(&Move::TaskSeesEof) && hang_up {
                let n = reg.end(&a, release.clone()).await;
                released.borrow_mut().push(n);
            }
            assert!(reg.is_empty() || !hang_up, "an ended lifeline is forgotten");
            let locks = locks.borrow().clone();
            let released = released.borrow().clone();
            Outcome { locks, released }
        })
    }

    /// Every order of the three moves, and the orders in which A's task
    /// never gets to see the EOF before B's acquire is served.
    fn orders() -> Vec<Vec<Move>> {
        use Move::*;
        let mut out = Vec::new();
        for a in [TaskSeesEof, PoolRuns, Acquire] {
            for b in [TaskSeesEof, PoolRuns, Acquire] {
                for c in [TaskSeesEof, PoolRuns, Acquire] {
                    if a != b && b != c && a != c {
                        out.push(vec![a, b, c]);
                    }
                }
            }
        }
        out.push(vec![Acquire, PoolRuns]);
        out.push(vec![PoolRuns, Acquire]);
        out
    }

    #[test]
    fn a_lock_taken_after_the_close_survives_it_in_every_order() {
        for order in orders() {
            let out = run(&order, true, true);
            assert_eq!(
                out.locks,
                vec![(OWNER, "b")],
                "{order:?}: the lock held through A at its close is released, \
                 the one acquired after the close is kept"
            );
            assert!(
                out.released.iter().all(|r| *r == Some(1)),
                "{order:?}: the close released exactly one lock, once: {:?}",
                out.released
            );
        }
    }

    #[test]
    fn without_the_rule_some_order_loses_the_later_lock() {
        let lost: Vec<Vec<Move>> = orders()
            .into_iter()
            .filter(|o| run(o, true, false).locks.is_empty())
            .collect();
        assert!(
            !lost.is_empty(),
            "the model must be able to show the failure the rule prevents"
        );
    }

    #[test]
    fn an_open_lifeline_is_not_closed_by_another_connection() {
        for order in [
            vec![Move::Acquire, Move::PoolRuns],
            vec![Move::PoolRuns, Move::Acquire],
        ] {
            let out = run(&order, false, true);
            assert_eq!(out.locks, vec![(OWNER, "a"), (OWNER, "b")], "{order:?}");
            assert!(out.released.is_empty());
        }
    }

    #[test]
    fn an_admin_close_counts_as_ended() {
        let reg = Lifelines::new(Duration::from_millis(1));
        let (_client, daemon_end) = UnixStream::pair().expect("pair");
        let ctl = Arc::new(ConnCtl::default());
        let a = Arc::new(Lifeline::new(
            OWNER,
            1,
            "vm".into(),
            Some(daemon_end.as_fd()),
            Arc::clone(&ctl),
            None,
        ));
        reg.add(Arc::clone(&a));
        assert!(reg.ended_before(OWNER, 2).is_empty(), "open and idle");
        assert!(!a.ending());
        ctl.close();
        let ended = reg.ended_before(OWNER, 2);
        assert_eq!(ended.len(), 1);
        assert!(a.ending(), "its own task stops serving");
        assert!(
            reg.ended_before(OWNER, 1).is_empty(),
            "a connection never settles itself"
        );
    }
}
