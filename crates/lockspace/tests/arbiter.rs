//! The cluster arbiter hook, with a fake that records calls and refuses
//! chosen names.

use std::sync::{Arc, Mutex};

use lockspace::{
    AcquireFlags, ClusterArbiter, Engine, EngineOptions, Error, ErrorKind, ResourceKey,
};

#[derive(Debug, Default)]
struct Fake {
    refuse: Vec<String>,
    log: Mutex<Vec<String>>,
}

impl ClusterArbiter for Fake {
    fn acquire(&self, key: &ResourceKey, shared: bool, owner: u32) -> Result<(), Error> {
        self.log
            .lock()
            .expect("log")
            .push(format!("acq {} {shared} {owner}", key.name));
        if self.refuse.contains(&key.name) {
            return Err(Error::ClusterBusy {
                name: key.name.clone(),
                why: "held by host2".into(),
            });
        }
        Ok(())
    }

    fn release(&self, key: &ResourceKey, owner: u32, last: bool) {
        self.log
            .lock()
            .expect("log")
            .push(format!("rel {} {owner} {last}", key.name));
    }
}

fn setup(refuse: &[&str]) -> (tempfile::TempDir, String, Arc<Fake>, Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ls = dir.path().join("ls").to_str().expect("utf8").to_owned();
    let fake = Arc::new(Fake {
        refuse: refuse.iter().map(|s| s.to_string()).collect(),
        ..Fake::default()
    });
    let opts = EngineOptions {
        arbiter: Some(fake.clone()),
        ..EngineOptions::default()
    };
    let e = Engine::new(opts);
    e.create_lockspace(&ls).expect("ls");
    (dir, ls, fake, e)
}

const SA: AcquireFlags = AcquireFlags {
    shared: true,
    autocreate: true,
};

#[test]
fn calls_are_made_per_occurrence_with_last_on_the_final_one() {
    let (_d, ls, fake, e) = setup(&[]);
    e.acquire(&ls, "r", 1, SA).expect("1");
    e.acquire(&ls, "r", 2, SA).expect("2");
    e.acquire(&ls, "r", 2, SA).expect("2 again");
    e.release(&ls, "r", 1).expect("rel 1");
    assert_eq!(e.release_owner(2).expect("rel 2"), 1);
    let log = fake.log.lock().expect("log").clone();
    assert_eq!(
        log,
        [
            "acq r true 1",
            "acq r true 2",
            "acq r true 2",
            "rel r 1 false",
            "rel r 2 false",
            "rel r 2 true"
        ]
    );
}

#[test]
fn a_refusal_undoes_the_local_acquire() {
    let (_d, ls, fake, e) = setup(&["no"]);
    let err = e.acquire(&ls, "no", 1, SA).expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::ClusterBusy);
    assert_eq!(
        err.detail(),
        "Lockspace resource 'no' is locked by another host: held by host2"
    );
    assert_eq!(e.stats().resources, 0);
    assert!(
        !std::path::Path::new(&format!("{ls}/no")).exists(),
        "created lease removed"
    );
    // Nothing was left reserved or locked: a local holder can take it once
    // the cluster agrees (here: a fresh engine without the arbiter).
    let plain = Engine::new(EngineOptions::default());
    plain.create_lockspace(&ls).expect("ls");
    plain
        .acquire(
            &ls,
            "no",
            1,
            AcquireFlags {
                shared: false,
                autocreate: true,
            },
        )
        .expect("free");
    assert_eq!(fake.log.lock().expect("log").len(), 1);
}

#[test]
fn a_refused_shared_join_keeps_the_existing_holder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = dir.path().join("disk").to_str().expect("utf8").to_owned();
    std::fs::write(&disk, b"").expect("disk");
    #[derive(Debug)]
    struct SecondRefused(Mutex<u32>);
    impl ClusterArbiter for SecondRefused {
        fn acquire(&self, key: &ResourceKey, _: bool, _: u32) -> Result<(), Error> {
            let mut n = self.0.lock().expect("n");
            *n += 1;
            if *n == 2 {
                return Err(Error::Cluster {
                    name: key.name.clone(),
                    why: "no quorum".into(),
                });
            }
            Ok(())
        }
        fn release(&self, _: &ResourceKey, _: u32, _: bool) {}
    }
    let e = Engine::new(EngineOptions {
        arbiter: Some(Arc::new(SecondRefused(Mutex::new(0)))),
        ..Default::default()
    });
    let s = AcquireFlags {
        shared: true,
        autocreate: false,
    };
    e.acquire("", &disk, 1, s).expect("first");
    let err = e.acquire("", &disk, 2, s).expect_err("refused join");
    assert_eq!(err.kind(), ErrorKind::Cluster);
    assert_eq!(e.inspect("", &disk).expect("held").owners, vec![1]);
    e.acquire("", &disk, 3, s).expect("third");
    assert_eq!(e.inspect("", &disk).expect("held").owners, vec![1, 3]);
}
