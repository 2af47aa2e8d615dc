//! Acquire+release through the engine against the floor: the same syscalls
//! done bare. Each case runs a fixed number of iterations, repeated 5
//! times; the median ns/op and the ratio to the floor are printed.
//!
//! `cargo bench -p lockspace --bench acquire_release`

use std::fs::OpenOptions;
use std::hint::black_box;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Instant;

use lockspace::{AcquireFlags, Engine, EngineOptions};
use vmlock_sys::lock::{self, LockKind, LockType};

const ITERS: u32 = 20_000;
const REPEATS: usize = 5;

fn median_ns(mut f: impl FnMut()) -> f64 {
    for _ in 0..ITERS / 10 {
        f(); // warm up
    }
    let mut runs: Vec<f64> = (0..REPEATS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..ITERS {
                f();
            }
            t.elapsed().as_nanos() as f64 / f64::from(ITERS)
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[REPEATS / 2]
}

fn report(case: &str, engine: f64, floor: f64) {
    println!(
        "{case:<28} engine {engine:>8.0} ns/op   floor {floor:>8.0} ns/op   ratio {:.2}",
        engine / floor
    );
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf8").to_owned();
    let disk = format!("{d}/disk");
    std::fs::write(&disk, b"").expect("disk");
    let ls = format!("{d}/ls");
    let e = Engine::new(EngineOptions::default());
    e.create_lockspace(&ls).expect("lockspace");

    // Direct mode on an existing file.
    let floor = median_ns(|| {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&disk)
            .expect("open");
        assert!(lock::try_lock(f.as_fd(), LockKind::Ofd, LockType::Exclusive).expect("lock"));
        black_box(&f);
    });
    let engine = median_ns(|| {
        e.acquire("", &disk, 1, AcquireFlags::EXCLUSIVE)
            .expect("acquire");
        e.release("", &disk, 1).expect("release");
    });
    report("direct (existing file)", engine, floor);

    // AUTOCREATE in a named lockspace.
    let lease = format!("{ls}/lease");
    let floor = median_ns(|| {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOCTTY | libc::O_NOFOLLOW)
            .open(&lease)
            .expect("open");
        assert!(lock::try_lock(f.as_fd(), LockKind::Ofd, LockType::Exclusive).expect("lock"));
        black_box(std::fs::metadata(&lease).expect("stat"));
        std::fs::remove_file(&lease).expect("unlink");
        drop(f);
    });
    let flags = AcquireFlags {
        shared: false,
        autocreate: true,
    };
    let engine = median_ns(|| {
        e.acquire(&ls, "lease", 1, flags).expect("acquire");
        e.release(&ls, "lease", 1).expect("release");
    });
    report("autocreate (named lockspace)", engine, floor);
}
