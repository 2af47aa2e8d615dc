//! Running one etcd call from a synchronous caller, with a hard deadline.
//!
//! The request is spawned on the arbiter's runtime and the caller waits on
//! a channel with `recv_timeout`, so this works from any thread — including
//! one inside another tokio runtime, where `block_on` would panic — and an
//! etcd outage costs the caller at most the deadline, never a hang.
//!
//! Within the deadline, a request that failed **before it was sent** (the
//! balanced channel picked a member that refuses connections, e.g. a
//! killed leader) is retried every 20 ms: the balancer keeps dead members
//! in rotation, so without this a healthy cluster would fail random calls.
//! Nothing that may have reached etcd is retried.

use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

use tokio::runtime::Handle;

use crate::EtcdError;

const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Runs `make()`'s request on `handle`, retrying connect failures, and
/// gives up after `timeout`.
pub(crate) fn call<T, F, M>(
    handle: &Handle,
    timeout: Duration,
    op: &'static str,
    make: M,
) -> Result<T, EtcdError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    M: FnMut() -> F + Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel(1);
    let task = handle.spawn(async move {
        let out = tokio::time::timeout(timeout, retrying(make)).await;
        // The receiver may have given up already; nothing to do then.
        let _ = tx.send(out);
    });
    let late = EtcdError::Timeout {
        op,
        ms: timeout.as_millis(),
    };
    match rx.recv_timeout(timeout + Duration::from_millis(100)) {
        Ok(Ok(Ok(v))) => Ok(v),
        Ok(Ok(Err(source))) => Err(EtcdError::Etcd { op, source }),
        Ok(Err(_elapsed)) => Err(late),
        Err(_) => {
            task.abort();
            Err(late)
        }
    }
}

/// Repeats the request while it fails without having been sent.
pub(crate) async fn retrying<T, F, M>(mut make: M) -> Result<T, etcd_client::Error>
where
    F: Future<Output = Result<T, etcd_client::Error>>,
    M: FnMut() -> F,
{
    loop {
        match make().await {
            Err(e) if not_sent(&e) => tokio::time::sleep(RETRY_PAUSE).await,
            other => return other,
        }
    }
}

/// Whether the request certainly never reached a server (connection could
/// not be established), so repeating it cannot apply it twice.
pub(crate) fn not_sent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            s.code() as i32 == GRPC_UNAVAILABLE && s.message().contains("connect error")
        }
        _ => false,
    }
}

/// Whether etcd refused the request for lack of rights (gRPC status 7,
/// PERMISSION_DENIED): the request was not applied.
pub(crate) fn is_permission_denied(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.code() as i32 == GRPC_PERMISSION_DENIED)
}

/// gRPC status code 7, PERMISSION_DENIED.
const GRPC_PERMISSION_DENIED: i32 = 7;

/// gRPC status code 14, UNAVAILABLE.
const GRPC_UNAVAILABLE: i32 = 14;

/// Whether an etcd error says the lease does not exist (any more).
pub(crate) fn is_lease_not_found(e: &etcd_client::Error) -> bool {
    e.to_string().contains("lease not found")
}
