//! Starts a lock daemon as root in a private mount namespace whose `/run`
//! is a per-test temp dir:
//!
//! ```text
//! unshare -m --propagation private sh -c \
//!   'mount --bind "$1" /run && shift && mkdir -p /run/libvirt && exec "$@"' \
//!   sh $TMP/run <binary> [-f $TMP/daemon.conf] <args>
//! ```
//!
//! `unshare` (without `--fork`) and `sh` both exec, so the child's pid is
//! the daemon's pid. The sockets appear at `$TMP/run/libvirt/*` and are
//! reachable from the test process.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::conn::RawConn;
use crate::flavor::Flavor;

/// How long `start` waits for the main socket.
const START_TIMEOUT: Duration = Duration::from_secs(15);

const NS_SCRIPT: &str = "mount --bind \"$1\" /run && shift && mkdir -p /run/libvirt && exec \"$@\"";

/// What to start.
#[derive(Debug, Clone)]
pub struct DaemonSpec {
    /// Which daemon.
    pub flavor: Flavor,
    /// Binary to run instead of the flavor's default (e.g. a symlink).
    pub binary: Option<PathBuf>,
    /// Config file text, written to `$TMP/daemon.conf` and passed with `-f`.
    pub config: Option<String>,
    /// Extra arguments.
    pub args: Vec<OsString>,
    /// Extra environment variables.
    pub env: Vec<(OsString, OsString)>,
}

impl DaemonSpec {
    /// The flavor's default binary, no config, no extra args.
    pub fn new(flavor: Flavor) -> DaemonSpec {
        DaemonSpec {
            flavor,
            binary: None,
            config: None,
            args: Vec::new(),
            env: Vec::new(),
        }
    }
    /// Sets the config text.
    pub fn config(mut self, text: &str) -> DaemonSpec {
        self.config = Some(text.to_string());
        self
    }
    /// Adds an argument.
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> DaemonSpec {
        self.args.push(a.as_ref().to_owned());
        self
    }
    /// Adds an environment variable.
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> DaemonSpec {
        self.env
            .push((k.as_ref().to_owned(), v.as_ref().to_owned()));
        self
    }
    /// For vmlockd, turns off what it adds to virtlockd's error texts
    /// (`refusal_names_holder = 0`), so replies compare byte for byte;
    /// keeps the config text set so far. Call after [`config`](Self::config).
    pub fn virtlockd_texts(mut self) -> DaemonSpec {
        if self.flavor == Flavor::Ours {
            let mut text = self.config.take().unwrap_or_default();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str("refusal_names_holder = 0\n");
            self.config = Some(text);
        }
        self
    }
    /// Runs `path` instead of the default binary.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> DaemonSpec {
        self.binary = Some(path.into());
        self
    }
}

/// A running daemon. Dropping it kills (SIGKILL) and reaps it.
#[derive(Debug)]
pub struct Daemon {
    flavor: Flavor,
    child: Child,
    status: Option<ExitStatus>,
    tmp: tempfile::TempDir,
}

/// A temp dir whose path length is the same for every test (`/tmp/vmlock-tXXXXXX`),
/// so replies that embed paths keep their byte length when normalised.
pub fn fixed_len_tempdir() -> io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("vmlock-t")
        .rand_bytes(6)
        .tempdir_in("/tmp")
}

/// A command that runs `program` in a new private mount namespace with
/// `run_dir` bind-mounted on `/run`. Append the program's arguments.
pub fn ns_command(run_dir: &Path, program: &Path) -> Command {
    let mut c = Command::new("unshare");
    c.args([
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        NS_SCRIPT,
        "sh",
    ])
    .arg(run_dir)
    .arg(program);
    c
}

impl Daemon {
    /// Starts the daemon and waits until its main socket accepts.
    pub fn start(spec: DaemonSpec) -> io::Result<Daemon> {
        let tmp = fixed_len_tempdir()?;
        let run = tmp.path().join("run");
        let scratch = tmp.path().join("d");
        fs::create_dir(&run)?;
        fs::create_dir(&scratch)?;
        fs::set_permissions(&scratch, fs::Permissions::from_mode(0o777))?;
        let log = fs::File::create(tmp.path().join("daemon.log"))?;
        let binary = spec
            .binary
            .clone()
            .unwrap_or_else(|| spec.flavor.default_binary());
        let mut cmd = ns_command(&run, &binary);
        if let Some(text) = &spec.config {
            let conf = tmp.path().join("daemon.conf");
            fs::write(&conf, text)?;
            cmd.arg("-f").arg(conf);
        }
        cmd.args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn()?;
        let mut d = Daemon {
            flavor: spec.flavor,
            child,
            status: None,
            tmp,
        };
        d.wait_ready()?;
        Ok(d)
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut pause = Duration::from_millis(2);
        loop {
            if RawConn::connect(&self.socket_path()).is_ok() {
                self.wait_admin();
                return Ok(());
            }
            if let Some(st) = self.try_status() {
                let msg = format!(
                    "{} exited during start ({st}): {}",
                    self.name(),
                    self.log_text()
                );
                return Err(io::Error::other(msg));
            }
            if Instant::now() >= deadline {
                let msg = format!(
                    "{} did not listen in time: {}",
                    self.name(),
                    self.log_text()
                );
                return Err(io::Error::new(io::ErrorKind::TimedOut, msg));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Both daemons bind the admin socket just after the main one: a test
    /// that talks to it right after start could otherwise meet a path that
    /// does not accept yet. Waits a little for it (a daemon started with
    /// only the main socket, by socket activation, simply has none).
    fn wait_admin(&self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while RawConn::connect(&self.admin_socket_path()).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn name(&self) -> &'static str {
        self.flavor.name()
    }

    /// The flavor.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `$TMP`, the root of this daemon's temp dir.
    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// `$TMP/run`, the daemon's `/run`.
    pub fn run_dir(&self) -> PathBuf {
        self.tmp.path().join("run")
    }

    /// The main socket.
    pub fn socket_path(&self) -> PathBuf {
        self.run_dir().join("libvirt/virtlockd-sock")
    }

    /// The admin socket.
    pub fn admin_socket_path(&self) -> PathBuf {
        self.run_dir().join("libvirt/virtlockd-admin-sock")
    }

    /// The pid file.
    pub fn pid_file(&self) -> PathBuf {
        self.run_dir().join("virtlockd.pid")
    }

    /// The re-exec state file.
    pub fn state_file(&self) -> PathBuf {
        self.run_dir().join("virtlockd-restart-exec.json")
    }

    /// A world-accessible scratch dir for disks and lease dirs.
    pub fn dir(&self) -> PathBuf {
        self.tmp.path().join("d")
    }

    /// The daemon's stdout and stderr so far.
    pub fn log_text(&self) -> String {
        // Lossy: a failed exec may leave non-UTF-8 bytes (e.g. a shell's
        // complaint about a binary) that must not hide the rest.
        fs::read(self.tmp.path().join("daemon.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Sends `sig` to the daemon.
    pub fn signal(&self, sig: i32) -> io::Result<()> {
        vmlock_sys::process::kill(self.pid() as i32, sig)
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `timeout` for the daemon to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        crate::wait::wait_until(timeout, || self.try_status().is_some());
        self.try_status()
    }

    /// Panics (with the log) if the daemon has exited.
    pub fn assert_alive(&mut self) {
        if let Some(st) = self.try_status() {
            let sig = st
                .signal()
                .map(|s| format!(" signal {s}"))
                .unwrap_or_default();
            panic!(
                "{} died unexpectedly ({st}{sig}); log:\n{}",
                self.name(),
                self.log_text()
            );
        }
    }

    /// A new connection to the main socket.
    pub fn connect(&self) -> RawConn {
        match RawConn::connect(&self.socket_path()) {
            Ok(c) => c,
            Err(e) => panic!("connect to {}: {e}; log:\n{}", self.name(), self.log_text()),
        }
    }

    /// A command running `program` with this daemon's view of `/run` (its
    /// own mount namespace), e.g. for libvirt's `lockd.so`, which as root
    /// connects to `/run/libvirt/virtlockd-sock`.
    pub fn run_in_ns(&self, program: &Path) -> Command {
        ns_command(&self.run_dir(), program)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
