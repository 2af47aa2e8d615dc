//! What `/proc` says about a daemon: resident memory and open descriptors.

use std::path::PathBuf;

/// `VmRSS` of `pid` in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// How many descriptors `pid` has open.
pub fn open_fds(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

/// The targets of `pid`'s open descriptors (sockets show as `socket:[N]`).
pub fn fd_targets(pid: u32) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        assert!(rss_kib(me).is_some_and(|k| k > 0));
        let f = std::fs::File::open("/proc/self/status").expect("open");
        let n = open_fds(me).expect("fds");
        assert!(n >= 4, "{n}");
        assert!(fd_targets(me).iter().any(|p| p.ends_with("status")));
        drop(f);
        assert_eq!(rss_kib(u32::MAX), None);
    }
}
