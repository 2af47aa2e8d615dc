//! etcd over TLS: a private CA, a server certificate for 127.0.0.1 and a
//! client certificate, with etcd requiring client certificates.

use std::path::Path;
use std::time::{Duration, Instant};

use lockspace::{ClusterArbiter, ResourceKey};
use vmlock_etcd::{EtcdArbiter, EtcdConfig, TlsFiles};
use vmlock_testkit::etcd::{Pki, start_single_tls};

use crate::support::{self, Recorder};

fn rk(name: &str) -> ResourceKey {
    ResourceKey {
        lockspace: String::new(),
        name: name.into(),
    }
}

fn tls_config(url: &str, host: &str, dir: &Path, files: TlsFiles) -> EtcdConfig {
    let mut c = support::config(vec![url.to_owned()], host, 4, dir);
    c.tls = Some(files);
    c
}

fn full(pki: &Pki) -> TlsFiles {
    TlsFiles {
        ca: Some(pki.ca.clone()),
        cert: Some(pki.client_cert.clone()),
        key: Some(pki.client_key.clone()),
    }
}

#[test]
fn mutual_tls_acquires_and_releases() {
    let _g = support::serial();
    if !support::etcd_available() {
        return;
    }
    let pki = Pki::generate();
    let etcd = start_single_tls(&pki, true);
    assert!(etcd.url().starts_with("https://"), "{}", etcd.url());
    let dir = tempfile::tempdir().unwrap();
    let (fa, fb) = (Recorder::new(), Recorder::new());
    let a = EtcdArbiter::start(
        tls_config(&etcd.url(), "A", dir.path(), full(&pki)),
        fa.clone(),
    )
    .unwrap();
    let b = EtcdArbiter::start(
        tls_config(&etcd.url(), "B", dir.path(), full(&pki)),
        fb.clone(),
    )
    .unwrap();
    assert!(a.lease_id().is_some() && b.lease_id().is_some());
    let k = rk("/d/tls");
    a.acquire(&k, false, 10).unwrap();
    assert!(support::is_busy(b.acquire(&k, false, 20)));
    let h = b.holders(&k).unwrap();
    assert_eq!((h.len(), h[0].host.as_str(), h[0].pid), (1, "A", 10));
    a.release(&k, 10, true);
    b.acquire(&k, false, 20).unwrap();
    assert!(support::is_busy(a.acquire(&k, true, 10)));
    assert!(fa.events().is_empty() && fb.events().is_empty());
}

/// Starts an arbiter that must fail; returns its error text.
fn start_err(cfg: EtcdConfig) -> String {
    let limit = cfg.op_timeout * 2 + Duration::from_millis(500);
    let t = Instant::now();
    let err = EtcdArbiter::start(cfg, Recorder::new())
        .unwrap_err()
        .to_string();
    assert!(t.elapsed() < limit, "took {:?}: {err}", t.elapsed());
    err
}

#[test]
fn bad_tls_settings_fail_cleanly_at_start() {
    let _g = support::serial();
    if !support::etcd_available() {
        return;
    }
    let pki = Pki::generate();
    let etcd = start_single_tls(&pki, true);
    let dir = tempfile::tempdir().unwrap();
    // (case, settings, what the error must say)
    let cases = [
        (
            "no CA",
            TlsFiles {
                ca: None,
                ..full(&pki)
            },
            "UnknownIssuer",
        ),
        (
            "wrong CA",
            TlsFiles {
                ca: Some(pki.other_ca.clone()),
                ..full(&pki)
            },
            "UnknownIssuer",
        ),
        (
            "no client cert",
            TlsFiles {
                ca: Some(pki.ca.clone()),
                cert: None,
                key: None,
            },
            // TLS 1.3: the server checks the client's certificate after
            // the client's handshake is done, so the client sees either
            // the alert or the connection closed under its first request.
            "failed: grpc request error",
        ),
    ];
    for (what, files, says) in cases {
        let mut cfg = tls_config(&etcd.url(), "A", dir.path(), files);
        cfg.op_timeout = Duration::from_millis(1000);
        let err = start_err(cfg);
        assert!(err.contains(says), "{what}: {err}");
        assert!(!err.contains("timed out"), "{what}: {err}");
    }
    // TLS settings with an http:// URL are a configuration error.
    let mut cfg = tls_config(
        &etcd.url().replace("https", "http"),
        "A",
        dir.path(),
        full(&pki),
    );
    cfg.op_timeout = Duration::from_millis(1000);
    let err = start_err(cfg);
    assert!(err.contains("only supported with HTTPS"), "{err}");
    // A plain-http client against the TLS port gets no answer it accepts.
    let mut cfg = support::config(
        vec![etcd.url().replace("https", "http")],
        "A",
        4,
        dir.path(),
    );
    cfg.op_timeout = Duration::from_millis(1000);
    let err = start_err(cfg);
    assert!(err.contains("etcd"), "{err}");
    eprintln!("plain http to the TLS port: {err}");
}
