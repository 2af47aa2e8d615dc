//! Per-endpoint health, for the daemon's status and metrics.
//!
//! ```text
//! one task per configured endpoint, every keepalive period (at most 5 s):
//!   a client of that endpoint alone (made once, again after a failure)
//!   GET <prefix>/locks/ (keys only, limit 1), within op_timeout
//!   → answered: healthy, round trip │ failed or late: unhealthy, the error
//! ```
//!
//! The lock traffic goes through the balanced client, which hides which
//! member is down; this asks each member on its own. The probe reads the
//! one range a least-privilege etcd user is granted (as the start-up probe
//! does). It costs one small read per endpoint and period, off every
//! request path.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};

use crate::state::Shared;

/// Longest pause between two probes of one endpoint.
const PERIOD_MAX: Duration = Duration::from_secs(5);

/// What the last probe of one endpoint found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointHealth {
    /// The endpoint, as configured.
    pub endpoint: String,
    /// `None` until the first probe ended; then whether it answered.
    pub healthy: Option<bool>,
    /// Round trip of the last answered probe.
    pub rtt: Option<Duration>,
    /// Why the last probe failed (empty when it answered).
    pub error: String,
}

/// The probes' results, one slot per endpoint in configuration order.
#[derive(Debug, Default)]
pub(crate) struct Board(Mutex<Vec<EndpointHealth>>);

impl Board {
    pub fn new(endpoints: &[String]) -> Board {
        Board(Mutex::new(
            endpoints
                .iter()
                .map(|e| EndpointHealth {
                    endpoint: e.clone(),
                    healthy: None,
                    rtt: None,
                    error: String::new(),
                })
                .collect(),
        ))
    }

    fn lock(&self) -> MutexGuard<'_, Vec<EndpointHealth>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every endpoint's last result.
    pub fn snapshot(&self) -> Vec<EndpointHealth> {
        self.lock().clone()
    }

    fn set(&self, i: usize, r: Result<Duration, String>) {
        if let Some(slot) = self.lock().get_mut(i) {
            match r {
                Ok(rtt) => {
                    slot.healthy = Some(true);
                    slot.rtt = Some(rtt);
                    slot.error.clear();
                }
                Err(e) => {
                    slot.healthy = Some(false);
                    slot.error = e;
                }
            }
        }
    }
}

/// Starts one probe task per endpoint on the arbiter's runtime.
pub(crate) fn spawn(sh: &Arc<Shared>, board: &Arc<Board>) {
    for (i, ep) in sh.cfg.endpoints.iter().enumerate() {
        sh.handle
            .spawn(probe_task(sh.clone(), board.clone(), i, ep.clone()));
    }
}

async fn probe_task(sh: Arc<Shared>, board: Arc<Board>, i: usize, endpoint: String) {
    let period = sh.cfg.keepalive_period().min(PERIOD_MAX);
    let key = format!("{}/locks/", sh.cfg.prefix);
    let mut client: Option<Client> = None;
    while !sh.stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        let r = tokio::time::timeout(sh.cfg.op_timeout, probe(&sh, &mut client, &endpoint, &key))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", sh.cfg.op_timeout)))
            .map(|()| t0.elapsed());
        if r.is_err() {
            // A fresh connection next time (the member may have come back).
            client = None;
        }
        board.set(i, r);
        tokio::time::sleep(period).await;
    }
}

async fn probe(
    sh: &Shared,
    client: &mut Option<Client>,
    endpoint: &str,
    key: &str,
) -> Result<(), String> {
    let c = match client {
        Some(c) => c,
        None => {
            let opts = sh.cfg.connect_options().map_err(|e| e.to_string())?;
            let c = Client::connect([endpoint], Some(opts))
                .await
                .map_err(|e| brief(&e))?;
            client.insert(c)
        }
    };
    let only_one = GetOptions::new().with_keys_only().with_limit(1);
    c.kv_client()
        .get(key, Some(only_one))
        .await
        .map(drop)
        .map_err(|e| brief(&e))
}

/// An etcd error in a line: gRPC's message and the innermost cause
/// (`tcp connect error: Connection refused (os error 111)`), not the
/// nested debug text of the whole chain.
fn brief(e: &etcd_client::Error) -> String {
    let etcd_client::Error::GRpcStatus(s) = e else {
        return e.to_string();
    };
    let mut root: Option<&dyn std::error::Error> = None;
    let mut cur = std::error::Error::source(s);
    while let Some(c) = cur {
        root = Some(c);
        cur = c.source();
    }
    match root {
        Some(r) => format!("{}: {r}", s.message()),
        None => s.message().to_owned(),
    }
}
