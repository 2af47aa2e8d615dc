//! The config files we ship in `dist/`: they parse to the defaults, they document every
//! key, and the values they show are the real defaults.

mod common;

use common::{example_keys, uncomment_examples};
use vmlock_conf::{DaemonConfig, LockdConfig};

#[test]
fn embedded_virtlockd_conf_parses_to_the_defaults() {
    let parsed = DaemonConfig::parse(DaemonConfig::EMBEDDED_DEFAULT).map_err(|e| e.to_string());
    assert_eq!(parsed, Ok((DaemonConfig::default(), vec![])));
}

#[test]
fn embedded_qemu_lockd_conf_parses_to_the_file_read_defaults() {
    let parsed = LockdConfig::parse(LockdConfig::EMBEDDED_DEFAULT).map_err(|e| e.to_string());
    assert_eq!(parsed, Ok((LockdConfig::file_read_defaults(), vec![])));
}

#[test]
fn shipped_files_document_exactly_the_known_keys() {
    let daemon: Vec<String> = DaemonConfig::keys().map(str::to_owned).collect();
    assert_eq!(example_keys(DaemonConfig::EMBEDDED_DEFAULT), daemon);
    let lockd = example_keys(LockdConfig::EMBEDDED_DEFAULT);
    let mut known: Vec<&str> = LockdConfig::keys().collect();
    // The file explains auto_disk_leases before require_lease_for_disks, as libvirt's does.
    known.sort_by_key(|k| lockd.iter().position(|l| l == k));
    assert_eq!(lockd, known);
}

#[test]
fn values_shown_in_virtlockd_conf_are_the_defaults() {
    let live = uncomment_examples(DaemonConfig::EMBEDDED_DEFAULT);
    let (mut shown, warnings) = DaemonConfig::parse(&live).unwrap_or_else(|e| panic!("{e}"));
    assert!(warnings.is_empty(), "{warnings:?}");
    // These keys show an example, since their default is "unset" or 0.
    assert_eq!(shown.log_level, 3);
    assert!(shown.log_filters.is_some() && shown.log_outputs.is_some());
    assert!(shown.unix_sock_dir.is_some() && shown.host_id.is_some());
    assert_eq!(shown.etcd_endpoints.len(), 1);
    let d = DaemonConfig::default();
    shown.log_level = d.log_level;
    (shown.log_filters, shown.log_outputs) = (None, None);
    (shown.unix_sock_dir, shown.host_id) = (None, None);
    shown.etcd_endpoints.clear();
    // Unset by default (the state file's default depends on the user;
    // metrics are off).
    for opt in [
        &mut shown.etcd_state_file,
        &mut shown.watchdog_device,
        &mut shown.etcd_ca_file,
        &mut shown.etcd_cert_file,
        &mut shown.etcd_key_file,
        &mut shown.etcd_username,
        &mut shown.etcd_password_file,
        &mut shown.dlm_lock_info_file,
        &mut shown.metrics_listen,
    ] {
        assert!(opt.take().is_some(), "every example is shown");
    }
    assert_eq!(shown, d);
}

#[test]
fn values_shown_in_qemu_lockd_conf_are_the_defaults() {
    let live = uncomment_examples(LockdConfig::EMBEDDED_DEFAULT);
    let (shown, warnings) = LockdConfig::parse(&live).unwrap_or_else(|e| panic!("{e}"));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(shown.auto_disk_leases && !shown.require_lease_for_disks);
    assert_eq!(
        shown.file_lockspace_dir.as_deref(),
        Some("/var/lib/libvirt/lockd/files")
    );
    assert_eq!(
        shown.lvm_lockspace_dir.as_deref(),
        Some("/var/lib/libvirt/lockd/lvmvolumes")
    );
    assert_eq!(
        shown.scsi_lockspace_dir.as_deref(),
        Some("/var/lib/libvirt/lockd/scsivolumes")
    );
}

#[test]
fn uncommenting_keeps_prose_and_joins_multi_line_lists() {
    let text = "# prose = not a key? yes it is prose\n#a = [\n#  1,\n#  2\n#]\n# b = 1\n#c=2\n";
    assert_eq!(
        uncomment_examples(text),
        "# prose = not a key? yes it is prose\na = [\n  1,\n  2\n]\n# b = 1\nc=2\n"
    );
    assert_eq!(example_keys(text), ["a", "c"]);
}
