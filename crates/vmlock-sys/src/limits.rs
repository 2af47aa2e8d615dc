//! Resource limits.

use std::io;

use crate::cvt;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the new
/// `(soft, hard)` pair. A lock daemon keeps one descriptor per held lock.
pub fn raise_nofile() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out-pointer for one `struct rlimit`.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `want` is a valid, initialised `struct rlimit`.
        cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) })?;
        lim = want;
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Number of descriptors open in this process.
pub fn open_fd_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/fd")?
        .count()
        .saturating_sub(1))
}

#[cfg(test)]
mod tests {
    #[test]
    fn raising_nofile_reaches_the_hard_limit() {
        let (soft, hard) = super::raise_nofile().expect("raise");
        assert_eq!(soft, hard);
        assert!(super::open_fd_count().expect("count") >= 3);
    }
}
