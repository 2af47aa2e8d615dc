//! The [`ClusterArbiter`] implementation: acquire and release as etcd
//! transactions, with local reference counts.
//!
//! ```text
//! acquire(key, shared, owner)
//!   held by this owner already (shared join again) → count += 1, no etcd call
//!   else: reserve (pending) → write record (write-ahead)
//!         → Txn  if   create_revision(<R>/ or <R>/x/, prefix) == 0
//!                then put <R>/{x|s}/<host>/<pid> (lease)
//!                else get <R>/… (to name the holder)
//!         → commit, or undo + ClusterBusy / Cluster
//! release(key, owner, last)
//!   count -= 1; at 0 (or `last`) forget the entry, write the record, delete
//!   the key (a failed delete is retried by the cleanup task)
//! ```
//!
//! A key whose delete is in flight is *being cleaned*; acquiring it again
//! meanwhile is refused (retry), so a late delete never removes a new lock.

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use lockspace::{ClusterArbiter, Error, ResourceKey};

use crate::EtcdArbiter;
use crate::keys::{self, Holder, LockValue};
use crate::record::proc_start_time;
use crate::rpc::{call, is_permission_denied};
use crate::state::Held;

/// What `reserve` decided.
enum Reserved {
    /// The owner already held it: count bumped.
    Bumped,
    /// A new entry is pending; `bool`: an old orphan of the same key must
    /// be deleted first.
    Fresh(Pending, bool),
}

/// A lock key about to be written.
struct Pending {
    lease: i64,
    etcd_key: String,
    value: String,
}

const NO_LEASE: &str = "no etcd lease (it was lost; a new one is being granted)";
const RELEASE_IN_FLIGHT: &str = "an earlier release of this lock is still in flight; retry";
const OWNER_CONFLICT: &str = "this owner's acquire is in progress or of the other mode";

fn cluster(key: &ResourceKey, why: impl Into<String>) -> Error {
    Error::Cluster {
        name: key.name.clone(),
        why: why.into(),
    }
}

impl ClusterArbiter for EtcdArbiter {
    fn acquire(&self, key: &ResourceKey, shared: bool, owner: u32) -> Result<(), Error> {
        let (pending, pre_delete) = match self.reserve(key, shared, owner)? {
            Reserved::Bumped => {
                self.sh.persist_logged();
                return Ok(());
            }
            Reserved::Fresh(p, pre_delete) => (p, pre_delete),
        };
        // The fence outside the daemon guards the owner before etcd can
        // grant it anything.
        if let Err(e) = self.sh.sync_guard(owner) {
            self.unreserve(key, owner, None);
            return Err(cluster(
                key,
                format!("the fence helper cannot guard pid {owner}: {e}"),
            ));
        }
        if let Err(e) = self.sh.persist() {
            self.unreserve(key, owner, None);
            return Err(cluster(
                key,
                format!("cannot write the etcd state file: {e}"),
            ));
        }
        if pre_delete && let Err(e) = self.delete_key(&pending.etcd_key) {
            self.unreserve(key, owner, Some(pending.etcd_key));
            return Err(cluster(key, e.to_string()));
        }
        self.transact(key, shared, owner, pending)
    }

    fn release(&self, key: &ResourceKey, owner: u32, last: bool) {
        let (gone, owners) = self.forget(key, owner, last);
        if gone.is_empty() {
            return;
        }
        self.sh.persist_logged();
        // Before etcd hears of the release: a fence outside the daemon must
        // never stop a process whose locks another host may already hold.
        for o in owners {
            if let Err(e) = self.sh.sync_guard(o) {
                tracing::warn!(pid = o, "fence helper: {e}");
            }
        }
        for k in gone {
            let failed = self.delete_key(&k).err();
            let mut g = self.sh.lock();
            g.cleaning.remove(&k);
            if let Some(e) = failed {
                tracing::warn!(key = %k, "etcd delete failed, will retry: {e}");
                g.orphans.insert(k);
            }
        }
    }
}

impl EtcdArbiter {
    fn reserve(&self, key: &ResourceKey, shared: bool, owner: u32) -> Result<Reserved, Error> {
        let cfg = &self.sh.cfg;
        let etcd_key = keys::lock_key(&cfg.prefix, key, shared, &cfg.host_id, owner);
        let start_time = proc_start_time(owner);
        let mut g = self.sh.lock();
        let lease = g.lease.ok_or_else(|| cluster(key, NO_LEASE))?;
        if g.cleaning.contains(&etcd_key) {
            return Err(cluster(key, RELEASE_IN_FLIGHT));
        }
        if let Some(h) = g.locks.get_mut(&(key.clone(), owner)) {
            if h.pending || h.shared != shared {
                return Err(cluster(key, OWNER_CONFLICT));
            }
            h.count += 1;
            g.seq += 1;
            return Ok(Reserved::Bumped);
        }
        let value = LockValue {
            host: cfg.host_id.clone(),
            pid: owner,
            start_time,
            vm: g.vms.get(&owner).map(|v| v.0.clone()),
            uuid: g.vms.get(&owner).and_then(|v| v.1.clone()),
            shared,
            lockspace: key.lockspace.clone(),
            name: key.name.clone(),
        };
        let value = serde_json::to_string(&value).map_err(|e| cluster(key, e.to_string()))?;
        let pre_delete = g.orphans.remove(&etcd_key);
        let held = Held {
            etcd_key: etcd_key.clone(),
            shared,
            count: 1,
            start_time,
            pending: true,
        };
        g.locks.insert((key.clone(), owner), held);
        g.seq += 1;
        let pending = Pending {
            lease,
            etcd_key,
            value,
        };
        Ok(Reserved::Fresh(pending, pre_delete))
    }

    /// Drops a pending entry; `orphan`: a key that may exist in etcd.
    fn unreserve(&self, key: &ResourceKey, owner: u32, orphan: Option<String>) {
        {
            let mut g = self.sh.lock();
            let k = (key.clone(), owner);
            if g.locks.get(&k).is_some_and(|h| h.pending) {
                g.locks.remove(&k);
            }
            g.orphans.extend(orphan);
            g.seq += 1;
        }
        self.sh.persist_logged();
        if let Err(e) = self.sh.sync_guard(owner) {
            tracing::warn!(pid = owner, "fence helper: {e}");
        }
    }

    /// Runs the acquire transaction and settles the pending entry.
    fn transact(
        &self,
        key: &ResourceKey,
        shared: bool,
        owner: u32,
        p: Pending,
    ) -> Result<(), Error> {
        let txn = acquire_txn(&self.sh.cfg.prefix, key, shared, &p);
        let kv = self.sh.client.kv_client();
        let out = call(
            &self.sh.handle,
            self.sh.cfg.op_timeout,
            "acquire txn",
            move || {
                let (mut kv, txn) = (kv.clone(), txn.clone());
                async move { kv.txn(txn).await }
            },
        );
        match out {
            Ok(resp) if resp.succeeded() => self.commit(key, owner, p.lease, p.etcd_key),
            Ok(resp) => {
                self.unreserve(key, owner, None);
                Err(Error::ClusterBusy {
                    name: key.name.clone(),
                    why: busy_reason(&resp.op_responses()),
                })
            }
            Err(e) => {
                // A refusal (no rights) applied nothing; any other failure
                // may have, so the key is deleted later to be sure.
                let orphan = (!refused(&e)).then_some(p.etcd_key);
                self.unreserve(key, owner, orphan);
                Err(cluster(key, e.to_string()))
            }
        }
    }

    /// The transaction succeeded: keep the entry unless a fence intervened.
    fn commit(
        &self,
        key: &ResourceKey,
        owner: u32,
        lease: i64,
        etcd_key: String,
    ) -> Result<(), Error> {
        let mut g = self.sh.lock();
        let current = g.lease == Some(lease);
        match g.locks.get_mut(&(key.clone(), owner)) {
            Some(h) if current && h.pending => {
                h.pending = false;
                Ok(())
            }
            _ => {
                // Fenced meanwhile: the key sits on the given-up lease,
                // which the cleanup task revokes.
                drop(g);
                tracing::warn!(key = %etcd_key, "lease lost while acquiring");
                Err(cluster(key, "the etcd lease was lost during the acquire"))
            }
        }
    }

    /// Forgets one occurrence (all of this host's entries for `key` if
    /// `last`) and returns the etcd keys to delete, marked as cleaning,
    /// and the owners whose entries went.
    fn forget(&self, key: &ResourceKey, owner: u32, last: bool) -> (Vec<String>, Vec<u32>) {
        let mut g = self.sh.lock();
        let mut gone = Vec::new();
        let mut owners = Vec::new();
        let k = (key.clone(), owner);
        if let Some(h) = g.locks.get_mut(&k).filter(|h| !h.pending) {
            h.count = h.count.saturating_sub(1);
            if h.count == 0 || last {
                gone.extend(g.locks.remove(&k).map(|h| h.etcd_key));
                owners.push(owner);
            }
        }
        if last {
            let others: Vec<_> = g
                .locks
                .iter()
                .filter(|((rk, _), h)| rk == key && !h.pending)
                .map(|(k, _)| k.clone())
                .collect();
            for k in others {
                owners.push(k.1);
                gone.extend(g.locks.remove(&k).map(|h| h.etcd_key));
            }
        }
        g.seq += 1;
        g.cleaning.extend(gone.iter().cloned());
        owners.sort_unstable();
        owners.dedup();
        (gone, owners)
    }

    fn delete_key(&self, etcd_key: &str) -> Result<(), crate::EtcdError> {
        let kv = self.sh.client.kv_client();
        let k = etcd_key.to_owned();
        call(
            &self.sh.handle,
            self.sh.cfg.op_timeout,
            "delete",
            move || {
                let (mut kv, k) = (kv.clone(), k.clone());
                async move { kv.delete(k, None).await }
            },
        )
        .map(|_| ())
    }
}

/// Whether etcd answered and refused the request outright.
fn refused(e: &crate::EtcdError) -> bool {
    matches!(e, crate::EtcdError::Etcd { source, .. } if is_permission_denied(source))
}

/// The one-compare acquire transaction (see [`crate::keys`]).
fn acquire_txn(prefix: &str, key: &ResourceKey, shared: bool, p: &Pending) -> Txn {
    let guard = if shared {
        keys::exclusive_prefix(prefix, key)
    } else {
        keys::resource_prefix(prefix, key)
    };
    let put = PutOptions::new().with_lease(p.lease);
    let who = GetOptions::new().with_prefix().with_limit(4);
    Txn::new()
        .when([Compare::create_revision(guard.clone(), CompareOp::Equal, 0).with_prefix()])
        .and_then([TxnOp::put(p.etcd_key.clone(), p.value.clone(), Some(put))])
        .or_else([TxnOp::get(guard, Some(who))])
}

/// Names the holders found by the failed transaction's `or_else` get.
fn busy_reason(responses: &[TxnOpResponse]) -> String {
    let holders: Vec<String> = responses
        .iter()
        .filter_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g),
            _ => None,
        })
        .flat_map(|g| {
            g.kvs()
                .iter()
                .filter_map(|kv| Holder::from_value(kv.value()))
        })
        .map(|h| format!("held {h}"))
        .collect();
    if holders.is_empty() {
        "held by another owner".to_owned()
    } else {
        holders.join(", ")
    }
}
