//! Start-up reconciliation with the durable record (orphan adoption).
//!
//! ```text
//! record.lease_id ──► LeaseTimeToLive(id, keys)
//!   ttl > 0 : for each recorded lock
//!               owner alive (same pid, same start time) → adopt
//!               otherwise                               → delete its key
//!             keys on the lease but not adopted         → delete
//!             keep using the lease (deadline = sent + ttl − margin)
//!   gone    : owners still running ran unprotected → Fencer::fence_pids;
//!             grant a new lease
//! ```

use std::collections::BTreeMap;
use std::time::Instant;

use etcd_client::LeaseTimeToLiveOptions;
use lockspace::ResourceKey;

use crate::record::{Record, same_process};
use crate::rpc::call;
use crate::state::Held;
use crate::{EtcdConfig, EtcdError};

/// A lock taken over from a previous run of the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptedLock {
    /// The resource.
    pub key: ResourceKey,
    /// The owner pid (checked to be the same process: pid + start time).
    pub owner: u32,
    /// Shared or exclusive.
    pub shared: bool,
    /// How many acquires of it the owner made.
    pub count: u32,
}

/// What start-up reconciliation decided.
#[derive(Debug, Default)]
pub(crate) struct Adoption {
    /// The still-alive lease: id, fencing deadline, granted TTL.
    pub lease: Option<(i64, Instant, i64)>,
    pub locks: BTreeMap<(ResourceKey, u32), Held>,
    pub adopted: Vec<AdoptedLock>,
    /// Owners whose protection lapsed.
    pub to_fence: Vec<u32>,
    /// Keys of dead owners (or never recorded) to delete.
    pub to_delete: Vec<String>,
}

/// Decides what to adopt; the only etcd call is `LeaseTimeToLive`.
pub(crate) fn reconcile(
    cfg: &EtcdConfig,
    client: &etcd_client::Client,
    handle: &tokio::runtime::Handle,
    record: &Record,
) -> Result<Adoption, EtcdError> {
    let Some(id) = record.lease_id else {
        return Ok(lapsed(record));
    };
    let lc = client.lease_client();
    let sent = Instant::now();
    let resp = call(handle, cfg.op_timeout, "lease time-to-live", move || {
        let mut lc = lc.clone();
        async move {
            let opts = LeaseTimeToLiveOptions::new().with_keys();
            lc.time_to_live(id, Some(opts)).await
        }
    })?;
    if resp.ttl() <= 0 {
        tracing::warn!(
            lease = id,
            "the recorded etcd lease expired while we were down"
        );
        return Ok(lapsed(record));
    }
    let mut out = adopt_live(record);
    let deadline = sent + cfg.protected_for(resp.ttl());
    out.lease = Some((id, deadline, resp.granted_ttl()));
    let kept: Vec<&String> = out.locks.values().map(|h| &h.etcd_key).collect();
    for k in resp.keys() {
        let k = String::from_utf8_lossy(k).into_owned();
        if !kept.contains(&&k) && !out.to_delete.contains(&k) {
            out.to_delete.push(k);
        }
    }
    Ok(out)
}

/// Splits the recorded locks of a live lease into adopted and dead.
fn adopt_live(record: &Record) -> Adoption {
    let mut out = Adoption::default();
    for l in &record.locks {
        if !same_process(l.pid, l.start_time) {
            out.to_delete.push(l.key.clone());
            continue;
        }
        let key = ResourceKey {
            lockspace: l.lockspace.clone(),
            name: l.name.clone(),
        };
        let held = Held {
            etcd_key: l.key.clone(),
            shared: l.shared,
            count: l.count.max(1),
            start_time: l.start_time,
            pending: false,
        };
        out.adopted.push(AdoptedLock {
            key: key.clone(),
            owner: l.pid,
            shared: l.shared,
            count: held.count,
        });
        out.locks.insert((key, l.pid), held);
    }
    out
}

/// The lease is gone: every recorded owner still running is fenced.
pub(crate) fn lapsed(record: &Record) -> Adoption {
    let mut pids: Vec<u32> = record
        .locks
        .iter()
        .filter(|l| same_process(l.pid, l.start_time))
        .map(|l| l.pid)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    Adoption {
        to_fence: pids,
        ..Adoption::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{RecordLock, proc_start_time};

    fn lock(pid: u32, start: Option<u64>, name: &str) -> RecordLock {
        RecordLock {
            key: format!("/k/{name}"),
            lockspace: String::new(),
            name: name.into(),
            shared: false,
            pid,
            start_time: start,
            count: 2,
        }
    }

    fn record() -> Record {
        let me = std::process::id();
        let start = proc_start_time(me);
        Record {
            host_id: "h".into(),
            lease_id: Some(1),
            locks: vec![
                lock(me, start, "alive"),
                lock(me, start.map(|s| s + 1), "recycled"),
                lock(u32::MAX - 3, None, "dead"),
            ],
        }
    }

    #[test]
    fn live_lease_adopts_only_the_same_process() {
        let a = adopt_live(&record());
        assert_eq!(a.adopted.len(), 1);
        assert_eq!(a.adopted[0].key.name, "alive");
        assert_eq!(a.adopted[0].count, 2);
        assert_eq!(
            a.to_delete,
            vec!["/k/recycled".to_owned(), "/k/dead".to_owned()]
        );
        assert!(a.to_fence.is_empty());
    }

    #[test]
    fn lapsed_lease_fences_running_owners_once() {
        let mut r = record();
        r.locks.push(lock(std::process::id(), None, "again"));
        let a = lapsed(&r);
        assert_eq!(a.to_fence, vec![std::process::id()]);
        assert!(a.adopted.is_empty() && a.lease.is_none());
    }
}
