//! `acquire`, `release` and `register`: one short-lived connection each, acting for
//! an owner pid (default: the calling shell), as libvirtd does for a running VM.
//!
//! Locks taken this way belong to the owner pid, not to the connection: they stay
//! until `release` (or until a connection on which that pid registered itself closes).

use std::path::Path;

use vmlock::LockError;
use vmlock_client::Client;

use crate::cli::{LockArgs, RegisterArgs, ReleaseArgs};
use crate::error::CtlError;
use crate::exec::{acquire_all, create_lockspaces};
use crate::resources::{owner, parse_disk, wire_resources};

fn owner_pid(pid: Option<u32>) -> u32 {
    pid.unwrap_or_else(std::os::unix::process::parent_id)
}

fn resources(args: &LockArgs) -> Result<Vec<vmlock::lockd::WireResource>, CtlError> {
    let extra: Vec<_> = args
        .paths
        .iter()
        .map(|p| {
            let mut d = parse_disk(p);
            d.shared |= args.shared;
            d
        })
        .collect();
    wire_resources(&args.resources, &extra)
}

/// `acquire`.
pub fn acquire(socket: &Path, args: &LockArgs) -> Result<(), CtlError> {
    let resources = resources(args)?;
    create_lockspaces(socket, &resources)?;
    let owner = owner(&args.owner, owner_pid(args.pid), "vmlockctl")?;
    let mut client = Client::connect(socket)?;
    client.register(&owner)?;
    acquire_all(&mut client, &resources)
}

/// `release`.
pub fn release(socket: &Path, args: &LockArgs) -> Result<(), CtlError> {
    let resources = resources(args)?;
    let owner = owner(&args.owner, owner_pid(args.pid), "vmlockctl")?;
    let mut client = Client::connect(socket)?;
    client.register(&owner)?;
    for r in &resources {
        client
            .release_resource(&r.lockspace, &r.name)
            .map_err(|source| LockError::Resource {
                action: "release",
                resource: r.label.clone(),
                source,
            })?;
    }
    Ok(())
}

/// `release --force`: through the admin socket, one resource at a time;
/// the daemon refuses a live holder's lock unless --terminate is given.
pub fn force_release(
    admin: &Path,
    args: &ReleaseArgs,
    out: &mut dyn std::io::Write,
) -> Result<(), CtlError> {
    let resources = resources(&args.lock)?;
    let pid = args.lock.pid.unwrap_or(0);
    for r in &resources {
        let (released, terminated) =
            crate::inquiry::force_release(admin, &r.lockspace, &r.name, pid, args.terminate)
                .map_err(|e| CtlError::Inquiry(format!("{}: {e}", r.label)))?;
        let killed = if terminated > 0 {
            format!(", {terminated} holder(s) terminated first")
        } else {
            String::new()
        };
        writeln!(out, "{}: released ({released} acquire(s){killed})", r.label).map_err(
            |source| CtlError::Io {
                what: "cannot write output".into(),
                source,
            },
        )?;
    }
    Ok(())
}

/// `register`.
pub fn register(socket: &Path, args: &RegisterArgs) -> Result<(), CtlError> {
    let owner = owner(&args.owner, owner_pid(args.pid), "vmlockctl")?;
    let mut client = Client::connect(socket)?;
    client.register(&owner)?;
    if args.restrict {
        client.restrict()?;
    }
    Ok(())
}
