//! Prometheus metrics (`metrics_listen`): served over TCP and on a UNIX
//! socket, counting what clients did, accepted by Prometheus' own
//! `promtool check metrics`; off by default; a bad address stops start-up.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use vmlock_testkit::frames::{self, FLAG_SHARED};
use vmlock_testkit::{Daemon, DaemonSpec, Flavor, decode_reply};

fn get(stream: &mut impl ReadWrite, path: &str) -> String {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("request");
    let mut out = String::new();
    stream.read_to_string(&mut out).expect("response");
    out
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// The body of a 200 response.
fn body(resp: &str) -> &str {
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(
        resp.contains("Content-Type: text/plain; version=0.0.4"),
        "{resp}"
    );
    resp.split_once("\r\n\r\n").map(|(_, b)| b).expect("body")
}

/// The value of the sample `name` (with its labels, exactly as printed).
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
        .parse()
        .expect("number")
}

fn promtool_check(text: &str) {
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/install-deps.sh installs it)");
    p.stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let o = p.wait_with_output().expect("promtool");
    assert!(
        o.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn ok(r: &[u8]) -> bool {
    decode_reply(r).1.is_none()
}

#[test]
fn metrics_count_requests_and_pass_promtool() {
    let port = vmlock_testkit::etcd::free_port();
    let conf = format!("metrics_listen = \"127.0.0.1:{port}\"\n");
    let d = Daemon::start(DaemonSpec::new(Flavor::Ours).config(&conf)).expect("vmlockd");
    let disk = d.dir().join("m.img");
    std::fs::write(&disk, b"").expect("disk");
    let disk = disk.to_str().expect("utf-8").to_owned();
    let mut a = d.connect();
    assert!(ok(&a
        .call(&frames::register(1, [1; 16], "a", 1, 4_194_200, 0))
        .expect("reg")));
    assert!(ok(&a.call(&frames::acquire(2, "", &disk, 0)).expect("acq")));
    let mut b = d.connect();
    assert!(ok(&b
        .call(&frames::register(1, [2; 16], "b", 2, 4_194_201, 0))
        .expect("reg")));
    assert!(!ok(&b
        .call(&frames::acquire(2, "", &disk, FLAG_SHARED))
        .expect("acq")));

    let scrape = || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        get(&mut s, "/metrics")
    };
    let resp = scrape();
    let text = body(&resp);
    promtool_check(text);
    let req = |p: &str, r: &str| {
        sample(
            text,
            &format!("vmlockd_requests_total{{procedure=\"{p}\",result=\"{r}\"}}"),
        )
    };
    assert_eq!(req("REGISTER", "ok"), 2.0);
    assert_eq!(req("ACQUIRE_RESOURCE", "ok"), 1.0);
    assert_eq!(req("ACQUIRE_RESOURCE", "error"), 1.0);
    assert_eq!(req("RELEASE_RESOURCE", "ok"), 0.0);
    assert_eq!(sample(text, "vmlockd_refusals_total"), 1.0);
    assert_eq!(sample(text, "vmlockd_locks{mode=\"exclusive\"}"), 1.0);
    assert_eq!(sample(text, "vmlockd_locks{mode=\"shared\"}"), 0.0);
    assert_eq!(sample(text, "vmlockd_owners"), 1.0);
    assert_eq!(sample(text, "vmlockd_clients{server=\"virtlockd\"}"), 2.0);
    assert!(sample(text, "vmlockd_open_fds") < sample(text, "vmlockd_max_fds"));
    // The histogram holds the four requests; its buckets are cumulative.
    assert_eq!(sample(text, "vmlockd_request_duration_seconds_count"), 4.0);
    assert_eq!(
        sample(text, "vmlockd_request_duration_seconds_bucket{le=\"+Inf\"}"),
        4.0
    );
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("vmlockd_request_duration_seconds_bucket"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    // 14 bounds (10 µs to 1 s) and +Inf.
    assert_eq!(buckets.len(), 15);
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");

    // Another path: 404, and the daemon serves on.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    assert!(get(&mut s, "/nope").starts_with("HTTP/1.1 404 Not Found"));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    drop(s.write_all(b"garbage without an end"));
    drop(s);
    assert!(ok(&a.call(&frames::release(3, "", &disk, 0)).expect("rel")));
    let text = scrape();
    assert_eq!(
        sample(body(&text), "vmlockd_locks{mode=\"exclusive\"}"),
        0.0
    );
}

#[test]
fn metrics_on_a_unix_socket_and_off_by_default() {
    let d = Daemon::start(
        DaemonSpec::new(Flavor::Ours).config("metrics_listen = \"/run/vmlockd-metrics.sock\"\n"),
    )
    .expect("vmlockd");
    let sock = d.run_dir().join("vmlockd-metrics.sock");
    // Bound after the lock socket that Daemon::start waits for.
    let bound = vmlock_testkit::wait_until(std::time::Duration::from_secs(5), || sock.exists());
    assert!(bound, "no metrics socket; log:\n{}", d.log_text());
    let mut s = std::os::unix::net::UnixStream::connect(&sock).expect("metrics socket");
    let resp = get(&mut s, "/metrics");
    promtool_check(body(&resp));
    assert_eq!(
        sample(body(&resp), "vmlockd_locks{mode=\"exclusive\"}"),
        0.0
    );

    // Off by default: no request counting, and nothing listens.
    let plain = Daemon::start(DaemonSpec::new(Flavor::Ours)).expect("vmlockd");
    assert!(!plain.log_text().contains("metrics at"));
    assert!(!plain.run_dir().join("vmlockd-metrics.sock").exists());
}

#[test]
fn a_bad_metrics_address_stops_start_up() {
    let r = Daemon::start(DaemonSpec::new(Flavor::Ours).config("metrics_listen = \"nowhere\"\n"));
    let err = r.expect_err("must not start").to_string();
    assert!(
        err.contains("metrics_listen = \"nowhere\": expected HOST:PORT or an absolute socket path"),
        "{err}"
    );
}

/// `GET path` from an HTTP server on 127.0.0.1:`port`: the body of a 200
/// response, or `None` (not up yet, or another status).
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    (head.split(' ').nth(1) == Some("200")).then(|| body.to_owned())
}

/// The value of a Prometheus instant query that returns one series.
fn query(prom: u16, expr: &str) -> Option<f64> {
    let enc: String = expr
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let body = http_get(prom, &format!("/api/v1/query?query={enc}"))?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let result = v["data"]["result"].as_array()?;
    match result.as_slice() {
        [one] => one["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
}

/// A real Prometheus server scrapes the daemon every second; its HTTP API
/// shows the daemon's lock count, and the change after a release.
#[test]
fn a_prometheus_server_scrapes_the_daemon() {
    let have = Command::new("prometheus")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !vmlock_testkit::ci::require(
        have,
        "prometheus is not installed (Debian package prometheus)",
    ) {
        return;
    }
    let port = vmlock_testkit::etcd::free_port();
    let conf = format!("metrics_listen = \"127.0.0.1:{port}\"\n");
    let d = Daemon::start(DaemonSpec::new(Flavor::Ours).config(&conf)).expect("vmlockd");
    let disk = d.dir().join("p.img");
    std::fs::write(&disk, b"").expect("disk");
    let disk = disk.to_str().expect("utf-8").to_owned();
    let mut a = d.connect();
    assert!(ok(&a
        .call(&frames::register(1, [1; 16], "a", 1, 4_194_210, 0))
        .expect("reg")));
    assert!(ok(&a.call(&frames::acquire(2, "", &disk, 0)).expect("acq")));

    let dir = tempfile::tempdir().expect("tmp");
    let yml = dir.path().join("prometheus.yml");
    std::fs::write(
        &yml,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: vmlockd\n    static_configs:\n      \
             - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .expect("prometheus.yml");
    let prom = vmlock_testkit::etcd::free_port();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
    let mut server = Command::new("prometheus")
        .arg(format!("--config.file={}", yml.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start prometheus");
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _kill = Kill(&mut server);
    let log = || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    let wait = std::time::Duration::from_secs(60);
    let seen = |expr: &str, want: f64| {
        vmlock_testkit::wait_until(wait, || query(prom, expr) == Some(want))
    };
    assert!(
        seen("up{job=\"vmlockd\"}", 1.0),
        "target never up:\n{}",
        log()
    );
    assert!(
        seen("vmlockd_locks{mode=\"exclusive\"}", 1.0),
        "lock count never scraped:\n{}",
        log()
    );
    assert!(seen("vmlockd_owners", 1.0), "{}", log());
    assert!(ok(&a.call(&frames::release(3, "", &disk, 0)).expect("rel")));
    assert!(
        seen("vmlockd_locks{mode=\"exclusive\"}", 0.0),
        "the release never reached Prometheus:\n{}",
        log()
    );
    assert!(
        seen(
            "vmlockd_requests_total{procedure=\"RELEASE_RESOURCE\",result=\"ok\"}",
            1.0
        ),
        "{}",
        log()
    );
}
