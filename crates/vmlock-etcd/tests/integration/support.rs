//! Test support: the recording fencer and configuration helpers; the etcd
//! servers and the cuttable proxy come from `vmlock_testkit::etcd`.

#![allow(dead_code, unused_imports)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vmlock_etcd::{EtcdConfig, Fencer, LostLock};
pub use vmlock_testkit::etcd::{
    Etcd, Proxy, etcd_available, free_port, poll, serial, start_cluster, start_single,
};

/// One fencing event.
#[derive(Debug, Clone)]
pub enum FenceEvent {
    All { at: Instant, owners: Vec<u32> },
    Lost { at: Instant, lost: Vec<LostLock> },
    Pids { at: Instant, pids: Vec<u32> },
}

/// A fencer that records what it was asked to do.
#[derive(Debug, Default)]
pub struct Recorder {
    pub events: Mutex<Vec<FenceEvent>>,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder::default())
    }

    pub fn events(&self) -> Vec<FenceEvent> {
        self.events.lock().unwrap().clone()
    }

    pub fn first_fence_all(&self) -> Option<Instant> {
        self.events().iter().find_map(|e| match e {
            FenceEvent::All { at, .. } => Some(*at),
            _ => None,
        })
    }

    pub fn fenced_pids(&self) -> Vec<u32> {
        self.events()
            .iter()
            .flat_map(|e| match e {
                FenceEvent::Pids { pids, .. } => pids.clone(),
                _ => Vec::new(),
            })
            .collect()
    }
}

impl Fencer for Recorder {
    fn fence_all(&self, owners: &[u32]) {
        let at = Instant::now();
        self.events.lock().unwrap().push(FenceEvent::All {
            at,
            owners: owners.to_vec(),
        });
    }
    fn locks_lost(&self, lost: &[LostLock]) {
        let at = Instant::now();
        self.events.lock().unwrap().push(FenceEvent::Lost {
            at,
            lost: lost.to_vec(),
        });
    }
    fn fence_pids(&self, pids: &[u32]) {
        let at = Instant::now();
        self.events.lock().unwrap().push(FenceEvent::Pids {
            at,
            pids: pids.to_vec(),
        });
    }
}

/// An arbiter configuration for tests.
pub fn config(endpoints: Vec<String>, host: &str, ttl_secs: u64, state_dir: &Path) -> EtcdConfig {
    let mut c = EtcdConfig::new(endpoints, host);
    c.prefix = "/vmlock-test".into();
    c.lease_ttl = Duration::from_secs(ttl_secs);
    c.state_path = state_dir.join(format!("{host}-state.json"));
    c
}

/// Whether an acquire was refused because another host holds the lock
/// (not merely failed).
pub fn is_busy(r: Result<(), lockspace::Error>) -> bool {
    matches!(r, Err(lockspace::Error::ClusterBusy { .. }))
}
