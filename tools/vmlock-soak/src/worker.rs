//! The in-process clients: threads that each own one connection (owner
//! pids above any kernel `pid_max`, so closing one never releases or kills
//! anything) and loop acquire → hold → release with a seeded RNG.
//!
//! | role | disks | busy |
//! |---|---|---|
//! | own | its own `own<i>`, exclusive or shared | an error |
//! | shared | `sh*`, shared | expected (a contender holds it), retried |
//! | contended | `ct*` exclusive (sometimes `sh*`) | expected, retried |

use std::time::Duration;

use vmlock_soak_check::Mode;

use crate::client::{Client, Outcome, Target};
use crate::logw::LogW;
use crate::plan::{CONTENDED, Plan, SHARED, Stats};
use crate::rng::Rng;

/// First fake owner pid: larger than the kernel's largest `pid_max`.
pub const FAKE_PID_BASE: u32 = 5_000_000;

/// What a thread client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Exclusive on its own disk.
    Own,
    /// Shared on the shared disks.
    Shared,
    /// Exclusive on contended disks.
    Contended,
}

impl Role {
    /// Client `i`'s role: a quarter own, a quarter shared, half contended.
    pub fn of(i: usize) -> Role {
        match i % 4 {
            0 => Role::Own,
            1 => Role::Shared,
            _ => Role::Contended,
        }
    }
}

/// One logged connection, reconnected after any failure.
#[derive(Debug)]
pub struct Session<'a> {
    plan: &'a Plan,
    name: String,
    owner_pid: u32,
    client: Option<Client>,
    /// This client's log.
    pub log: LogW,
}

impl<'a> Session<'a> {
    /// A session named `name` (also its log's name), not yet connected.
    pub fn new(plan: &'a Plan, name: &str, owner_pid: u32) -> std::io::Result<Session<'a>> {
        let log = LogW::open(&plan.log_dir, name)?;
        Ok(Session {
            plan,
            name: name.to_string(),
            owner_pid,
            client: None,
            log,
        })
    }

    fn connected(&mut self) -> Option<&mut Client> {
        if self.client.is_none() {
            match Client::connect(&self.plan.socket, &self.name, self.owner_pid) {
                Ok(mut c) => match c.create_lockspace(&self.plan.lease_dir) {
                    Outcome::Ok => self.client = Some(c),
                    other => self.log.error(&format!("create lockspace: {other:?}")),
                },
                Err(e) => self.log.error(&e),
            }
        }
        self.client.as_mut()
    }

    fn failed(&mut self, what: &str, t: &Target, why: &str) {
        self.log.error(&format!("{what} {}: {why}", t.disk));
        if let Some(c) = self.client.take() {
            Stats::max(&self.plan.stats.max_call_us, c.max_latency);
        }
    }

    /// Acquires `t`; logs the grant (after the reply) or an unexpected
    /// failure. Busy is returned to the caller to judge.
    pub fn acquire(&mut self, t: &Target, mode: Mode) -> Outcome {
        let Some(c) = self.connected() else {
            return Outcome::Failed("not connected".into());
        };
        let out = c.acquire(t, mode == Mode::Shared);
        match &out {
            Outcome::Ok => {
                self.log.grant(&t.disk, mode);
                Stats::bump(&self.plan.stats.grants);
            }
            Outcome::Busy => {}
            Outcome::Failed(why) => self.failed("acquire", t, &why.clone()),
        }
        out
    }

    /// Logs the release (before sending it) and releases `t`.
    pub fn release(&mut self, t: &Target, mode: Mode) {
        self.log.release(&t.disk, mode);
        let out = match self.client.as_mut() {
            Some(c) => c.release(t),
            None => Outcome::Failed("connection lost while holding".into()),
        };
        if out != Outcome::Ok {
            self.failed("release", t, &format!("{out:?}"));
        }
    }

    /// Closes the connection (only ever while holding nothing).
    pub fn disconnect(&mut self) {
        if let Some(c) = self.client.take() {
            Stats::max(&self.plan.stats.max_call_us, c.max_latency);
        }
    }

    /// Acquires `t`, retrying busy replies up to `tries` times (0 = until
    /// stop). Returns `Busy` when it gave up.
    pub fn acquire_retry(&mut self, t: &Target, mode: Mode, tries: u32, rng: &mut Rng) -> Outcome {
        let mut n = 0;
        loop {
            match self.acquire(t, mode) {
                Outcome::Busy => Stats::bump(&self.plan.stats.busy),
                done => return done,
            }
            n += 1;
            if self.plan.stopped() || (tries > 0 && n >= tries) {
                if tries > 0 {
                    Stats::bump(&self.plan.stats.gave_up);
                }
                return Outcome::Busy;
            }
            std::thread::sleep(Duration::from_micros(rng.range(100, 3000)));
        }
    }
}

/// Runs thread client `i` until the plan stops.
pub fn run_client(plan: &Plan, i: usize) {
    let role = Role::of(i);
    let name = format!("c{i}");
    let mut rng = Rng::new(plan.seed, i as u64 + 1);
    let mut s = match Session::new(plan, &name, FAKE_PID_BASE + i as u32) {
        Ok(s) => s,
        Err(e) => return eprintln!("vmlock-soak: {name}: log: {e}"),
    };
    let own = plan.target("own", i);
    while !plan.stopped() {
        let pick = pick(plan, role, &mut rng, &own);
        let Some((t, mode, tries)) = pick else {
            s.log.error("cannot prepare disk file");
            return;
        };
        match s.acquire_retry(&t, mode, tries, &mut rng) {
            Outcome::Ok => {
                plan.nap(rng.range(0, hold_ms(role)));
                s.release(&t, mode);
            }
            Outcome::Busy if role == Role::Own && !plan.stopped() => {
                s.log.error(&format!("own disk {} busy", t.disk));
            }
            _ => {}
        }
        if rng.chance(3) {
            s.disconnect();
        }
        plan.nap(rng.range(0, 5));
    }
    s.disconnect();
}

fn hold_ms(role: Role) -> u64 {
    match role {
        Role::Own => 10,
        Role::Shared => 30,
        Role::Contended => 5,
    }
}

type Pick = Option<(Target, Mode, u32)>;

fn pick(plan: &Plan, role: Role, rng: &mut Rng, own: &std::io::Result<Target>) -> Pick {
    let shared_disk = |rng: &mut Rng| plan.target("sh", rng.range(0, SHARED as u64 - 1) as usize);
    match role {
        Role::Own => {
            let mode = if rng.chance(20) {
                Mode::Shared
            } else {
                Mode::Exclusive
            };
            Some((own.as_ref().ok()?.clone(), mode, 1))
        }
        Role::Shared => Some((shared_disk(rng).ok()?, Mode::Shared, 0)),
        Role::Contended if rng.chance(15) => Some((shared_disk(rng).ok()?, Mode::Exclusive, 20)),
        Role::Contended => {
            let k = rng.range(0, CONTENDED as u64 - 1) as usize;
            Some((plan.target("ct", k).ok()?, Mode::Exclusive, 0))
        }
    }
}
