//! `status`, `list`, `release --force` and the daemon side of `check`:
//! vmlockd's inquiry program on the admin socket (`docs/inquiry.md`),
//! through `vmlock_client::inquiry`; this module prints.
//!
//! ```text
//! admin socket: --admin-socket, else virtlockd-admin-sock beside --socket
//! ```
//! The JSON printed by `status --json` and `list --json` is documented in
//! `docs/inquiry.md` and stays stable: fields are added, never renamed.

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};
use vmlock_client::inquiry::{self as client, InquiryError, ListFilter, LockRow, TypedValue};

use crate::error::CtlError;

pub use vmlock_client::inquiry::{ADMIN_SOCKET_NAME, admin_socket_for};

impl From<InquiryError> for CtlError {
    fn from(e: InquiryError) -> CtlError {
        CtlError::Inquiry(e.to_string())
    }
}

fn json_value(v: &TypedValue) -> Value {
    match v {
        TypedValue::Int(n) => Value::from(*n),
        TypedValue::UInt(n) => Value::from(*n),
        TypedValue::LLong(n) => Value::from(*n),
        TypedValue::ULLong(n) => Value::from(*n),
        TypedValue::Double(n) => Value::from(*n),
        TypedValue::Boolean(n) => Value::from(*n != 0),
        TypedValue::String(s) => Value::from(s.as_str()),
    }
}

fn text_value(v: &TypedValue) -> String {
    match v {
        TypedValue::Int(n) | TypedValue::Boolean(n) => n.to_string(),
        TypedValue::UInt(n) => n.to_string(),
        TypedValue::LLong(n) => n.to_string(),
        TypedValue::ULLong(n) => n.to_string(),
        TypedValue::Double(n) => n.to_string(),
        TypedValue::String(s) => s.clone(),
    }
}

/// `status`.
pub fn status(admin: &Path, json: bool, out: &mut dyn Write) -> Result<(), CtlError> {
    let params = client::status(admin)?;
    if json {
        let map: Map<String, Value> = params
            .iter()
            .map(|p| (p.field.clone(), json_value(&p.value)))
            .collect();
        return print_json(out, &Value::Object(map));
    }
    let get = |f: &str| {
        params
            .iter()
            .find(|p| p.field == f)
            .map(|p| text_value(&p.value))
    };
    let mut lines = Vec::new();
    let g = |f: &str| get(f).unwrap_or_else(|| "?".into());
    lines.push(format!("vmlockd {} (pid {})", g("version"), g("pid")));
    lines.push(format!(
        "up {}, since {}",
        duration_text(get("uptime_s").and_then(|s| s.parse().ok()).unwrap_or(0)),
        time_text(get("started").and_then(|s| s.parse().ok()).unwrap_or(0))
    ));
    lines.push(format!("lock kind {}", g("lock_kind")));
    lines.push(format!(
        "clients {} (admin {}), owners {}, lockspaces {}",
        g("clients"),
        g("admin_clients"),
        g("owners"),
        g("lockspaces")
    ));
    lines.push(format!(
        "locks {} ({} exclusive, {} shared)",
        g("locks"),
        g("locks_exclusive"),
        g("locks_shared")
    ));
    lines.push(format!(
        "holders being terminated {}, refusals {}, forced releases {}",
        g("terminating"),
        g("refusals"),
        g("forced_releases")
    ));
    lines.push(format!(
        "descriptors {} of {}",
        g("fds_used"),
        g("fds_limit")
    ));
    match get("reexec_time") {
        Some(t) => lines.push(format!(
            "last re-exec {} (re-execs since start {}): {} locks carried, blackout {} ms",
            time_text(t.parse().unwrap_or(0)),
            g("reexecs"),
            g("reexec_locks"),
            get("reexec_blackout_us")
                .and_then(|u| u.parse::<u64>().ok())
                .map_or("?".into(), |u| format!("{:.1}", u as f64 / 1000.0))
        )),
        None => lines.push("last re-exec: none since start".into()),
    }
    if let Some(host) = get("host_id") {
        lines.push(format!(
            "etcd: host {host}, lease {}, {} ms left, keepalive rtt {} us, {}, endpoints {}",
            get("lease_id").unwrap_or_else(|| "none".into()),
            g("lease_time_left_ms"),
            g("keepalive_rtt_us"),
            if get("etcd_healthy").as_deref() == Some("1") {
                "healthy"
            } else {
                "UNHEALTHY"
            },
            g("etcd_endpoints")
        ));
        lines.push(format!(
            "etcd: {} cluster locks, {} adopted, {} fences",
            g("cluster_locks"),
            g("adopted"),
            g("fences")
        ));
        lines.extend(endpoint_lines(&get));
    }
    lines.extend(fence_lines(&get));
    for l in lines {
        writeln!(out, "{l}").map_err(write_err)?;
    }
    Ok(())
}

/// One line per etcd endpoint, from `etcd_endpoint.N.*`.
fn endpoint_lines(get: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(url) = get(&format!("etcd_endpoint.{}.url", out.len())) {
        let f = |k: &str| get(&format!("etcd_endpoint.{}.{k}", out.len()));
        let state = match f("healthy").as_deref() {
            Some("1") => format!(
                "healthy, probe rtt {} us",
                f("rtt_us").unwrap_or_else(|| "?".into())
            ),
            Some(_) => format!("UNHEALTHY: {}", f("error").unwrap_or_default()),
            None => "not probed yet".into(),
        };
        out.push(format!("etcd endpoint {url}: {state}"));
    }
    out
}

/// The fence helper's and the watchdog's lines of `status` (etcd back end
/// only: nothing when the daemon reports no `fence_*` parameters).
fn fence_lines(get: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let Some(running) = get("fence_helper_running") else {
        return Vec::new();
    };
    let g = |f: &str| get(f).unwrap_or_else(|| "?".into());
    let deadline = |f: &str| get(f).map_or_else(|| "none".into(), |ms| format!("in {ms} ms"));
    let mut lines = Vec::new();
    let helper = if running == "1" {
        format!("running, pid {}", g("fence_helper_pid"))
    } else {
        match get("fence_helper_pid") {
            Some(pid) => format!("NOT ANSWERING (pid {pid})"),
            None => "NOT RUNNING".into(),
        }
    };
    lines.push(format!(
        "fence helper: {helper}, mode {}, {} lock holders watched, fence deadline {}, {} fences",
        g("fence_mode"),
        g("fence_guarded"),
        deadline("fence_deadline_ms"),
        g("fence_helper_fences")
    ));
    let state = g("watchdog_state");
    match get("watchdog_device") {
        None => lines.push(format!("watchdog: {state}")),
        Some(dev) => lines.push(format!(
            "watchdog: {dev}, {state}, timeout {} s, last pet {}, reset deadline {}",
            g("watchdog_timeout_s"),
            get("watchdog_last_pet_ms").map_or_else(|| "never".into(), |ms| format!("{ms} ms ago")),
            deadline("watchdog_deadline_ms")
        )),
    }
    lines
}

fn write_err(source: std::io::Error) -> CtlError {
    CtlError::Io {
        what: "cannot write output".into(),
        source,
    }
}

fn print_json(out: &mut dyn Write, v: &impl Serialize) -> Result<(), CtlError> {
    let text = serde_json::to_string_pretty(v).map_err(|e| write_err(e.into()))?;
    writeln!(out, "{text}").map_err(write_err)
}

/// Seconds as `1d 2h 3m 4s` (leading zero units left out).
pub fn duration_text(s: u64) -> String {
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    let mut out = String::new();
    for (n, u) in [(d, "d"), (h, "h"), (m, "m")] {
        if n > 0 || !out.is_empty() {
            out.push_str(&format!("{n}{u} "));
        }
    }
    out.push_str(&format!("{sec}s"));
    out
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn time_text(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// One `list --json` entry (documented in `docs/inquiry.md`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ListEntry {
    /// The lockspace directory; `""` for the default lockspace (direct disk locks).
    pub lockspace: String,
    /// The resource name: the disk path, or the lease key.
    pub resource: String,
    /// The lease file locked.
    pub path: String,
    /// `exclusive` or `shared`.
    pub mode: &'static str,
    /// The owner (domain) name, if it registered with this daemon.
    pub owner_name: Option<String>,
    /// Its UUID.
    pub owner_uuid: Option<String>,
    /// Its domain id.
    pub owner_id: Option<u32>,
    /// The owner pid.
    pub pid: u32,
    /// When it acquired the lock, seconds since the epoch (`null`: unknown,
    /// carried over a re-exec).
    pub since: Option<i64>,
    /// The host (etcd back end), else `null`.
    pub host: Option<String>,
}

impl From<LockRow> for ListEntry {
    fn from(r: LockRow) -> ListEntry {
        let known = r.owner_known;
        ListEntry {
            lockspace: r.lockspace,
            resource: r.name,
            path: r.path,
            mode: if r.shared { "shared" } else { "exclusive" },
            owner_name: known.then_some(r.owner_name),
            owner_uuid: known.then(|| uuid_text(&r.owner_uuid)),
            owner_id: known.then_some(r.owner_id),
            pid: r.pid,
            since: (r.since != 0).then_some(r.since),
            host: (!r.host.is_empty()).then_some(r.host),
        }
    }
}

/// A UUID in its usual hyphenated form.
pub fn uuid_text(u: &[u8; 16]) -> String {
    vmlock::Uuid::from_bytes(*u).hyphenated().to_string()
}

/// The rows matching `filter`, and how many matched in all.
pub fn list_rows(admin: &Path, filter: ListFilter) -> Result<(Vec<ListEntry>, u32), CtlError> {
    let (rows, total) = client::list(admin, filter)?;
    Ok((rows.into_iter().map(ListEntry::from).collect(), total))
}

/// `list`.
pub fn list(
    admin: &Path,
    filter: ListFilter,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let (rows, total) = list_rows(admin, filter)?;
    if json {
        return print_json(out, &rows);
    }
    writeln!(
        out,
        "{:<9} {:>7}  {:<20} {:<36} {:<20} {:<8} RESOURCE",
        "MODE", "PID", "OWNER", "UUID", "SINCE", "HOST"
    )
    .map_err(write_err)?;
    for r in &rows {
        let resource = if r.lockspace.is_empty() {
            r.resource.clone()
        } else {
            format!("{} (lease {} in {})", r.path, r.resource, r.lockspace)
        };
        writeln!(
            out,
            "{:<9} {:>7}  {:<20} {:<36} {:<20} {:<8} {resource}",
            r.mode,
            r.pid,
            r.owner_name.as_deref().unwrap_or("-"),
            r.owner_uuid.as_deref().unwrap_or("-"),
            r.since.map_or("-".into(), time_text),
            r.host.as_deref().unwrap_or("-"),
        )
        .map_err(write_err)?;
    }
    if (rows.len() as u64) < u64::from(total) {
        writeln!(out, "({} of {total} rows: the reply was full)", rows.len()).map_err(write_err)?;
    }
    Ok(())
}

/// The holder description `check` prints for a row.
pub fn holder_text(r: &ListEntry) -> String {
    let mut s = match (&r.owner_name, &r.owner_uuid) {
        (Some(n), Some(u)) => format!("held by domain '{n}' (uuid {u}, pid {})", r.pid),
        _ => format!("held by pid {}", r.pid),
    };
    if let Some(t) = r.since {
        s.push_str(&format!(" since {}", time_text(t)));
    }
    if let Some(h) = &r.host {
        s.push_str(&format!(" on host {h}"));
    }
    s
}

/// `release --force` of one resource.
pub fn force_release(
    admin: &Path,
    lockspace: &str,
    name: &str,
    pid: u32,
    terminate: bool,
) -> Result<(u32, u32), CtlError> {
    Ok(client::release(admin, lockspace, name, pid, terminate)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_endpoint() {
        let params = [
            ("etcd_endpoint.0.url", "http://a:2379"),
            ("etcd_endpoint.0.healthy", "1"),
            ("etcd_endpoint.0.rtt_us", "812"),
            ("etcd_endpoint.1.url", "http://b:2379"),
            ("etcd_endpoint.1.healthy", "0"),
            ("etcd_endpoint.1.error", "connect error"),
            ("etcd_endpoint.2.url", "http://c:2379"),
        ];
        let get = |f: &str| params.iter().find(|p| p.0 == f).map(|p| p.1.to_owned());
        assert_eq!(
            endpoint_lines(&get),
            [
                "etcd endpoint http://a:2379: healthy, probe rtt 812 us",
                "etcd endpoint http://b:2379: UNHEALTHY: connect error",
                "etcd endpoint http://c:2379: not probed yet",
            ]
        );
    }

    #[test]
    fn times_and_durations() {
        assert_eq!(time_text(0), "1970-01-01T00:00:00Z");
        assert_eq!(time_text(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(time_text(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(duration_text(5), "5s");
        assert_eq!(duration_text(3_600), "1h 0m 0s");
        assert_eq!(duration_text(90_061), "1d 1h 1m 1s");
    }

    #[test]
    fn fence_and_watchdog_lines() {
        let of = |kv: &'static [(&'static str, &'static str)]| {
            move |f: &str| {
                kv.iter()
                    .find(|(k, _)| *k == f)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert!(fence_lines(&of(&[("pid", "1")])).is_empty(), "no etcd");
        let lines = fence_lines(&of(&[
            ("fence_helper_running", "1"),
            ("fence_helper_pid", "42"),
            ("fence_mode", "kill"),
            ("fence_guarded", "2"),
            ("fence_deadline_ms", "1700"),
            ("fence_helper_fences", "0"),
            ("watchdog_state", "petting"),
            ("watchdog_device", "/dev/watchdog"),
            ("watchdog_timeout_s", "1"),
            ("watchdog_last_pet_ms", "40"),
            ("watchdog_deadline_ms", "2600"),
        ]));
        assert_eq!(
            lines,
            [
                "fence helper: running, pid 42, mode kill, 2 lock holders watched, \
                 fence deadline in 1700 ms, 0 fences",
                "watchdog: /dev/watchdog, petting, timeout 1 s, last pet 40 ms ago, \
                 reset deadline in 2600 ms"
            ]
        );
        let lines = fence_lines(&of(&[
            ("fence_helper_running", "0"),
            ("fence_guarded", "1"),
            ("watchdog_state", "off"),
        ]));
        assert!(
            lines[0].starts_with("fence helper: NOT RUNNING,"),
            "{lines:?}"
        );
        assert!(lines[0].contains("fence deadline none"), "{lines:?}");
        assert_eq!(lines[1], "watchdog: off");
    }

    #[test]
    fn rows_become_stable_json() {
        let row = LockRow {
            lockspace: String::new(),
            name: "/d/a.img".into(),
            path: "/d/a.img".into(),
            shared: false,
            owner_known: true,
            owner_name: "web1".into(),
            owner_uuid: [0x11; 16],
            owner_id: 3,
            pid: 4242,
            since: 1_700_000_000,
            host: String::new(),
        };
        let v = serde_json::to_value(ListEntry::from(row.clone())).expect("json");
        assert_eq!(
            v,
            serde_json::json!({
                "lockspace": "", "resource": "/d/a.img", "path": "/d/a.img",
                "mode": "exclusive", "owner_name": "web1",
                "owner_uuid": "11111111-1111-1111-1111-111111111111", "owner_id": 3,
                "pid": 4242, "since": 1_700_000_000, "host": null
            })
        );
        let unknown = LockRow {
            owner_known: false,
            since: 0,
            ..row
        };
        let e = ListEntry::from(unknown);
        assert_eq!((e.owner_name, e.owner_uuid, e.since), (None, None, None));
    }
}
