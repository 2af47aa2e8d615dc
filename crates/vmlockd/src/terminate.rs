//! Terminating a lock holder whose connection closed (docs/protocol.md §5.4).
//!
//! When the connection of a process that registered *itself* as owner closes
//! while it still held locks, virtlockd releases them and kills the process
//! (libvirt relies on this: a QEMU that lost its locks must not keep
//! writing). virtlockd does it on its only thread (up to 3 s stall for every
//! client) and by bare pid (a recycled pid may be signalled). vmlockd:
//!
//! ```text
//!  pidfd (taken at accept: SO_PEERPIDFD, or pidfd_open) ── SIGTERM
//!     └─ poll(2) the pidfd until readable (= the process exited), ≤ grace
//!          └─ still alive? SIGKILL ── wait ≤ KILL_WAIT ── still alive? log an error
//! ```
//! in its own task: nobody else waits. A pidfd names one process for ever,
//! so a recycled pid is never signalled. A zombie counts as exited (its
//! pidfd is readable), unlike virtlockd's signal-0 probe.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

/// How long to wait after SIGKILL before giving up.
pub const KILL_WAIT: Duration = Duration::from_millis(1400);

/// How a termination ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Gone before or after SIGTERM.
    ExitedAfterTerm,
    /// Needed SIGKILL.
    ExitedAfterKill,
    /// Still there after SIGKILL (uninterruptible sleep?).
    Survived,
    /// Already gone when we started.
    AlreadyGone,
}

/// Terminates the process behind `pidfd`: SIGTERM, then SIGKILL after `grace`.
pub async fn terminate(pidfd: Arc<OwnedFd>, grace: Duration) -> io::Result<Outcome> {
    use vmlock_sys::process::pidfd_send_signal;
    match pidfd_send_signal(pidfd.as_fd(), libc::SIGTERM) {
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(Outcome::AlreadyGone),
        other => other?,
    }
    if exited_within(&pidfd, grace).await? {
        return Ok(Outcome::ExitedAfterTerm);
    }
    match pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL) {
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(Outcome::ExitedAfterTerm),
        other => other?,
    }
    if exited_within(&pidfd, KILL_WAIT).await? {
        Ok(Outcome::ExitedAfterKill)
    } else {
        Ok(Outcome::Survived)
    }
}

/// Whether the process exits within `limit` (waited for on the blocking
/// pool: terminations are rare and must not occupy an async worker).
async fn exited_within(pidfd: &Arc<OwnedFd>, limit: Duration) -> io::Result<bool> {
    let fd = pidfd.clone();
    tokio::task::spawn_blocking(move || vmlock_sys::process::pidfd_wait(fd.as_fd(), limit))
        .await
        .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[tokio::test]
    async fn a_process_that_obeys_sigterm_is_not_killed() {
        let mut child = Command::new("sleep").arg("30").spawn().expect("spawn");
        let fd = Arc::new(vmlock_sys::process::pidfd_open(child.id() as i32).expect("pidfd"));
        let out = terminate(fd, Duration::from_secs(2))
            .await
            .expect("terminate");
        // `sleep` dies of SIGTERM; the pidfd turns readable at once, zombie or not.
        assert_eq!(out, Outcome::ExitedAfterTerm);
        let st = child.wait().expect("reap");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(libc::SIGTERM));
    }

    #[tokio::test]
    async fn a_process_that_ignores_sigterm_gets_sigkill_after_the_grace() {
        let mut child = Command::new("sh")
            .args(["-c", "trap '' TERM; echo ready; exec sleep 30"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut line = String::new();
        use std::io::BufRead;
        let mut r = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        r.read_line(&mut line).expect("ready");
        let fd = Arc::new(vmlock_sys::process::pidfd_open(child.id() as i32).expect("pidfd"));
        let t0 = std::time::Instant::now();
        let out = terminate(fd, Duration::from_millis(300))
            .await
            .expect("terminate");
        assert_eq!(out, Outcome::ExitedAfterKill);
        assert!(t0.elapsed() >= Duration::from_millis(300));
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(child.wait().expect("reap").signal(), Some(libc::SIGKILL));
    }
}
