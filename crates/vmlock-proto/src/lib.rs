//! `vmlock-proto`: the libvirt RPC wire codec for virtlockd's programs. Pure: no I/O.
//!
//! ```text
//! [len u32][prog u32][vers u32][proc i32][type i32][serial u32][status i32][payload...]
//!  limits    header::Header (24 bytes)                                     lock::Call
//!  frame::body_len                                                         error::WireError
//!  frame::parse_body ──► route::route ──► lock::decode_call / reply_ok / reply_error
//! ```
//!
//! * [`xdr`]: the bounded XDR encoder/decoder everything else is built on.
//! * [`header`], [`frame`], [`limits`]: framing (docs/protocol.md §1).
//! * [`error`]: the ERROR reply payload and libvirt's way of filling it (docs/protocol.md §2).
//! * [`lock`], [`keepalive`], [`admin`]: libvirt's three programs (docs/protocol.md §3, §6, §11).
//! * [`inquiry`]: vmlock's own inquiry program on the admin socket (`docs/inquiry.md`).
//! * [`route`]: the routing table of docs/protocol.md §1.7.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod admin;
pub mod error;
pub mod frame;
pub mod header;
pub mod inquiry;
pub mod keepalive;
pub mod limits;
pub mod lock;
pub mod route;
pub mod xdr;

mod fuzzing;

#[doc(hidden)]
pub use fuzzing::{fuzz_entry_decode_args, fuzz_entry_decode_frame};
