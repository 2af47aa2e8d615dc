//! Serialising the engine's state for re-exec without copying it first.
//!
//! [`Engine::snapshot`] builds an owned [`Snapshot`](crate::Snapshot) (one
//! `String` per name and path, per lock); a re-exec only needs the JSON text,
//! so [`SnapshotView`] holds the table lock and serialises each part straight
//! from the tables. The output is the same, key for key, as serialising the
//! owned snapshot (a test checks it).

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::sync::MutexGuard;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use super::binfmt;
use crate::engine::Engine;
use crate::tables::{Resource, Tables};
use crate::types::AcquireFlags;
use vmlock_sys::lock::LockKind;

/// The engine's tables, locked, with resource ids grouped by lockspace
/// (sorted view) or only the lockspaces listed (unordered view: each part
/// is written in table order, in one sequential pass, with no lookup by
/// id). Hold it only while serialising: every engine call waits meanwhile.
#[derive(Debug)]
pub struct SnapshotView<'a> {
    st: MutexGuard<'a, Tables>,
    default: Vec<u64>,
    named: BTreeMap<String, Vec<u64>>,
    /// The id lists are empty: walk the table instead.
    unordered: bool,
}

/// One lockspace of a [`SnapshotView`] (serialises like a `LockspaceSnap`).
#[derive(Debug)]
pub struct LockspaceView<'v> {
    st: &'v Tables,
    directory: Option<&'v str>,
    /// `None`: every resource of the table in this lockspace.
    ids: Option<&'v [u64]>,
}

/// The named lockspaces, sorted by directory (serialises as a sequence).
#[derive(Debug)]
pub struct LockspacesView<'v>(&'v SnapshotView<'v>);

/// The lingering descriptors (serialises like `Vec<LingeringSnap>`).
#[derive(Debug)]
pub struct LingeringView<'v>(&'v Tables);

struct ResourceView<'r>(&'r Resource);

impl Engine {
    /// Locks the tables for serialising them (see [`SnapshotView`]), in
    /// the order the owned snapshot has (by resource id).
    pub fn snapshot_view(&self) -> SnapshotView<'_> {
        self.view(true)
    }

    /// [`Engine::snapshot_view`] in table order, for a reader that does not
    /// care about the order (the binary state): saves sorting every id.
    pub fn snapshot_view_unordered(&self) -> SnapshotView<'_> {
        self.view(false)
    }

    fn view(&self, sorted: bool) -> SnapshotView<'_> {
        let st = self.tables();
        let mut named: BTreeMap<String, Vec<u64>> =
            st.named.iter().map(|d| (d.clone(), Vec::new())).collect();
        let mut default = Vec::new();
        if !sorted {
            // Every resource's lockspace is in the set (acquire and restore
            // both check), so the set lists them all.
            return SnapshotView {
                st,
                default,
                named,
                unordered: true,
            };
        }
        let mut ids: Vec<u64> = st.resources.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let ls = st
                .resources
                .get(&id)
                .and_then(|r| r.names.first())
                .map_or("", |k| k.0.as_str());
            if ls.is_empty() {
                default.push(id);
            } else if let Some(v) = named.get_mut(ls) {
                v.push(id);
            } else {
                named.insert(ls.to_owned(), vec![id]);
            }
        }
        SnapshotView {
            st,
            default,
            named,
            unordered: false,
        }
    }
}

fn lockspace_of(r: &Resource) -> &str {
    r.names.first().map_or("", |k| k.0.as_str())
}

impl<'a> SnapshotView<'a> {
    /// The default lockspace.
    pub fn default_lockspace(&self) -> LockspaceView<'_> {
        LockspaceView {
            st: &self.st,
            directory: None,
            ids: (!self.unordered).then_some(self.default.as_slice()),
        }
    }

    /// The named lockspaces.
    pub fn lockspaces(&'a self) -> LockspacesView<'a> {
        LockspacesView(self)
    }

    /// The lingering descriptors.
    pub fn lingering(&self) -> LingeringView<'_> {
        LingeringView(&self.st)
    }

    /// [`Engine::set_fds_inheritable`] while the view is held. The view is
    /// `Sync`: a second thread can clear close-on-exec (one `fcntl` per
    /// lock) while this one serialises.
    pub fn set_fds_inheritable(&self, inherit: bool) -> std::io::Result<()> {
        super::snapshot::set_inheritable(&self.st, inherit)
    }

    /// Every descriptor number the tables own (resources, then lingering).
    pub fn raw_fds(&self) -> Vec<i32> {
        let res = self.st.resources.values().map(|r| r.file.as_raw_fd());
        let lingering = self.st.lingering.iter().map(|l| l.file.as_raw_fd());
        res.chain(lingering).collect()
    }

    /// How many resources the view holds.
    pub fn resource_count(&self) -> usize {
        self.st.resources.len()
    }

    /// [`SnapshotView::set_fds_inheritable`] for one of `of` equal shares
    /// of the descriptors (`share` in `0..of`), for `of` threads.
    pub fn set_fds_inheritable_share(
        &self,
        inherit: bool,
        share: usize,
        of: usize,
    ) -> std::io::Result<()> {
        super::snapshot::set_inheritable_share(&self.st, inherit, share, of)
    }

    /// Whether there is no lingering descriptor (the key is then omitted).
    pub fn lingering_is_empty(&self) -> bool {
        self.st.lingering.is_empty()
    }
}

impl Serialize for LockspaceView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(d) = self.directory {
            m.serialize_entry("directory", d)?;
        }
        let st = self.st;
        match self.ids {
            Some(ids) => {
                let res = ids.iter().filter_map(|id| st.resources.get(id));
                m.serialize_entry("resources", &Seq(res.map(ResourceView)))?;
            }
            None => {
                let dir = self.directory.unwrap_or("");
                let res = st.resources.values().filter(|r| lockspace_of(r) == dir);
                m.serialize_entry("resources", &Seq(res.map(ResourceView)))?;
            }
        }
        m.end()
    }
}

impl Serialize for LockspacesView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        s.collect_seq(v.named.iter().map(|(d, ids)| LockspaceView {
            st: &v.st,
            directory: Some(d),
            ids: (!v.unordered).then_some(ids.as_slice()),
        }))
    }
}

impl Serialize for LingeringView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            self.0
                .lingering
                .iter()
                .map(|l| LingerView(&l.path, l.file.as_raw_fd())),
        )
    }
}

struct LingerView<'l>(&'l str, i32);

impl Serialize for LingerView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("path", self.0)?;
        m.serialize_entry("fd", &self.1)?;
        m.end()
    }
}

/// Serialises an iterator as a sequence, once.
struct Seq<I>(I);

impl<I> Serialize for Seq<I>
where
    I: Iterator + Clone,
    I::Item: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.clone())
    }
}

/// A resource's path, written without building it first.
struct PathOf<'r>(&'r Resource);

impl Serialize for PathOf<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        match (r.path_override(), r.names.first()) {
            (Some(p), _) => s.serialize_str(p),
            (None, Some(k)) if !k.0.is_empty() => s.collect_str(&format_args!("{}/{}", k.0, k.1)),
            (None, Some(k)) => s.serialize_str(&k.1),
            (None, None) => s.serialize_str(""),
        }
    }
}

impl Serialize for ResourceView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let flags = AcquireFlags {
            shared: r.shared,
            autocreate: r.autocreate,
        };
        let mut m = s.serialize_map(None)?;
        let name = r.names.first().map_or("", |k| k.1.as_str());
        m.serialize_entry("name", name)?;
        m.serialize_entry("path", &PathOf(r))?;
        m.serialize_entry("fd", &r.file.as_raw_fd())?;
        m.serialize_entry("lockHeld", &r.lock_held)?;
        m.serialize_entry("flags", &flags.to_wire())?;
        m.serialize_entry("owners", &Seq(r.owners.iter().map(|o| o.pid)))?;
        let kind = match r.kind {
            LockKind::Ofd => "ofd",
            LockKind::Posix => "posix",
        };
        m.serialize_entry("vmlockLockKind", kind)?;
        if r.names.len() > 1 {
            let aliases = r.names.iter().skip(1).map(|k| (k.0.as_str(), k.1.as_str()));
            m.serialize_entry("vmlockAliases", &Seq(aliases))?;
        }
        m.serialize_entry("vmlockIdent", &r.ident)?;
        if r.owners.iter().any(|o| o.since != 0) {
            m.serialize_entry("vmlockSince", &Seq(r.owners.iter().map(|o| o.since)))?;
        }
        m.end()
    }
}

impl SnapshotView<'_> {
    /// Writes the tables in the binary form of [`binfmt`](super::binfmt) (the same
    /// bytes as [`binfmt::encode`](super::binfmt::encode) of [`Engine::snapshot`]).
    pub fn encode(&self, w: &mut binfmt::Writer) {
        if self.unordered {
            self.encode_table_order(w);
        } else {
            w.len(1 + self.named.len());
            w.u8(0);
            let res = |ids: &[u64]| -> Vec<&Resource> {
                ids.iter()
                    .filter_map(|id| self.st.resources.get(id))
                    .collect()
            };
            encode_resources(w, "", &res(&self.default));
            for (dir, ids) in &self.named {
                w.u8(1);
                w.str(dir);
                encode_resources(w, dir, &res(ids));
            }
        }
        w.len(self.st.lingering.len());
        for l in &self.st.lingering {
            w.str(&l.path);
            w.i32(l.file.as_raw_fd());
        }
    }

    /// The unordered view: one pass over the table, in its memory order,
    /// each lockspace's resources gathered in a writer of their own (the
    /// format lists them lockspace by lockspace), then joined.
    fn encode_table_order(&self, w: &mut binfmt::Writer) {
        let mut groups: Vec<(&str, Vec<&Resource>)> = std::iter::once("")
            .chain(self.named.keys().map(String::as_str))
            .map(|d| (d, Vec::new()))
            .collect();
        let per = self.st.resources.len() / groups.len().max(1);
        if let Some(g) = groups.last_mut() {
            g.1.reserve(per);
        }
        for r in self.st.resources.values() {
            let ls = lockspace_of(r);
            // Nearly always one named lockspace, the last group.
            match groups.iter_mut().rev().find(|(d, _)| *d == ls) {
                Some(g) => g.1.push(r),
                // Not in the set (never seen): a group of its own rather
                // than lost.
                None => groups.push((ls, vec![r])),
            }
        }
        w.len(groups.len());
        for (i, (dir, res)) in groups.iter().enumerate() {
            if i == 0 {
                w.u8(0);
            } else {
                w.u8(1);
                w.str(dir);
            }
            encode_resources(w, dir, res);
        }
    }
}

/// One lockspace's resources, in the given order.
fn encode_resources(w: &mut binfmt::Writer, dir: &str, res: &[&Resource]) {
    w.len(res.len());
    for &r in res {
        let flags = AcquireFlags {
            shared: r.shared,
            autocreate: r.autocreate,
        };
        let parts = binfmt::ResourceParts {
            name: r.names.first().map_or("", |k| k.1.as_str()),
            path: r.path_override(),
            fd: r.file.as_raw_fd(),
            lock_held: r.lock_held,
            flags: flags.to_wire(),
            kind: r.kind,
            ident: Some(r.ident),
        };
        let owners = r.owners.iter().map(|o| (o.pid, o.since));
        let aliases = r.names.iter().skip(1).map(|k| (k.0.as_str(), k.1.as_str()));
        binfmt::put_resource(w, dir, &parts, owners, aliases);
    }
}
