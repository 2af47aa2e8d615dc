//! From command-line specs to the resources sent on the wire, using the lockd
//! driver's naming (`vmlock::lockd::naming`).
//!
//! ```text
//! --disk PATH             -> ("", PATH, 0)                         direct
//! --disk PATH:shared      -> ("", PATH, SHARED)
//! --lockspace-dir DIR     -> (DIR, sha256hex(PATH), AUTOCREATE[|SHARED])
//! --lease LOCKSPACE:KEY   -> (LOCKSPACE, KEY, 0)                   like <lease>
//! ```

use std::path::Path;

use vmlock::lockd::WireResource;
use vmlock::lockd::naming::disk_resource;
use vmlock::{Disk, Uuid};
use vmlock_conf::LockdConfig;
use vmlock_proto::lock::Owner;

use crate::cli::{OwnerArgs, ResourceArgs};
use crate::error::CtlError;

/// A disk spec `PATH[:shared]`.
pub fn parse_disk(spec: &str) -> Disk {
    match spec.strip_suffix(":shared") {
        Some(path) => Disk::shared(path),
        None => Disk::exclusive(spec),
    }
}

/// A lease spec `LOCKSPACE:KEY` (split at the last colon).
pub fn parse_lease(spec: &str) -> Result<WireResource, CtlError> {
    match spec.rsplit_once(':') {
        Some((ls, key)) if !ls.is_empty() && !key.is_empty() => Ok(WireResource {
            lockspace: ls.to_owned(),
            name: key.to_owned(),
            flags: 0,
            label: format!("lease {key} in {ls}"),
        }),
        _ => Err(CtlError::Usage(format!(
            "--lease {spec}: expected LOCKSPACE:KEY"
        ))),
    }
}

/// The driver config equivalent to the flags: direct, or indirect in `dir`.
pub fn config(lockspace_dir: Option<&str>) -> LockdConfig {
    LockdConfig {
        file_lockspace_dir: lockspace_dir.map(String::from),
        require_lease_for_disks: false,
        ..LockdConfig::file_read_defaults()
    }
}

/// Every resource, leases first then disks (libvirt's order).
pub fn wire_resources(
    args: &ResourceArgs,
    extra_disks: &[Disk],
) -> Result<Vec<WireResource>, CtlError> {
    let cfg = config(args.lockspace_dir.as_deref());
    let keys = vmlock::lockd::SystemDeviceKeys::default();
    let mut out = Vec::new();
    for l in &args.leases {
        out.push(parse_lease(l)?);
    }
    let disks = args.disks.iter().map(|s| parse_disk(s));
    for disk in disks.chain(extra_disks.iter().cloned()) {
        out.extend(disk_resource(&cfg, &disk, &keys)?);
    }
    if out.is_empty() {
        return Err(CtlError::Usage("no disk or lease given".into()));
    }
    Ok(out)
}

/// The lockspaces that must exist before acquiring: the lease dir and every
/// `--lease` lockspace (libvirt leaves the latter to the admin; we create it).
pub fn lockspaces(resources: &[WireResource]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in resources {
        if !r.lockspace.is_empty() && !out.contains(&r.lockspace) {
            out.push(r.lockspace.clone());
        }
    }
    out
}

/// A random UUID from the kernel (nil if unavailable).
fn random_uuid() -> Uuid {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .ok()
        .and_then(|s| Uuid::parse_str(s.trim()).ok())
        .unwrap_or_default()
}

/// The owner for REGISTER.
pub fn owner(args: &OwnerArgs, pid: u32, default_name: &str) -> Result<Owner, CtlError> {
    if args.id == 0 {
        return Err(CtlError::Usage("--id must not be 0".into()));
    }
    Ok(Owner {
        uuid: *args.uuid.unwrap_or_else(random_uuid).as_bytes(),
        name: args.name.clone().unwrap_or_else(|| default_name.to_owned()),
        id: args.id,
        pid,
    })
}

/// The base name of a command, for the default owner name.
pub fn command_name(cmd: &std::ffi::OsStr) -> String {
    Path::new(cmd)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "vmlockctl".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_and_lease_specs() {
        assert_eq!(parse_disk("/a:shared"), Disk::shared("/a"));
        assert_eq!(parse_disk("/a:b"), Disk::exclusive("/a:b"));
        let l = parse_lease("/leases/ls:key:1").expect("lease");
        assert_eq!(
            (l.lockspace.as_str(), l.name.as_str()),
            ("/leases/ls:key", "1")
        );
        assert!(parse_lease("nokey").is_err() && parse_lease(":k").is_err());
    }

    #[test]
    fn resources_are_named_like_lockd() {
        let args = ResourceArgs {
            disks: vec!["/img/a".into(), "/img/b:shared".into()],
            leases: vec!["/l/ls:k".into()],
            lockspace_dir: Some("/leases".into()),
        };
        let r = wire_resources(&args, &[]).expect("resources");
        assert_eq!(r[0].lockspace, "/l/ls");
        assert_eq!(r[1].name, vmlock::lockd::indirect_name("/img/a"));
        assert_eq!(r[1].flags, vmlock_client::FLAG_AUTOCREATE);
        assert_eq!(
            r[2].flags,
            vmlock_client::FLAG_AUTOCREATE | vmlock_client::FLAG_SHARED
        );
        assert_eq!(lockspaces(&r), ["/l/ls", "/leases"]);
    }

    #[test]
    fn owner_defaults_and_checks() {
        let args = OwnerArgs {
            name: None,
            uuid: None,
            id: 1,
        };
        let o = owner(&args, 77, "qemu").expect("owner");
        assert_eq!((o.name.as_str(), o.id, o.pid), ("qemu", 1, 77));
        let zero = OwnerArgs { id: 0, ..args };
        assert!(matches!(owner(&zero, 1, "x"), Err(CtlError::Usage(_))));
        assert_eq!(
            command_name("/usr/bin/qemu-system-x86_64".as_ref()),
            "qemu-system-x86_64"
        );
    }
}
