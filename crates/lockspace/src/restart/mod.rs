//! What survives a restart of the daemon: the lock tables written out and
//! read back, with every lock descriptor adopted, never re-opened.
//!
//! ```text
//!  snapshot   the owned form, and virtlockd's re-exec JSON through serde
//!             (its lockspace part; our additions under vmlock* keys);
//!             Engine::restore / restore_adopted build an engine from it
//!  view       the same JSON, and the binary form, written straight from
//!             the tables under the table lock (no owned copy first)
//!  binfmt     the binary form between two vmlockd images
//! ```
//!
//! The locking itself is in `engine`; the `impl Engine` blocks here are the
//! restart's: taking a snapshot and restoring from one.

pub mod binfmt;
pub(crate) mod snapshot;
pub(crate) mod view;
