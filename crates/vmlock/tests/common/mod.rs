//! Helpers shared by the integration tests: daemons of both flavors, owner stand-ins,
//! and the kernel's view of a lease file.

#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;

use vmlock::lockd::LockdDriver;
use vmlock::{Domain, LockDriver, Uuid};
use vmlock_conf::LockdConfig;
use vmlock_sys::lock::{Conflict, LockKind, LockType, query};
use vmlock_testkit::{Daemon, DaemonSpec, Flavor};

/// Both daemons (`LOCKD_UNDER_TEST`); under CI a missing virtlockd is a
/// failure.
pub fn flavors() -> Vec<Flavor> {
    Flavor::from_env()
}

/// Starts `flavor` and returns it.
pub fn start(flavor: Flavor) -> Daemon {
    match Daemon::start(DaemonSpec::new(flavor)) {
        Ok(d) => d,
        Err(e) => panic!("cannot start {}: {e}", flavor.name()),
    }
}

/// A process standing in for a VM: its pid is a lock owner that never connects.
#[derive(Debug)]
pub struct StandIn(Child);

impl StandIn {
    /// Spawns `sleep 600`.
    pub fn spawn() -> StandIn {
        StandIn(
            Command::new("sleep")
                .arg("600")
                .spawn()
                .expect("spawn sleep"),
        )
    }
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A domain owned by `pid`.
pub fn domain(name: &str, id: u32, pid: u32) -> Domain {
    Domain {
        uuid: Uuid::from_bytes([id as u8; 16]),
        name: name.into(),
        id,
        pid,
        uri: Some("qemu:///system".into()),
    }
}

/// A lockd driver for `d` with `config`, after init.
pub fn driver(d: &Daemon, config: LockdConfig) -> Arc<dyn LockDriver> {
    let drv = LockdDriver::new(config, d.socket_path());
    drv.init().expect("init");
    Arc::new(drv)
}

/// Creates an empty disk image in the daemon's scratch dir.
pub fn disk(d: &Daemon, name: &str) -> String {
    let p: PathBuf = d.dir().join(name);
    std::fs::write(&p, b"").expect("create disk");
    p.to_string_lossy().into_owned()
}

/// What the kernel says about byte 0 of `path`: `None` when free.
pub fn holder(path: impl AsRef<Path>) -> Option<Conflict> {
    let f = File::open(path.as_ref()).ok()?;
    query(f.as_fd(), LockKind::Ofd, LockType::Shared)
        .expect("getlk")
        .or_else(|| query(f.as_fd(), LockKind::Ofd, LockType::Exclusive).expect("getlk"))
}
