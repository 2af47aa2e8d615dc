//! Errors and warnings of the typed configs.
//!
//! A [`ConfError`] refuses the whole file, as libvirt refuses it: an unreadable file, a
//! syntax error, or a known key whose value has the wrong type or is out of range. A
//! [`Warning`] is for things libvirt silently accepts (unknown keys, repeated keys); the
//! daemon logs them and carries on.

use std::fmt;
use std::path::PathBuf;

use crate::syntax::ParseError;

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    /// The file could not be read.
    #[error("cannot read config file {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not in the `key = value` syntax.
    #[error("configuration file syntax error: {0}")]
    Parse(#[from] ParseError),
    /// A known key has a value of the wrong type.
    #[error("line {line}: {key} must be {expected}")]
    Type {
        /// The key.
        key: String,
        /// Line of the entry that was used (the first one for that key).
        line: usize,
        /// What the key needs, e.g. `an unsigned integer`.
        expected: &'static str,
    },
    /// A known numeric key has a value outside its range.
    #[error("line {line}: {key} must be in range {min}:{max}")]
    Range {
        /// The key.
        key: String,
        /// Line of the entry that was used.
        line: usize,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// A known key has a value of the right type that it does not accept.
    #[error("line {line}: {key} {message}")]
    Invalid {
        /// The key.
        key: String,
        /// Line of the entry that was used.
        line: usize,
        /// What is wrong, phrased to follow the key, e.g. `must be "ofd" or "posix"`.
        message: String,
    },
}

/// Something accepted but worth telling the operator about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// 1-based line of the entry.
    pub line: usize,
    /// The key of the entry.
    pub key: String,
    /// What is odd about it.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.key, self.message)
    }
}
