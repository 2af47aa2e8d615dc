//! Fuzz vmlockd's binary re-exec state reader (whole files and bare payloads) and the
//! write-back round trip through its writer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vmlockd::fuzz_entry_read_statebin(data));
