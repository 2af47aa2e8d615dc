//! The re-exec state file: virtlockd 9.0's JSON (docs/protocol.md §9.3), both ways.
//!
//! ```text
//! { "daemon": { "servers": { "admin": Server, "virtlockd": Server } },
//!   "defaultLockspace": { "resources": [..] },          ← lockspace::Snapshot
//!   "lockspaces": [ { "directory": .., "resources": [..] } ],
//!   "vmlockDaemon": { "started", "reexecs", "refusals", "forcedReleases",
//!                     "forcedTerminations",          ← ours, optional: DaemonRecord
//!                     "owners": [ { "pid", "id", "name", "uuid", "startTime"? } ] },
//!   "magic": "<writer pid>" }
//! Server = { min_workers, max_workers, priority_workers, max_clients,
//!            max_anonymous_clients, keepaliveInterval: 4294967295, keepaliveCount,
//!            next_client_id, services: [{auth, readonly, nrequests_client_max,
//!            socks: [Sock]}], clients: [Client] }
//! Client = { id, auth, auth_pending, readonly, nrequests_max, conn_time?, sock: Sock,
//!            privateData: { restricted, ownerPid, ownerId, ownerName, ownerUUID } | {} }
//! Sock   = { fd, errfd: -1, pid: 0, isClient, unlinkUNIX }
//! ```
//! We write exactly this (so libvirt's virtlockd can take the state back), plus
//! keys libvirt ignores (`vmlockUnread`: bytes received but not yet handled,
//! hex). We read it leniently, including older files: `server` instead of
//! `daemon`, `servers` as an array or absent, missing `admin`, missing
//! `id`/`conn_time`/`auth_pending`/`unlinkUNIX`.

use serde::Serialize;
use serde_json::{Map, Value};

use lockspace::Snapshot;

use crate::owners::OwnerMeta;

/// A listening socket in the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SockRef {
    /// Inherited descriptor number.
    pub fd: i32,
    /// Whether the path is ours to unlink at exit.
    pub unlink: bool,
}

/// The lock server's per-client data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LockPriv {
    /// RESTRICT was called.
    pub restricted: bool,
    /// Registered owner pid.
    pub owner_pid: u32,
    /// Registered owner id (0: not registered).
    pub owner_id: u32,
    /// Owner name.
    pub owner_name: String,
    /// Owner UUID.
    pub owner_uuid: [u8; 16],
}

/// A client connection in the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRef {
    /// Client id.
    pub id: u64,
    /// Connection time (seconds since the epoch; 0 unknown).
    pub conn_time: i64,
    /// Inherited descriptor number.
    pub fd: i32,
    /// Lock-server data (None on the admin server).
    pub lock: Option<LockPriv>,
    /// Bytes received but not yet processed.
    pub unread: Vec<u8>,
}

/// One server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRef {
    /// `virtlockd` or `admin`.
    pub name: String,
    /// Limit.
    pub max_clients: u64,
    /// Next client id.
    pub next_client_id: u64,
    /// Listening sockets.
    pub socks: Vec<SockRef>,
    /// Connected clients.
    pub clients: Vec<ClientRef>,
}

/// What the daemon carries over a re-exec besides servers and locks, for
/// `vmlockctl status` and `list` (absent in libvirt's files: then the
/// daemon counts from the re-exec, as after a start, and knows only the
/// owners of the connections it adopts).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DaemonRecord {
    /// When the first image started, seconds since the epoch.
    pub started: i64,
    /// Re-execs before this one.
    pub reexecs: u64,
    /// Acquires refused because the resource was held.
    pub refusals: u64,
    /// Forced releases.
    pub forced_releases: u64,
    /// Holders terminated by forced releases.
    pub forced_terminations: u64,
    /// What each known owner registered as (those whose connection is
    /// gone too: libvirtd acquires for a QEMU that never connects).
    pub owners: Vec<OwnerMeta>,
}

impl DaemonRecord {
    fn to_json(&self) -> Value {
        let owners: Vec<Value> = self
            .owners
            .iter()
            .map(|o| {
                let mut v = serde_json::json!({
                    "pid": o.pid, "id": o.id, "name": o.name, "uuid": uuid_text(&o.uuid),
                });
                if let (Some(t), Value::Object(m)) = (o.start_time, &mut v) {
                    m.insert("startTime".into(), t.into());
                }
                v
            })
            .collect();
        serde_json::json!({
            "started": self.started, "reexecs": self.reexecs, "refusals": self.refusals,
            "forcedReleases": self.forced_releases,
            "forcedTerminations": self.forced_terminations, "owners": owners,
        })
    }

    /// Reads what [`DaemonRecord::to_json`] wrote; missing numbers are 0,
    /// malformed owners are skipped (this is only for `status` and `list`).
    fn from_json(v: &Value) -> Option<DaemonRecord> {
        let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        let owners = v
            .get("owners")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(owner_from_json).collect())
            .unwrap_or_default();
        Some(DaemonRecord {
            started: v.get("started")?.as_i64()?,
            reexecs: n("reexecs"),
            refusals: n("refusals"),
            forced_releases: n("forcedReleases"),
            forced_terminations: n("forcedTerminations"),
            owners,
        })
    }
}

fn owner_from_json(v: &Value) -> Option<OwnerMeta> {
    let u32_of = |k: &str| v.get(k)?.as_u64().and_then(|n| u32::try_from(n).ok());
    let uuid = uuid::Uuid::parse_str(v.get("uuid")?.as_str()?).ok()?;
    Some(OwnerMeta {
        name: v.get("name")?.as_str()?.to_owned(),
        uuid: *uuid.as_bytes(),
        id: u32_of("id")?,
        pid: u32_of("pid")?,
        start_time: v.get("startTime").and_then(Value::as_u64),
    })
}

/// The whole state.
#[derive(Debug, Clone)]
pub struct State {
    /// The servers, sorted by name.
    pub servers: Vec<ServerRef>,
    /// The engine.
    pub engine: Snapshot,
    /// The writer's pid.
    pub magic: String,
    /// The daemon's record (vmlockd's states only).
    pub daemon: Option<DaemonRecord>,
}

/// A malformed state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Not JSON.
    #[error("state file is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON of the wrong shape.
    #[error("state file: {0}")]
    Shape(String),
}

fn shape(msg: impl Into<String>) -> StateError {
    StateError::Shape(msg.into())
}

/// Canonical UUID text.
pub fn uuid_text(u: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*u).hyphenated().to_string()
}

#[derive(Serialize)]
struct Out<'a, D, L, G> {
    daemon: Value,
    #[serde(rename = "defaultLockspace")]
    default: D,
    lockspaces: L,
    #[serde(rename = "vmlockLingering", skip_serializing_if = "Option::is_none")]
    lingering: Option<G>,
    #[serde(rename = "vmlockDaemon", skip_serializing_if = "Option::is_none")]
    record: Option<Value>,
    magic: &'a str,
}

#[derive(Serialize)]
struct SockOut {
    fd: i32,
    errfd: i32,
    pid: i32,
    #[serde(rename = "isClient")]
    is_client: bool,
    #[serde(rename = "unlinkUNIX")]
    unlink_unix: bool,
}

impl SockOut {
    fn new(fd: i32, is_client: bool, unlink_unix: bool) -> SockOut {
        SockOut {
            fd,
            errfd: -1,
            pid: 0,
            is_client,
            unlink_unix,
        }
    }
}

impl State {
    /// The JSON text (compact: readers never depend on whitespace). The
    /// lock part is serialised straight from the snapshot, without building
    /// a JSON tree of every lock first.
    pub fn to_json(&self) -> Result<String, StateError> {
        let e = &self.engine;
        let out = Out {
            daemon: daemon_json(&self.servers)?,
            default: &e.default,
            lockspaces: &e.lockspaces,
            lingering: (!e.lingering.is_empty()).then_some(&e.lingering),
            record: self.daemon.as_ref().map(DaemonRecord::to_json),
            magic: &self.magic,
        };
        Ok(serde_json::to_string(&out)?)
    }

    /// The descriptor numbers of the listeners and client connections.
    pub fn socket_fds(&self) -> Vec<i32> {
        let mut v: Vec<i32> = Vec::new();
        for s in &self.servers {
            v.extend(s.socks.iter().map(|k| k.fd));
            v.extend(s.clients.iter().map(|c| c.fd));
        }
        v
    }

    /// The engine's descriptor numbers (locks and lingering ones).
    pub fn lock_fds(&self) -> Vec<i32> {
        let e = &self.engine;
        let res = std::iter::once(&e.default).chain(&e.lockspaces);
        res.flat_map(|ls| ls.resources.iter().map(|r| r.fd))
            .chain(e.lingering.iter().map(|l| l.fd))
            .collect()
    }

    /// Every descriptor number the state names.
    pub fn fds(&self) -> Vec<i32> {
        let mut v: Vec<i32> = Vec::new();
        for s in &self.servers {
            v.extend(s.socks.iter().map(|k| k.fd));
            v.extend(s.clients.iter().map(|c| c.fd));
        }
        for ls in std::iter::once(&self.engine.default).chain(&self.engine.lockspaces) {
            v.extend(ls.resources.iter().map(|r| r.fd));
        }
        v.extend(self.engine.lingering.iter().map(|l| l.fd));
        v
    }
}

/// The same text as [`State::to_json`] of a state holding `servers`, the
/// engine's current tables and `magic`, serialised straight from the
/// engine's tables (a re-exec needs no owned copy of every lock).
pub fn to_json_from_engine(
    servers: &[ServerRef],
    engine: &lockspace::SnapshotView<'_>,
    magic: &str,
    record: Option<&DaemonRecord>,
) -> Result<String, StateError> {
    let out = Out {
        daemon: daemon_json(servers)?,
        default: engine.default_lockspace(),
        lockspaces: engine.lockspaces(),
        lingering: (!engine.lingering_is_empty()).then(|| engine.lingering()),
        record: record.map(DaemonRecord::to_json),
        magic,
    };
    Ok(serde_json::to_string(&out)?)
}

fn daemon_json(servers: &[ServerRef]) -> Result<Value, StateError> {
    let mut map = Map::new();
    for s in servers {
        map.insert(s.name.clone(), server_json(s)?);
    }
    Ok(serde_json::json!({ "servers": Value::Object(map) }))
}

fn server_json(s: &ServerRef) -> Result<Value, StateError> {
    let socks: Vec<SockOut> = s
        .socks
        .iter()
        .map(|k| SockOut::new(k.fd, false, k.unlink))
        .collect();
    let clients: Vec<Value> = s
        .clients
        .iter()
        .map(client_json)
        .collect::<Result<_, _>>()?;
    Ok(serde_json::json!({
        "min_workers": 0, "max_workers": 0, "priority_workers": 0,
        "max_clients": s.max_clients, "max_anonymous_clients": s.max_clients,
        "keepaliveInterval": 4294967295u64, "keepaliveCount": 0,
        "next_client_id": s.next_client_id,
        "services": [ { "auth": 0, "readonly": false, "nrequests_client_max": 1, "socks": socks } ],
        "clients": clients,
    }))
}

fn client_json(c: &ClientRef) -> Result<Value, StateError> {
    let private = match &c.lock {
        Some(p) => serde_json::json!({
            "restricted": p.restricted, "ownerPid": p.owner_pid, "ownerId": p.owner_id,
            "ownerName": p.owner_name, "ownerUUID": uuid_text(&p.owner_uuid),
        }),
        None => Value::Object(Map::new()),
    };
    let mut v = serde_json::json!({
        "id": c.id, "auth": 0, "auth_pending": false, "readonly": false, "nrequests_max": 1,
        "sock": serde_json::to_value(SockOut::new(c.fd, true, false))?,
        "privateData": private,
    });
    if let Value::Object(m) = &mut v {
        if c.conn_time != 0 {
            m.insert("conn_time".into(), c.conn_time.into());
        }
        if !c.unread.is_empty() {
            m.insert("vmlockUnread".into(), hex(&c.unread).into());
        }
    }
    Ok(v)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The top level, typed: the engine part is deserialised straight into the
/// engine's snapshot types (no intermediate JSON tree of every lock).
#[derive(serde::Deserialize)]
struct Top {
    daemon: Option<Value>,
    server: Option<Value>,
    magic: Option<Value>,
    #[serde(rename = "defaultLockspace")]
    default: Option<lockspace::LockspaceSnap>,
    #[serde(default)]
    lockspaces: Vec<lockspace::LockspaceSnap>,
    #[serde(rename = "vmlockLingering", default)]
    lingering: Vec<lockspace::LingeringSnap>,
    /// Ours; a malformed one is ignored (it is only for `status`).
    #[serde(rename = "vmlockDaemon", default)]
    record: Option<Value>,
}

/// Parses a state file written by virtlockd (any version with this layout) or vmlockd.
pub fn parse(text: &str) -> Result<State, StateError> {
    let top: Top = serde_json::from_str(text)?;
    let magic = top
        .magic
        .as_ref()
        .and_then(Value::as_str)
        .ok_or_else(|| shape("missing magic"))?;
    let daemon = top
        .daemon
        .as_ref()
        .or(top.server.as_ref())
        .ok_or_else(|| shape("missing daemon"))?;
    let servers = parse_servers(daemon)?;
    let default = top
        .default
        .ok_or_else(|| shape("missing defaultLockspace"))?;
    let engine = Snapshot {
        default,
        lockspaces: top.lockspaces,
        lingering: top.lingering,
    };
    Ok(State {
        servers,
        engine,
        magic: magic.to_owned(),
        daemon: top.record.as_ref().and_then(DaemonRecord::from_json),
    })
}

fn parse_servers(daemon: &Value) -> Result<Vec<ServerRef>, StateError> {
    let mut out = match daemon.get("servers") {
        Some(Value::Object(m)) => m
            .iter()
            .map(|(name, v)| parse_server(name, v))
            .collect::<Result<Vec<_>, _>>()?,
        Some(Value::Array(a)) => {
            if a.len() > 1 {
                return Err(shape("more than one server in the legacy array layout"));
            }
            a.iter()
                .map(|v| parse_server("virtlockd", v))
                .collect::<Result<Vec<_>, _>>()?
        }
        Some(_) => return Err(shape("servers is neither an object nor an array")),
        None => vec![parse_server("virtlockd", daemon)?],
    };
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn num(v: &Value, key: &str) -> Option<i64> {
    let x = v.get(key)?;
    x.as_i64().or_else(|| x.as_u64().map(|u| u as i64))
}

fn parse_server(name: &str, v: &Value) -> Result<ServerRef, StateError> {
    let max_clients =
        num(v, "max_clients").ok_or_else(|| shape(format!("{name}: missing max_clients")))?;
    let services = v
        .get("services")
        .and_then(Value::as_array)
        .ok_or_else(|| shape(format!("{name}: missing services")))?;
    let mut socks = Vec::new();
    for svc in services {
        let list = svc
            .get("socks")
            .and_then(Value::as_array)
            .ok_or_else(|| shape(format!("{name}: service without socks")))?;
        for s in list {
            let fd = num(s, "fd").ok_or_else(|| shape(format!("{name}: sock without fd")))?;
            let is_client = s.get("isClient").and_then(Value::as_bool).unwrap_or(false);
            let unlink = s
                .get("unlinkUNIX")
                .and_then(Value::as_bool)
                .unwrap_or(!is_client);
            socks.push(SockRef {
                fd: fd as i32,
                unlink,
            });
        }
    }
    let mut clients = Vec::new();
    for (i, c) in v
        .get("clients")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        clients.push(parse_client(name, i as u64 + 1, c)?);
    }
    let next = num(v, "next_client_id").map_or(1, |n| n.max(1) as u64);
    let after_ids = clients.iter().map(|c| c.id.saturating_add(1)).max();
    let next = next.max(after_ids.unwrap_or(1));
    Ok(ServerRef {
        name: name.to_owned(),
        max_clients: max_clients.max(0) as u64,
        next_client_id: next,
        socks,
        clients,
    })
}

fn parse_client(server: &str, default_id: u64, c: &Value) -> Result<ClientRef, StateError> {
    let fd = c
        .get("sock")
        .and_then(|s| num(s, "fd"))
        .ok_or_else(|| shape(format!("{server}: client without sock fd")))?;
    let lock = match c.get("privateData") {
        // `{}` is how we write "no lock data" (None); read it back as None.
        Some(p) if server == "virtlockd" && p != &Value::Object(Map::new()) => Some(parse_priv(p)?),
        _ => None,
    };
    let unread = c
        .get("vmlockUnread")
        .and_then(Value::as_str)
        .and_then(unhex)
        .unwrap_or_default();
    Ok(ClientRef {
        id: num(c, "id").map_or(default_id, |n| n as u64),
        conn_time: num(c, "conn_time").unwrap_or(0),
        fd: fd as i32,
        lock,
        unread,
    })
}

fn parse_priv(p: &Value) -> Result<LockPriv, StateError> {
    let need = |k: &str| {
        p.get(k)
            .ok_or_else(|| shape(format!("privateData without {k}")))
    };
    let restricted = need("restricted")?
        .as_bool()
        .ok_or_else(|| shape("restricted is not a bool"))?;
    let owner_pid = num(p, "ownerPid").ok_or_else(|| shape("ownerPid is not a number"))?;
    let owner_id = num(p, "ownerId").ok_or_else(|| shape("ownerId is not a number"))?;
    let owner_name = need("ownerName")?
        .as_str()
        .ok_or_else(|| shape("ownerName is not a string"))?;
    let uuid_s = need("ownerUUID")?
        .as_str()
        .ok_or_else(|| shape("ownerUUID is not a string"))?;
    let owner_uuid = uuid::Uuid::parse_str(uuid_s).map_err(|e| shape(format!("ownerUUID: {e}")))?;
    Ok(LockPriv {
        restricted,
        owner_pid: owner_pid as u32,
        owner_id: owner_id as u32,
        owner_name: owner_name.to_owned(),
        owner_uuid: *owner_uuid.as_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: &str = include_str!("../../tests/fixtures/virtlockd-9.0-restart-state.json");

    #[test]
    fn the_real_virtlockd_state_file_parses_completely() {
        let s = parse(REAL).expect("parse");
        assert_eq!(s.magic, "30590");
        // libvirt keeps no daemon record, nor acquire times.
        assert_eq!(s.daemon, None);
        assert!(
            s.engine
                .default
                .resources
                .iter()
                .all(|r| r.since.is_empty())
        );
        assert_eq!(
            s.servers
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            ["admin", "virtlockd"]
        );
        let main = &s.servers[1];
        assert_eq!(
            main.socks,
            vec![SockRef {
                fd: 6,
                unlink: true
            }]
        );
        assert_eq!(main.next_client_id, 11);
        assert_eq!(main.clients.len(), 4);
        let vm2 = &main.clients[1];
        assert_eq!((vm2.id, vm2.fd), (7, 14));
        let p = vm2.lock.as_ref().expect("lock data");
        assert!(!p.restricted);
        assert_eq!(
            (p.owner_pid, p.owner_id, p.owner_name.as_str()),
            (30612, 2, "vm2")
        );
        assert_eq!(
            uuid_text(&p.owner_uuid),
            "22222222-2222-3333-4444-555555555555"
        );
        assert_eq!(s.engine.lockspaces.len(), 2);
        let mut fds = s.fds();
        fds.sort();
        assert_eq!(fds, vec![5, 6, 7, 12, 13, 14, 15, 16, 17, 18]);
    }

    #[test]
    fn what_we_write_reads_back_the_same() {
        let s = parse(REAL).expect("parse");
        let text = s.to_json().expect("write");
        let again = parse(&text).expect("reparse");
        assert_eq!(again.servers, s.servers);
        assert_eq!(again.fds(), s.fds());
        let v: Value = serde_json::from_str(&text).expect("json");
        let srv = &v["daemon"]["servers"]["virtlockd"];
        assert_eq!(srv["keepaliveInterval"], 4294967295u64);
        assert_eq!(
            srv["clients"][0]["privateData"]["ownerUUID"],
            "11111111-2222-3333-4444-555555555555"
        );
        assert_eq!(v["defaultLockspace"]["resources"][0]["fd"], 18);
    }

    #[test]
    fn writing_from_the_engine_matches_writing_a_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().to_str().expect("utf8").to_owned();
        let ls = format!("{d}/ls");
        let e = lockspace::Engine::new(lockspace::EngineOptions::default());
        e.create_lockspace(&ls).expect("ls");
        let auto = lockspace::AcquireFlags {
            shared: true,
            autocreate: true,
        };
        e.acquire(&ls, "a", 5, auto).expect("a");
        e.acquire(&ls, "a", 6, auto).expect("a again");
        std::fs::write(format!("{d}/disk"), b"").expect("disk");
        e.acquire(
            "",
            &format!("{d}/disk"),
            5,
            lockspace::AcquireFlags::EXCLUSIVE,
        )
        .expect("disk");
        let servers = parse(REAL).expect("parse").servers;
        let owned = State {
            servers: servers.clone(),
            engine: e.snapshot(),
            magic: "42".into(),
            daemon: Some(DaemonRecord {
                started: 1_700_000_000,
                reexecs: 1,
                owners: vec![OwnerMeta {
                    name: "vm3".into(),
                    uuid: [0x11; 16],
                    id: 3,
                    pid: 4_194_011,
                    start_time: None,
                }],
                ..DaemonRecord::default()
            }),
        };
        let text = to_json_from_engine(&servers, &e.snapshot_view(), "42", owned.daemon.as_ref())
            .expect("view");
        assert_eq!(text, owned.to_json().expect("owned"));
        let back = parse(&text).expect("reparse");
        assert_eq!(back.engine, owned.engine);
        assert_eq!(back.daemon, owned.daemon);
        let v: Value = serde_json::from_str(&text).expect("json");
        let d = &v["vmlockDaemon"];
        assert_eq!(
            (&d["started"], &d["reexecs"]),
            (&1_700_000_000.into(), &1.into())
        );
        assert_eq!(
            d["owners"][0]["uuid"],
            "11111111-1111-1111-1111-111111111111"
        );
        assert_eq!(d["owners"][0].get("startTime"), None);
    }

    #[test]
    fn legacy_layouts_are_accepted() {
        let legacy = r#"{"server": {"max_clients": 20, "services": [{"socks": [{"fd": 3}]}],
            "clients": [{"sock": {"fd": 4}, "privateData": {"restricted": true, "ownerPid": 9,
            "ownerId": 1, "ownerName": "vm", "ownerUUID": "c7a5fdbd-edaf-9455-926a-d65c16db1809"}}]},
            "defaultLockspace": {"resources": []}, "lockspaces": [], "magic": "77"}"#;
        let s = parse(legacy).expect("legacy");
        assert_eq!(s.servers.len(), 1);
        assert_eq!(s.servers[0].name, "virtlockd");
        assert_eq!(
            s.servers[0].socks,
            vec![SockRef {
                fd: 3,
                unlink: true
            }]
        );
        assert_eq!(s.servers[0].clients[0].id, 1);
        assert_eq!(s.servers[0].next_client_id, 2);
        let arr = r#"{"daemon": {"servers": [{"max_clients": 20,
            "services": [{"socks": [{"fd": 3, "unlinkUNIX": false}]}], "clients": []}]},
            "defaultLockspace": {"resources": []}, "lockspaces": [], "magic": "77"}"#;
        let s2 = parse(arr).expect("array layout");
        assert_eq!(s2.servers[0].name, "virtlockd");
        assert_eq!(
            s2.servers[0].socks,
            vec![SockRef {
                fd: 3,
                unlink: false
            }]
        );
    }

    #[test]
    fn broken_files_are_errors_not_panics() {
        for bad in [
            "",
            "{",
            "[]",
            r#"{"magic": 5}"#,
            r#"{"magic": "1"}"#,
            r#"{"magic": "1", "daemon": {"servers": 3}}"#,
            r#"{"magic": "1", "daemon": {"servers": {"virtlockd": {"max_clients": 1}}}, "defaultLockspace": {"resources": []}, "lockspaces": []}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should fail");
        }
        assert_eq!(unhex("0a1B"), Some(vec![0x0a, 0x1b]));
        assert_eq!(unhex("0"), None);
    }
}
