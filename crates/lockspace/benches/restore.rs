//! Engine restore (the re-exec path) of N held leases, median of 5.
//!
//! `cargo bench -p lockspace --bench restore [-- N]`

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::time::Instant;

use lockspace::{Adopted, EngineOptions, LockspaceSnap, ResourceSnap, Snapshot};
use vmlock_sys::lock::LockKind;

fn snapshot(dir: &str, n: usize) -> (Snapshot, HashMap<i32, OwnedFd>) {
    let mut fds = HashMap::with_capacity(n);
    let mut resources = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("{i:064x}");
        let path = format!("{dir}/{name}");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .expect("lease");
        let m = f.metadata().expect("fstat");
        let fd = f.as_raw_fd();
        resources.push(ResourceSnap {
            name,
            path,
            fd,
            lock_held: true,
            flags: 2,
            owners: vec![1000 + (i as u32 % 7)],
            lock_kind: LockKind::Ofd,
            aliases: Vec::new(),
            ident: Some((m.dev(), m.ino())),
            since: vec![1_700_000_000],
        });
        fds.insert(fd, OwnedFd::from(f));
    }
    let snap = Snapshot {
        default: LockspaceSnap::default(),
        lockspaces: vec![LockspaceSnap {
            directory: Some(dir.to_owned()),
            resources,
        }],
        lingering: Vec::new(),
    };
    (snap, fds)
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_str().expect("utf8").to_owned();
    let mut runs = Vec::new();
    for _ in 0..5 {
        let (snap, mut fds) = snapshot(&dir, n);
        let t = Instant::now();
        let (engine, report) =
            lockspace::Engine::restore_adopted(EngineOptions::default(), snap, |fd| {
                fds.remove(&fd)
                    .map(|fd| Adopted { fd, ident: None })
                    .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EBADF))
            })
            .expect("restore");
        runs.push(t.elapsed());
        assert_eq!(report.restored, n);
        assert!(report.problems.is_empty());
        drop(engine);
    }
    runs.sort();
    println!(
        "restore of {n} leases: median {:?} (runs {runs:?})",
        runs[2]
    );
}
