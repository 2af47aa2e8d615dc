//! Debian's stock config files (package `libvirt-daemon-system`, 9.0 on bookworm) parse
//! unchanged, and so do their commented-out examples once uncommented.
//!
//! The package is fetched at test time, never committed: `apt-get download` (after one
//! `apt-get update -qq` if the first try fails), then `dpkg -x`. The extracted tree is
//! cached under `CARGO_TARGET_TMPDIR`, so later runs need no network. Without apt-get or
//! network the tests fail with a message saying so; they never pass silently.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{example_keys, uncomment_examples};
use vmlock_conf::syntax::{self, ConfFile, Value};
use vmlock_conf::{DaemonConfig, LockdConfig};

const PACKAGE: &str = "libvirt-daemon-system";

/// `<cache>/etc/libvirt`, fetching the package on first use.
fn conf_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join(PACKAGE);
        if !cache.join("etc/libvirt/virtlockd.conf").is_file() {
            fetch_into(&cache);
        }
        cache.join("etc/libvirt")
    })
}

fn fetch_into(cache: &Path) {
    let parent = cache.parent().unwrap_or(cache);
    let work = tempfile::tempdir_in(parent).unwrap_or_else(|e| panic!("temp dir: {e}"));
    if let Err(first) = run(work.path(), "apt-get", &["download", PACKAGE]) {
        // The package lists may be missing or stale (fresh containers): refresh once.
        let retry = run(work.path(), "apt-get", &["update", "-qq"])
            .and_then(|()| run(work.path(), "apt-get", &["download", PACKAGE]));
        if let Err(second) = retry {
            panic!(
                "cannot fetch Debian's {PACKAGE} package, which this test needs \
                 (apt-get and access to a Debian mirror are required).\n\
                 first try: {first}\nafter apt-get update: {second}"
            );
        }
    }
    let deb = std::fs::read_dir(work.path())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .unwrap_or_else(|| panic!("apt-get download left no .deb in {}", work.path().display()));
    let staging = work.path().join("x");
    let staging_str = staging.to_string_lossy().into_owned();
    let deb_str = deb.to_string_lossy().into_owned();
    run(work.path(), "dpkg", &["-x", &deb_str, &staging_str])
        .unwrap_or_else(|e| panic!("cannot unpack {deb_str} (dpkg is required): {e}"));
    // Another test binary run may have filled the cache meanwhile; either copy is fine.
    if std::fs::rename(&staging, cache).is_err() && !cache.join("etc/libvirt").is_dir() {
        panic!("cannot move {staging_str} to {}", cache.display());
    }
}

fn run(dir: &Path, program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(format!(
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        stderr.trim()
    ))
}

fn read(name: &str) -> String {
    let path = conf_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn generic(name: &str, text: &str) -> ConfFile {
    syntax::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn list_of_strings(file: &ConfFile, key: &str) -> Vec<String> {
    match file.get(key).map(|e| &e.value) {
        Some(Value::List(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        other => panic!("{key}: expected a list, got {other:?}"),
    }
}

#[test]
fn stock_virtlockd_conf_gives_the_defaults() {
    let parsed = DaemonConfig::parse(&read("virtlockd.conf")).map_err(|e| e.to_string());
    assert_eq!(parsed, Ok((DaemonConfig::default(), vec![])));
}

#[test]
fn stock_lockd_confs_give_the_file_read_defaults() {
    for name in ["qemu-lockd.conf", "libxl-lockd.conf"] {
        let parsed = LockdConfig::parse(&read(name)).map_err(|e| format!("{name}: {e}"));
        assert_eq!(
            parsed,
            Ok((LockdConfig::file_read_defaults(), vec![])),
            "{name}"
        );
    }
}

#[test]
fn every_stock_conf_file_parses() {
    // These must exist; the others in the directory are parsed too.
    let required = [
        "qemu-sanlock.conf",
        "libvirtd.conf",
        "qemu.conf",
        "virtlogd.conf",
    ];
    let mut names: Vec<String> = std::fs::read_dir(conf_dir())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".conf"))
        .collect();
    names.sort();
    for name in required {
        assert!(
            names.iter().any(|n| n == name),
            "{name} missing from {names:?}"
        );
    }
    for name in &names {
        let text = read(name);
        assert!(text.lines().count() > 10, "{name} looks truncated");
        let file = generic(name, &text);
        assert!(
            file.entries.is_empty(),
            "{name}: Debian ships every setting commented out"
        );
    }
}

#[test]
fn uncommented_examples_of_every_stock_file_parse() {
    for name in [
        "virtlockd.conf",
        "qemu-lockd.conf",
        "qemu-sanlock.conf",
        "libvirtd.conf",
        "qemu.conf",
    ] {
        let text = read(name);
        let file = generic(name, &uncomment_examples(&text));
        let keys: Vec<&str> = file.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, example_keys(&text), "{name}");
        assert!(keys.len() >= 5, "{name}: only {keys:?}");
    }
}

#[test]
fn uncommented_qemu_conf_has_its_lists() {
    let file = generic("qemu.conf", &uncomment_examples(&read("qemu.conf")));
    let acl = list_of_strings(&file, "cgroup_device_acl");
    assert_eq!(acl.first().map(String::as_str), Some("/dev/null"));
    assert!(
        acl.len() >= 7 && acl.iter().all(|p| p.starts_with("/dev/")),
        "{acl:?}"
    );
    let nvram = list_of_strings(&file, "nvram");
    assert!(
        nvram.len() >= 2 && nvram.iter().all(|p| p.contains(".fd:")),
        "{nvram:?}"
    );
    assert_eq!(list_of_strings(&file, "namespaces"), ["mount"]);
    let libvirtd = generic("libvirtd.conf", &uncomment_examples(&read("libvirtd.conf")));
    assert_eq!(
        list_of_strings(&libvirtd, "tls_allowed_dn_list"),
        ["DN1", "DN2"]
    );
}

#[test]
fn uncommented_lock_confs_give_their_sample_values() {
    let text = uncomment_examples(&read("virtlockd.conf"));
    let (d, warnings) = DaemonConfig::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        (d.log_level, d.max_clients, d.admin_max_clients),
        (3, 1024, 5)
    );
    assert_eq!(d.log_outputs.as_deref(), Some("3:syslog:virtlockd"));
    assert_eq!(
        d.log_filters.as_deref(),
        Some("1:locking 4:object 4:json 4:event 1:util")
    );

    let text = uncomment_examples(&read("qemu-lockd.conf"));
    let (c, warnings) = LockdConfig::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(!c.auto_disk_leases && c.require_lease_for_disks);
    assert_eq!(
        c.file_lockspace_dir.as_deref(),
        Some("/var/lib/libvirt/lockd/files")
    );
    assert_eq!(
        c.lvm_lockspace_dir.as_deref(),
        Some("/var/lib/libvirt/lockd/lvmvolumes")
    );
    assert_eq!(
        c.scsi_lockspace_dir.as_deref(),
        Some("/var/lib/libvirt/lockd/scsivolumes")
    );
}
