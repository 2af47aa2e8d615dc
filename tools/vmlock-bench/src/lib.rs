//! `vmlock-bench`: a load generator for virtlockd-protocol lock daemons.
//!
//! ```text
//!            ┌──────────── compare ────────────┐
//!            │ null server   vmlockd  virtlockd │   each in a mount namespace, /run := tmp
//!            └──────┬──────────┬─────────┬──────┘
//! raw-own / raw-contended:  N threads × 1 blocking connection, pre-encoded frames
//! plugin:                   N processes × libvirt's lockd.so (a connection per call)
//! ```
//!
//! * [`frames`], [`conn`]: pre-encoded calls with the serial patched in; a blocking
//!   client connection.
//! * [`raw`], [`plugin_mode`]: the workloads. [`null_server`]: the do-nothing ceiling.
//! * [`stats`]: latency samples and percentiles. [`memory`]: RSS with many locks held.
//! * [`target`], [`compare`], [`report`]: starting daemons, the interleaved grid, and
//!   its Markdown table. [`plot`]: the same comparison as an SVG chart.
#![forbid(unsafe_code)]

pub mod cli;
pub mod compare;
pub mod conn;
pub mod error;
pub mod frames;
pub mod memory;
pub mod null_server;
pub mod plot;
pub mod plugin_mode;
pub mod raw;
pub mod report;
pub mod stats;
pub mod target;

pub use error::{BenchError, Result};
