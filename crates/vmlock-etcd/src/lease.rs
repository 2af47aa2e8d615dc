//! Keeping the host's lease alive, and fencing when that fails.
//!
//! Three activities, deliberately independent:
//!
//! * **keepalive task** (async): every `ttl/4` sends a keepalive, remembers
//!   the *send* instant, and on a reply with TTL > 0 moves the deadline to
//!   `send + ttl − margin`. A reply that does not come within a period
//!   (etcd stalls: the stream hangs without error), an error, or a closed
//!   stream makes it reopen the stream; a TTL of 0 marks the lease expired.
//!   With no lease (after fencing) it grants a new one.
//! * **watchdog thread** (std): wakes every 50 ms and compares the
//!   deadline with the monotonic clock. It does not depend on the runtime,
//!   the network or the disk: when the deadline passes it drops every lock
//!   from the bookkeeping, calls [`Fencer::fence_all`] and then
//!   [`Fencer::locks_lost`], and clears the lease so the keepalive task
//!   grants a new one.
//! * **cleanup task** (async): retries deletes of keys whose release
//!   failed and revokes leases given up by fencing.
//!
//! Safety argument: etcd expires a lease no earlier than `last keepalive
//! received + TTL` (a leader change only extends it), and a keepalive is
//! received after it is sent, so `send + ttl − margin` is earlier by at
//! least `margin` (≥ 1 s, the fence's time budget).
//!
//! [`Fencer::fence_all`]: crate::Fencer::fence_all
//! [`Fencer::locks_lost`]: crate::Fencer::locks_lost

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::{sleep, timeout};

use crate::rpc::{is_lease_not_found, retrying};
use crate::state::Shared;

const WATCHDOG_TICK: Duration = Duration::from_millis(50);
const RETRY_PAUSE: Duration = Duration::from_millis(200);

impl Shared {
    /// A keepalive sent at `sent` for lease `id` got `ttl` seconds.
    fn renewed(&self, id: i64, sent: Instant, ttl: i64) {
        let moved = {
            let mut g = self.lock();
            let until = sent + self.cfg.protected_for(ttl);
            if g.lease == Some(id) {
                let now = Instant::now();
                g.last_rtt = Some(now.saturating_duration_since(sent));
                g.last_renewal = Some(now);
            }
            if g.lease == Some(id) && until > g.deadline {
                g.deadline = until;
                Some(until)
            } else {
                None
            }
        };
        if let Some(d) = moved {
            self.tell_renewed(d);
        }
    }

    /// Passes a new deadline to the fence off the runtime's one worker
    /// (the fence may do I/O).
    pub(crate) fn tell_renewed(&self, deadline: Instant) {
        let fence = self.fence.clone();
        let d = self.cfg.deadlines(deadline);
        self.handle.spawn_blocking(move || fence.renewed(d));
    }

    /// etcd says lease `id` is gone: fence at once.
    fn expired(&self, id: i64) {
        let mut g = self.lock();
        if g.lease == Some(id) {
            tracing::error!(lease = id, "etcd reports the lease expired");
            g.deadline = Instant::now();
        }
    }

    /// The watchdog's action: drop all locks, fence, forget the lease.
    pub(crate) fn fence_now(&self) {
        let (pids, lost) = {
            let mut g = self.lock();
            let Some(old) = g.lease.take() else { return };
            g.stale_leases.insert(old);
            g.fences += 1;
            g.take_all()
        };
        tracing::error!(
            owners = ?pids,
            locks = lost.len(),
            "etcd lease deadline passed: fencing local lock holders"
        );
        self.fence.fence_all(&pids);
        self.fence.locks_lost(&lost);
        for pid in &pids {
            if let Err(e) = self.sync_guard(*pid) {
                tracing::warn!(pid, "fence helper: {e}");
            }
        }
        self.persist_logged();
    }
}

/// The watchdog thread's body; returns when the arbiter stops.
pub(crate) fn watchdog(sh: Arc<Shared>) {
    while !sh.stopped() {
        std::thread::sleep(WATCHDOG_TICK);
        let due = {
            let g = sh.lock();
            g.lease.is_some() && Instant::now() >= g.deadline
        };
        if due {
            sh.fence_now();
        }
    }
}

/// The keepalive task's body; returns when the arbiter stops.
pub(crate) async fn keepalive_task(sh: Arc<Shared>) {
    while !sh.stopped() {
        let lease = sh.lock().lease;
        match lease {
            Some(id) => keepalive_session(&sh, id).await,
            None => regrant(&sh).await,
        }
        sleep(RETRY_PAUSE).await;
    }
}

/// Grants a fresh lease after fencing.
async fn regrant(sh: &Shared) {
    let lc = sh.client.lease_client();
    let ttl = sh.cfg.ttl_secs();
    let sent = Instant::now();
    let grant = retrying(|| {
        let mut lc = lc.clone();
        async move { lc.grant(ttl, None).await }
    });
    match timeout(sh.cfg.op_timeout, grant).await {
        Ok(Ok(r)) if r.ttl() > 0 => {
            let deadline = sent + sh.cfg.protected_for(r.ttl());
            {
                let mut g = sh.lock();
                g.lease = Some(r.id());
                g.granted_ttl = r.ttl();
                g.deadline = deadline;
                g.seq += 1;
            }
            sh.tell_renewed(deadline);
            tracing::info!(lease = r.id(), "granted a new etcd lease; serving again");
            sh.persist_logged();
        }
        Ok(Ok(_)) => tracing::warn!("etcd granted a lease with TTL 0"),
        Ok(Err(e)) => tracing::warn!("etcd lease grant failed: {e}"),
        Err(_) => tracing::warn!("etcd lease grant timed out"),
    }
}

/// Opens a keepalive stream and renews until it fails or the lease changes.
async fn keepalive_session(sh: &Shared, id: i64) {
    let period = sh.cfg.keepalive_period();
    let lc = sh.client.lease_client();
    let sent = Instant::now();
    // The client sends the first keepalive itself and fails unless the
    // reply carries a positive TTL (the lease's granted TTL, which the
    // client does not pass on: we use the one recorded at grant/adoption).
    let open = retrying(|| {
        let mut lc = lc.clone();
        async move { lc.keep_alive(id).await }
    });
    let (mut keeper, mut stream) = match timeout(period, open).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) if is_lease_not_found(&e) => return sh.expired(id),
        Ok(Err(e)) => return tracing::warn!("etcd keepalive stream: {e}"),
        Err(_) => return tracing::warn!("etcd keepalive stream: no answer"),
    };
    let granted = sh.lock().granted_ttl;
    sh.renewed(id, sent, granted);
    while !sh.stopped() && sh.lock().lease == Some(id) {
        sleep(period).await;
        let sent = Instant::now();
        if keeper.keep_alive().await.is_err() {
            return;
        }
        match timeout(period, stream.message()).await {
            Ok(Ok(Some(r))) if r.ttl() > 0 => sh.renewed(id, sent, r.ttl()),
            Ok(Ok(Some(_))) => return sh.expired(id),
            Ok(Ok(None)) => return tracing::warn!("etcd keepalive stream closed"),
            Ok(Err(e)) => return tracing::warn!("etcd keepalive: {e}"),
            Err(_) => return tracing::warn!("etcd keepalive: no answer in {period:?}"),
        }
    }
}

/// The cleanup task's body: deletes orphaned keys, revokes stale leases.
///
/// Orphans are *claimed* (moved to `cleaning`) before their delete is
/// sent, and an acquire of a key being cleaned is refused, so a late
/// delete can never remove a lock that was granted again meanwhile.
pub(crate) async fn cleanup_task(sh: Arc<Shared>) {
    while !sh.stopped() {
        sleep(sh.cfg.keepalive_period()).await;
        let (keys, leases) = {
            let mut g = sh.lock();
            let keys = std::mem::take(&mut g.orphans);
            g.cleaning.extend(keys.iter().cloned());
            (keys, g.stale_leases.clone())
        };
        let mut kv = sh.client.kv_client();
        for key in keys {
            let done = matches!(
                timeout(sh.cfg.op_timeout, kv.delete(key.clone(), None)).await,
                Ok(Ok(_))
            );
            let mut g = sh.lock();
            g.cleaning.remove(&key);
            if !done {
                g.orphans.insert(key);
            }
        }
        revoke_stale(&sh, leases).await;
    }
}

async fn revoke_stale(sh: &Shared, leases: std::collections::BTreeSet<i64>) {
    let mut lc = sh.client.lease_client();
    for id in leases {
        match timeout(sh.cfg.op_timeout, lc.revoke(id)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if is_lease_not_found(&e) => {}
            _ => continue,
        }
        sh.lock().stale_leases.remove(&id);
    }
}
