//! Prometheus metrics, opt-in: `metrics_listen = "127.0.0.1:9477"` (TCP)
//! or an absolute path (a UNIX socket). Off by default.
//!
//! ```text
//!  request path  dispatch::lock_call ─► Requests::observe   (only when on: a few
//!                                   relaxed atomic adds, two clock reads)
//!  scrape        GET /metrics ─► blocking pool: dispatch::inquiry::status + counters
//!                ─► prometheus-client's Prometheus text encoder
//! ```
//! Everything but the request counters and the latency histogram is read
//! at scrape time from what STATUS reports, so the two always agree.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::warn;
use vmlock_proto::admin::TypedValue;
use vmlock_proto::lock::Procedure;

use crate::ctx::Ctx;
use crate::stats::BOUNDS;

/// Where to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// `HOST:PORT`.
    Tcp(std::net::SocketAddr),
    /// An absolute path.
    Unix(std::path::PathBuf),
}

impl Listen {
    /// Parses the `metrics_listen` value.
    pub fn parse(s: &str) -> Result<Listen, String> {
        if s.starts_with('/') {
            return Ok(Listen::Unix(s.into()));
        }
        s.parse().map(Listen::Tcp).map_err(|e| {
            format!("metrics_listen = \"{s}\": expected HOST:PORT or an absolute socket path ({e})")
        })
    }
}

/// A bound listener, ready to serve once the runtime runs.
#[derive(Debug)]
pub enum Bound {
    /// TCP.
    Tcp(std::net::TcpListener),
    /// UNIX socket.
    Unix(std::os::unix::net::UnixListener),
}

/// Binds now (start-up fails clearly if the address is taken).
pub fn bind(l: &Listen) -> std::io::Result<Bound> {
    match l {
        Listen::Tcp(a) => {
            let s = std::net::TcpListener::bind(a)?;
            s.set_nonblocking(true)?;
            Ok(Bound::Tcp(s))
        }
        Listen::Unix(p) => {
            // A socket left by an earlier run (or image) is replaced.
            if std::fs::symlink_metadata(p)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            {
                std::fs::remove_file(p)?;
            }
            let s = std::os::unix::net::UnixListener::bind(p)?;
            s.set_nonblocking(true)?;
            Ok(Bound::Unix(s))
        }
    }
}

/// Serves `GET /metrics` until the runtime stops.
pub async fn serve(ctx: Arc<Ctx>, bound: Bound) {
    match bound {
        Bound::Tcp(s) => match tokio::net::TcpListener::from_std(s) {
            Ok(l) => loop {
                if let Ok((c, _)) = l.accept().await {
                    tokio::spawn(answer(ctx.clone(), c));
                }
            },
            Err(e) => warn!("metrics listener: {e}"),
        },
        Bound::Unix(s) => match tokio::net::UnixListener::from_std(s) {
            Ok(l) => loop {
                if let Ok((c, _)) = l.accept().await {
                    tokio::spawn(answer(ctx.clone(), c));
                }
            },
            Err(e) => warn!("metrics listener: {e}"),
        },
    }
}

/// One HTTP/1.x exchange: the request head (at most 8 KiB, 5 s), then the
/// metrics or 404, then close.
async fn answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(ctx: Arc<Ctx>, mut c: S) {
    let mut head = Vec::with_capacity(512);
    let read = async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(buf.get(..n).unwrap_or_default()),
            }
        }
        true
    };
    if !matches!(
        tokio::time::timeout(Duration::from_secs(5), read).await,
        Ok(true)
    ) {
        return;
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let (method, path) = (words.next(), words.next());
    let reply = if method == Some(b"GET") && matches!(path, Some(b"/metrics" | b"/")) {
        let c2 = ctx.clone();
        let body = ctx.shared.fs.blocking(move || render(&c2)).await;
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
    };
    let _ = c.write_all(reply.as_bytes()).await;
    let _ = c.shutdown().await;
}

/// The exposition text (Prometheus text format 0.0.4).
pub fn render(ctx: &Arc<Ctx>) -> String {
    let mut reg = Registry::with_prefix("vmlockd");
    reg.register_collector(Box::new(Scrape(ctx.clone())));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &reg) {
        warn!("encoding metrics: {e}");
    }
    out
}

/// What one scrape reports.
#[derive(Debug)]
struct Scrape(Arc<Ctx>);

fn num(v: &TypedValue) -> f64 {
    match v {
        TypedValue::Int(n) | TypedValue::Boolean(n) => f64::from(*n),
        TypedValue::UInt(n) => f64::from(*n),
        TypedValue::LLong(n) => *n as f64,
        TypedValue::ULLong(n) => *n as f64,
        TypedValue::Double(n) => *n,
        TypedValue::String(_) => f64::NAN,
    }
}

/// STATUS parameters exported as they are: (parameter, metric, help, type, scale).
const FROM_STATUS: &[(&str, &str, &str, MetricType, f64)] = &[
    (
        "owners",
        "owners",
        "Distinct owner pids holding locks.",
        MetricType::Gauge,
        1.0,
    ),
    (
        "lockspaces",
        "lockspaces",
        "Lockspaces, the default one included.",
        MetricType::Gauge,
        1.0,
    ),
    (
        "terminating",
        "holders_terminating",
        "Holder processes being terminated now.",
        MetricType::Gauge,
        1.0,
    ),
    (
        "fds_used",
        "open_fds",
        "Descriptors open.",
        MetricType::Gauge,
        1.0,
    ),
    (
        "fds_limit",
        "max_fds",
        "Soft descriptor limit.",
        MetricType::Gauge,
        1.0,
    ),
    (
        "refusals",
        "refusals",
        "Acquires refused because the resource was held.",
        MetricType::Counter,
        1.0,
    ),
    (
        "forced_releases",
        "forced_releases",
        "Locks released by force (vmlockctl release --force).",
        MetricType::Counter,
        1.0,
    ),
    (
        "forced_terminations",
        "forced_terminations",
        "Holders terminated by a forced release.",
        MetricType::Counter,
        1.0,
    ),
    (
        "holder_terminations",
        "holder_terminations",
        "Holders terminated because their lock connection closed.",
        MetricType::Counter,
        1.0,
    ),
    (
        "uptime_s",
        "uptime_seconds",
        "Seconds since the daemon started (re-execs keep counting).",
        MetricType::Gauge,
        1.0,
    ),
    (
        "reexec_blackout_us",
        "reexec_blackout_seconds",
        "Last re-exec: time from the exec of this image to serving.",
        MetricType::Gauge,
        1e-6,
    ),
    (
        "reexec_locks",
        "reexec_locks_carried",
        "Last re-exec: locks carried over.",
        MetricType::Gauge,
        1.0,
    ),
    (
        "reexecs",
        "reexecs",
        "Re-execs since the daemon started.",
        MetricType::Counter,
        1.0,
    ),
    (
        "lease_time_left_ms",
        "etcd_lease_time_left_seconds",
        "etcd: time until this host fences itself.",
        MetricType::Gauge,
        1e-3,
    ),
    (
        "keepalive_rtt_us",
        "etcd_keepalive_rtt_seconds",
        "etcd: round trip of the last answered keepalive.",
        MetricType::Gauge,
        1e-6,
    ),
    (
        "etcd_healthy",
        "etcd_healthy",
        "etcd: a keepalive was answered within two periods.",
        MetricType::Gauge,
        1.0,
    ),
    (
        "fences",
        "etcd_fences",
        "etcd: times this host fenced its lock holders.",
        MetricType::Counter,
        1.0,
    ),
    (
        "cluster_locks",
        "etcd_cluster_locks",
        "etcd: cluster locks held by this host.",
        MetricType::Gauge,
        1.0,
    ),
];

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let ctx = &self.0;
        let status = crate::dispatch::inquiry::status(ctx);
        let get = |f: &str| status.iter().find(|p| p.field == f).map(|p| num(&p.value));
        for &(field, name, help, ty, scale) in FROM_STATUS {
            let Some(v) = get(field) else { continue };
            let mut m = enc.encode_descriptor(name, help, None, ty)?;
            let v = v * scale;
            match ty {
                MetricType::Counter => m.encode_counter::<NoLabelSet, _, f64>(&v, None)?,
                _ => m.encode_gauge(&v)?,
            }
        }
        let mut m = enc.encode_descriptor(
            "clients",
            "Connections, by server.",
            None,
            MetricType::Gauge,
        )?;
        for (server, field) in [("virtlockd", "clients"), ("admin", "admin_clients")] {
            let v = get(field).unwrap_or(0.0);
            m.encode_family(&[("server", server)])?.encode_gauge(&v)?;
        }
        let mut m =
            enc.encode_descriptor("locks", "Held resources, by mode.", None, MetricType::Gauge)?;
        for (mode, field) in [("exclusive", "locks_exclusive"), ("shared", "locks_shared")] {
            let v = get(field).unwrap_or(0.0);
            m.encode_family(&[("mode", mode)])?.encode_gauge(&v)?;
        }
        endpoint_metrics(&status, &mut enc)?;
        let Some(req) = ctx.shared.stats.requests() else {
            return Ok(());
        };
        let mut m = enc.encode_descriptor(
            "requests",
            "Lock-program requests, by procedure and result.",
            None,
            MetricType::Counter,
        )?;
        for p in Procedure::ALL {
            for (r, result) in ["ok", "error"].into_iter().enumerate() {
                let v = req
                    .counts
                    .get(p.to_i32() as usize)
                    .and_then(|c| c.get(r))
                    .map_or(0, |c| c.load(Ordering::Relaxed));
                let labels = [("procedure", p.name()), ("result", result)];
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, f64>(&v, None)?;
            }
        }
        // Per-bucket counts: the encoder makes them cumulative.
        let mut count = 0u64;
        let mut buckets = Vec::with_capacity(BOUNDS.len() + 1);
        for (i, c) in req.buckets.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            count += n;
            buckets.push((BOUNDS.get(i).copied().unwrap_or(f64::INFINITY), n));
        }
        let sum = req.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let mut m = enc.encode_descriptor(
            "request_duration_seconds",
            "Lock-program request latency, from decoded call to reply ready.",
            None,
            MetricType::Histogram,
        )?;
        m.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        Ok(())
    }
}

/// `etcd_endpoint_healthy` and `etcd_endpoint_rtt_seconds`, labelled by
/// endpoint, from STATUS' `etcd_endpoint.N.*` parameters.
fn endpoint_metrics(
    status: &[vmlock_proto::admin::TypedParam],
    enc: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    let get = |f: String| status.iter().find(|p| p.field == f).map(|p| &p.value);
    let mut eps = Vec::new();
    while let Some(TypedValue::String(url)) = get(format!("etcd_endpoint.{}.url", eps.len())) {
        let i = eps.len();
        let healthy = get(format!("etcd_endpoint.{i}.healthy")).map(num);
        let rtt = get(format!("etcd_endpoint.{i}.rtt_us")).map(|v| num(v) * 1e-6);
        eps.push((url.clone(), healthy, rtt));
    }
    if eps.is_empty() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(
        "etcd_endpoint_healthy",
        "etcd: the last probe of this endpoint alone was answered (1) or not (0).",
        None,
        MetricType::Gauge,
    )?;
    for (url, h, _) in &eps {
        if let Some(h) = h {
            m.encode_family(&[("endpoint", url.as_str())])?
                .encode_gauge(h)?;
        }
    }
    let mut m = enc.encode_descriptor(
        "etcd_endpoint_rtt_seconds",
        "etcd: round trip of the last answered probe of this endpoint.",
        None,
        MetricType::Gauge,
    )?;
    for (url, _, rtt) in &eps {
        if let Some(r) = rtt {
            m.encode_family(&[("endpoint", url.as_str())])?
                .encode_gauge(r)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_values() {
        assert_eq!(
            Listen::parse("127.0.0.1:9477"),
            Ok(Listen::Tcp("127.0.0.1:9477".parse().expect("addr")))
        );
        assert_eq!(
            Listen::parse("/run/vmlockd-metrics.sock"),
            Ok(Listen::Unix("/run/vmlockd-metrics.sock".into()))
        );
        assert!(Listen::parse("localhost").is_err());
        assert!(Listen::parse("run/m.sock").is_err());
    }
}
