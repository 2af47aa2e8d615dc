//! The binary re-exec state: what one vmlockd image hands the next.
//!
//! virtlockd's JSON (`json.rs`) is the format both daemons understand:
//! vmlockd reads it from libvirt's daemon and writes it for any program not
//! known to read this one (libvirt's virtlockd on a rollback, an older
//! vmlockd, a wrapper script). When the program about to be exec'd carries
//! vmlockd's ELF note (`vmlock_sys::elfnote`), the same content goes in this
//! form instead, at `vmlockd-restart-exec.bin` beside the JSON's path: a
//! fraction of the JSON's cost to write and to read (no text formatting, no
//! key matching, no escapes; docs/PERFORMANCE.md has the numbers).
//!
//! ```text
//! "VMLKST02"  u32 pid  u64 start_time  u64 written_ns  u64 payload_len
//! payload = u32 n, i32 socket_fd*, u32 n, i32 lock_fd*, u32 n_servers, server*,
//!           lockspace::binfmt snapshot, record
//! record  = i64 started, u64 reexecs, u64 refusals, u64 forced_releases,
//!           u64 forced_terminations, u32 n, owner*      (json::DaemonRecord)
//! owner   = u32 pid, u32 id, str name, 16 uuid, u8 has_start, [u64 start_time]
//! server  = str name, u64 max_clients, u64 next_client_id,
//!           u32 n, (i32 fd, u8 unlink)*, u32 n, client*
//! client  = u64 id, i64 conn_time, i32 fd, u8 has_lock,
//!           [u8 restricted, u32 owner_pid, u32 owner_id, str owner_name, 16 owner_uuid],
//!           bytes unread
//! u64 checksum(payload)
//! ```
//!
//! The header names the writing process *instance* (pid and start time,
//! which `execve` keeps), so a file left behind by a crashed daemon can
//! never be taken by an unrelated later process that happens to get its
//! pid. The writer removes any JSON state before writing this one, so a
//! JSON found beside it was written later (by libvirt's daemon) and wins.
//! The list of every descriptor number comes first, so the reader can adopt
//! them on one thread while it decodes the rest on another.

use lockspace::binfmt::{DecodeError, Reader, Writer};

use super::json::{ClientRef, DaemonRecord, LockPriv, ServerRef, SockRef, State};
use crate::owners::OwnerMeta;

const MAGIC: &[u8; 8] = b"VMLKST02";

/// Who wrote a state (checked by the reader against itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// Process id.
    pub pid: u32,
    /// Process start time (clock ticks since boot, `/proc/PID/stat` field 22).
    pub start_time: u64,
    /// `CLOCK_MONOTONIC` when it was written (the reader logs how long the
    /// exec took).
    pub written_ns: u64,
}

/// Encodes the whole state: `engine` writes the engine part.
pub fn encode(
    who: Origin,
    servers: &[ServerRef],
    engine_fds: &[i32],
    engine: impl FnOnce(&mut Writer),
    record: &DaemonRecord,
    size_hint: usize,
) -> Vec<u8> {
    let mut w = Writer::with_capacity(size_hint + 64);
    w.buf.extend_from_slice(MAGIC);
    w.u32(who.pid);
    w.u64(who.start_time);
    w.u64(who.written_ns);
    let len_at = w.buf.len();
    w.u64(0);
    let start = w.buf.len();
    let server_fds = servers.iter().flat_map(|s| {
        s.socks
            .iter()
            .map(|k| k.fd)
            .chain(s.clients.iter().map(|c| c.fd))
    });
    w.len(server_fds.clone().count());
    for fd in server_fds {
        w.i32(fd);
    }
    w.len(engine_fds.len());
    for &fd in engine_fds {
        w.i32(fd);
    }
    w.len(servers.len());
    for s in servers {
        put_server(&mut w, s);
    }
    engine(&mut w);
    w.i64(record.started);
    for n in [
        record.reexecs,
        record.refusals,
        record.forced_releases,
        record.forced_terminations,
    ] {
        w.u64(n);
    }
    w.len(record.owners.len());
    for o in &record.owners {
        w.u32(o.pid);
        w.u32(o.id);
        w.str(&o.name);
        w.buf.extend_from_slice(&o.uuid);
        w.u8(u8::from(o.start_time.is_some()));
        if let Some(t) = o.start_time {
            w.u64(t);
        }
    }
    let len = (w.buf.len() - start) as u64;
    w.buf[len_at..start].copy_from_slice(&len.to_le_bytes());
    let sum = checksum(&w.buf[start..]);
    w.u64(sum);
    w.buf
}

fn put_server(w: &mut Writer, s: &ServerRef) {
    w.str(&s.name);
    w.u64(s.max_clients);
    w.u64(s.next_client_id);
    w.len(s.socks.len());
    for k in &s.socks {
        w.i32(k.fd);
        w.u8(u8::from(k.unlink));
    }
    w.len(s.clients.len());
    for c in &s.clients {
        w.u64(c.id);
        w.i64(c.conn_time);
        w.i32(c.fd);
        match &c.lock {
            None => w.u8(0),
            Some(p) => {
                w.u8(1);
                w.u8(u8::from(p.restricted));
                w.u32(p.owner_pid);
                w.u32(p.owner_id);
                w.str(&p.owner_name);
                w.buf.extend_from_slice(&p.owner_uuid);
            }
        }
        w.bytes(&c.unread);
    }
}

/// Why a binary state was not used.
#[derive(Debug, thiserror::Error)]
pub enum BinError {
    /// Not ours, or damaged.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Written by another process.
    #[error("written by pid {pid} (start time {start_time}), not by this process")]
    Foreign {
        /// Its pid.
        pid: u32,
        /// Its start time.
        start_time: u64,
    },
    /// The checksum does not match.
    #[error("checksum mismatch")]
    Checksum,
}

/// Reads the header only.
pub fn header(buf: &[u8]) -> Result<Origin, BinError> {
    let mut r = Reader::new(buf);
    let magic: Vec<u8> = (0..MAGIC.len()).map(|_| r.u8()).collect::<Result<_, _>>()?;
    if magic != MAGIC {
        return Err(DecodeError("not a vmlockd state").into());
    }
    Ok(Origin {
        pid: r.u32()?,
        start_time: r.u64()?,
        written_ns: r.u64()?,
    })
}

/// A checked binary state: written by this process instance, whole.
#[derive(Debug)]
pub struct Checked<'a> {
    /// Who wrote it.
    pub origin: Origin,
    payload: &'a [u8],
}

/// Checks the header (pid and start time must be `me`), the length and
/// the checksum, without decoding anything.
pub fn check(buf: &[u8], me: (u32, u64)) -> Result<Checked<'_>, BinError> {
    let origin = header(buf)?;
    if (origin.pid, origin.start_time) != me {
        return Err(BinError::Foreign {
            pid: origin.pid,
            start_time: origin.start_time,
        });
    }
    let mut r = Reader::new(buf.get(MAGIC.len() + 20..).unwrap_or_default());
    let len = usize::try_from(r.u64()?).map_err(|_| DecodeError("length"))?;
    let rest = buf.get(MAGIC.len() + 28..).unwrap_or_default();
    if rest.len() != len.saturating_add(8) {
        return Err(DecodeError("length does not match the file").into());
    }
    let (payload, sum) = rest.split_at(len);
    if Reader::new(sum).u64()? != checksum(payload) {
        return Err(BinError::Checksum);
    }
    Ok(Checked { origin, payload })
}

impl Checked<'_> {
    /// Every descriptor number the state names: the sockets (listeners and
    /// clients), then the engine's lock descriptors.
    pub fn fds(&self) -> Result<(Vec<i32>, Vec<i32>), DecodeError> {
        let mut r = Reader::new(self.payload);
        let mut list = || {
            let n = r.count(4)?;
            (0..n).map(|_| r.i32()).collect::<Result<Vec<_>, _>>()
        };
        Ok((list()?, list()?))
    }

    /// The whole state.
    pub fn decode(&self) -> Result<State, DecodeError> {
        decode_payload(self.payload, self.origin.pid)
    }
}

/// Decodes a payload (what [`check`] verified) written by `pid`.
pub(crate) fn decode_payload(payload: &[u8], pid: u32) -> Result<State, DecodeError> {
    let mut r = Reader::new(payload);
    for _ in 0..2 {
        let n = r.count(4)?;
        for _ in 0..n {
            r.i32()?;
        }
    }
    let n = r.count(20)?;
    let servers = (0..n)
        .map(|_| server(&mut r))
        .collect::<Result<Vec<_>, _>>()?;
    let engine = lockspace::binfmt::decode(&mut r)?;
    let record = DaemonRecord {
        started: r.i64()?,
        reexecs: r.u64()?,
        refusals: r.u64()?,
        forced_releases: r.u64()?,
        forced_terminations: r.u64()?,
        owners: Vec::new(),
    };
    let n = r.count(29)?;
    let owners = (0..n)
        .map(|_| owner(&mut r))
        .collect::<Result<Vec<_>, _>>()?;
    let record = DaemonRecord { owners, ..record };
    if r.remaining() != 0 {
        return Err(DecodeError("trailing bytes"));
    }
    Ok(State {
        servers,
        engine,
        magic: pid.to_string(),
        daemon: Some(record),
    })
}

/// [`check`] and [`Checked::decode`] in one.
#[cfg(test)]
fn decode(buf: &[u8], me: (u32, u64)) -> Result<(Origin, State), BinError> {
    let c = check(buf, me)?;
    Ok((c.origin, c.decode()?))
}

fn owner(r: &mut Reader<'_>) -> Result<OwnerMeta, DecodeError> {
    let pid = r.u32()?;
    let id = r.u32()?;
    let name = r.string()?;
    let mut uuid = [0u8; 16];
    for b in &mut uuid {
        *b = r.u8()?;
    }
    let start_time = match r.u8()? {
        0 => None,
        1 => Some(r.u64()?),
        _ => return Err(DecodeError("bad start time flag")),
    };
    Ok(OwnerMeta {
        name,
        uuid,
        id,
        pid,
        start_time,
    })
}

fn server(r: &mut Reader<'_>) -> Result<ServerRef, DecodeError> {
    let name = r.string()?;
    let max_clients = r.u64()?;
    let next_client_id = r.u64()?;
    let n = r.count(5)?;
    let socks = (0..n)
        .map(|_| {
            Ok(SockRef {
                fd: r.i32()?,
                unlink: r.u8()? != 0,
            })
        })
        .collect::<Result<Vec<_>, DecodeError>>()?;
    let n = r.count(25)?;
    let clients = (0..n).map(|_| client(r)).collect::<Result<Vec<_>, _>>()?;
    Ok(ServerRef {
        name,
        max_clients,
        next_client_id,
        socks,
        clients,
    })
}

fn client(r: &mut Reader<'_>) -> Result<ClientRef, DecodeError> {
    let id = r.u64()?;
    let conn_time = r.i64()?;
    let fd = r.i32()?;
    let lock = match r.u8()? {
        0 => None,
        1 => {
            let restricted = r.u8()? != 0;
            let owner_pid = r.u32()?;
            let owner_id = r.u32()?;
            let owner_name = r.string()?;
            let mut owner_uuid = [0u8; 16];
            for b in &mut owner_uuid {
                *b = r.u8()?;
            }
            Some(LockPriv {
                restricted,
                owner_pid,
                owner_id,
                owner_name,
                owner_uuid,
            })
        }
        _ => return Err(DecodeError("bad client lock flag")),
    };
    let unread = r.bytes()?.to_vec();
    Ok(ClientRef {
        id,
        conn_time,
        fd,
        lock,
        unread,
    })
}

/// A fast 64-bit checksum (not cryptographic: the file is written 0600 by
/// this same process in a root-only directory; this catches damage and
/// mix-ups, not forgery). Eight bytes per step.
pub fn checksum(b: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h: u64 = (b.len() as u64).wrapping_mul(K);
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(a)).wrapping_mul(K).rotate_left(29);
    }
    for &x in chunks.remainder() {
        h = (h ^ u64::from(x)).wrapping_mul(K).rotate_left(29);
    }
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        let client = |id, fd, lock| ClientRef {
            id,
            conn_time: 1_700_000_000,
            fd,
            lock,
            unread: vec![0, 0, 0, 28, 1],
        };
        let owner = LockPriv {
            restricted: true,
            owner_pid: 4242,
            owner_id: 7,
            owner_name: "vm-1".into(),
            owner_uuid: [9; 16],
        };
        State {
            servers: vec![
                ServerRef {
                    name: "admin".into(),
                    max_clients: 5000,
                    next_client_id: 3,
                    socks: vec![SockRef {
                        fd: 4,
                        unlink: true,
                    }],
                    clients: vec![client(2, 11, None)],
                },
                ServerRef {
                    name: "virtlockd".into(),
                    max_clients: 1024,
                    next_client_id: 9,
                    socks: vec![SockRef {
                        fd: 3,
                        unlink: false,
                    }],
                    clients: vec![client(5, 12, Some(owner)), client(6, 13, None)],
                },
            ],
            engine: lockspace::Snapshot::default(),
            magic: "77".into(),
            daemon: Some(DaemonRecord {
                started: 1_700_000_000,
                reexecs: 2,
                refusals: 3,
                forced_releases: 4,
                forced_terminations: 5,
                owners: vec![OwnerMeta {
                    name: "vm3".into(),
                    uuid: [3; 16],
                    id: 3,
                    pid: 4_194_011,
                    start_time: Some(77),
                }],
            }),
        }
    }

    fn encoded(s: &State, who: Origin) -> Vec<u8> {
        encode(
            who,
            &s.servers,
            &[21, 22],
            |w| lockspace::binfmt::encode(w, &s.engine),
            &s.daemon.clone().unwrap_or_default(),
            0,
        )
    }

    const WHO: Origin = Origin {
        pid: 77,
        start_time: 123_456,
        written_ns: 0xfeed,
    };

    #[test]
    fn round_trip() {
        let s = sample();
        let bin = encoded(&s, WHO);
        let (who, back) = decode(&bin, (77, 123_456)).unwrap();
        assert_eq!(who, WHO);
        assert_eq!(back.servers, s.servers);
        assert_eq!(back.engine, s.engine);
        assert_eq!(back.magic, "77");
        assert_eq!(back.daemon, s.daemon);
        let (sockets, locks) = check(&bin, (77, 123_456)).unwrap().fds().unwrap();
        assert_eq!(sockets, s.fds());
        assert_eq!(locks, [21, 22]);
    }

    #[test]
    fn another_process_instance_is_refused() {
        let bin = encoded(&sample(), WHO);
        assert!(matches!(
            decode(&bin, (77, 123_457)),
            Err(BinError::Foreign { pid: 77, .. })
        ));
        assert!(matches!(
            decode(&bin, (78, 123_456)),
            Err(BinError::Foreign { pid: 77, .. })
        ));
    }

    #[test]
    fn damage_is_detected() {
        let bin = encoded(&sample(), WHO);
        for i in 36..bin.len() {
            let mut b = bin.clone();
            b[i] ^= 0x40;
            assert!(decode(&b, (77, 123_456)).is_err(), "flip at {i}");
        }
        for cut in 0..bin.len() {
            assert!(decode(&bin[..cut], (77, 123_456)).is_err(), "cut at {cut}");
        }
    }
}
