//! Which daemon is under test, and where binaries are found.
//!
//! `LOCKD_UNDER_TEST=theirs|ours|both` (default `both`) selects the flavors;
//! with `both` a flavor whose binary is missing is left out with a note,
//! unless under CI ([`crate::ci::in_ci`]), where every requested flavor must be present.

use std::path::PathBuf;

/// libvirt's daemon (`/usr/sbin/virtlockd`) or ours (`vmlockd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// libvirt's virtlockd 9.0.
    Theirs,
    /// vmlock's vmlockd.
    Ours,
}

/// Path of libvirt's daemon.
pub const VIRTLOCKD: &str = "/usr/sbin/virtlockd";

impl Flavor {
    /// The flavors selected by `LOCKD_UNDER_TEST`, in the order
    /// theirs, ours. Panics with a clear message when a requested daemon is
    /// missing (always for an explicit choice; with `both` only under CI).
    pub fn from_env() -> Vec<Flavor> {
        let sel = std::env::var("LOCKD_UNDER_TEST").unwrap_or_else(|_| "both".to_string());
        let wanted = match sel.as_str() {
            "theirs" => vec![Flavor::Theirs],
            "ours" => vec![Flavor::Ours],
            "both" | "" => vec![Flavor::Theirs, Flavor::Ours],
            other => panic!("LOCKD_UNDER_TEST={other:?}: expected theirs, ours or both"),
        };
        let strict = sel != "both" && !sel.is_empty() || crate::ci::in_ci();
        let mut out = Vec::new();
        for f in wanted {
            match f.binary_status() {
                Ok(()) => out.push(f),
                Err(why) if strict => panic!("{why}"),
                Err(why) => eprintln!("note: leaving out {}: {why}", f.name()),
            }
        }
        assert!(
            !out.is_empty(),
            "no daemon available to test (LOCKD_UNDER_TEST={sel})"
        );
        out
    }

    fn binary_status(self) -> Result<(), String> {
        let p = self.default_binary();
        if p.exists() {
            return Ok(());
        }
        Err(match self {
            Flavor::Theirs => format!(
                "{VIRTLOCKD} is missing: install libvirt-daemon (apt-get install libvirt-daemon)"
            ),
            Flavor::Ours => format!(
                "{} is missing: run `cargo build --bins` first (or set VMLOCKD_BIN)",
                p.display()
            ),
        })
    }

    /// `"theirs"` or `"ours"`.
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Theirs => "theirs",
            Flavor::Ours => "ours",
        }
    }

    /// The daemon binary of this flavor.
    pub fn default_binary(self) -> PathBuf {
        match self {
            Flavor::Theirs => PathBuf::from(VIRTLOCKD),
            Flavor::Ours => vmlockd_path(),
        }
    }
}

/// `target/<profile>`: the test executable lives in `target/<profile>/deps`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let deps = exe.parent().map(PathBuf::from).unwrap_or_default();
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().map(PathBuf::from).unwrap_or(deps)
    } else {
        deps
    }
}

fn vmlockd_path() -> PathBuf {
    match std::env::var_os("VMLOCKD_BIN") {
        Some(p) => PathBuf::from(p),
        None => profile_dir().join("vmlockd"),
    }
}

/// `$VMLOCKD_BIN`, else `target/<profile>/vmlockd`. Panics with a hint to
/// run `cargo build --bins` when it does not exist.
pub fn vmlockd_binary() -> PathBuf {
    let p = vmlockd_path();
    assert!(
        p.exists(),
        "vmlockd not found at {}: run `cargo build --bins` first (or set VMLOCKD_BIN)",
        p.display()
    );
    p
}

/// A binary of this workspace (`vmlock-hold`, `vmlock-plugin-run`) in
/// `target/<profile>/`. Panics with a hint to run `cargo build --bins`.
pub fn tool_binary(name: &str) -> PathBuf {
    let p = profile_dir().join(name);
    assert!(
        p.exists(),
        "{name} not found at {}: run `cargo build --bins` first",
        p.display()
    );
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_dir_is_the_parent_of_deps() {
        let d = profile_dir();
        assert!(d.join("deps").is_dir(), "{}", d.display());
        assert_eq!(Flavor::Theirs.default_binary(), PathBuf::from(VIRTLOCKD));
        assert_eq!(Flavor::Ours.name(), "ours");
    }
}
