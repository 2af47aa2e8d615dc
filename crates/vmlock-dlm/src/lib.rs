//! The Linux kernel DLM cluster back end: a [`lockspace::ClusterArbiter`]
//! that holds every lock the daemon grants as a DLM lock too, so that two
//! hosts of one corosync cluster never run the same disk.
//!
//! ```text
//!  acquire(key, shared, owner)
//!      resource = hex SHA-256 of the key (64 bytes, DLM_RESNAME_MAXLEN)
//!      write the lock-information file with the entry (write-ahead)
//!      dlm lock: EX (exclusive) or PR (shared), LKF_NOQUEUE | LKF_PERSISTENT
//!        EAGAIN → ClusterBusy (the refusal the etcd back end gives)
//!        other  → Cluster (the DLM's error, named)
//!  release(key, owner, last)
//!      count - 1; at 0 (or last): write the file without it, dlm unlock
//!  start (fresh, after a crash, or after a re-exec)
//!      read the lock-information file; for each entry adopt its orphan
//!      (LKF_ORPHAN, same name and mode); owner still running → kept
//!      (adopted), owner gone → unlocked (released)
//! ```
//!
//! `LKF_PERSISTENT` makes a lock outlive the process that took it: when
//! vmlockd dies, or `exec`s itself (the lockspace descriptor is
//! close-on-exec), its locks stay granted as *orphans* of this node, which
//! no other process or host can take until one adopts or purges them. Only
//! the node leaving the cluster (its failure, after `dlm_controld` fenced
//! it) frees them.
//!
//! One DLM lock per (resource, owner): shared owners each hold a PR lock,
//! so an owner's lock is adopted and released on its own.

mod arbiter;
mod error;
mod info;
mod names;

pub use arbiter::{AdoptedLock, Dlm, DlmArbiter, DlmConfig, Started, proc_start_time};
pub use error::DlmStartError;
pub use info::{InfoEntry, LockInfo};
pub use names::resource_name;
pub use vmlock_sys::dlm::{DlmError, Mode};

/// The default lock-information file of a privileged daemon.
pub const DEFAULT_INFO_PATH: &str = "/var/lib/vmlock/dlm-locks.json";
/// The default DLM lockspace name.
pub const DEFAULT_LOCKSPACE: &str = "vmlock";
