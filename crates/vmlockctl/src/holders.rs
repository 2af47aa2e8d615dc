//! `vmlockctl holders`: who holds disks cluster-wide (etcd back end).
//!
//! ```text
//! virtlockd.conf ─► etcd_endpoints, etcd_prefix, TLS, auth
//! PATH           ─► ("", PATH)                    direct, as lockd.so names disks
//! PATH + --lockspace-dir DIR ─► (DIR, sha256(PATH)) indirect lease
//! --lease LS:KEY ─► (LS, KEY)
//!        ─► GET <prefix>/locks/<resource>/… ─► "host, pid, VM name and uuid" per holder
//! ```
//! Read-only: no lease is taken, nothing is locked.

use std::io::Write;

use serde::Serialize;

use crate::cli::HoldersArgs;
use crate::error::CtlError;

/// One holder, as printed.
#[derive(Debug, Serialize)]
pub struct HolderLine {
    /// The holding host's `host_id`.
    pub host: String,
    /// The owner pid on that host.
    pub pid: u32,
    /// VM name, if known.
    pub vm: Option<String>,
    /// VM UUID, if known.
    pub uuid: Option<String>,
    /// Shared rather than exclusive.
    pub shared: bool,
}

/// One resource's report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The disk path or `LOCKSPACE:KEY` as given.
    pub resource: String,
    /// The lockspace (`""`: the default, direct lockspace).
    pub lockspace: String,
    /// The resource name in it.
    pub name: String,
    /// Every holder, cluster-wide.
    pub holders: Vec<HolderLine>,
}

/// The resources to look up, named as libvirt's lockd driver names them.
pub fn targets(args: &HoldersArgs) -> Result<Vec<(String, String, String)>, CtlError> {
    let mut out = Vec::new();
    for path in &args.paths {
        let (ls, name) = match &args.lockspace_dir {
            Some(dir) => (dir.clone(), vmlock::lockd::indirect_name(path)),
            None => (String::new(), path.clone()),
        };
        out.push((path.clone(), ls, name));
    }
    for lease in &args.leases {
        let Some((ls, key)) = lease
            .rsplit_once(':')
            .filter(|(l, k)| !l.is_empty() && !k.is_empty())
        else {
            return Err(CtlError::Usage(format!(
                "--lease {lease}: expected LOCKSPACE:KEY"
            )));
        };
        out.push((lease.clone(), ls.to_owned(), key.to_owned()));
    }
    if out.is_empty() {
        return Err(CtlError::Usage("name at least one PATH or --lease".into()));
    }
    Ok(out)
}

/// Runs `holders`, writing to `out`.
pub fn run(args: &HoldersArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    let targets = targets(args)?;
    let reports = lookup(args, targets)?;
    let io = |source| CtlError::Io {
        what: "cannot write output".into(),
        source,
    };
    if args.json {
        let text = serde_json::to_string_pretty(&reports).map_err(|e| io(e.into()))?;
        return writeln!(out, "{text}").map_err(io);
    }
    for r in &reports {
        if r.holders.is_empty() {
            writeln!(out, "{}: free", r.resource).map_err(io)?;
        }
        for h in &r.holders {
            let kind = if h.shared { "shared" } else { "exclusive" };
            let mut line = format!("{}: {kind}, host {}, pid {}", r.resource, h.host, h.pid);
            if let Some(vm) = &h.vm {
                line.push_str(&format!(", vm {vm}"));
            }
            if let Some(uuid) = &h.uuid {
                line.push_str(&format!(", uuid {uuid}"));
            }
            writeln!(out, "{line}").map_err(io)?;
        }
    }
    Ok(())
}

#[cfg(feature = "etcd")]
fn lookup(
    args: &HoldersArgs,
    targets: Vec<(String, String, String)>,
) -> Result<Vec<Report>, CtlError> {
    use std::path::PathBuf;
    let config = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from("/etc/libvirt/virtlockd.conf"));
    let usage = |m: String| CtlError::Usage(m);
    let (conf, _) = vmlock_conf::DaemonConfig::load(&config)
        .map_err(|e| usage(format!("{}: {e}", config.display())))?;
    if conf.etcd_endpoints.is_empty() {
        return Err(usage(format!("{}: no etcd_endpoints", config.display())));
    }
    let cfg = vmlock_etcd::EtcdConfig::from_daemon(&conf, "vmlockctl", &PathBuf::new())
        .map_err(|e| usage(e.to_string()))?;
    let mut reports = Vec::new();
    for (resource, lockspace, name) in targets {
        let key = lockspace::ResourceKey {
            lockspace: lockspace.clone(),
            name: name.clone(),
        };
        let found = vmlock_etcd::query::holders(&cfg, &key).map_err(|e| CtlError::Io {
            what: format!("cannot ask etcd about {resource}"),
            source: std::io::Error::other(e),
        })?;
        let holders = found
            .into_iter()
            .map(|h| HolderLine {
                host: h.host,
                pid: h.pid,
                vm: h.vm,
                uuid: h.uuid,
                shared: h.shared,
            })
            .collect();
        reports.push(Report {
            resource,
            lockspace,
            name,
            holders,
        });
    }
    Ok(reports)
}

#[cfg(not(feature = "etcd"))]
fn lookup(_: &HoldersArgs, _: Vec<(String, String, String)>) -> Result<Vec<Report>, CtlError> {
    Err(CtlError::Usage(
        "this vmlockctl was built without the etcd back end (cargo build --features etcd)".into(),
    ))
}
