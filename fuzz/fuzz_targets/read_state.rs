//! Fuzz the re-exec state reader (virtlockd 9.0 JSON and legacy layouts) and the
//! write-back round trip through our writer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vmlockd::fuzz_entry_read_state(data));
