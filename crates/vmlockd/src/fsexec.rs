//! Keeping filesystem calls that may hang off the event loop.
//!
//! Every engine call opens, locks, stats, unlinks or closes files. On a
//! local filesystem these take microseconds; on NFS, CIFS, FUSE and other
//! network or user-space filesystems any of them can block for minutes (or
//! forever, in D state, when the server is gone). virtlockd runs them on its
//! only thread and stalls every client.
//!
//! vmlockd classifies the file's mount from `/proc/self/mountinfo` (a string
//! look-up: classifying never touches the filesystem in question):
//!
//! ```text
//!   path ──longest mount-point prefix──► (mount point, fs type)
//!        local (ext4, xfs, btrfs, tmpfs, …)  → run inline on the async worker
//!        may hang (nfs*, cifs, smb3, fuse*, ceph, gluster, 9p, …)
//!             → blocking thread pool, at most PER_MOUNT_MAX calls in flight per
//!               mount; the rest of that mount's callers wait their turn
//! ```
//!
//! So a hung NFS mount ties up at most [`PER_MOUNT_MAX`] pool threads and
//! stalls only the clients that use that mount; everything else is served.
//! The table is re-read when it is older than [`REFRESH`]. Setting
//! `offload_all = true` sends every call to the pool.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// Calls in flight per may-hang mount.
pub const PER_MOUNT_MAX: usize = 8;
/// How old the mount table may get.
pub const REFRESH: Duration = Duration::from_secs(2);

/// Filesystem types whose calls may block indefinitely.
const MAY_HANG: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ceph",
    "glusterfs",
    "9p",
    "afs",
    "gfs2",
    "ocfs2",
    "lustre",
    "beegfs",
    "gpfs",
    "davfs",
    "fuse",
    "fuseblk",
    "virtiofs",
    "sshfs",
];

#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    point: String,
    may_hang: bool,
}

#[derive(Debug)]
struct Table {
    mounts: Vec<Mount>,
    /// Whether any mount may hang: without one (the usual case), and
    /// without `offload_all`, every call runs inline and no scan is needed.
    any_may_hang: bool,
    read_at: Instant,
}

impl Table {
    fn read() -> Table {
        Table::of(read_mounts())
    }

    fn of(mounts: Vec<Mount>) -> Table {
        Table {
            any_may_hang: mounts.iter().any(|m| m.may_hang),
            mounts,
            read_at: Instant::now(),
        }
    }
}

/// Where a filesystem call runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// On the calling async worker.
    Inline,
    /// On the blocking pool, gated per mount point.
    Offload(String),
}

/// The executor.
#[derive(Debug)]
pub struct FsExec {
    table: Mutex<Table>,
    gates: Mutex<HashMap<String, Arc<Semaphore>>>,
    offload_all: bool,
}

impl FsExec {
    /// Reads the mount table.
    pub fn new(offload_all: bool) -> FsExec {
        FsExec {
            table: Mutex::new(Table::read()),
            gates: Mutex::new(HashMap::new()),
            offload_all,
        }
    }

    /// Decides where a call on `path` runs.
    pub fn placement(&self, path: &str) -> Placement {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if t.read_at.elapsed() > REFRESH {
            *t = Table::read();
        }
        if !t.any_may_hang && !self.offload_all {
            return Placement::Inline;
        }
        let m = longest_prefix(&t.mounts, path);
        match m {
            Some(m) if m.may_hang || self.offload_all => Placement::Offload(m.point.clone()),
            None if self.offload_all => Placement::Offload("/".into()),
            _ => Placement::Inline,
        }
    }

    /// Runs `f`, a blocking filesystem call on `path`, where it belongs.
    pub async fn run<T, F>(&self, path: &str, f: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.run_at(self.placement(path), f).await
    }

    /// Runs `f` where [`FsExec::placement`] said it belongs.
    pub async fn run_at<T, F>(&self, place: Placement, f: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match place {
            Placement::Inline => f(),
            Placement::Offload(point) => self.offload(point, f).await,
        }
    }

    /// Runs `f` on the blocking pool, ungated: for calls that may touch
    /// several mounts (releasing everything of a holder).
    pub async fn blocking<T, F>(&self, f: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match tokio::task::spawn_blocking(f).await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Runs `f` on the blocking pool, whatever the mount.
    pub async fn offload<T, F>(&self, point: String, f: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let gate = {
            let mut g = self.gates.lock().unwrap_or_else(|p| p.into_inner());
            g.entry(point)
                .or_insert_with(|| Arc::new(Semaphore::new(PER_MOUNT_MAX)))
                .clone()
        };
        let permit = gate.acquire_owned().await;
        let job = tokio::task::spawn_blocking(move || {
            let out = f();
            drop(permit);
            out
        });
        match job.await {
            Ok(v) => v,
            // The closure panicked: surface it on this task, whose boundary contains it.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

fn longest_prefix<'a>(mounts: &'a [Mount], path: &str) -> Option<&'a Mount> {
    mounts
        .iter()
        .filter(|m| is_under(path, &m.point))
        .max_by_key(|m| m.point.len())
}

fn is_under(path: &str, point: &str) -> bool {
    point == "/"
        || path == point
        || (path.starts_with(point) && path.as_bytes().get(point.len()) == Some(&b'/'))
}

fn read_mounts() -> Vec<Mount> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default()
}

/// Parses `/proc/self/mountinfo`: field 5 is the mount point (octal-escaped),
/// the first field after the lone `-` is the filesystem type.
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let point = unescape(fields.get(4)?);
            let dash = fields.iter().position(|f| *f == "-")?;
            let fstype = *fields.get(dash + 1)?;
            let base = fstype.split('.').next().unwrap_or(fstype);
            Some(Mount {
                point,
                may_hang: MAY_HANG.contains(&base),
            })
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:40 / /mnt/nfs rw shared:5 - nfs4 srv:/export rw,vers=4.2
31 22 0:41 / /mnt/my\\040disk rw - fuse.sshfs host: rw
32 30 0:42 / /mnt/nfs/local rw - tmpfs tmpfs rw
";

    #[test]
    fn mountinfo_is_classified_by_longest_prefix() {
        let m = parse_mountinfo(SAMPLE);
        assert_eq!(m.len(), 4);
        let cls = |p: &str| longest_prefix(&m, p).map(|m| (m.point.clone(), m.may_hang));
        assert_eq!(cls("/var/lib/x.img"), Some(("/".into(), false)));
        assert_eq!(cls("/mnt/nfs/vm.img"), Some(("/mnt/nfs".into(), true)));
        assert_eq!(cls("/mnt/nfsother/a"), Some(("/".into(), false)));
        assert_eq!(
            cls("/mnt/nfs/local/a"),
            Some(("/mnt/nfs/local".into(), false))
        );
        assert_eq!(cls("/mnt/my disk/a"), Some(("/mnt/my disk".into(), true)));
    }

    #[test]
    fn only_tables_with_a_may_hang_mount_are_scanned() {
        let exec = |text: &str| FsExec {
            table: Mutex::new(Table::of(parse_mountinfo(text))),
            gates: Mutex::new(HashMap::new()),
            offload_all: false,
        };
        let with_nfs = exec(SAMPLE);
        assert!(with_nfs.table.lock().unwrap().any_may_hang);
        let nfs = Placement::Offload("/mnt/nfs".into());
        assert_eq!(with_nfs.placement("/mnt/nfs/vm.img"), nfs);
        assert_eq!(with_nfs.placement("/var/x"), Placement::Inline);
        let local_only = exec(SAMPLE.lines().next().unwrap_or_default());
        assert!(!local_only.table.lock().unwrap().any_may_hang);
        assert_eq!(local_only.placement("/mnt/nfs/vm.img"), Placement::Inline);
    }

    #[tokio::test]
    async fn offloaded_calls_run_and_return() {
        let fx = FsExec::new(true);
        assert!(matches!(fx.placement("/tmp/x"), Placement::Offload(_)));
        let v = fx.run("/tmp/x", || 41 + 1).await;
        assert_eq!(v, 42);
        let local = FsExec::new(false);
        assert_eq!(local.placement("/proc/self/status"), Placement::Inline);
    }
}
