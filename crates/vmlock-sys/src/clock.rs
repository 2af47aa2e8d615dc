//! Reading `CLOCK_MONOTONIC` as plain nanoseconds.
//!
//! [`std::time::Instant`] uses the same clock on Linux but hides its value,
//! so it cannot be written to a log and compared across processes. The soak
//! test's clients (separate processes) stamp their grants and releases with
//! [`monotonic_ns`], and its checker compares those numbers directly: the
//! clock is system-wide, never steps backwards and is not affected by
//! `settimeofday`.

use std::io;

/// Nanoseconds of `CLOCK_MONOTONIC` (time since boot, not counting suspend).
pub fn monotonic_ns() -> u64 {
    // The call cannot fail for a valid clock id and pointer; fall back to 0
    // rather than panic if a kernel ever says otherwise.
    try_monotonic_ns().unwrap_or(0)
}

/// [`monotonic_ns`], with the (theoretical) error of `clock_gettime`.
pub fn try_monotonic_ns() -> io::Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `timespec` that outlives the call;
    // `clock_gettime` writes only to it.
    crate::cvt(unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) })?;
    let secs = u64::try_from(ts.tv_sec).map_err(io::Error::other)?;
    let nanos = u64::try_from(ts.tv_nsec).map_err(io::Error::other)?;
    Ok(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn monotonic_ns_moves_forward_with_instant() {
        let a = monotonic_ns();
        let start = Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        let b = monotonic_ns();
        let elapsed = start.elapsed().as_nanos() as u64;
        assert!(a > 0);
        assert!(b >= a + 20_000_000, "{a} -> {b}");
        // Same clock as Instant: the difference matches within 5 ms.
        assert!(
            (b - a).abs_diff(elapsed) < 5_000_000,
            "{} vs {elapsed}",
            b - a
        );
    }
}
