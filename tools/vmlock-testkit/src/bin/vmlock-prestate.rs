//! `vmlock-prestate ARGS...`: prepares a re-exec state file, then execs
//! `$VMLOCK_PRESTATE_EXEC ARGS...` in its own process (same pid), so the
//! daemon starts as if a previous image had left that state behind.
//!
//! ```text
//! VMLOCK_PRESTATE_EXEC     program to exec (required)
//! VMLOCK_PRESTATE_FILE     state path (default /run/virtlockd-restart-exec.json)
//! VMLOCK_PRESTATE_TEXT     content; @PID@ = our pid, @FD@ = the lock descriptor
//! VMLOCK_PRESTATE_SYMLINK  make the state path a symlink to this instead
//! VMLOCK_PRESTATE_LOCK     open this file, take a classic POSIX write lock on
//!                          byte 0 and keep the descriptor across the exec
//! VMLOCK_PRESTATE_BIN      also leave a binary state (vmlockd-restart-exec.bin
//!                          beside the state path), encoded here by hand:
//!                          `foreign` (our pid, another start time) or
//!                          `corrupt` (ours, with a wrong checksum)
//! ```

#![forbid(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;

use vmlock_sys::lock::{LockKind, LockType, try_lock};

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("vmlock-prestate: {what}: {e}");
    std::process::exit(1)
}

fn lock_fd(path: &str) -> OwnedFd {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| fail("open lock file", e));
    match try_lock(f.as_fd(), LockKind::Posix, LockType::Exclusive) {
        Ok(true) => {}
        Ok(false) => fail("lock", "busy"),
        Err(e) => fail("lock", e),
    }
    vmlock_sys::fd::set_cloexec(f.as_fd(), false).unwrap_or_else(|e| fail("cloexec", e));
    OwnedFd::from(f)
}

fn main() {
    let var = |k: &str| std::env::var(k).ok();
    let program =
        var("VMLOCK_PRESTATE_EXEC").unwrap_or_else(|| fail("env", "no VMLOCK_PRESTATE_EXEC"));
    let state = var("VMLOCK_PRESTATE_FILE")
        .unwrap_or_else(|| "/run/virtlockd-restart-exec.json".to_string());
    // Kept open (not close-on-exec) until the exec; never dropped here.
    let held = var("VMLOCK_PRESTATE_LOCK").map(|p| lock_fd(&p));
    let fd = held.as_ref().map_or(-1, |f| f.as_raw_fd());
    if let Some(target) = var("VMLOCK_PRESTATE_SYMLINK") {
        std::os::unix::fs::symlink(target, &state).unwrap_or_else(|e| fail("symlink", e));
    } else if let Some(text) = var("VMLOCK_PRESTATE_TEXT") {
        let text = text
            .replace("@PID@", &std::process::id().to_string())
            .replace("@FD@", &fd.to_string());
        std::fs::write(&state, text).unwrap_or_else(|e| fail("write state", e));
    }
    if let Some(mode) = var("VMLOCK_PRESTATE_BIN") {
        let path = std::path::Path::new(&state).with_file_name("vmlockd-restart-exec.bin");
        std::fs::write(path, binary_state(&mode)).unwrap_or_else(|e| fail("write bin", e));
    }
    let err = std::process::Command::new(&program)
        .args(std::env::args_os().skip(1))
        .exec();
    drop(held);
    fail("exec", err)
}

/// A binary state with no locks, of the given kind (see the module docs).
fn binary_state(mode: &str) -> Vec<u8> {
    let pid = std::process::id();
    let start = vmlock_sys::process::start_time(pid as i32).unwrap_or_else(|e| fail("stat", e));
    let start = if mode == "foreign" { start + 1 } else { start };
    // No socket or lock fds, no servers, one lockspace (default, no
    // resources), no lingering.
    let payload: Vec<u8> = [0u32, 0, 0, 1]
        .iter()
        .flat_map(|n| n.to_le_bytes())
        .chain([0u8])
        .chain([0u32, 0].iter().flat_map(|n| n.to_le_bytes()))
        .collect();
    let mut out = b"VMLKST02".to_vec();
    out.extend_from_slice(&pid.to_le_bytes());
    out.extend_from_slice(&start.to_le_bytes());
    out.extend_from_slice(&7u64.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&0u64.to_le_bytes()); // never the right checksum
    out
}
