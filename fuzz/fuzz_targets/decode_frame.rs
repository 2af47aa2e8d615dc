//! Fuzz the receive path: length word, body split, routing, argument and error decoding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vmlock_proto::fuzz_entry_decode_frame(data));
