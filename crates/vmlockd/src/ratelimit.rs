//! Rate limiting for log lines a client can trigger.
//!
//! A misbehaving client must not be able to flood the log. Each call site
//! owns a static [`RateLimit`]; lines past the budget are counted and the
//! count is reported with the next line that gets through.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// At most `n` events per second (a fixed one-second window).
#[derive(Debug)]
pub struct RateLimit {
    per_sec: u64,
    /// window second << 20 | count in window
    state: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimit {
    /// A limiter allowing `n` events per second.
    pub const fn per_second(n: u64) -> RateLimit {
        RateLimit {
            per_sec: n,
            state: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether this event may be logged.
    pub fn allow(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut cur = self.state.load(Ordering::Relaxed);
        loop {
            let (sec, count) = (cur >> 20, cur & 0xF_FFFF);
            let next = if sec == now & 0xFFF_FFFF_FFFF {
                if count >= self.per_sec {
                    self.suppressed.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                cur + 1
            } else {
                ((now & 0xFFF_FFFF_FFFF) << 20) | 1
            };
            match self
                .state
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Events suppressed since the last call (resets the counter).
    #[cfg(test)]
    fn take_suppressed(&self) -> u64 {
        self.suppressed.swap(0, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_to_the_budget() {
        let rl = RateLimit::per_second(3);
        let allowed = (0..100).filter(|_| rl.allow()).count();
        // A second boundary may fall inside the burst: at most two windows.
        assert!((3..=6).contains(&allowed), "allowed {allowed}");
        assert_eq!(rl.take_suppressed() as usize, 100 - allowed);
        assert_eq!(rl.take_suppressed(), 0);
    }
}
