//! A compact binary form of a [`Snapshot`] for vmlockd-to-vmlockd re-exec.
//!
//! The JSON state (virtlockd's format) stays the interchange format with
//! libvirt's daemon; between two vmlockd images the same content travels in
//! this form, which costs a fraction of the JSON to write and to read (no
//! text formatting, no key matching, no escapes). Little-endian, no padding:
//!
//! ```text
//! str      = u32 len, bytes (UTF-8)
//! snapshot = u32 n_lockspaces, lockspace*, u32 n_lingering, (str path, i32 fd)*
//! lockspace= u8 has_directory, [str directory], u32 n_resources, resource*
//! resource = str name, u8 bits, [str path], i32 fd, u32 wire_flags,
//!            [u64 dev, u64 ino], u32 n_owners, (u32 pid, u32 since)*,
//!            u32 n_aliases, (str lockspace, str name)*
//! since    = when that owner acquired it, seconds since the epoch (0: unknown)
//! bits     = 1 lock_held | 2 posix | 4 has_ident | 8 path = directory "/" name
//! ```
//!
//! The first lockspace is the default one. [`Reader`] checks every length
//! against the bytes that are left, so a truncated or corrupt buffer is an
//! error, never a panic or a huge allocation.

use super::snapshot::{LingeringSnap, LockspaceSnap, ResourceSnap, Snapshot};
use vmlock_sys::lock::LockKind;

const LOCK_HELD: u8 = 1;
const POSIX: u8 = 2;
const HAS_IDENT: u8 = 4;
const PATH_IN_DIR: u8 = 8;

/// Appends little-endian values to a buffer.
#[derive(Debug, Default)]
pub struct Writer {
    /// The bytes written so far.
    pub buf: Vec<u8>,
}

impl Writer {
    /// A writer with `n` bytes reserved.
    pub fn with_capacity(n: usize) -> Writer {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// A `u32`.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// An `i32`.
    pub fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A `u64`.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// An `i64`.
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A count (saturating at `u32::MAX`, which no reader accepts).
    pub fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }

    /// Length-prefixed bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.buf.extend_from_slice(b);
    }

    /// A length-prefixed string.
    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
}

/// A malformed buffer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("binary state: {0}")]
pub struct DecodeError(pub &'static str);

/// Reads what [`Writer`] wrote, checking every length.
#[derive(Debug)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads from `buf`.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { rest: buf }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.rest.len() {
            return Err(DecodeError("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    /// A `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_le_bytes)
    }

    /// An `i32`.
    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        self.array().map(i32::from_le_bytes)
    }

    /// A `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_le_bytes)
    }

    /// An `i64`.
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        self.array().map(i64::from_le_bytes)
    }

    /// A count of items each at least `min_size` bytes long: larger than
    /// what is left is an error (so nothing is reserved for a lie).
    pub fn count(&mut self, min_size: usize) -> Result<usize, DecodeError> {
        let n = usize::try_from(self.u32()?).map_err(|_| DecodeError("count"))?;
        if n.saturating_mul(min_size.max(1)) > self.rest.len() {
            return Err(DecodeError("count larger than the data"));
        }
        Ok(n)
    }

    /// Length-prefixed bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.count(1)?;
        self.take(n)
    }

    /// A length-prefixed UTF-8 string.
    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| DecodeError("string is not UTF-8"))
    }

    /// An owned string.
    pub fn string(&mut self) -> Result<String, DecodeError> {
        self.str().map(str::to_owned)
    }
}

/// Writes one resource; `dir` is its lockspace's directory ("" default).
pub(crate) fn put_resource<'s>(
    w: &mut Writer,
    dir: &str,
    r: &ResourceParts<'_>,
    owners: impl ExactSizeIterator<Item = (u32, u32)>,
    aliases: impl ExactSizeIterator<Item = (&'s str, &'s str)>,
) {
    // The path is only written when the lockspace and name don't give it.
    let in_dir = !dir.is_empty()
        && r.path
            .is_none_or(|p| crate::names::is_derived_path(dir, r.name, p));
    let bit = |on: bool, b: u8| if on { b } else { 0 };
    let bits = bit(r.lock_held, LOCK_HELD)
        | bit(r.kind == LockKind::Posix, POSIX)
        | bit(r.ident.is_some(), HAS_IDENT)
        | bit(in_dir, PATH_IN_DIR);
    w.str(r.name);
    w.u8(bits);
    if !in_dir {
        w.str(r.path.unwrap_or(r.name));
    }
    w.i32(r.fd);
    w.u32(r.flags);
    if let Some((dev, ino)) = r.ident {
        w.u64(dev);
        w.u64(ino);
    }
    w.len(owners.len());
    for (pid, since) in owners {
        w.u32(pid);
        w.u32(since);
    }
    w.len(aliases.len());
    for (l, n) in aliases {
        w.str(l);
        w.str(n);
    }
}

/// The scalar fields of one resource, borrowed (from the engine's tables
/// or from a [`ResourceSnap`]).
pub(crate) struct ResourceParts<'a> {
    pub name: &'a str,
    /// `None`: the path the lockspace and name give.
    pub path: Option<&'a str>,
    pub fd: i32,
    pub lock_held: bool,
    pub flags: u32,
    pub kind: LockKind,
    pub ident: Option<(u64, u64)>,
}

fn resource(r: &mut Reader<'_>, dir: Option<&str>) -> Result<ResourceSnap, DecodeError> {
    let name = r.string()?;
    let bits = r.u8()?;
    let path = match dir {
        Some(d) if bits & PATH_IN_DIR != 0 => {
            let mut p = String::with_capacity(d.len() + 1 + name.len());
            p.push_str(d);
            p.push('/');
            p.push_str(&name);
            p
        }
        _ if bits & PATH_IN_DIR != 0 => return Err(DecodeError("path in no directory")),
        _ => r.string()?,
    };
    let fd = r.i32()?;
    let flags = r.u32()?;
    let ident = if bits & HAS_IDENT != 0 {
        Some((r.u64()?, r.u64()?))
    } else {
        None
    };
    let n = r.count(8)?;
    let mut owners = Vec::with_capacity(n);
    let mut since = Vec::with_capacity(n);
    for _ in 0..n {
        owners.push(r.u32()?);
        since.push(r.u32()?);
    }
    let n = r.count(8)?;
    let aliases = (0..n)
        .map(|_| Ok((r.string()?, r.string()?)))
        .collect::<Result<Vec<_>, DecodeError>>()?;
    Ok(ResourceSnap {
        name,
        path,
        fd,
        lock_held: bits & LOCK_HELD != 0,
        flags,
        owners,
        lock_kind: if bits & POSIX != 0 {
            LockKind::Posix
        } else {
            LockKind::Ofd
        },
        aliases,
        ident,
        since,
    })
}

fn lockspace(r: &mut Reader<'_>) -> Result<LockspaceSnap, DecodeError> {
    let directory = match r.u8()? {
        0 => None,
        1 => Some(r.string()?),
        _ => return Err(DecodeError("bad directory flag")),
    };
    // A resource takes at least 4 + 1 + 4 + 4 + 4 + 4 bytes.
    let n = r.count(21)?;
    let mut resources = Vec::with_capacity(n);
    for _ in 0..n {
        resources.push(resource(r, directory.as_deref())?);
    }
    Ok(LockspaceSnap {
        directory,
        resources,
    })
}

/// Reads a snapshot written by [`crate::SnapshotView::encode`] or
/// [`encode`].
pub fn decode(r: &mut Reader<'_>) -> Result<Snapshot, DecodeError> {
    let n = r.count(5)?;
    if n == 0 {
        return Err(DecodeError("no default lockspace"));
    }
    let default = lockspace(r)?;
    if default.directory.is_some() {
        return Err(DecodeError("the first lockspace must be the default one"));
    }
    let lockspaces = (1..n)
        .map(|_| lockspace(r))
        .collect::<Result<Vec<_>, _>>()?;
    let n = r.count(8)?;
    let lingering = (0..n)
        .map(|_| {
            Ok(LingeringSnap {
                path: r.string()?,
                fd: r.i32()?,
            })
        })
        .collect::<Result<Vec<_>, DecodeError>>()?;
    Ok(Snapshot {
        default,
        lockspaces,
        lingering,
    })
}

/// Writes an owned snapshot (the same bytes the view of the same tables
/// writes; tests compare the two).
pub fn encode(w: &mut Writer, s: &Snapshot) {
    w.len(1 + s.lockspaces.len());
    for ls in std::iter::once(&s.default).chain(&s.lockspaces) {
        match &ls.directory {
            None => w.u8(0),
            Some(d) => {
                w.u8(1);
                w.str(d);
            }
        }
        let dir = ls.directory.as_deref().unwrap_or("");
        w.len(ls.resources.len());
        for r in &ls.resources {
            let parts = ResourceParts {
                name: &r.name,
                path: Some(&r.path),
                fd: r.fd,
                lock_held: r.lock_held,
                flags: r.flags,
                kind: r.lock_kind,
                ident: r.ident,
            };
            let aliases = r.aliases.iter().map(|(l, n)| (l.as_str(), n.as_str()));
            let owners = (0..r.owners.len()).map(|i| (r.owners[i], r.since_of(i)));
            put_resource(w, dir, &parts, owners, aliases);
        }
    }
    w.len(s.lingering.len());
    for l in &s.lingering {
        w.str(&l.path);
        w.i32(l.fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(name: &str, path: &str, fd: i32) -> ResourceSnap {
        ResourceSnap {
            name: name.into(),
            path: path.into(),
            fd,
            lock_held: true,
            flags: 3,
            owners: vec![7, 7, 9],
            lock_kind: LockKind::Ofd,
            aliases: vec![("/ls".into(), "other".into())],
            ident: Some((66, 1234)),
            since: vec![1_700_000_000, 0, 1_700_000_009],
        }
    }

    fn sample() -> Snapshot {
        let mut posix = res("/var/disk.img", "/var/disk.img", 5);
        posix.lock_kind = LockKind::Posix;
        posix.ident = None;
        posix.lock_held = false;
        posix.aliases.clear();
        Snapshot {
            default: LockspaceSnap {
                directory: None,
                resources: vec![posix],
            },
            lockspaces: vec![LockspaceSnap {
                directory: Some("/ls".into()),
                resources: vec![res("abc", "/ls/abc", 6), res("def", "/elsewhere/def", 7)],
            }],
            lingering: vec![LingeringSnap {
                path: "/var/x".into(),
                fd: 9,
            }],
        }
    }

    #[test]
    fn round_trip() {
        let s = sample();
        let mut w = Writer::default();
        encode(&mut w, &s);
        let mut r = Reader::new(&w.buf);
        assert_eq!(decode(&mut r).unwrap(), s);
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn path_inside_its_directory_is_not_repeated() {
        let s = sample();
        let mut w = Writer::default();
        encode(&mut w, &s);
        let text = String::from_utf8_lossy(&w.buf);
        assert!(!text.contains("/ls/abc"), "{text}");
        assert!(text.contains("/elsewhere/def"));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut w = Writer::default();
        encode(&mut w, &sample());
        for cut in 0..w.buf.len() {
            let mut r = Reader::new(&w.buf[..cut]);
            assert!(decode(&mut r).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn corrupt_bytes_never_panic() {
        let mut w = Writer::default();
        encode(&mut w, &sample());
        for i in 0..w.buf.len() {
            for x in [0u8, 0xff, 0x80] {
                let mut b = w.buf.clone();
                b[i] ^= x.max(1);
                let _ = decode(&mut Reader::new(&b));
            }
        }
    }

    #[test]
    fn a_huge_count_is_refused_without_allocating() {
        let mut w = Writer::default();
        w.u32(u32::MAX);
        assert_eq!(
            decode(&mut Reader::new(&w.buf)),
            Err(DecodeError("count larger than the data"))
        );
    }
}
