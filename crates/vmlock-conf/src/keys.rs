//! Typed lookups, with libvirt's rules, and the key tables that drive the typed configs.
//!
//! Each typed config is a table of `Key`s in the order libvirt's loader reads them, so the
//! first error reported is the one libvirt reports. For each key the *first* entry in the
//! file is used (`virConfGetValue`); later repeats and unknown keys only produce
//! [`Warning`]s.
//!
//! What each getter accepts (from `virConfGetValue*`):
//!
//! | getter        | accepts                                   | refuses                        |
//! |---------------|-------------------------------------------|--------------------------------|
//! | unsigned      | `ULong` ≤ max (`u32::MAX` by default)     | `-0`, `-1`, strings, lists     |
//! | bool          | `ULong` 0 or 1                            | `-0`, `2`, `"yes"`, lists      |
//! | string        | `String`                                  | numbers, lists                 |
//! | string list   | `List` of `String`s, or one `String`      | numbers, lists holding others  |

use crate::error::{ConfError, Warning};
use crate::syntax::{ConfFile, Entry, Value};

/// How one known key is read and where its value goes in the config `C`.
pub(crate) enum Kind<C> {
    /// An unsigned integer in `min..=max`.
    UInt {
        min: u32,
        max: u32,
        set: fn(&mut C, u32),
    },
    /// A bool written as 0 or 1.
    Bool(fn(&mut C, bool)),
    /// Any string.
    Str(fn(&mut C, String)),
    /// A string holding an absolute path.
    AbsPath(fn(&mut C, String)),
    /// A list of strings, or a single string meaning a one-element list.
    StrList(fn(&mut C, Vec<String>)),
    /// One of a fixed set of strings.
    Choice(&'static [&'static str], fn(&mut C, &str)),
}

/// A known key of a typed config.
pub(crate) struct Key<C: 'static> {
    pub name: &'static str,
    pub kind: Kind<C>,
}

impl<C> Key<C> {
    pub const fn uint(name: &'static str, set: fn(&mut C, u32)) -> Self {
        Self::uint_in(name, 0, u32::MAX, set)
    }

    pub const fn uint_in(name: &'static str, min: u32, max: u32, set: fn(&mut C, u32)) -> Self {
        Key {
            name,
            kind: Kind::UInt { min, max, set },
        }
    }

    pub const fn boolean(name: &'static str, set: fn(&mut C, bool)) -> Self {
        Key {
            name,
            kind: Kind::Bool(set),
        }
    }

    pub const fn string(name: &'static str, set: fn(&mut C, String)) -> Self {
        Key {
            name,
            kind: Kind::Str(set),
        }
    }

    pub const fn abs_path(name: &'static str, set: fn(&mut C, String)) -> Self {
        Key {
            name,
            kind: Kind::AbsPath(set),
        }
    }

    pub const fn string_list(name: &'static str, set: fn(&mut C, Vec<String>)) -> Self {
        Key {
            name,
            kind: Kind::StrList(set),
        }
    }

    pub const fn choice(
        name: &'static str,
        allowed: &'static [&'static str],
        set: fn(&mut C, &str),
    ) -> Self {
        Key {
            name,
            kind: Kind::Choice(allowed, set),
        }
    }
}

/// Applies every key of `keys` found in `file` to `target`, in table order.
pub(crate) fn apply<C>(
    file: &ConfFile,
    keys: &[Key<C>],
    target: &mut C,
) -> Result<Vec<Warning>, ConfError> {
    for key in keys {
        if let Some(entry) = file.get(key.name) {
            apply_one(&key.kind, entry, target)?;
        }
    }
    Ok(warnings(file, |name| keys.iter().any(|k| k.name == name)))
}

fn apply_one<C>(kind: &Kind<C>, entry: &Entry, target: &mut C) -> Result<(), ConfError> {
    match kind {
        Kind::UInt { min, max, set } => set(target, uint_in(entry, *min, *max)?),
        Kind::Bool(set) => set(target, boolean(entry)?),
        Kind::Str(set) => set(target, string(entry)?.to_owned()),
        Kind::AbsPath(set) => set(target, abs_path(entry)?.to_owned()),
        Kind::StrList(set) => set(target, string_list(entry)?),
        Kind::Choice(allowed, set) => set(target, choice(entry, allowed)?),
    }
    Ok(())
}

/// Warnings for the entries of `file` that are ignored: unknown keys and repeated keys.
pub fn warnings(file: &ConfFile, known: impl Fn(&str) -> bool) -> Vec<Warning> {
    let warn = |e: &Entry, message: String| Warning {
        line: e.line,
        key: e.key.clone(),
        message,
    };
    file.entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            if !known(&e.key) {
                return Some(warn(e, "unknown key, ignored".to_owned()));
            }
            let first = file.entries[..i].iter().find(|f| f.key == e.key)?;
            let msg = format!(
                "repeated key, ignored: the value on line {} is used",
                first.line
            );
            Some(warn(e, msg))
        })
        .collect()
}

fn type_error(entry: &Entry, expected: &'static str) -> ConfError {
    ConfError::Type {
        key: entry.key.clone(),
        line: entry.line,
        expected,
    }
}

/// An unsigned integer that fits in `u32` (`virConfGetValueUInt`).
pub fn uint(entry: &Entry) -> Result<u32, ConfError> {
    uint_in(entry, 0, u32::MAX)
}

/// An unsigned integer in `min..=max`.
pub fn uint_in(entry: &Entry, min: u32, max: u32) -> Result<u32, ConfError> {
    let Value::ULong(n) = entry.value else {
        return Err(type_error(entry, "an unsigned integer"));
    };
    u32::try_from(n)
        .ok()
        .filter(|v| (min..=max).contains(v))
        .ok_or_else(|| ConfError::Range {
            key: entry.key.clone(),
            line: entry.line,
            min: min.into(),
            max: max.into(),
        })
}

/// A bool written as `0` or `1` (`virConfGetValueBool`).
pub fn boolean(entry: &Entry) -> Result<bool, ConfError> {
    match entry.value {
        Value::ULong(0) => Ok(false),
        Value::ULong(1) => Ok(true),
        Value::ULong(_) => Err(ConfError::Range {
            key: entry.key.clone(),
            line: entry.line,
            min: 0,
            max: 1,
        }),
        _ => Err(type_error(entry, "a boolean (0 or 1)")),
    }
}

/// A string (`virConfGetValueString`).
pub fn string(entry: &Entry) -> Result<&str, ConfError> {
    entry
        .value
        .as_str()
        .ok_or_else(|| type_error(entry, "a string"))
}

/// A string that is an absolute path (a vmlock rule; libvirt's keys do not check paths).
pub fn abs_path(entry: &Entry) -> Result<&str, ConfError> {
    let path = entry
        .value
        .as_str()
        .ok_or_else(|| type_error(entry, "a string"))?;
    if !path.starts_with('/') {
        return Err(ConfError::Invalid {
            key: entry.key.clone(),
            line: entry.line,
            message: format!("must be an absolute path, not \"{path}\""),
        });
    }
    Ok(path)
}

/// A list of strings, or one string as a one-element list
/// (`virConfGetValueStringList` with `compatString`).
pub fn string_list(entry: &Entry) -> Result<Vec<String>, ConfError> {
    match &entry.value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::List(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| type_error(entry, "a list of strings")),
        _ => Err(type_error(entry, "a string or a list of strings")),
    }
}

/// One of the strings in `allowed`.
pub fn choice<'e>(entry: &'e Entry, allowed: &[&str]) -> Result<&'e str, ConfError> {
    let s = entry
        .value
        .as_str()
        .ok_or_else(|| type_error(entry, "a string"))?;
    if allowed.contains(&s) {
        return Ok(s);
    }
    let options: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
    Err(ConfError::Invalid {
        key: entry.key.clone(),
        line: entry.line,
        message: format!("must be one of {}, not \"{s}\"", options.join(", ")),
    })
}
