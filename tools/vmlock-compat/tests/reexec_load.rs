//! Re-exec under load: K clients acquire and release continuously (each
//! its own disk, all of them one contended disk, each also one disk pinned
//! for the whole run) while vmlockd re-execs itself 100 times. No client
//! may see an error or a closed connection, the contended disk may never
//! have two holders by the daemon's replies, and no pinned lock may vanish.
//!
//! ```text
//! grant tracking for the contended disk:
//!   ACQUIRE → OK   ⇒ holder.compare_exchange(0, me) must succeed
//!   before RELEASE ⇒ holder = 0
//! (the daemon can only grant it again after it saw the RELEASE)
//! ```

#[allow(dead_code)]
mod reexec_common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use reexec_common::{call, owner, touch, within};
use vmlock_testkit::frames;
use vmlock_testkit::reexec::{kernel_holder, send_reexec};
use vmlock_testkit::{Daemon, DaemonSpec, Flavor};

const CLIENTS: u32 = 4;
const REEXECS: usize = 100;
const BASE_PID: u32 = 4_194_500;

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    holder: AtomicU32,
    grants: AtomicU64,
    cycles: AtomicU64,
}

fn client(d: &Daemon, me: u32, sh: &Shared) -> Result<(), String> {
    let pid = BASE_PID + me;
    let mut c = owner(d, pid, &format!("load{me}"));
    let disk = |n: &str| d.dir().join(n).to_string_lossy().into_owned();
    let (own, pinned, hot) = (
        disk(&format!("own{me}")),
        disk(&format!("pin{me}")),
        disk("hot"),
    );
    let mut serial = 1;
    let mut req =
        |c: &mut vmlock_testkit::RawConn, f: fn(u32, &str, &str, u32) -> Vec<u8>, name: &str| {
            serial += 1;
            let raw = c
                .call(&f(serial, "", name, 0))
                .map_err(|e| format!("client {me}: {e}"))?;
            Ok::<_, String>(match vmlock_testkit::decode_reply(&raw) {
                (_, Some(e)) => (e.code, e.text().to_string()),
                (_, None) => (0, String::new()),
            })
        };
    let expect_ok = |what: &str, r: (i32, String)| match r.0 {
        0 => Ok(()),
        _ => Err(format!("client {me}: {what}: {} {}", r.0, r.1)),
    };
    expect_ok("pin", req(&mut c, frames::acquire, &pinned)?)?;
    while !sh.stop.load(Ordering::Relaxed) {
        expect_ok("acquire own", req(&mut c, frames::acquire, &own)?)?;
        match req(&mut c, frames::acquire, &hot)? {
            (0, _) => {
                if sh
                    .holder
                    .compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
                {
                    return Err(format!(
                        "hot disk granted to {pid} while {} holds it",
                        sh.holder.load(Ordering::SeqCst)
                    ));
                }
                sh.grants.fetch_add(1, Ordering::Relaxed);
                sh.holder.store(0, Ordering::SeqCst);
                expect_ok("release hot", req(&mut c, frames::release, &hot)?)?;
            }
            (87, _) => {}
            r => return Err(format!("client {me}: acquire hot: {} {}", r.0, r.1)),
        }
        expect_ok("release own", req(&mut c, frames::release, &own)?)?;
        sh.cycles.fetch_add(1, Ordering::Relaxed);
    }
    expect_ok("release pin", req(&mut c, frames::release, &pinned)?)
}

#[test]
fn hundred_reexecs_under_load_lose_and_double_grant_nothing() {
    let d = Arc::new(Daemon::start(DaemonSpec::new(Flavor::Ours)).expect("vmlockd"));
    touch(&d.dir().join("hot"));
    let pins: Vec<PathBuf> = (0..CLIENTS)
        .map(|i| d.dir().join(format!("pin{i}")))
        .collect();
    for i in 0..CLIENTS {
        touch(&d.dir().join(format!("own{i}")));
        touch(&pins[i as usize]);
    }
    let sh = Arc::new(Shared::default());
    let workers: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (d, sh) = (d.clone(), sh.clone());
            thread::spawn(move || {
                let r = client(&d, i, &sh);
                if r.is_err() {
                    sh.stop.store(true, Ordering::Relaxed);
                }
                r
            })
        })
        .collect();
    assert!(within(10, || pins
        .iter()
        .all(|p| kernel_holder(p).is_ok_and(|h| h.is_some()))));
    let mut done = 0;
    while done < REEXECS && !sh.stop.load(Ordering::Relaxed) {
        let before = sh.cycles.load(Ordering::Relaxed);
        let w = send_reexec(&d).expect("SIGUSR1");
        w.wait(&d, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("re-exec {done}: {e}"));
        for p in &pins {
            assert!(
                kernel_holder(p).expect("query").is_some(),
                "re-exec {done}: {} lost",
                p.display()
            );
        }
        // Let the clients do some work on this image before the next.
        assert!(within(10, || sh.cycles.load(Ordering::Relaxed)
            > before + u64::from(CLIENTS)));
        done += 1;
    }
    sh.stop.store(true, Ordering::Relaxed);
    for (i, w) in workers.into_iter().enumerate() {
        let r = w
            .join()
            .unwrap_or_else(|_| Err(format!("client {i} panicked")));
        if let Err(e) = r {
            panic!("{e}; daemon log:\n{}", d.log_text());
        }
    }
    assert_eq!(done, REEXECS);
    let (cycles, grants) = (
        sh.cycles.load(Ordering::Relaxed),
        sh.grants.load(Ordering::Relaxed),
    );
    eprintln!("{REEXECS} re-execs, {cycles} client cycles, hot disk granted {grants} times");
    assert!(grants > 0 && cycles > REEXECS as u64);
    let mut o = owner(&d, 4_194_599, "after");
    for n in ["hot", "own0", "pin0"] {
        let name = d.dir().join(n).to_string_lossy().into_owned();
        assert_eq!(
            call(&mut o, &frames::acquire(1, "", &name, 0)).0,
            0,
            "{n} was released"
        );
    }
}
