//! Live re-exec (docs/protocol.md §9): every lock and every client survives an upgrade.
//!
//! ```text
//! old image (SIGUSR1)                          new image (same pid)
//! ───────────────────                          ────────────────────
//! connections park at a frame boundary         take_inherited(): first thing in main,
//! listeners stop accepting                       before any file is opened:
//! open argv[0]'s program; its ELF note says    a binary state of this process instance
//!   whether it reads our binary state            (pid + start time, checksum)? adopt
//! state = servers + clients + engine             its descriptors on a second thread
//!   binary (vmlockd-restart-exec.bin) or         while this one decodes; else the JSON:
//!   virtlockd's JSON, to <file>.tmp (0600,       O_NOFOLLOW, read, unlink, parse;
//!   O_EXCL|O_NOFOLLOW) → rename                  magic == our pid? else close the
//! clear FD_CLOEXEC on the sockets (lock          stale descriptors, fresh start
//!   descriptors never have it)
//! execveat(that file) / execv(argv[0]) ──────► restore(): engine from its snapshot,
//!   exec failed? set FD_CLOEXEC again,             listeners, clients (credentials read
//!   delete the file, keep serving                  again; a dead peer just reads EOF and
//!                                                  its locks are released normally)
//!                                                take the pid file again, READY=1
//! ```
//! The JSON is virtlockd 9.0's format, so libvirt's virtlockd can be
//! upgraded to vmlockd this way and vmlockd rolled back to virtlockd; the
//! binary state (`binary.rs`) goes only to a program that declares it
//! reads it.

pub(crate) mod binary;
pub(crate) mod json;

/// The target of the re-exec's log lines, the one a `1:reexec` filter
/// selects (docs/logging.md).
const TARGET: &str = "vmlockd::reexec";

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use lockspace::{Adopted, Engine, EngineOptions, RestoreReport};
use vmlock_proto::lock::Owner;

use crate::ctx::{Ctx, Handover, ServerKind};
use crate::daemon::Listener;
use crate::session::Session;
use json::{ClientRef, LockPriv, ServerRef, SockRef, State};

/// Largest state file read (virtlockd: 10 MiB, about 40,000 locks).
pub const STATE_MAX: u64 = 1 << 30;

/// What the previous image handed over, descriptors already adopted.
#[derive(Debug)]
pub struct Inherited {
    state: State,
    fds: FdTable,
    /// Faulting in the heap the restore is about to use (binary state only).
    warmer: Option<vmlock_sys::mem::HeapWarmer>,
}

/// Adopted descriptors, indexed by number (a state names thousands of
/// lock descriptors with small, dense numbers: a vector indexed by number
/// is the cheapest look-up, and its length is bounded by the largest number
/// actually open here).
#[derive(Debug, Default)]
struct FdTable {
    /// Four bytes a slot (`OwnedFd` has a niche): the table stays in cache
    /// while the restore takes numbers in no particular order.
    slots: Vec<Option<OwnedFd>>,
    adopted: usize,
}

impl FdTable {
    fn insert(&mut self, n: usize, a: OwnedFd) {
        if self.slots.len() <= n {
            self.slots.resize_with(n + 1, || None);
        }
        if let Some(slot) = self.slots.get_mut(n) {
            *slot = Some(a);
            self.adopted += 1;
        }
    }

    /// Gives every adopted number up without closing it.
    fn into_raw(self) {
        for fd in self.slots.into_iter().flatten() {
            let _ = std::os::fd::IntoRawFd::into_raw_fd(fd);
        }
    }

    /// Takes descriptor `n` out of the table (each can be taken once).
    fn take(&mut self, n: i32) -> Option<Adopted> {
        let fd = self.slots.get_mut(usize::try_from(n).ok()?)?.take()?;
        Some(Adopted { fd, ident: None })
    }
}

/// A restored daemon, ready to serve.
#[derive(Debug)]
pub struct Restored {
    /// Listening sockets.
    pub listeners: Vec<Listener>,
    /// Connections to resume.
    pub conns: Vec<(ServerKind, Handover)>,
    /// The engine with every lock.
    pub engine: Engine,
    /// What was odd in the engine state.
    pub report: RestoreReport,
    /// Next client ids, main and admin.
    pub next_ids: (u64, u64),
    /// Client limits in force before the re-exec (virt-admin may have changed
    /// them), main and admin; they win over the configuration, as in virtlockd.
    pub max_clients: (Option<u64>, Option<u64>),
    /// Log lines for what was odd in the rest.
    pub problems: Vec<String>,
}

/// Reads, unlinks and checks the state file, and adopts its descriptors.
/// Must run before the process opens any descriptor of its own. Returns the
/// inherited state (None for a fresh start) and lines to log once logging is up.
pub fn take_inherited(path: &Path, our_pid: i32) -> (Option<Inherited>, Vec<String>) {
    let mut log = Vec::new();
    let t0 = std::time::Instant::now();
    let main_ns = vmlock_sys::clock::monotonic_ns();
    if let Some(b) = take_binary(path, our_pid, &mut log) {
        let FromBinary {
            state,
            fds,
            len,
            written_ns,
            warmer,
        } = b;
        let since = |ns: u64| Duration::from_nanos(ns.saturating_sub(written_ns));
        log.push(format!(
            "re-exec: binary state ({len} bytes) read and decoded, {} descriptors adopted, in {:?} \
             ({:?} after it was written; this image's main began {:?} after)",
            fds.adopted,
            t0.elapsed(),
            since(vmlock_sys::clock::monotonic_ns()),
            since(main_ns),
        ));
        return (Some(Inherited { state, fds, warmer }), log);
    }
    let Some((state, how)) = take_json(path, &mut log) else {
        return (None, log);
    };
    if state.magic != our_pid.to_string() {
        close_stale(&state, &mut log);
        return (None, log);
    }
    let t1 = t0.elapsed();
    let fds = adopt_all(state.socket_fds(), state.lock_fds(), &mut log);
    log.push(format!(
        "re-exec: {how} {} descriptors adopted in {:?}",
        fds.adopted,
        t0.elapsed() - t1
    ));
    let warmer = None;
    (Some(Inherited { state, fds, warmer }), log)
}

/// The JSON state (libvirt's daemon's, or ours when no binary one is used).
fn take_json(path: &Path, log: &mut Vec<String>) -> Option<(State, String)> {
    let t0 = std::time::Instant::now();
    let text = match read_state(path) {
        Ok(Some(t)) => t,
        Ok(None) => return None,
        Err(e) => {
            log.push(format!(
                "ignoring re-exec state {}: {e}; starting fresh",
                path.display()
            ));
            return None;
        }
    };
    let t1 = t0.elapsed();
    match json::parse(&text) {
        Ok(s) => {
            let how = format!(
                "JSON state read in {t1:?} ({} bytes), parsed in {:?},",
                text.len(),
                t0.elapsed() - t1
            );
            Some((s, how))
        }
        Err(e) => {
            log.push(format!(
                "ignoring corrupt re-exec state {}: {e}; starting fresh",
                path.display()
            ));
            None
        }
    }
}

/// Where the binary state goes: beside the JSON, under our own name.
pub fn binary_path(json: &Path) -> PathBuf {
    json.with_file_name("vmlockd-restart-exec.bin")
}

/// What a binary state handed over.
struct FromBinary {
    state: State,
    fds: FdTable,
    /// Its size in bytes.
    len: usize,
    /// `CLOCK_MONOTONIC` when the previous image wrote it.
    written_ns: u64,
    warmer: Option<vmlock_sys::mem::HeapWarmer>,
}

/// The binary state a previous vmlockd image of this very process wrote,
/// if there is one and no JSON state beside it. It is removed when read;
/// one that is not used is logged, and the JSON (if any) is read instead.
fn take_binary(json: &Path, our_pid: i32, log: &mut Vec<String>) -> Option<FromBinary> {
    let bin_path = binary_path(json);
    // Restoring touches about 16 bytes of fresh memory per byte of state:
    // have the heap grow once by that much (see vmlock_sys::mem).
    let size = std::fs::symlink_metadata(&bin_path).map_or(0, |m| m.len());
    let warm = usize::try_from(size.saturating_mul(16).min(1 << 30)).unwrap_or(1 << 30);
    if size > 0 {
        vmlock_sys::mem::HeapWarmer::prepare(warm);
    }
    let buf = match read_file(&bin_path) {
        Ok(Some(b)) => b,
        Ok(None) => {
            vmlock_sys::mem::HeapWarmer::reset();
            return None;
        }
        Err(e) => {
            vmlock_sys::mem::HeapWarmer::reset();
            log.push(format!("ignoring binary re-exec state: {e}"));
            return None;
        }
    };
    let ignore = |why: String, log: &mut Vec<String>| {
        vmlock_sys::mem::HeapWarmer::reset();
        log.push(format!(
            "ignoring binary re-exec state {}: {why}",
            bin_path.display()
        ));
        None
    };
    // The writer removes the JSON before it writes a binary state: a JSON
    // beside one was written later (by libvirt's daemon) and wins.
    if std::fs::symlink_metadata(json).is_ok() {
        return ignore("a JSON state was written after it".into(), log);
    }
    let me = match vmlock_sys::process::start_time(our_pid) {
        Ok(t) => (our_pid.unsigned_abs(), t),
        Err(e) => return ignore(format!("cannot read our start time: {e}"), log),
    };
    let checked = match binary::check(&buf, me).and_then(|c| Ok((c.fds()?, c))) {
        Ok(c) => c,
        Err(e) => return ignore(e.to_string(), log),
    };
    let (numbers, checked) = checked;
    // The descriptors are checked on a second thread while this one
    // decodes; that thread then warms the heap the restore will use.
    let adopt = move || {
        let mut lines = Vec::new();
        (adopt_all(numbers.0, numbers.1, &mut lines), lines)
    };
    let (warmer, state, (table, lines)) =
        match vmlock_sys::mem::HeapWarmer::spawn_after(warm, adopt) {
            Some((warmer, adopted)) => {
                let state = checked.decode();
                let Ok(table) = adopted.recv() else {
                    // The adopting thread died: which numbers it took is
                    // unknown, and starting fresh would lose every lock.
                    std::process::abort();
                };
                (Some(warmer), state, table)
            }
            // No second thread: everything on this one.
            None => {
                let mut lines = Vec::new();
                let (sockets, locks) = checked.fds().unwrap_or_default();
                let table = adopt_all(sockets, locks, &mut lines);
                (None, checked.decode(), (table, lines))
            }
        };
    log.extend(lines);
    match state {
        Ok(state) => Some(FromBinary {
            state,
            fds: table,
            len: buf.len(),
            written_ns: checked.origin.written_ns,
            warmer,
        }),
        Err(e) => {
            if let Some(w) = warmer {
                w.finish();
            }
            // Hand the numbers back untouched for the JSON reader.
            table.into_raw();
            ignore(e.to_string(), log)
        }
    }
}

/// Adopts every named descriptor once: sockets get close-on-exec back, one
/// `fcntl` each (setting it doubles as the check that the number is open);
/// lock descriptors are only checked, all with one `poll`. They are not
/// `fstat`ed here: vmlockd's state records each file's identity, and the
/// engine asks the kernel only for entries without one.
fn adopt_all(sockets: Vec<i32>, locks: Vec<i32>, log: &mut Vec<String>) -> FdTable {
    // Lock descriptors stay inheritable (the engine keeps them so, see
    // `EngineOptions::inherit_fds`): checked to be open, nothing more.
    // Sockets get close-on-exec back.
    let mut numbers: Vec<(i32, bool)> = sockets
        .into_iter()
        .map(|n| (n, false))
        .chain(locks.into_iter().map(|n| (n, true)))
        .collect();
    numbers.sort_unstable();
    let before = numbers.len();
    numbers.dedup_by_key(|(n, _)| *n);
    if numbers.len() != before {
        log.push(format!(
            "re-exec state names {} descriptor(s) more than once",
            before - numbers.len()
        ));
    }
    let mut table = FdTable::default();
    let mut ok = Vec::with_capacity(numbers.len());
    // Lock descriptors: all checked with one `poll` (sorted, deduplicated).
    let locks: Vec<i32> = numbers.iter().filter(|n| n.1).map(|n| n.0).collect();
    let mut taken = match vmlock_sys::fd::adopt_inherited_all(&locks) {
        Ok(v) => v.into_iter(),
        Err(e) => {
            log.push(format!(
                "re-exec: cannot check the lock descriptors at once: {e}"
            ));
            Vec::new().into_iter()
        }
    };
    let batched = taken.len() == locks.len();
    for (n, lock) in numbers {
        let adopted = match (lock, batched) {
            (true, true) => taken
                .next()
                .flatten()
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF)),
            (true, false) => vmlock_sys::fd::adopt_inherited(n),
            (false, _) => vmlock_sys::fd::adopt(n),
        };
        match adopted {
            Ok(fd) => ok.push((n, fd)),
            Err(e) => log.push(format!(
                "re-exec state names descriptor {n}, not inherited: {e}"
            )),
        }
    }
    // Sized only now, by numbers that are really open.
    if let Some(&(max, _)) = ok.last() {
        table
            .slots
            .reserve_exact(usize::try_from(max).unwrap_or(0) + 1);
    }
    for (n, fd) in ok {
        if let Ok(i) = usize::try_from(n) {
            table.insert(i, fd);
        }
    }
    table
}

fn read_state(path: &Path) -> io::Result<Option<String>> {
    match read_file(path)? {
        Some(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| io::Error::other("not UTF-8")),
        None => Ok(None),
    }
}

/// Reads a state file (never through a symlink), removing it first: a
/// state is taken at most once.
fn read_file(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
    };
    let _ = std::fs::remove_file(path);
    let size = file.metadata().map_or(0, |m| m.len().min(STATE_MAX));
    let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0) + 1);
    file.take(STATE_MAX + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > STATE_MAX {
        return Err(io::Error::other(format!("larger than {STATE_MAX} bytes")));
    }
    Ok(Some(buf))
}

/// A stale file (another pid wrote it): its descriptors, if they are open
/// here, would be phantom locks that other hosts still see. Close them.
fn close_stale(state: &State, log: &mut Vec<String>) {
    log.push(format!(
        "re-exec state was written by pid {}, not us: starting fresh",
        state.magic
    ));
    for n in state.fds().into_iter().filter(|n| *n > 2) {
        if let Ok(fd) = vmlock_sys::fd::adopt(n) {
            drop(fd);
            log.push(format!("closed descriptor {n} named in the stale state"));
        }
    }
}

impl Inherited {
    /// Rebuilds listeners, connections and the engine.
    pub fn restore(mut self, opts: EngineOptions) -> Restored {
        let mut problems = Vec::new();
        let warmer = self.warmer.take();
        let fds = &mut self.fds;
        let snapshot = std::mem::take(&mut self.state.engine);
        if let Some(r) = self.state.daemon.take() {
            crate::stats::carry(r);
        }
        let (engine, report) = match Engine::restore_adopted(opts.clone(), snapshot, |n| {
            fds.take(n)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
        }) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("engine restore failed: {e}"));
                (Engine::new(opts), RestoreReport::default())
            }
        };
        let mut listeners = Vec::new();
        let mut conns = Vec::new();
        let mut next_ids = (1, 1);
        let mut max_clients = (None, None);
        for srv in std::mem::take(&mut self.state.servers) {
            let kind = match srv.name.as_str() {
                "virtlockd" => ServerKind::Main,
                "admin" => ServerKind::Admin,
                other => {
                    problems.push(format!("unknown server '{other}' in re-exec state"));
                    continue;
                }
            };
            let limit = (srv.max_clients > 0).then_some(srv.max_clients);
            match kind {
                ServerKind::Main => (next_ids.0, max_clients.0) = (srv.next_client_id, limit),
                ServerKind::Admin => (next_ids.1, max_clients.1) = (srv.next_client_id, limit),
            }
            self.restore_server(kind, srv, &mut listeners, &mut conns, &mut problems);
        }
        if let Some(w) = warmer {
            let t = std::time::Instant::now();
            w.finish();
            tracing::info!(target: TARGET, "re-exec: heap warmer stopped in {:?}", t.elapsed());
        }
        Restored {
            listeners,
            conns,
            engine,
            report,
            next_ids,
            max_clients,
            problems,
        }
    }

    fn restore_server(
        &mut self,
        kind: ServerKind,
        srv: ServerRef,
        listeners: &mut Vec<Listener>,
        conns: &mut Vec<(ServerKind, Handover)>,
        problems: &mut Vec<String>,
    ) {
        for s in srv.socks {
            let Some(Adopted { fd, .. }) = self.fds.take(s.fd) else {
                continue;
            };
            let unlink = s.unlink.then(|| socket_path(&fd)).flatten();
            listeners.push(Listener { kind, fd, unlink });
        }
        for c in srv.clients {
            let Some(Adopted { fd, .. }) = self.fds.take(c.fd) else {
                problems.push(format!("client {} lost: descriptor {} missing", c.id, c.fd));
                continue;
            };
            conns.push((kind, client(fd, c)));
        }
    }
}

fn socket_path(fd: &OwnedFd) -> Option<PathBuf> {
    let l = UnixListener::from(fd.try_clone().ok()?);
    l.local_addr().ok()?.as_pathname().map(Path::to_path_buf)
}

fn client(fd: OwnedFd, c: ClientRef) -> Handover {
    let stream = UnixStream::from(fd);
    let (pid, uid) = match vmlock_sys::cred::peer_cred(stream.as_fd()) {
        Ok(cr) => (if cr.pid == 0 { -1 } else { cr.pid }, cr.uid),
        Err(_) => (-1, u32::MAX),
    };
    // Exact for a live peer; a peer that died during the exec has no pidfd
    // and needs none: its connection reads EOF and its locks are released.
    let pidfd = vmlock_sys::cred::peer_pidfd(stream.as_fd()).ok();
    let mut session = Session::new(c.id, pid, uid, pidfd);
    if c.conn_time != 0 {
        session.conn_time = c.conn_time;
    }
    if let Some(p) = c.lock {
        session.restricted = p.restricted;
        if p.owner_id != 0 {
            session.owner = Some(Owner {
                uuid: p.owner_uuid,
                name: p.owner_name,
                id: p.owner_id,
                pid: p.owner_pid,
            });
        }
    }
    Handover {
        stream,
        unread: c.unread,
        unsent: Vec::new(),
        session,
    }
}

/// The server part of the state (listeners and parked clients).
pub fn build_servers(
    ctx: &Ctx,
    listeners: &[Listener],
    parked: &[(ServerKind, Handover)],
) -> Vec<ServerRef> {
    [ServerKind::Admin, ServerKind::Main]
        .into_iter()
        .map(|kind| ServerRef {
            name: kind.name().to_owned(),
            max_clients: ctx
                .server(kind)
                .max_clients
                .load(std::sync::atomic::Ordering::Relaxed) as u64,
            next_client_id: ctx
                .server(kind)
                .next_id
                .load(std::sync::atomic::Ordering::Relaxed),
            socks: listeners
                .iter()
                .filter(|l| l.kind == kind)
                .map(|l| SockRef {
                    fd: l.fd.as_raw_fd(),
                    unlink: l.unlink.is_some(),
                })
                .collect(),
            clients: parked
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(k, h)| client_ref(*k, h))
                .collect(),
        })
        .collect()
}

fn client_ref(kind: ServerKind, h: &Handover) -> ClientRef {
    let s = &h.session;
    let lock = (kind == ServerKind::Main).then(|| match &s.owner {
        Some(o) => LockPriv {
            restricted: s.restricted,
            owner_pid: o.pid,
            owner_id: o.id,
            owner_name: o.name.clone(),
            owner_uuid: o.uuid,
        },
        // Unregistered: virtlockd cannot write these (docs/quirks.md #21); "" and the
        // zero UUID are what its loader accepts.
        None => LockPriv {
            restricted: s.restricted,
            ..LockPriv::default()
        },
    });
    ClientRef {
        id: s.id,
        conn_time: s.conn_time,
        fd: h.stream.as_raw_fd(),
        lock,
        unread: h.unread.clone(),
    }
}

/// Writes `text` to `path` atomically, 0600, never following a symlink.
pub fn write_state(path: &Path, text: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    let r = f.write_all(text).and_then(|()| std::fs::rename(&tmp, path));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Sets (`on == false`) or clears close-on-exec on the listeners and the
/// parked connections.
fn set_sockets_inheritable(
    l: &[Listener],
    p: &[(ServerKind, Handover)],
    on: bool,
) -> io::Result<()> {
    for fd in l
        .iter()
        .map(|l| l.fd.as_fd())
        .chain(p.iter().map(|(_, h)| h.stream.as_fd()))
    {
        vmlock_sys::fd::set_cloexec(fd, !on)?;
    }
    Ok(())
}

/// Which state the next program reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// virtlockd 9.0's JSON: libvirt's daemon, an older vmlockd, anything
    /// that is not known to read ours.
    Json,
    /// vmlockd's binary state (`binary.rs`): the program carries the note
    /// of `vmlock_sys::elfnote`.
    Binary,
}

/// Writes the state in `format` while close-on-exec is cleared on every
/// lock descriptor (one `fcntl` each) on two threads: a re-exec is the only
/// time the daemon has both cores' worth of work in one place. A stale file
/// of the other format is removed, so a reader never sees one. Returns the
/// length written.
fn write_and_inherit(
    ctx: &Ctx,
    servers: &[ServerRef],
    path: &Path,
    format: Format,
) -> io::Result<usize> {
    let view = match format {
        Format::Json => ctx.shared.engine.snapshot_view(),
        Format::Binary => ctx.shared.engine.snapshot_view_unordered(),
    };
    let pid = std::process::id();
    let record = json::DaemonRecord {
        owners: ctx.shared.owners.all(),
        ..ctx.shared.stats.record()
    };
    let bin_path = binary_path(path);
    let _ = std::fs::remove_file(if format == Format::Json {
        &bin_path
    } else {
        path
    });
    let write = || match format {
        Format::Json => json::to_json_from_engine(servers, &view, &pid.to_string(), Some(&record))
            .map_err(io::Error::other)
            .and_then(|text| write_state(path, text.as_bytes()).map(|()| text.len())),
        Format::Binary => {
            vmlock_sys::process::start_time(vmlock_sys::getpid()).and_then(|start_time| {
                let origin = binary::Origin {
                    pid,
                    start_time,
                    written_ns: vmlock_sys::clock::monotonic_ns(),
                };
                let hint = view.resource_count() * 112;
                let fds = view.raw_fds();
                let bin = binary::encode(origin, servers, &fds, |w| view.encode(w), &record, hint);
                write_state(&bin_path, &bin).map(|()| bin.len())
            })
        }
    };
    // vmlockd's engine keeps its lock descriptors inheritable: nothing to
    // clear (and nothing to set back if the exec fails).
    if ctx.shared.engine.inherits_fds() {
        return write();
    }
    std::thread::scope(|s| {
        // The state takes this thread about as long as two thirds of the
        // descriptors take the other.
        let other = s.spawn(|| {
            view.set_fds_inheritable_share(true, 1, 3)?;
            view.set_fds_inheritable_share(true, 2, 3)
        });
        let written = write();
        let mine = view.set_fds_inheritable_share(true, 0, 3);
        let other = other
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("close-on-exec thread panicked")));
        mine.and(other)?;
        written
    })
}

/// Writes the state and execs `argv`. Returns only if that failed, with
/// every descriptor back to close-on-exec and the state removed.
///
/// The program is opened first and its ELF note read: a vmlockd that reads
/// the binary state gets it (and is exec'd from that very descriptor, so a
/// binary swapped meanwhile cannot be handed a format it does not read);
/// anything else gets virtlockd's JSON and is exec'd by path, as virtlockd
/// does it.
pub fn exec(
    ctx: &Ctx,
    listeners: &[Listener],
    parked: &[(ServerKind, Handover)],
    path: &Path,
    argv: &[OsString],
) -> io::Error {
    let t0 = std::time::Instant::now();
    for (kind, h) in parked.iter().filter(|(_, h)| !h.unsent.is_empty()) {
        tracing::warn!(
            target: TARGET,
            server = kind.name(),
            client = h.session.id,
            "the client is not reading its replies: {} reply bytes are not handed over",
            h.unsent.len()
        );
    }
    let servers = build_servers(ctx, listeners, parked);
    let prog = argv
        .first()
        .and_then(|a| vmlock_sys::process::open_program(a).ok())
        .filter(vmlock_sys::elfnote::declares_handover);
    let format = if prog.is_some() {
        Format::Binary
    } else {
        Format::Json
    };
    // A vmlockd image reaps the releaser; libvirt's virtlockd would keep it
    // as a zombie, and its memory matters less there.
    let releaser = match format {
        Format::Binary => vmlock_sys::mem::ExecReleaser::start()
            .map_err(|e| tracing::debug!(target: TARGET, "re-exec: no memory releaser: {e}"))
            .ok(),
        Format::Json => None,
    };
    let r = write_and_inherit(ctx, &servers, path, format)
        .and_then(|len| set_sockets_inheritable(listeners, parked, true).map(|()| len));
    let err = match r {
        Ok(len) => {
            // Not armed in time: it may still share the descriptor table,
            // which the exec would then copy; let it go (and reap it).
            let started = releaser.is_some();
            let releaser = releaser.filter(|r| r.armed(Duration::from_millis(100)));
            tracing::info!(
                target: TARGET,
                "re-exec: {format:?} state ({len} bytes) written and descriptors made inheritable in {:?}{}",
                t0.elapsed(),
                match (started, releaser.is_some()) {
                    (_, true) => ", memory releaser ready",
                    // A loaded host: the old image's memory is freed by
                    // the exec itself instead, a little later.
                    (true, false) => ", memory releaser not ready in 100 ms, exec without it",
                    (false, false) => "",
                },
            );
            // A caught SIGUSR1 reverts to "terminate" across execve; an
            // ignored one stays ignored until the new image installs its
            // handler (vmlockd blocks it from the first line of main, and
            // libvirt's virtlockd installs its own). So a second reload
            // landing in the exec is dropped instead of killing the daemon
            // with every lock. Only SIGUSR1: virtlockd (rollback) stops
            // reacting to SIGTERM when it inherits other ignored signals
            // (seen with SIGTERM and SIGHUP), and a blocked mask would be
            // kept by it forever.
            let saved = vmlock_sys::signal::ignore(&[libc::SIGUSR1]);
            let exec = || match &prog {
                Some(p) => vmlock_sys::process::exec_file(p, argv),
                None => vmlock_sys::process::exec_no_shell(argv),
            };
            // The releaser is let go (and reaped) if the exec fails.
            let err = match releaser {
                Some(r) => r.exec_with(exec),
                None => exec(),
            };
            if let Ok(saved) = saved
                && let Err(e) = saved.restore()
            {
                tracing::error!(target: TARGET, "cannot restore the signal handlers after a failed exec: {e}");
            }
            err
        }
        Err(e) => e,
    };
    let engine = &ctx.shared.engine;
    if let Err(e) = set_sockets_inheritable(listeners, parked, false).and_then(|()| {
        if engine.inherits_fds() {
            Ok(())
        } else {
            engine.set_fds_inheritable(false)
        }
    }) {
        tracing::error!(target: TARGET, "cannot restore close-on-exec after a failed exec: {e}");
    }
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(binary_path(path));
    err
}
