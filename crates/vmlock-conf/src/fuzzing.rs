//! Entry point shared by the cargo-fuzz target `parse_config` in `/fuzz` and the corpus
//! replay test, so both run the same checks over untrusted config bytes.
//!
//! A panic is a finding. Checked for every input:
//! * the parser never panics, and an error points inside the input (line and column);
//! * entries come in file order, with keys of the name grammar;
//! * whatever parses, written back with `Display` (`key = value` per line), parses to the
//!   same keys and values, unless a string cannot be written at all (see [`writable`]);
//! * the typed builders never panic, depend on the values only (the written-back file
//!   builds the same config, or fails on the same key), and whatever they accept is in
//!   range and taken from the first entry of its key.

// A panic here is how a broken invariant is reported to the fuzzer; this module is never
// called by the daemon or the plugin.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use crate::error::{ConfError, Warning};
use crate::syntax::{self, ConfFile, Value};
use crate::{DaemonConfig, LockKindSetting, LockdConfig};

/// Parses `data` as a config file and checks the parser's and the builders' invariants.
pub fn fuzz_entry_parse_config(data: &[u8]) {
    let file = match syntax::parse_bytes(data) {
        Ok(file) => file,
        Err(e) => {
            let (last_line, _) = syntax::line_column(data, data.len());
            assert!(e.line >= 1 && e.line <= last_line, "{e}");
            assert!(e.column >= 1, "{e}");
            return;
        }
    };
    check_entries(data, &file);
    let daemon = DaemonConfig::from_file(&file);
    let lockd = LockdConfig::from_file(&file);
    check_daemon(&file, &daemon);
    check_lockd(&file, &lockd);
    if let Ok(text) = std::str::from_utf8(data) {
        assert_eq!(same_daemon(&DaemonConfig::parse(text), &daemon), Ok(()));
    }
    if !file.entries.iter().all(|e| writable(&e.value)) {
        return;
    }
    let text = write_back(&file);
    let again = syntax::parse(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    let pairs = |f: &ConfFile| -> Vec<(String, Value)> {
        f.entries
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect()
    };
    assert_eq!(pairs(&again), pairs(&file), "written back as {text:?}");
    assert_eq!(
        same_daemon(&DaemonConfig::from_file(&again), &daemon),
        Ok(())
    );
    assert_eq!(same_lockd(&LockdConfig::from_file(&again), &lockd), Ok(()));
}

fn check_entries(data: &[u8], file: &ConfFile) {
    let (last_line, _) = syntax::line_column(data, data.len());
    let mut prev = (0, 0);
    for e in &file.entries {
        let mut chars = e.key.bytes();
        assert!(chars.next().is_some_and(|b| b.is_ascii_alphabetic()));
        assert!(chars.all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        assert!(e.line >= 1 && e.line <= last_line && e.column >= 1);
        assert!((e.line, e.column) > prev, "entries out of file order");
        prev = (e.line, e.column);
    }
}

/// Whether `Display` can write `v` so that it parses back. The file syntax has no escapes:
/// a string holding a line break, or both kinds of quote, can only be written
/// triple-quoted, and a triple-quoted string ends at the first `"""`, so it can hold
/// neither `"""` nor a final `"`. The parser can still produce such strings, because a
/// string value ends at its first NUL (`"""a"<NUL>"""` is the string `a"`).
pub fn writable(v: &Value) -> bool {
    match v {
        Value::String(s) => {
            let triple = s.contains(['\n', '\r']) || (s.contains('"') && s.contains('\''));
            !triple || !(s.ends_with('"') || s.contains("\"\"\""))
        }
        Value::List(items) => items.iter().all(writable),
        Value::Int(_) | Value::ULong(_) => true,
    }
}

fn write_back(file: &ConfFile) -> String {
    file.entries
        .iter()
        .map(|e| format!("{} = {}\n", e.key, e.value))
        .collect()
}

fn check_daemon(file: &ConfFile, built: &Result<(DaemonConfig, Vec<Warning>), ConfError>) {
    let Ok((c, warnings)) = built else {
        return;
    };
    assert!(c.log_level <= 4 && c.lease_ttl >= 1);
    assert!(
        c.unix_sock_dir
            .as_deref()
            .is_none_or(|d| d.starts_with('/'))
    );
    assert!(["file", "etcd"].contains(&c.lock_backend.as_str()));
    assert!(["kill", "pause"].contains(&c.on_lease_loss.as_str()));
    if let Some(Value::ULong(n)) = file.get("max_clients").map(|e| &e.value) {
        assert_eq!(u64::from(c.max_clients), *n);
    }
    if let Some(Value::String(s)) = file.get("lock_kind").map(|e| &e.value) {
        assert_eq!(s, c.lock_kind.as_str());
    } else {
        assert_eq!(c.lock_kind, LockKindSetting::Ofd);
    }
    if let Some(Value::String(s)) = file.get("log_filters").map(|e| &e.value) {
        assert_eq!(c.log_filters.as_ref(), Some(s));
    }
    check_warnings(file, warnings, |k| DaemonConfig::keys().any(|n| n == k));
}

fn check_lockd(file: &ConfFile, built: &Result<(LockdConfig, Vec<Warning>), ConfError>) {
    let Ok((c, warnings)) = built else {
        return;
    };
    let flag = |key: &str| match file.get(key).map(|e| &e.value) {
        Some(Value::ULong(n)) => Some(*n == 1),
        _ => None,
    };
    let auto = flag("auto_disk_leases");
    assert_eq!(c.auto_disk_leases, auto.unwrap_or(true));
    let require = flag("require_lease_for_disks");
    assert_eq!(
        c.require_lease_for_disks,
        require.unwrap_or(!c.auto_disk_leases)
    );
    check_warnings(file, warnings, |k| LockdConfig::keys().any(|n| n == k));
}

/// One warning per ignored entry: unknown keys and repeats of known keys, in file order.
fn check_warnings(file: &ConfFile, warnings: &[Warning], known: impl Fn(&str) -> bool) {
    let ignored: Vec<(usize, &str)> = file
        .entries
        .iter()
        .enumerate()
        .filter(|(i, e)| !known(&e.key) || file.entries[..*i].iter().any(|f| f.key == e.key))
        .map(|(_, e)| (e.line, e.key.as_str()))
        .collect();
    let warned: Vec<(usize, &str)> = warnings.iter().map(|w| (w.line, w.key.as_str())).collect();
    assert_eq!(warned, ignored);
}

/// The parts of a build result that must not depend on where entries sit in the file.
fn outcome<C: PartialEq + Clone>(
    r: &Result<(C, Vec<Warning>), ConfError>,
) -> Result<(C, Vec<String>), String> {
    match r {
        Ok((c, w)) => Ok((c.clone(), w.iter().map(|w| w.key.clone()).collect())),
        Err(ConfError::Parse(_)) => Err("syntax".to_owned()),
        Err(ConfError::Io { .. }) => Err("io".to_owned()),
        Err(
            ConfError::Type { key, .. }
            | ConfError::Range { key, .. }
            | ConfError::Invalid { key, .. },
        ) => Err(key.clone()),
    }
}

fn same_daemon(
    a: &Result<(DaemonConfig, Vec<Warning>), ConfError>,
    b: &Result<(DaemonConfig, Vec<Warning>), ConfError>,
) -> Result<(), String> {
    let (a, b) = (outcome(a), outcome(b));
    if a == b {
        Ok(())
    } else {
        Err(format!("{a:?} != {b:?}"))
    }
}

fn same_lockd(
    a: &Result<(LockdConfig, Vec<Warning>), ConfError>,
    b: &Result<(LockdConfig, Vec<Warning>), ConfError>,
) -> Result<(), String> {
    let (a, b) = (outcome(a), outcome(b));
    if a == b {
        Ok(())
    } else {
        Err(format!("{a:?} != {b:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_accepts_short_and_real_input() {
        for data in [
            &b""[..],
            b"\n",
            b"a",
            b"a = 1",
            b"max_clients = 7\nmax_clients = 8 # again\nx = [ \"a\", -0 ]\n",
            b"a = \"\"\"x\ny\"\"\"",
        ] {
            fuzz_entry_parse_config(data);
        }
        fuzz_entry_parse_config(DaemonConfig::EMBEDDED_DEFAULT.as_bytes());
        fuzz_entry_parse_config(LockdConfig::EMBEDDED_DEFAULT.as_bytes());
    }

    #[test]
    fn writable_refuses_only_strings_no_quoting_can_hold() {
        let s = |t: &str| Value::String(t.to_owned());
        assert!(writable(&s("plain")) && writable(&s("say \"hi\"")) && writable(&s("it's")));
        assert!(writable(&s("a\nb")) && writable(&s("\"it's")));
        assert!(!writable(&s("it's \"")) && !writable(&s("a\n\"")));
        assert!(!writable(&Value::List(vec![s("'\"\"\"")])));
    }
}
