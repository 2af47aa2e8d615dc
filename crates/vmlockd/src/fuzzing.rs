//! Entry point shared by the cargo-fuzz target `read_state` in `/fuzz` and the corpus
//! replay test: the re-exec state reader ([`crate::state::parse`]) over untrusted bytes.
//!
//! A panic is a finding. Checked for every input:
//! * the reader never panics (bytes that are not UTF-8 are refused before it, as
//!   `read_to_string` refuses them when the daemon reads the file);
//! * what it builds is no bigger than the text it read: no element count, string or
//!   buffer exceeds the input length, so a small file cannot cause a huge allocation;
//! * servers come sorted and unique, and `next_client_id` is above every client id;
//! * whatever reads successfully is written back by our writer ([`State::to_json`]),
//!   reads back equal, and writing that again gives the same text.

// A panic here is how a broken invariant is reported to the fuzzer; this module is never
// called by the daemon.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use crate::state::{self, ServerRef, State};

/// Reads `data` as a re-exec state file and checks the reader's and writer's invariants.
pub fn fuzz_entry_read_state(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(first) = state::parse(text) else {
        return;
    };
    check_sizes(&first, data.len());
    check_servers(&first.servers);
    let json = first
        .to_json()
        .unwrap_or_else(|e| panic!("cannot write back: {e}"));
    let again = state::parse(&json).unwrap_or_else(|e| panic!("{e}: written back as {json}"));
    assert_eq!(again.servers, first.servers, "servers changed: {json}");
    assert_eq!(again.engine, first.engine, "engine changed: {json}");
    assert_eq!(again.magic, first.magic);
    assert_eq!(again.fds(), first.fds());
    let json2 = again
        .to_json()
        .unwrap_or_else(|e| panic!("cannot write back: {e}"));
    assert_eq!(json2, json, "writer is not a fixed point");
}

/// Every part of the state is bounded by the input length `n`.
fn check_sizes(s: &State, n: usize) {
    let bounded = |what: &str, len: usize| assert!(len <= n, "{what}: {len} > input {n}");
    bounded("servers", s.servers.capacity());
    bounded("magic", s.magic.len());
    for srv in &s.servers {
        bounded("socks", srv.socks.capacity());
        bounded("clients", srv.clients.capacity());
        bounded("server name", srv.name.len());
        for c in &srv.clients {
            bounded("unread", 2 * c.unread.capacity());
            let name = c.lock.as_ref().map_or(0, |p| p.owner_name.len());
            bounded("owner name", name);
        }
    }
    let e = &s.engine;
    bounded("lockspaces", e.lockspaces.capacity());
    bounded("lingering", e.lingering.capacity());
    for ls in std::iter::once(&e.default).chain(&e.lockspaces) {
        bounded("resources", ls.resources.capacity());
        for r in &ls.resources {
            bounded("owners", r.owners.capacity());
            bounded("aliases", r.aliases.capacity());
            bounded("name and path", r.name.len() + r.path.len());
        }
    }
    bounded("fds", s.fds().len());
}

fn check_servers(servers: &[ServerRef]) {
    assert!(
        servers.windows(2).all(|w| w[0].name < w[1].name),
        "servers unsorted"
    );
    for srv in servers {
        assert!(srv.next_client_id >= 1);
        for c in &srv.clients {
            // An id of u64::MAX leaves no larger id to hand out.
            assert!(c.id < srv.next_client_id || c.id == u64::MAX, "id {}", c.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: &str = include_str!("../tests/fixtures/virtlockd-9.0-restart-state.json");

    #[test]
    fn entry_accepts_short_broken_and_real_input() {
        for data in [&b""[..], b"{", b"[]", b"\xff", b"{\"magic\": \"1\"}"] {
            fuzz_entry_read_state(data);
        }
        fuzz_entry_read_state(REAL.as_bytes());
    }
}
