//! Integration tests against private etcd servers (see `support`).

mod auth;
mod cluster3;
mod engine;
mod partition;
mod restart;
mod support;
mod tls;
mod two_hosts;
