//! The etcd cluster back end: a [`lockspace::ClusterArbiter`] that makes a
//! disk lock exclusive (or shared) across hosts, with self-fencing when the
//! host loses etcd.
//!
//! # Model
//!
//! ```text
//!  host A daemon                          etcd
//!  ┌──────────────────────────┐           ┌─────────────────────────────────────┐
//!  │ Engine ─► EtcdArbiter    │  Txn      │ lease 0x…A (TTL = lease_ttl)        │
//!  │  acquire/release ────────┼──────────►│ /vmlock/locks/<R>/x/A/4242 ──lease A│
//!  │  keepalive task ─────────┼──────────►│ /vmlock/locks/<S>/s/A/4242 ──lease A│
//!  │  watchdog thread         │           │ /vmlock/locks/<S>/s/B/777  ──lease B│
//!  │   └ deadline passed ─► Fencer::fence_all (SIGKILL/SIGSTOP via pidfd)      │
//!  │  record file (adoption)  │           └─────────────────────────────────────┘
//!  └──────────────────────────┘
//! ```
//!
//! * One lease per host; every lock key hangs off it ([`keys`] has the
//!   layout and the single-compare transactions).
//! * The sync hook blocks on etcd with a deadline (`op_timeout`, 2 s by
//!   default): an outage fails acquires fast with
//!   [`lockspace::Error::Cluster`], a conflict is
//!   [`lockspace::Error::ClusterBusy`] naming the holder.
//! * Fencing and lease renewal are in [`lease`]; the durable record and
//!   adoption after a restart in [`record`] and [`adopt`].
//!
//! See `docs/cluster.md` for the design, timeline and measurements.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod adopt;
mod arbiter;
mod config;
mod error;
mod fence;
mod health;
mod hook;
pub mod keys;
pub mod lease;
pub mod query;
pub mod record;
mod rpc;
mod state;
mod statelock;

pub use adopt::AdoptedLock;
pub use arbiter::{EtcdArbiter, EtcdStatus};
pub use config::{DEFAULT_STATE_PATH, EtcdConfig, TlsFiles};
pub use error::EtcdError;
pub use fence::{Deadlines, Fencer, LostLock};
pub use health::EndpointHealth;
pub use keys::Holder;
pub use statelock::lock_path as state_lock_path;
