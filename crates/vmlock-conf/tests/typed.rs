//! The typed configs: every key, the defaults, warnings, and libvirt's type rules.

use std::path::Path;

use vmlock_conf::{ConfError, DaemonConfig, LockKindSetting, LockdConfig, Warning};

fn daemon(text: &str) -> (DaemonConfig, Vec<Warning>) {
    match DaemonConfig::parse(text) {
        Ok(parsed) => parsed,
        Err(e) => panic!("{text:?} should be accepted, got {e}"),
    }
}

fn lockd(text: &str) -> (LockdConfig, Vec<Warning>) {
    match LockdConfig::parse(text) {
        Ok(parsed) => parsed,
        Err(e) => panic!("{text:?} should be accepted, got {e}"),
    }
}

fn daemon_err(text: &str) -> String {
    match DaemonConfig::parse(text) {
        Ok(parsed) => panic!("{text:?} should be refused, got {parsed:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn daemon_defaults_are_libvirts_code_defaults() {
    let d = DaemonConfig::default();
    assert_eq!(
        (d.log_level, d.max_clients, d.admin_max_clients),
        (0, 1024, 5000)
    );
    assert_eq!((d.log_filters, d.log_outputs), (None, None));
    assert_eq!((d.unix_sock_dir, d.lock_kind), (None, LockKindSetting::Ofd));
    assert_eq!(
        (d.holder_kill_grace_ms, d.lock_backend.as_str()),
        (1600, "file")
    );
    assert!(d.etcd_endpoints.is_empty());
    assert_eq!((d.etcd_prefix.as_str(), d.host_id), ("/vmlock", None));
    assert_eq!((d.lease_ttl, d.on_lease_loss.as_str()), (10, "kill"));
    assert_eq!(daemon(""), (DaemonConfig::default(), vec![]));
}

#[test]
fn every_daemon_key_is_read() {
    let text = r#"
log_level = 1
log_filters = "1:locking 4:object"
log_outputs = '3:syslog:virtlockd'
max_clients = 7
admin_max_clients = 0
unix_sock_dir = "/tmp/socks"
lock_kind = "posix"
holder_kill_grace_ms = 250
refusal_names_holder = 0
metrics_listen = "127.0.0.1:9477"
lock_backend = "etcd"
etcd_endpoints = [ "http://a:2379", "http://b:2379", ]
etcd_prefix = "/locks"
host_id = "node-1"
lease_ttl = 30
on_lease_loss = "pause"
etcd_state_file = "/var/lib/x/state.json"
watchdog_device = "/dev/watchdog1"
etcd_ca_file = "/etc/x/ca.pem"
etcd_cert_file = "/etc/x/c.pem"
etcd_key_file = "/etc/x/k.pem"
etcd_username = "vmlock"
etcd_password_file = "/etc/x/pw"
dlm_lockspace = "vms"
dlm_lock_info_file = "/var/lib/x/dlm.json"
"#;
    let (d, warnings) = daemon(text);
    assert!(warnings.is_empty(), "{warnings:?}");
    let expected = DaemonConfig {
        log_level: 1,
        log_filters: Some("1:locking 4:object".into()),
        log_outputs: Some("3:syslog:virtlockd".into()),
        max_clients: 7,
        admin_max_clients: 0,
        unix_sock_dir: Some("/tmp/socks".into()),
        lock_kind: LockKindSetting::Posix,
        holder_kill_grace_ms: 250,
        refusal_names_holder: false,
        metrics_listen: Some("127.0.0.1:9477".into()),
        lock_backend: "etcd".into(),
        etcd_endpoints: vec!["http://a:2379".into(), "http://b:2379".into()],
        etcd_prefix: "/locks".into(),
        host_id: Some("node-1".into()),
        lease_ttl: 30,
        on_lease_loss: "pause".into(),
        etcd_state_file: Some("/var/lib/x/state.json".into()),
        watchdog_device: Some("/dev/watchdog1".into()),
        etcd_ca_file: Some("/etc/x/ca.pem".into()),
        etcd_cert_file: Some("/etc/x/c.pem".into()),
        etcd_key_file: Some("/etc/x/k.pem".into()),
        etcd_username: Some("vmlock".into()),
        etcd_password_file: Some("/etc/x/pw".into()),
        dlm_lockspace: "vms".into(),
        dlm_lock_info_file: Some("/var/lib/x/dlm.json".into()),
    };
    assert_eq!(d, expected);
    assert_eq!(DaemonConfig::keys().count(), 25);
    let (d, _) = daemon("lock_backend = \"dlm\"\n");
    assert_eq!(d.lock_backend, "dlm");
}

#[test]
fn a_single_string_is_a_one_element_list() {
    let (d, _) = daemon("etcd_endpoints = \"http://only:2379\"");
    assert_eq!(d.etcd_endpoints, ["http://only:2379"]);
    let (d, _) = daemon("etcd_endpoints = []");
    assert!(d.etcd_endpoints.is_empty());
}

#[test]
fn unsigned_keys_follow_virconfgetvalueuint() {
    assert_eq!(daemon("max_clients = 4294967295").0.max_clients, u32::MAX);
    assert_eq!(daemon("max_clients = +12").0.max_clients, 12);
    let cases = [
        (
            "max_clients = 4294967296",
            "line 1: max_clients must be in range 0:4294967295",
        ),
        (
            "max_clients = -1",
            "line 1: max_clients must be an unsigned integer",
        ),
        (
            "max_clients = -0",
            "line 1: max_clients must be an unsigned integer",
        ),
        (
            "\nmax_clients = \"5\"",
            "line 2: max_clients must be an unsigned integer",
        ),
        (
            "admin_max_clients = [5]",
            "line 1: admin_max_clients must be an unsigned integer",
        ),
        ("log_level = 5", "line 1: log_level must be in range 0:4"),
        (
            "lease_ttl = 0",
            "line 1: lease_ttl must be in range 1:4294967295",
        ),
        (
            "holder_kill_grace_ms = 'x'",
            "line 1: holder_kill_grace_ms must be an unsigned integer",
        ),
    ];
    for (text, message) in cases {
        assert_eq!(daemon_err(text), message, "{text:?}");
    }
}

#[test]
fn string_keys_refuse_other_types() {
    let cases = [
        ("log_filters = 1", "log_filters must be a string"),
        (
            "log_outputs = [\"3:stderr\"]",
            "log_outputs must be a string",
        ),
        ("etcd_prefix = -3", "etcd_prefix must be a string"),
        ("host_id = 0", "host_id must be a string"),
        (
            "etcd_endpoints = 5",
            "etcd_endpoints must be a string or a list of strings",
        ),
        (
            "etcd_endpoints = [\"a\", 5]",
            "etcd_endpoints must be a list of strings",
        ),
        ("lock_kind = 1", "lock_kind must be a string"),
        ("unix_sock_dir = 1", "unix_sock_dir must be a string"),
    ];
    for (text, message) in cases {
        assert_eq!(daemon_err(text), format!("line 1: {message}"), "{text:?}");
    }
}

#[test]
fn vmlock_keys_check_their_values() {
    let cases = [
        (
            "lock_kind = \"flock\"",
            r#"lock_kind must be one of "ofd", "posix", not "flock""#,
        ),
        (
            "lock_backend = \"zk\"",
            r#"lock_backend must be one of "file", "etcd", "dlm", not "zk""#,
        ),
        (
            "on_lease_loss = \"Kill\"",
            r#"on_lease_loss must be one of "kill", "pause", not "Kill""#,
        ),
        (
            "unix_sock_dir = \"run\"",
            r#"unix_sock_dir must be an absolute path, not "run""#,
        ),
    ];
    for (text, message) in cases {
        let err = DaemonConfig::parse(text).err();
        assert!(
            matches!(err, Some(ConfError::Invalid { line: 1, .. })),
            "{text:?}: {err:?}"
        );
        assert_eq!(
            err.map(|e| e.to_string()),
            Some(format!("line 1: {message}"))
        );
    }
    assert_eq!(
        daemon("lock_kind = 'ofd'").0.lock_kind,
        LockKindSetting::Ofd
    );
    assert_eq!(LockKindSetting::Posix.as_str(), "posix");
}

#[test]
fn errors_are_reported_in_libvirts_key_order() {
    // libvirt reads log_level before max_clients, whatever the order in the file.
    let err = daemon_err("max_clients = 'x'\nlog_level = 'y'\n");
    assert_eq!(err, "line 2: log_level must be an unsigned integer");
}

#[test]
fn error_variants_carry_key_and_line() {
    let err = DaemonConfig::parse("# c\n\nmax_clients = \"many\"").err();
    let ok = matches!(&err, Some(ConfError::Type { key, line: 3, expected: "an unsigned integer" })
        if key == "max_clients");
    assert!(ok, "{err:?}");
    let err = DaemonConfig::parse("log_level = 9").err();
    let ok = matches!(&err, Some(ConfError::Range { key, line: 1, min: 0, max: 4 }) if key == "log_level");
    assert!(ok, "{err:?}");
    let err = DaemonConfig::parse("a = [").err();
    assert!(matches!(err, Some(ConfError::Parse(ref p)) if p.line == 1 && p.column == 6));
    let shown = err.map(|e| e.to_string());
    assert_eq!(
        shown.as_deref(),
        Some("configuration file syntax error: 1:6: list is not closed with ]")
    );
}

#[test]
fn unknown_keys_are_warned_about_and_ignored() {
    let (d, warnings) = daemon("log_buffer_size = 64\nmax_clients = 3\nauto_disk_leases = 'x'\n");
    assert_eq!(d.max_clients, 3);
    let seen: Vec<(usize, &str)> = warnings.iter().map(|w| (w.line, w.key.as_str())).collect();
    assert_eq!(seen, [(1, "log_buffer_size"), (3, "auto_disk_leases")]);
    assert!(warnings.iter().all(|w| w.message.contains("unknown key")));
    assert_eq!(
        warnings[0].to_string(),
        "line 1: log_buffer_size: unknown key, ignored"
    );
}

#[test]
fn duplicate_keys_use_the_first_value_like_virtlockd() {
    // libvirt 9.0's virtlockd starts with this file and uses max_clients = 1: the second,
    // ill-typed value is never looked at.
    let (d, warnings) = daemon("max_clients = 1\nlog_level = 2\nmax_clients = \"x\"\n");
    assert_eq!((d.max_clients, d.log_level), (1, 2));
    assert_eq!(warnings.len(), 1);
    assert_eq!(
        warnings[0].to_string(),
        "line 3: max_clients: repeated key, ignored: the value on line 1 is used"
    );
    // ... and refuses this one, because the first value is the bad one.
    let err = daemon_err("max_clients = \"x\"\nmax_clients = 1\n");
    assert_eq!(err, "line 1: max_clients must be an unsigned integer");
}

#[test]
fn lockd_defaults_depend_on_whether_the_file_exists() {
    let missing = LockdConfig::default();
    assert!(missing.auto_disk_leases && missing.require_lease_for_disks);
    assert_eq!(
        (
            missing.file_lockspace_dir,
            missing.lvm_lockspace_dir,
            missing.scsi_lockspace_dir
        ),
        (None, None, None)
    );
    let (read, warnings) = lockd("# nothing set\n");
    assert!(warnings.is_empty());
    assert_eq!(read, LockdConfig::file_read_defaults());
    assert!(read.auto_disk_leases && !read.require_lease_for_disks);
}

#[test]
fn require_lease_for_disks_follows_auto_disk_leases_unless_set() {
    let cases = [
        ("auto_disk_leases = 0", (false, true)),
        ("auto_disk_leases = 1", (true, false)),
        (
            "require_lease_for_disks = 1\nauto_disk_leases = 1",
            (true, true),
        ),
        (
            "require_lease_for_disks = 0\nauto_disk_leases = 0",
            (false, false),
        ),
        ("require_lease_for_disks = 1", (true, true)),
    ];
    for (text, (auto, require)) in cases {
        let (c, _) = lockd(text);
        assert_eq!(
            (c.auto_disk_leases, c.require_lease_for_disks),
            (auto, require),
            "{text}"
        );
    }
}

#[test]
fn every_lockd_key_is_read() {
    let text = "file_lockspace_dir = \"/var/lib/libvirt/lockd/files\"\n\
                lvm_lockspace_dir = '/l'\nscsi_lockspace_dir = \"\"\"/s\"\"\"\n";
    let (c, warnings) = lockd(text);
    assert!(warnings.is_empty());
    assert_eq!(
        c.file_lockspace_dir.as_deref(),
        Some("/var/lib/libvirt/lockd/files")
    );
    assert_eq!(c.lvm_lockspace_dir.as_deref(), Some("/l"));
    assert_eq!(c.scsi_lockspace_dir.as_deref(), Some("/s"));
    assert_eq!(LockdConfig::keys().count(), 5);
}

#[test]
fn lockd_bools_follow_virconfgetvaluebool() {
    let cases = [
        (
            "auto_disk_leases = 2",
            "line 1: auto_disk_leases must be in range 0:1",
        ),
        (
            "auto_disk_leases = -0",
            "line 1: auto_disk_leases must be a boolean (0 or 1)",
        ),
        (
            "auto_disk_leases = \"yes\"",
            "line 1: auto_disk_leases must be a boolean (0 or 1)",
        ),
        (
            "require_lease_for_disks = [1]",
            "line 1: require_lease_for_disks must be a boolean (0 or 1)",
        ),
        (
            "file_lockspace_dir = 1",
            "line 1: file_lockspace_dir must be a string",
        ),
        (
            "x = 1\nscsi_lockspace_dir = []",
            "line 2: scsi_lockspace_dir must be a string",
        ),
    ];
    for (text, message) in cases {
        let err = LockdConfig::parse(text).err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some(message), "{text:?}");
    }
    let (_, warnings) = lockd("lock_manager = \"lockd\"");
    assert_eq!(warnings.len(), 1);
}

#[test]
fn loading_files() {
    let dir = tempfile::tempdir().map_err(|e| e.to_string());
    let dir = dir
        .as_ref()
        .map(|d| d.path())
        .unwrap_or_else(|e| panic!("tempdir: {e}"));
    let missing = dir.join("absent.conf");
    let err = DaemonConfig::load(&missing).err();
    assert!(
        matches!(&err, Some(ConfError::Io { path, .. }) if path == &missing),
        "{err:?}"
    );
    assert_eq!(
        DaemonConfig::load_optional(&missing).ok(),
        Some((DaemonConfig::default(), vec![]))
    );
    assert_eq!(
        LockdConfig::load_optional(&missing).ok(),
        Some((LockdConfig::default(), vec![]))
    );

    let written = write(
        dir,
        "v.conf",
        b"max_clients = 9 # nine\nlog_outputs = \"3:stderr\"\n",
    );
    let (d, _) = DaemonConfig::load(&written).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (d.max_clients, d.log_outputs.as_deref()),
        (9, Some("3:stderr"))
    );
    let written = write(
        dir,
        "l.conf",
        b"# \xff comment bytes need not be UTF-8\nauto_disk_leases = 0\n",
    );
    let (c, _) = LockdConfig::load_optional(&written).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (c.auto_disk_leases, c.require_lease_for_disks),
        (false, true)
    );
    let bad = write(dir, "bad.conf", b"auto_disk_leases = 3\n");
    assert!(matches!(
        LockdConfig::load_optional(&bad),
        Err(ConfError::Range { .. })
    ));
    // A directory is not a missing file: it is an error, as access()+read would be.
    assert!(matches!(
        LockdConfig::load_optional(dir),
        Err(ConfError::Io { .. })
    ));
}

#[test]
fn oversized_files_are_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let size = usize::try_from(vmlock_conf::MAX_CONFIG_FILE_SIZE).unwrap_or(usize::MAX);
    let mut big = vec![b'#'; size];
    big.push(b'\n');
    let path = write(dir.path(), "big.conf", &big);
    let err = DaemonConfig::load(&path).err();
    assert!(
        matches!(&err, Some(ConfError::Io { source, .. }) if source.kind() == std::io::ErrorKind::InvalidData)
    );
    big.truncate(size - 1);
    std::fs::write(&path, &big).unwrap_or_else(|e| panic!("{e}"));
    assert!(DaemonConfig::load(&path).is_ok());
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}
