//! Entry points shared by the cargo-fuzz targets `read_state` and `read_statebin` in
//! `/fuzz` and the corpus replay tests: the re-exec state readers (virtlockd's JSON,
//! [`crate::restart::json::parse`], and vmlockd's binary state, [`crate::restart::binary`]) over
//! untrusted bytes.
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

use crate::restart::binary;
use crate::restart::json::{self, ServerRef, State};

/// Reads `data` as a re-exec state file and checks the reader's and writer's invariants.
pub fn fuzz_entry_read_state(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(first) = json::parse(text) else {
        return;
    };
    check_sizes(&first, data.len());
    check_servers(&first.servers);
    let json = first
        .to_json()
        .unwrap_or_else(|e| panic!("cannot write back: {e}"));
    let again = json::parse(&json).unwrap_or_else(|e| panic!("{e}: written back as {json}"));
    assert_eq!(again.servers, first.servers, "servers changed: {json}");
    assert_eq!(again.engine, first.engine, "engine changed: {json}");
    assert_eq!(again.magic, first.magic);
    assert_eq!(again.fds(), first.fds());
    let json2 = again
        .to_json()
        .unwrap_or_else(|e| panic!("cannot write back: {e}"));
    assert_eq!(json2, json, "writer is not a fixed point");
}

/// Reads `data` as a binary re-exec state, twice: as a whole file (header, length and
/// checksum checks, with the writer the header names) and as a bare payload (the
/// fuzzer cannot forge checksums, so this is where the decoder is reached). Whatever
/// decodes is bounded by the input, and is written back and read back equal.
pub fn fuzz_entry_read_statebin(data: &[u8]) {
    if let Ok(h) = binary::header(data) {
        let _ = binary::check(data, (h.pid, h.start_time)).map(|c| c.decode());
    }
    let Ok(first) = binary::decode_payload(data, 7) else {
        return;
    };
    check_sizes(&first, data.len());
    let origin = binary::Origin {
        pid: 7,
        start_time: 99,
        written_ns: 5,
    };
    let engine = |w: &mut lockspace::binfmt::Writer| lockspace::binfmt::encode(w, &first.engine);
    let record = first.daemon.clone().unwrap_or_default();
    let bin = binary::encode(
        origin,
        &first.servers,
        &first.lock_fds(),
        engine,
        &record,
        0,
    );
    let checked = binary::check(&bin, (7, 99)).unwrap_or_else(|e| panic!("our file: {e}"));
    let (sockets, locks) = checked.fds().expect("fd lists");
    assert_eq!(sockets, first.socket_fds());
    assert_eq!(locks, first.lock_fds());
    let again = checked
        .decode()
        .unwrap_or_else(|e| panic!("reads back: {e}"));
    assert_eq!(again.servers, first.servers, "servers changed");
    assert_eq!(again.engine, first.engine, "engine changed");
    assert_eq!(again.daemon, first.daemon, "daemon record changed");
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

    #[test]
    fn statebin_entry_accepts_short_broken_and_real_input() {
        for data in [&b""[..], b"VMLKST02", &[0u8; 40], &[0xff; 64]] {
            fuzz_entry_read_statebin(data);
        }
        // A real payload: the JSON fixture's state, encoded.
        let s = json::parse(REAL).expect("fixture");
        let origin = binary::Origin {
            pid: 1,
            start_time: 2,
            written_ns: 3,
        };
        let engine = |w: &mut lockspace::binfmt::Writer| lockspace::binfmt::encode(w, &s.engine);
        let bin = binary::encode(
            origin,
            &s.servers,
            &s.lock_fds(),
            engine,
            &Default::default(),
            0,
        );
        fuzz_entry_read_statebin(&bin);
        let payload = bin.get(36..bin.len() - 8).expect("payload");
        assert_eq!(
            binary::decode_payload(payload, 1).expect("decodes").servers,
            s.servers
        );
        fuzz_entry_read_statebin(payload);
    }
}

/// What the fuzzer found, kept as tests.
#[cfg(test)]
mod regressions {
    use super::*;

    const NO_PRIVATE_DATA: &str = r#"{"daemon": {"servers": {"virtlockd": {"max_clients": 1,
        "services": [{"socks": [{"fd": 3}]}], "clients": [{"id": 1, "sock": {"fd": 4}}]}}},
        "defaultLockspace": {"resources": []}, "magic": "42"}"#;

    /// Found by `read_state`: a lock-server client without `privateData` (accepted, as no lock
    /// data) was written back with `"privateData": {}`, which the reader then refused
    /// ("privateData without restricted"), so our own file could not be read back.
    #[test]
    fn a_client_without_lock_data_reads_back() {
        let first = json::parse(NO_PRIVATE_DATA).expect("lenient read");
        assert_eq!(first.servers[0].clients[0].lock, None);
        let json = first.to_json().expect("write");
        assert!(json.contains(r#""privateData":{}"#), "{json}");
        let again = json::parse(&json).expect("our own file reads back");
        assert_eq!(again.servers, first.servers);
        fuzz_entry_read_state(NO_PRIVATE_DATA.as_bytes());
    }

    /// Found while writing the `read_state` invariants (the fuzzer had not hit it in 9.5M runs):
    /// a client id of -1 (read as `u64::MAX`) left no next id, and computing it overflowed (a
    /// panic with overflow checks, a wrap to 0 without). The next id now saturates.
    #[test]
    fn a_client_id_of_minus_one_does_not_overflow_the_next_id() {
        let text = NO_PRIVATE_DATA.replace(r#""id": 1"#, r#""id": -1"#);
        let s = json::parse(&text).expect("reads");
        assert_eq!(s.servers[0].clients[0].id, u64::MAX);
        assert_eq!(s.servers[0].next_client_id, u64::MAX);
        fuzz_entry_read_state(text.as_bytes());
    }
}
