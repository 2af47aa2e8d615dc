//! Fuzz the argument decoders: first byte picks the lock procedure (1..=8),
//! 0 the `WireError` decoder, anything else the admin typed-parameter array.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vmlock_proto::fuzz_entry_decode_args(data));
