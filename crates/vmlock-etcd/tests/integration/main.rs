//! Integration tests against private etcd servers (see `support`).

mod cluster3;
mod engine;
mod partition;
mod restart;
mod support;
mod two_hosts;
