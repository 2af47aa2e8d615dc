//! Fuzz the config parser (`key = value` syntax) and the typed `virtlockd.conf` and
//! `qemu-lockd.conf` builders, with the write-back round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vmlock_conf::fuzz_entry_parse_config(data));
