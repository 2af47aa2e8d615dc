//! `vmlockctl check`: the lock state of disks or their lease files, as text or JSON.

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

use crate::cli::CheckArgs;
use crate::error::CtlError;
use crate::holder::{State, probe};

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
}

/// Probes every path.
pub fn reports(args: &CheckArgs) -> Result<Vec<Report>, CtlError> {
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
            Ok(Report {
                path: path.clone(),
                holder: p.holder_text(),
                lease_file,
                state: p.state,
                pid: p.pid,
            })
        })
        .collect()
}

/// Runs `check`, writing to `out`.
pub fn run(args: &CheckArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    let reports = reports(args)?;
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
