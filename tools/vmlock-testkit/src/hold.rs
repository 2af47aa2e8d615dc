//! A VM-like lock holder process: `vmlock-hold --register`, which connects,
//! REGISTERs its *own* pid as the owner and acquires one resource, so the
//! daemon treats its connection as the VM's lifeline (closing it releases
//! the locks and gets the process killed).
//!
//! ```text
//! spawn ─► first stdout line "ok" (or "err <code> <text>") ─► holds until
//!          stdin EOF (drop) or the daemon kills it
//! ```

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

use crate::tool_binary;

/// A running `vmlock-hold --register` process; killed and reaped on drop.
#[derive(Debug)]
pub struct RegisteredHolder {
    /// The process (its pid is the lock owner).
    pub child: Child,
    /// Kept open: the holder exits at EOF on stdin.
    stdin: Option<ChildStdin>,
}

impl RegisteredHolder {
    /// Starts a holder of `name` in `lockspace` on the daemon at `socket`,
    /// with extra `vmlock-hold` flags (`--shared`, `--autocreate`,
    /// `--twice`), and returns it with its first output line (`ok` when the
    /// acquire succeeded).
    pub fn spawn<S: AsRef<OsStr>>(
        socket: &Path,
        lockspace: &str,
        name: &str,
        extra: &[S],
    ) -> std::io::Result<(RegisteredHolder, String)> {
        let mut child = Command::new(tool_binary("vmlock-hold"))
            .arg("--register")
            .arg(socket)
            .args([lockspace, name])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out).read_line(&mut line)?;
        }
        Ok((RegisteredHolder { child, stdin }, line.trim().to_owned()))
    }

    /// Like [`RegisteredHolder::spawn`], panicking (with `context`) unless
    /// the acquire succeeded.
    pub fn start<S: AsRef<OsStr>>(
        socket: &Path,
        lockspace: &str,
        name: &str,
        extra: &[S],
        context: &dyn Fn() -> String,
    ) -> RegisteredHolder {
        let (h, line) = RegisteredHolder::spawn(socket, lockspace, name, extra)
            .unwrap_or_else(|e| panic!("spawn vmlock-hold: {e}"));
        assert_eq!(line, "ok", "holder of {name}: {}", context());
        h
    }

    /// The owner pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for RegisteredHolder {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
