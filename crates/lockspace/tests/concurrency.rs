//! N threads hammering acquire/release on a few names never see two
//! exclusive holders, and the engine ends empty.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use lockspace::{AcquireFlags, Engine, EngineOptions, ErrorKind};

const THREADS: usize = 8;
const ROUNDS: usize = 400;

#[test]
fn exclusive_holders_never_overlap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf8").to_owned();
    let ls = format!("{d}/ls");
    let engine = Arc::new(Engine::new(EngineOptions::default()));
    engine.create_lockspace(&ls).expect("lockspace");
    // Direct names, including two spellings of one file, and lease names.
    std::fs::write(format!("{d}/disk"), b"").expect("disk");
    let targets: Vec<(String, String, &str)> = vec![
        (String::new(), format!("{d}/disk"), "disk"),
        (String::new(), format!("{d}//disk"), "disk"),
        (ls.clone(), "a".into(), "a"),
        (ls.clone(), "b".into(), "b"),
    ];
    let holders: Arc<[AtomicUsize; 3]> = Arc::new(Default::default());
    let slot = |file: &str| match file {
        "disk" => 0,
        "a" => 1,
        _ => 2,
    };
    let wins = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (engine, holders, wins, targets) = (&engine, &holders, &wins, &targets);
            s.spawn(move || {
                for i in 0..ROUNDS {
                    let (ls, name, file) = &targets[(t + i) % targets.len()];
                    let flags = AcquireFlags {
                        shared: false,
                        autocreate: !ls.is_empty(),
                    };
                    let owner = (t + 1) as u32;
                    match engine.acquire(ls, name, owner, flags) {
                        Ok(()) => {
                            let h = &holders[slot(file)];
                            assert_eq!(
                                h.fetch_add(1, Ordering::SeqCst),
                                0,
                                "two holders of {file}"
                            );
                            wins.fetch_add(1, Ordering::Relaxed);
                            std::thread::yield_now();
                            h.fetch_sub(1, Ordering::SeqCst);
                            engine.release(ls, name, owner).expect("release");
                        }
                        Err(e) => assert_eq!(e.kind(), ErrorKind::Busy, "{e}"),
                    }
                }
            });
        }
    });
    assert!(wins.load(Ordering::Relaxed) > 0);
    let st = engine.stats();
    assert_eq!((st.resources, st.owners), (0, 0));
    assert!(!std::path::Path::new(&format!("{ls}/a")).exists());
    assert!(!std::path::Path::new(&format!("{ls}/b")).exists());
    // Nothing is left reserved: every name can be taken again.
    for (ls, name, _) in &targets {
        let flags = AcquireFlags {
            shared: false,
            autocreate: !ls.is_empty(),
        };
        engine.acquire(ls, name, 99, flags).expect("free");
        engine.release(ls, name, 99).expect("release");
    }
}
