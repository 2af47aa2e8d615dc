//! Read-only look-ups for operators (`vmlockctl holders`): who holds a
//! resource cluster-wide, without taking a lease or touching any lock.
//!
//! ```text
//! connect (TLS/auth as configured) ─► GET <prefix>/locks/<R>/ (prefix) ─► decode values
//! ```

use etcd_client::{Client, GetOptions};
use lockspace::ResourceKey;

use crate::keys::{self, Holder};
use crate::rpc::call;
use crate::{EtcdConfig, EtcdError};

/// Every holder of `key` in the cluster, in etcd's key order.
pub fn holders(cfg: &EtcdConfig, key: &ResourceKey) -> Result<Vec<Holder>, EtcdError> {
    // `call` blocks this thread on a channel: the runtime needs a worker.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(EtcdError::Runtime)?;
    let opts = cfg.connect_options()?;
    let eps = cfg.endpoints.clone();
    let client = call(rt.handle(), cfg.op_timeout, "connect", move || {
        let (eps, opts) = (eps.clone(), opts.clone());
        async move { Client::connect(eps, Some(opts)).await }
    })?;
    fetch(rt.handle(), cfg, &client, key)
}

/// One prefix GET of `key`'s lock keys, decoded (shared with the arbiter).
pub(crate) fn fetch(
    handle: &tokio::runtime::Handle,
    cfg: &EtcdConfig,
    client: &Client,
    key: &ResourceKey,
) -> Result<Vec<Holder>, EtcdError> {
    let prefix = keys::resource_prefix(&cfg.prefix, key);
    let kv = client.kv_client();
    let resp = call(handle, cfg.op_timeout, "get", move || {
        let (mut kv, prefix) = (kv.clone(), prefix.clone());
        async move { kv.get(prefix, Some(GetOptions::new().with_prefix())).await }
    })?;
    Ok(resp
        .kvs()
        .iter()
        .filter_map(|kv| Holder::from_value(kv.value()))
        .collect())
}
