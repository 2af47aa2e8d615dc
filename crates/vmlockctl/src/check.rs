//! `vmlockctl check`: the lock state of disks or their lease files, as text or JSON.
//!
//! The daemon is asked first (its inquiry program on the admin socket names
//! the VM: name, UUID, pid, since when, and the host with the etcd back end);
//! when it cannot be asked (not root, no vmlockd) or holds nothing there,
//! the kernel's view is reported (`F_OFD_GETLK`: for an OFD lock, no pid).

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

use crate::cli::CheckArgs;
use crate::error::CtlError;
use crate::holder::{State, probe};
use crate::inquiry::{ListEntry, holder_text, list_rows};

/// One line (or JSON object) of output.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The path as given.
    pub path: String,
    /// The file probed (the path, or its lease file).
    pub lease_file: PathBuf,
    /// unlocked, shared, exclusive or missing.
    pub state: State,
    /// Holder pid for classic locks.
    pub pid: Option<i32>,
    /// Human-readable holder description.
    pub holder: Option<String>,
    /// Who holds it according to the daemon (empty: not asked, or it holds
    /// nothing there).
    pub holders: Vec<ListEntry>,
}

/// What the daemon behind `admin` holds at `path` (the path as given,
/// then its canonical form); empty if it cannot be asked.
fn daemon_holders(admin: &std::path::Path, path: &std::path::Path) -> Vec<ListEntry> {
    let mut tries = vec![path.to_string_lossy().into_owned()];
    if let Ok(c) = std::fs::canonicalize(path) {
        let c = c.to_string_lossy().into_owned();
        if c != tries[0] {
            tries.push(c);
        }
    }
    for p in tries {
        let filter = vmlock_proto::inquiry::ListFilter {
            path: Some(p),
            ..Default::default()
        };
        match list_rows(admin, filter) {
            Ok((rows, _)) if !rows.is_empty() => return rows,
            Ok(_) => {}
            Err(_) => return Vec::new(),
        }
    }
    Vec::new()
}

/// Probes every path, asking the daemon behind `admin` first.
pub fn reports(args: &CheckArgs, admin: Option<&std::path::Path>) -> Result<Vec<Report>, CtlError> {
    args.paths
        .iter()
        .map(|path| {
            let lease_file = match &args.lockspace_dir {
                Some(dir) => dir.join(vmlock::lockd::indirect_name(path)),
                None => PathBuf::from(path),
            };
            let p = probe(&lease_file).map_err(|source| CtlError::Io {
                what: format!("cannot check {}", lease_file.display()),
                source,
            })?;
            let holders = admin.map_or_else(Vec::new, |a| daemon_holders(a, &lease_file));
            let holder = if holders.is_empty() {
                p.holder_text()
            } else {
                Some(
                    holders
                        .iter()
                        .map(holder_text)
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            };
            let state = match (p.state, holders.first()) {
                // The daemon's word for a lock the kernel cannot see from
                // here (another host's, with the etcd back end).
                (State::Unlocked | State::Missing, Some(h)) if h.mode == "shared" => State::Shared,
                (State::Unlocked | State::Missing, Some(_)) => State::Exclusive,
                (s, _) => s,
            };
            Ok(Report {
                path: path.clone(),
                holder,
                lease_file,
                state,
                pid: p.pid,
                holders,
            })
        })
        .collect()
}

/// Runs `check`, writing to `out`.
pub fn run(
    args: &CheckArgs,
    admin: Option<&std::path::Path>,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let reports = reports(args, admin)?;
    let io = |source| CtlError::Io {
        what: "cannot write output".into(),
        source,
    };
    if args.json {
        let text = serde_json::to_string_pretty(&reports).map_err(|e| io(e.into()))?;
        writeln!(out, "{text}").map_err(io)?;
        return Ok(());
    }
    for r in &reports {
        let state = match r.state {
            State::Unlocked => "unlocked",
            State::Shared => "locked shared",
            State::Exclusive => "locked exclusive",
            State::Missing => "unlocked (no lease file)",
        };
        match &r.holder {
            Some(h) => writeln!(out, "{}: {state}, {h}", r.path),
            None => writeln!(out, "{}: {state}", r.path),
        }
        .map_err(io)?;
    }
    Ok(())
}
