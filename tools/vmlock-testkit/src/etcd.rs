//! Private etcd servers on loopback (one node or a cluster, plain or TLS),
//! a throw-away PKI for the TLS ones, and a TCP proxy that a test can cut
//! to partition a client from etcd.
//!
//! ```text
//!  test ──► Proxy(port P) ──► etcd member(s) on fresh ports, temp data dirs
//!             cut(): bytes stop both ways, sockets stay open (a stall, not a reset)
//!  Pki::generate() ─► CA + server cert (SAN IP:127.0.0.1) + client cert, and a
//!                     second, unrelated CA (openssl CLI, EC P-256, valid 2 days)
//!  start_single_tls(&pki, mtls) ─► https client URL; /health on a plain
//!                                  http metrics URL
//! ```

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// Serialises tests: they start servers and measure timings on 2 cores.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether `etcd` can run here; panics with a clear message under CI.
pub fn etcd_available() -> bool {
    let ok = Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    crate::ci::require(ok, "etcd is not installed (apt-get install -y etcd-server)")
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// One etcd member; killed on drop.
#[derive(Debug)]
pub struct Etcd {
    child: Option<Child>,
    _dir: tempfile::TempDir,
    pub name: String,
    pub client_port: u16,
    tls: bool,
    /// A plain-http client URL for test set-up (same as `client_port` for
    /// a plain member; a second, loopback-only listener for a TLS one).
    setup_port: u16,
}

impl Etcd {
    /// The client URL (`https://` for a TLS member).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The member's process id (`None` once killed).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The member's Prometheus metrics text (`GET /metrics`).
    pub fn metrics(&self) -> Option<String> {
        http(self.setup_port, "GET", "/metrics", "")
    }

    /// etcd's JSON gateway: is this member the leader?
    pub fn is_leader(&self) -> bool {
        let Some(body) = http(self.client_port, "POST", "/v3/maintenance/status", "{}") else {
            return false;
        };
        let v: serde_json::Value = match serde_json::from_str(&body) {
            Ok(v) => v,
            Err(_) => return false,
        };
        let leader = v["leader"].as_str();
        leader.is_some() && leader == v["header"]["member_id"].as_str()
    }

    /// This member's id (decimal, as etcd's JSON gateway writes it).
    pub fn member_id(&self) -> Option<String> {
        let body = http(self.setup_port, "POST", "/v3/maintenance/status", "{}")?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["header"]["member_id"].as_str().map(str::to_owned)
    }

    /// Asks this member (the leader) to hand leadership to member `to`;
    /// whether etcd accepted.
    pub fn move_leader(&self, to: &str) -> bool {
        let body = format!("{{\"targetID\": \"{to}\"}}");
        let Some(reply) = http(
            self.setup_port,
            "POST",
            "/v3/maintenance/transfer-leadership",
            &body,
        ) else {
            return false;
        };
        !reply.contains("\"error\"")
    }
}

/// A user for [`Etcd::enable_auth`]: name, password, and the key prefix
/// its role may read and write (`None`: no rights at all).
pub type AuthUser<'a> = (&'a str, &'a str, Option<&'a str>);

impl Etcd {
    /// Creates `root` and `users` (each with a role of its own name granted
    /// read-write on its prefix), then turns authentication on. Goes
    /// through etcd's JSON gateway on the plain set-up URL; panics on any
    /// refusal.
    pub fn enable_auth(&self, root_password: &str, users: &[AuthUser<'_>]) {
        let root: AuthUser<'_> = ("root", root_password, None);
        for &(name, password, prefix) in std::iter::once(&root).chain(users) {
            self.gateway("/v3/auth/role/add", serde_json::json!({ "name": name }));
            if let Some(prefix) = prefix {
                let perm = serde_json::json!({
                    "permType": "READWRITE",
                    "key": base64(prefix.as_bytes()),
                    "range_end": base64(&prefix_end(prefix.as_bytes())),
                });
                self.gateway(
                    "/v3/auth/role/grant",
                    serde_json::json!({ "name": name, "perm": perm }),
                );
            }
            let user = serde_json::json!({ "name": name, "password": password });
            self.gateway("/v3/auth/user/add", user);
            let grant = serde_json::json!({ "user": name, "role": name });
            self.gateway("/v3/auth/user/grant", grant);
        }
        self.gateway("/v3/auth/enable", serde_json::json!({}));
    }

    /// How many keys start with `prefix` (etcd's JSON gateway on the
    /// plain set-up URL; `None` when the member does not answer).
    pub fn count_prefix(&self, prefix: &str) -> Option<u64> {
        let body = serde_json::json!({
            "key": base64(prefix.as_bytes()),
            "range_end": base64(&prefix_end(prefix.as_bytes())),
            "count_only": true,
        });
        let reply = http(self.setup_port, "POST", "/v3/kv/range", &body.to_string())?;
        let v: serde_json::Value = serde_json::from_str(&reply).ok()?;
        v.get("header")?;
        // proto3 JSON leaves out a zero count and writes int64 as a string.
        match &v["count"] {
            serde_json::Value::Null => Some(0),
            serde_json::Value::String(n) => n.parse().ok(),
            n => n.as_u64(),
        }
    }

    fn gateway(&self, path: &str, body: serde_json::Value) {
        let body = body.to_string();
        let reply = http(self.setup_port, "POST", path, &body);
        let ok = reply.as_deref().is_some_and(|r| r.contains("\"header\""));
        assert!(ok, "etcd gateway {path} {body}: {reply:?}");
    }
}

/// The end of the key range holding every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Standard base64 with padding (the gateway's encoding of `bytes`).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of `n` members on fresh ports, ready to serve.
pub fn start_cluster(n: usize) -> Vec<Etcd> {
    let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("n{i}=http://127.0.0.1:{p}"))
        .collect();
    let initial = initial.join(",");
    let nodes: Vec<Etcd> = ports
        .iter()
        .enumerate()
        .map(|(i, &(c, p))| spawn_member(&format!("n{i}"), c, p, &initial, &[]))
        .collect();
    for node in &nodes {
        wait_healthy(node.client_port);
    }
    nodes
}

/// One member.
pub fn start_single() -> Etcd {
    start_cluster(1).pop().expect("one member")
}

/// One plain-http member started with extra command-line flags (e.g.
/// `--auth-token-ttl`).
pub fn start_single_args(extra: &[String]) -> Etcd {
    let (client, peer) = (free_port(), free_port());
    let initial = format!("n0=http://127.0.0.1:{peer}");
    let node = spawn_member("n0", client, peer, &initial, extra);
    wait_healthy(node.client_port);
    node
}

/// One member serving clients over TLS with `pki`'s server certificate;
/// with `mutual`, clients must present a certificate signed by `pki.ca`.
/// Health is polled on a separate plain-http metrics URL; a second,
/// plain-http client listener (never advertised) serves
/// [`Etcd::enable_auth`].
pub fn start_single_tls(pki: &Pki, mutual: bool) -> Etcd {
    let (client, peer, metrics) = (free_port(), free_port(), free_port());
    let setup = free_port();
    let initial = format!("n0=http://127.0.0.1:{peer}");
    let mut extra = vec![
        "--listen-metrics-urls".to_owned(),
        format!("http://127.0.0.1:{metrics}"),
    ];
    for (flag, path) in [
        ("--cert-file", &pki.server_cert),
        ("--key-file", &pki.server_key),
        ("--trusted-ca-file", &pki.ca),
    ] {
        extra.push(flag.to_owned());
        extra.push(path.to_string_lossy().into_owned());
    }
    if mutual {
        extra.push("--client-cert-auth".to_owned());
    }
    let mut node = spawn_with(("n0", client, peer), &initial, &extra, Some(setup));
    node.tls = true;
    wait_healthy(metrics);
    node
}

fn spawn_member(name: &str, client: u16, peer: u16, initial: &str, extra: &[String]) -> Etcd {
    spawn_with((name, client, peer), initial, extra, None)
}

/// Starts a member; with `tls_setup`, its client URL is https and a plain
/// set-up listener runs on that port.
fn spawn_with(
    member: (&str, u16, u16),
    initial: &str,
    extra: &[String],
    tls_setup: Option<u16>,
) -> Etcd {
    let (name, client, peer) = member;
    let dir = tempfile::tempdir().unwrap();
    let scheme = if tls_setup.is_some() { "https" } else { "http" };
    let c = format!("{scheme}://127.0.0.1:{client}");
    let listen = match tls_setup {
        Some(port) => format!("{c},http://127.0.0.1:{port}"),
        None => c.clone(),
    };
    let p = format!("http://127.0.0.1:{peer}");
    let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
    let child = Command::new("etcd")
        .args(["--name", name, "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--listen-client-urls",
            &listen,
            "--advertise-client-urls",
            &c,
        ])
        .args([
            "--listen-peer-urls",
            &p,
            "--initial-advertise-peer-urls",
            &p,
        ])
        .args([
            "--initial-cluster",
            initial,
            "--initial-cluster-state",
            "new",
        ])
        .args(["--logger", "zap", "--log-outputs", "stderr"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn etcd");
    Etcd {
        child: Some(child),
        _dir: dir,
        name: name.to_owned(),
        client_port: client,
        tls: false,
        setup_port: tls_setup.unwrap_or(client),
    }
}

fn wait_healthy(port: u16) {
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        if http(port, "GET", "/health", "").is_some_and(|b| b.contains("\"true\"")) {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!("etcd on port {port} did not become healthy in 30 s");
}

/// A minimal HTTP/1.0 request; returns the body.
fn http(port: u16, method: &str, path: &str, body: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

/// A throw-away PKI in a temp dir (removed on drop): a CA, a server
/// certificate for `127.0.0.1` (subjectAltName IP, which rustls requires),
/// a client certificate (CN `vmlock-client`) and an unrelated second CA.
/// Every key is EC P-256 in PKCS#8 PEM.
#[derive(Debug)]
pub struct Pki {
    dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing here: trusting it alone must fail.
    pub other_ca: PathBuf,
}

impl Pki {
    /// Generates everything with the `openssl` CLI; panics if it fails.
    pub fn generate() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_owned();
        self_signed_ca(&d, "ca", "vmlock test CA");
        self_signed_ca(&d, "other-ca", "unrelated test CA");
        let server = "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n";
        signed_cert(&d, "server", "etcd-test-server", server);
        signed_cert(
            &d,
            "client",
            "vmlock-client",
            "extendedKeyUsage=clientAuth\n",
        );
        Pki {
            ca: d.join("ca.pem"),
            server_cert: d.join("server.pem"),
            server_key: d.join("server.key"),
            client_cert: d.join("client.pem"),
            client_key: d.join("client.key"),
            other_ca: d.join("other-ca.pem"),
            dir,
        }
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

const EC_KEY: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

fn self_signed_ca(dir: &Path, stem: &str, cn: &str) {
    openssl(
        dir,
        &[
            &["req", "-x509", "-nodes", "-days", "2"],
            &EC_KEY[..],
            &[
                "-keyout",
                &format!("{stem}.key"),
                "-out",
                &format!("{stem}.pem"),
            ],
            &["-subj", &format!("/CN={cn}")],
            &["-addext", "basicConstraints=critical,CA:TRUE"],
            &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ]
        .concat(),
    );
}

fn signed_cert(dir: &Path, stem: &str, cn: &str, ext: &str) {
    let ext_file = dir.join(format!("{stem}.ext"));
    std::fs::write(&ext_file, ext).unwrap();
    let (key, csr, pem) = (
        format!("{stem}.key"),
        format!("{stem}.csr"),
        format!("{stem}.pem"),
    );
    let subj = format!("/CN={cn}");
    openssl(
        dir,
        &[
            &["req", "-new", "-nodes"][..],
            &EC_KEY[..],
            &["-keyout", &key, "-out", &csr, "-subj", &subj],
        ]
        .concat(),
    );
    let ext_path = ext_file.to_string_lossy().into_owned();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &pem,
            "-extfile",
            &ext_path,
        ],
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (apt-get install -y openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TCP forwarder that can be cut: once cut, bytes stop flowing both
/// ways but sockets stay open (etcd looks stalled, not down).
#[derive(Debug)]
pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// Connections accepted during a cut, never answered.
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(target_port: u16) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(Mutex::new(Vec::new()));
        let (c, st, h) = (cut.clone(), stop.clone(), held.clone());
        let target: SocketAddr = ([127, 0, 0, 1], target_port).into();
        thread::spawn(move || accept_loop(l, target, c, st, h));
        Proxy {
            port,
            cut,
            stop,
            held,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// Ends a cut: stalled connections flow again, new ones are forwarded,
    /// and those accepted during the cut are closed (as a connection
    /// attempt into a partition fails in the end), so the client opens
    /// another.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
        self.held.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn accept_loop(
    l: TcpListener,
    target: SocketAddr,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    held: Arc<Mutex<Vec<TcpStream>>>,
) {
    for conn in l.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(down) = conn else { continue };
        if cut.load(Ordering::SeqCst) {
            // Accepted, never answered (closed by `heal`).
            held.lock().unwrap_or_else(|p| p.into_inner()).push(down);
            continue;
        }
        let Ok(up) = TcpStream::connect(target) else {
            continue;
        };
        for (from, to) in [(&down, &up), (&up, &down)] {
            let (from, to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
            let (c, st) = (cut.clone(), stop.clone());
            thread::spawn(move || pump(from, to, c, st));
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, cut: Arc<AtomicBool>, stop: Arc<AtomicBool>) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = [0u8; 16384];
    while !stop.load(Ordering::SeqCst) {
        if cut.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(20));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

/// Polls `f` until it returns `Some`, for at most `limit`.
pub fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= until {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("/vmlockd-test/", "L3ZtbG9ja2QtdGVzdC8="),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded, "{plain}");
        }
    }

    #[test]
    fn prefix_end_is_the_next_key_past_the_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
