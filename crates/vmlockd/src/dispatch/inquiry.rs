//! vmlock's inquiry program on the admin socket (`docs/inquiry.md`):
//! what the daemon holds, for whom, and forced release.
//!
//! ```text
//!  STATUS   counters (atomics, read here), engine counts, clients, fds,
//!           the last re-exec, the cluster back end's lease
//!  LIST     Engine::held() ⋈ Owners (name, uuid, id) → one row per lock and owner
//!  RELEASE  holder gone            → release, log a warning, count
//!           holder alive           → refused, unless RELEASE_TERMINATE:
//!                                    SIGTERM/SIGKILL through a pidfd (verified
//!                                    against the start time seen at REGISTER),
//!                                    wait for the exit, then release
//! ```
//! The admin socket admits root only (its own uid for a user daemon), like
//! every admin call. Walking the tables is for operators, never on the
//! lock program's request path; it runs on the blocking pool.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::{info, warn};
use vmlock_proto::admin::{TypedParam, TypedValue};
use vmlock_proto::error::{WireError, code, domain};
use vmlock_proto::header::Header;
use vmlock_proto::inquiry::{
    Call, ListFilter, LockRow, Procedure, RELEASE_TERMINATE, Ret, decode_call,
};
use vmlock_proto::route;
use vmlock_proto::xdr::XdrEncode;

use crate::ctx::Ctx;
use crate::owners::OwnerMeta;
use crate::session::Session;
use crate::stats::{EndpointStatus, FenceReport};

/// A failed call.
type Failure = Box<WireError>;

/// Answers one inquiry call with a whole reply frame.
pub async fn call(
    ctx: &Arc<Ctx>,
    s: &Session,
    h: &Header,
    p: Procedure,
    payload: &[u8],
) -> Vec<u8> {
    let r = match decode_call(p, payload) {
        Ok(c) => dispatch(ctx, s, c).await,
        Err(e) => {
            tracing::debug!(client = s.id, "undecodable inquiry payload: {e}");
            Err(Box::new(WireError::payload_decode()))
        }
    };
    match r {
        Ok(ret) => route::reply_with(h, &ret.to_xdr()),
        Err(e) => {
            tracing::debug!(client = s.id, proc = p.name(), "inquiry failed: {e}");
            route::reply_error(h, &e)
        }
    }
}

async fn dispatch(ctx: &Arc<Ctx>, s: &Session, call: Call) -> Result<Ret, Failure> {
    match call {
        Call::Status { flags } => {
            check_flags(flags, 0, "vmlockInquiryStatus")?;
            let c = ctx.clone();
            let params = ctx.shared.fs.blocking(move || status(&c)).await;
            Ok(Ret::Status(params))
        }
        Call::List { filter, flags } => {
            check_flags(flags, 0, "vmlockInquiryList")?;
            let c = ctx.clone();
            Ok(ctx.shared.fs.blocking(move || list(&c, &filter)).await)
        }
        Call::Release {
            lockspace,
            name,
            pid,
            flags,
        } => {
            check_flags(flags, RELEASE_TERMINATE, "vmlockInquiryRelease")?;
            release(
                ctx,
                s,
                &lockspace,
                &name,
                pid,
                flags & RELEASE_TERMINATE != 0,
            )
            .await
        }
    }
}

fn check_flags(flags: u32, allowed: u32, function: &str) -> Result<(), Failure> {
    if flags & !allowed != 0 {
        return Err(Box::new(WireError::invalid_flags(
            flags & !allowed,
            function,
        )));
    }
    Ok(())
}

fn param(field: &str, value: TypedValue) -> TypedParam {
    TypedParam {
        field: field.to_owned(),
        value,
    }
}

fn u32_of(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn u64_of(n: u128) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The soft descriptor limit, from `/proc/self/limits`.
fn fd_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// STATUS: see `docs/inquiry.md` for each field.
pub fn status(ctx: &Ctx) -> Vec<TypedParam> {
    use TypedValue::{Boolean, LLong, String as Str, UInt, ULLong};
    let sh = &ctx.shared;
    let st = &sh.stats;
    let held = sh.engine.held();
    let shared = held.iter().filter(|r| r.shared).count();
    let mut owners: Vec<u32> = held.iter().flat_map(|r| r.owners.iter().copied()).collect();
    owners.sort_unstable();
    owners.dedup();
    let lockspaces = sh.engine.counts().1;
    let terminating = sh.lifelines.in_flight();
    let mut p = vec![
        param("version", Str(env!("CARGO_PKG_VERSION").to_owned())),
        param("pid", LLong(i64::from(vmlock_sys::getpid()))),
        param("started", LLong(st.started)),
        param("uptime_s", ULLong(st.started_at.elapsed().as_secs())),
        param("lock_kind", Str(st.lock_kind.to_owned())),
        param(
            "clients",
            UInt(u32_of(ctx.main.clients.load(Ordering::Relaxed))),
        ),
        param(
            "admin_clients",
            UInt(u32_of(ctx.admin.clients.load(Ordering::Relaxed))),
        ),
        param("owners", UInt(u32_of(owners.len()))),
        param("owners_known", UInt(u32_of(sh.owners.len()))),
        param("lockspaces", UInt(u32_of(lockspaces))),
        param("locks", UInt(u32_of(held.len()))),
        param("locks_exclusive", UInt(u32_of(held.len() - shared))),
        param("locks_shared", UInt(u32_of(shared))),
        param("terminating", UInt(u32_of(terminating))),
        param("refusals", ULLong(st.refusals())),
        param("forced_releases", ULLong(st.forced_releases())),
        param(
            "forced_terminations",
            ULLong(st.forced_terminations.load(Ordering::Relaxed)),
        ),
        param("holder_terminations", ULLong(sh.lifelines.terminated())),
        param(
            "fds_used",
            UInt(u32_of(vmlock_sys::limits::open_fd_count().unwrap_or(0))),
        ),
        param("fds_limit", ULLong(fd_limit().unwrap_or(0))),
    ];
    if let Some(r) = st.reexec.get() {
        p.push(param("reexec_time", LLong(r.at)));
        p.push(param(
            "reexec_blackout_us",
            ULLong(u64_of(r.blackout.as_micros())),
        ));
        p.push(param("reexec_locks", ULLong(r.locks as u64)));
        p.push(param("reexecs", ULLong(r.count)));
    }
    if let Some(c) = sh.cluster.as_ref().and_then(|c| c.status()) {
        p.push(param("host_id", Str(c.host_id)));
        p.push(param("etcd_endpoints", Str(c.endpoints.join(","))));
        if let Some(id) = c.lease_id {
            p.push(param("lease_id", LLong(id)));
        }
        if let Some(t) = c.time_left {
            p.push(param("lease_time_left_ms", ULLong(u64_of(t.as_millis()))));
        }
        if let Some(t) = c.last_rtt {
            p.push(param("keepalive_rtt_us", ULLong(u64_of(t.as_micros()))));
        }
        p.push(param("etcd_healthy", Boolean(i32::from(c.healthy))));
        p.push(param("fences", ULLong(c.fences)));
        p.push(param("cluster_locks", UInt(u32_of(c.locks))));
        p.push(param("adopted", UInt(u32_of(c.adopted))));
        p.extend(endpoint_params(&c.endpoint_health));
    }
    if let Some(f) = sh.cluster.as_ref().and_then(|c| c.fence()) {
        fence_params(&f, &mut p);
    }
    p
}

/// STATUS parameters of the fence helper and the watchdog (`fence_*`,
/// `watchdog_*`; see `docs/inquiry.md`).
pub fn fence_params(f: &FenceReport, p: &mut Vec<TypedParam>) {
    use TypedValue::{Boolean, LLong, String as Str, UInt, ULLong};
    let ms = |d: Duration| ULLong(u64_of(d.as_millis()));
    p.push(param(
        "fence_helper_running",
        Boolean(i32::from(f.helper_pid.is_some() && f.helper_answered)),
    ));
    if let Some(pid) = f.helper_pid {
        p.push(param("fence_helper_pid", LLong(i64::from(pid))));
    }
    if let Some(m) = &f.mode {
        p.push(param("fence_mode", Str(m.clone())));
    }
    if let Some(d) = f.deadline_left {
        p.push(param("fence_deadline_ms", ms(d)));
    }
    p.push(param("fence_guarded", UInt(u32_of(f.guarded))));
    if let Some(n) = f.fences {
        p.push(param("fence_helper_fences", ULLong(n)));
    }
    p.push(param(
        "watchdog_state",
        Str(f.watchdog_state.clone().unwrap_or_else(|| {
            if f.watchdog_device.is_some() {
                "unknown".into()
            } else {
                "off".into()
            }
        })),
    ));
    if let Some(d) = &f.watchdog_device {
        p.push(param("watchdog_device", Str(d.clone())));
    }
    if let Some(t) = f.watchdog_timeout_s {
        p.push(param("watchdog_timeout_s", UInt(t)));
    }
    if let Some(d) = f.watchdog_deadline_left {
        p.push(param("watchdog_deadline_ms", ms(d)));
    }
    if let Some(d) = f.watchdog_last_pet_ago {
        p.push(param("watchdog_last_pet_ms", ms(d)));
    }
}

/// `etcd_endpoints_healthy`, then per endpoint N (configuration order):
/// `etcd_endpoint.N.url`, `.healthy` (once probed), `.rtt_us` (last
/// answered probe), `.error` (when the last probe failed).
pub fn endpoint_params(eps: &[EndpointStatus]) -> Vec<TypedParam> {
    use TypedValue::{Boolean, String as Str, UInt, ULLong};
    let up = eps.iter().filter(|e| e.healthy == Some(true)).count();
    let mut p = vec![param("etcd_endpoints_healthy", UInt(u32_of(up)))];
    for (i, e) in eps.iter().enumerate() {
        let name = |f: &str| format!("etcd_endpoint.{i}.{f}");
        p.push(param(&name("url"), Str(e.url.clone())));
        if let Some(h) = e.healthy {
            p.push(param(&name("healthy"), Boolean(i32::from(h))));
        }
        if let Some(t) = e.rtt {
            p.push(param(&name("rtt_us"), ULLong(u64_of(t.as_micros()))));
        }
        if e.healthy == Some(false) {
            p.push(param(&name("error"), Str(e.error.clone())));
        }
    }
    p
}

/// Whether a held resource matches the lockspace and path filters.
fn resource_matches(r: &lockspace::ResourceInfo, f: &ListFilter) -> bool {
    let keys =
        || std::iter::once((&r.lockspace, &r.name)).chain(r.aliases.iter().map(|(l, n)| (l, n)));
    if let Some(ls) = &f.lockspace
        && !keys().any(|(l, _)| l == ls)
    {
        return false;
    }
    if let Some(p) = &f.path
        && r.path != *p
        && !keys().any(|(l, n)| n == p || (!l.is_empty() && format!("{l}/{n}") == *p))
    {
        return false;
    }
    true
}

fn owner_matches(meta: Option<&OwnerMeta>, pid: u32, f: &ListFilter) -> bool {
    if f.pid.is_some_and(|want| want != pid) {
        return false;
    }
    if let Some(name) = &f.owner_name
        && meta.is_none_or(|m| m.name != *name)
    {
        return false;
    }
    if let Some(uuid) = &f.owner_uuid
        && meta.is_none_or(|m| m.uuid != *uuid)
    {
        return false;
    }
    true
}

/// Room kept in a LIST reply for the header and the trailing count.
const LIST_SLACK: usize = 64 * 1024;

/// LIST: one row per held resource and distinct owner pid, sorted.
fn list(ctx: &Ctx, f: &ListFilter) -> Ret {
    let sh = &ctx.shared;
    let host = sh
        .cluster
        .as_ref()
        .and_then(|c| c.status())
        .map(|c| c.host_id)
        .unwrap_or_default();
    let mut rows = Vec::new();
    for r in sh.engine.held() {
        if !resource_matches(&r, f) {
            continue;
        }
        // One row per distinct pid, with its earliest acquire.
        let mut owners: Vec<(u32, u32)> = r
            .owners
            .iter()
            .copied()
            .zip(r.since.iter().copied())
            .collect();
        owners.sort_unstable();
        owners.dedup_by_key(|o| o.0);
        for (pid, since) in owners {
            let meta = sh.owners.get(pid);
            if !owner_matches(meta.as_ref(), pid, f) {
                continue;
            }
            let m = meta.unwrap_or(OwnerMeta {
                name: String::new(),
                uuid: [0; 16],
                id: 0,
                pid,
                start_time: None,
            });
            rows.push(LockRow {
                lockspace: r.lockspace.clone(),
                name: r.name.clone(),
                path: r.path.clone(),
                shared: r.shared,
                owner_known: sh.owners.get(pid).is_some(),
                owner_name: m.name,
                owner_uuid: m.uuid,
                owner_id: m.id,
                pid,
                since: i64::from(since),
                host: host.clone(),
            });
        }
    }
    rows.sort_by(|a, b| (&a.lockspace, &a.name, a.pid).cmp(&(&b.lockspace, &b.name, b.pid)));
    let total = u32_of(rows.len());
    let mut size = 0usize;
    let budget = vmlock_proto::limits::PAYLOAD_MAX - LIST_SLACK;
    let keep = rows
        .iter()
        .take(vmlock_proto::inquiry::LIST_MAX)
        .take_while(|r| {
            size += r.to_xdr().len();
            size <= budget
        })
        .count();
    rows.truncate(keep);
    Ret::List { rows, total }
}

fn failure(code: i32, detail: &str) -> Failure {
    Box::new(WireError::new(code, domain::LOCKING, detail))
}

/// A pidfd of the process that registered as `pid` if it still runs:
/// `Ok(None)` if it is gone (or its pid now names another process),
/// `Err` if it runs but cannot be told from a later process with the same
/// pid (no start time recorded for it).
fn live_holder(pid: u32, meta: Option<&OwnerMeta>) -> Result<Option<OwnedFd>, ()> {
    let Ok(ipid) = i32::try_from(pid) else {
        return Ok(None);
    };
    let Ok(fd) = vmlock_sys::process::pidfd_open(ipid) else {
        return Ok(None);
    };
    // A zombie has exited: its pidfd is readable.
    if vmlock_sys::process::pidfd_wait(fd.as_fd(), Duration::ZERO).unwrap_or(true) {
        return Ok(None);
    }
    let now = vmlock_sys::process::start_time(ipid).ok();
    match meta.and_then(|m| m.start_time) {
        Some(then) if now == Some(then) => Ok(Some(fd)),
        Some(_) => Ok(None),
        None => Err(()),
    }
}

fn holder_text(pid: u32, meta: Option<&OwnerMeta>) -> String {
    match meta {
        Some(m) => format!("domain '{}' (uuid {}, pid {pid})", m.name, m.uuid_text()),
        None => format!("pid {pid}"),
    }
}

/// RELEASE: every occurrence of the chosen owner(s) on one resource.
async fn release(
    ctx: &Arc<Ctx>,
    s: &Session,
    lockspace: &str,
    name: &str,
    pid: u32,
    terminate: bool,
) -> Result<Ret, Failure> {
    let sh = &ctx.shared;
    let what = if lockspace.is_empty() {
        format!("'{name}'")
    } else {
        format!("'{name}' in lockspace '{lockspace}'")
    };
    let Some(info) = sh.engine.inspect(lockspace, name) else {
        return Err(failure(
            code::OPERATION_INVALID,
            &format!("resource {what} is not locked"),
        ));
    };
    let mut targets: Vec<u32> = info.owners.clone();
    targets.sort_unstable();
    targets.dedup();
    if pid != 0 {
        if !targets.contains(&pid) {
            return Err(failure(
                code::OPERATION_INVALID,
                &format!("pid {pid} does not hold resource {what}"),
            ));
        }
        targets = vec![pid];
    }
    // Decide for every target before anything is done: all or nothing.
    let mut plan = Vec::new();
    for &t in &targets {
        let meta = sh.owners.get(t);
        let who = holder_text(t, meta.as_ref());
        match live_holder(t, meta.as_ref()) {
            Ok(None) => plan.push((t, meta, None)),
            Ok(Some(fd)) if terminate => plan.push((t, meta, Some(fd))),
            Ok(Some(_)) => {
                return Err(failure(
                    code::OPERATION_DENIED,
                    &format!(
                        "resource {what} is held by {who}, which is running; terminate it first (RELEASE_TERMINATE, vmlockctl release --force --terminate)"
                    ),
                ));
            }
            Err(()) => {
                return Err(failure(
                    code::OPERATION_DENIED,
                    &format!(
                        "resource {what} is held by {who}, which is running and did not register with this daemon: not signalling an unverified pid"
                    ),
                ));
            }
        }
    }
    let mut released = 0u32;
    let mut terminated = 0u32;
    for (t, meta, fd) in plan {
        let who = holder_text(t, meta.as_ref());
        let kill = fd.is_some();
        if let Some(fd) = fd {
            warn!(
                asker_uid = s.peer_uid,
                asker_pid = s.peer_pid,
                resource = %what,
                holder = %who,
                "forced release: terminating the live holder first"
            );
            let out = crate::terminate::terminate(Arc::new(fd), sh.lifelines.grace()).await;
            match out {
                Ok(crate::terminate::Outcome::Survived) | Err(_) => {
                    return Err(failure(
                        code::INTERNAL_ERROR,
                        &format!("{who} did not exit ({out:?}): resource {what} kept"),
                    ));
                }
                Ok(o) => info!(pid = t, outcome = ?o, "forced release: holder exited"),
            }
            terminated += 1;
            sh.stats.forced_terminations.fetch_add(1, Ordering::Relaxed);
        }
        let engine = sh.engine.clone();
        let (ls, n) = (lockspace.to_owned(), name.to_owned());
        let count = sh
            .fs
            .blocking(move || {
                let mut n_rel = 0u32;
                while engine.release(&ls, &n, t).is_ok() {
                    n_rel += 1;
                }
                n_rel
            })
            .await;
        // A terminated holder's connection may have closed and released
        // its locks first: still released, and still forced.
        released += count;
        sh.stats.forced_releases.fetch_add(1, Ordering::Relaxed);
        warn!(
            asker_uid = s.peer_uid,
            asker_pid = s.peer_pid,
            resource = %what,
            holder = %who,
            occurrences = count,
            terminated = kill,
            "forced release"
        );
    }
    Ok(Ret::Release {
        released,
        terminated,
    })
}
