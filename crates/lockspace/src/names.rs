//! Resource name validation and lease file paths.
//!
//! ```text
//! lockspace ""      name "/var/lib/img.qcow2"  ->  path "/var/lib/img.qcow2"  (absolute only)
//! lockspace "/dir"  name "8ea6...7f82"         ->  path "/dir/8ea6...7f82"   (one component)
//! ```
//!
//! libvirt validates nothing (docs/quirks.md #13); we refuse, in named lockspaces, a
//! name that is empty, `.` or `..`, or contains `/` or NUL, and in the
//! default lockspace a name that is not absolute or contains NUL. The path is
//! `dir + "/" + name` exactly as libvirt builds it (no canonicalisation).

use std::borrow::Cow;

use crate::Error;

fn invalid(name: &str, reason: &'static str) -> Error {
    Error::InvalidName {
        name: name.to_owned(),
        reason,
    }
}

/// Validates `name` for `lockspace` and returns the lease file path.
pub(crate) fn resource_path(lockspace: &str, name: &str) -> Result<String, Error> {
    if name.contains('\0') {
        return Err(invalid(name, "it contains a NUL byte"));
    }
    if lockspace.is_empty() {
        if !name.starts_with('/') {
            return Err(invalid(
                name,
                "the default lockspace needs an absolute path",
            ));
        }
        return Ok(name.to_owned());
    }
    if name.is_empty() {
        return Err(invalid(name, "it is empty"));
    }
    if name == "." || name == ".." {
        return Err(invalid(name, "it is a relative directory reference"));
    }
    if name.contains('/') {
        return Err(invalid(name, "it contains '/'"));
    }
    Ok(format!("{lockspace}/{name}"))
}

/// The lease file path a lockspace and a name give (checked by
/// [`resource_path`] when the name was first accepted).
pub(crate) fn derived_path<'a>(lockspace: &str, name: &'a str) -> Cow<'a, str> {
    if lockspace.is_empty() {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(format!("{lockspace}/{name}"))
    }
}

/// Whether `path` is what [`derived_path`] gives, without building it.
pub(crate) fn is_derived_path(lockspace: &str, name: &str, path: &str) -> bool {
    if lockspace.is_empty() {
        return path == name;
    }
    path.len() == lockspace.len() + 1 + name.len()
        && path.starts_with(lockspace)
        && path.as_bytes().get(lockspace.len()) == Some(&b'/')
        && path.ends_with(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_refusals() {
        assert_eq!(resource_path("", "/a/b").as_deref(), Ok("/a/b"));
        assert_eq!(resource_path("/d", "x").as_deref(), Ok("/d/x"));
        assert_eq!(resource_path("/d/", "x").as_deref(), Ok("/d//x"));
        for bad in ["", ".", "..", "a/b", "/x", "a\0b"] {
            let e = resource_path("/d", bad).expect_err(bad);
            assert_eq!(e.kind(), crate::ErrorKind::InvalidName, "{bad:?}");
        }
        for bad in ["rel", "", "/a\0"] {
            assert!(resource_path("", bad).is_err(), "{bad:?}");
        }
    }

    /// The path a resource derives is the one its name was accepted with.
    #[test]
    fn derived_paths_are_resource_paths() {
        for (ls, name) in [("", "/a/b"), ("/d", "x"), ("/d/", "x"), ("/d", "8ea6")] {
            let want = resource_path(ls, name).expect("valid");
            assert_eq!(derived_path(ls, name), want);
            assert!(is_derived_path(ls, name, &want));
        }
        assert!(!is_derived_path("/d", "x", "/e/x"));
        assert!(!is_derived_path("/d", "x", "/dx/x"));
        assert!(!is_derived_path("", "/a", "/b"));
    }
}
