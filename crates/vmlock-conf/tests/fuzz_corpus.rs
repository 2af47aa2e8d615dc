//! Replays the saved cargo-fuzz corpus of `parse_config` (`/fuzz/corpus/parse_config/`) and
//! the shipped configs through the entry point the fuzz target calls, so stable-only CI
//! checks every input the fuzzer found interesting; plus regression tests for what the
//! fuzzer found.

use vmlock_conf::fuzz_entry_parse_config;
use vmlock_conf::syntax::{self, Value};
use vmlock_conf::{DaemonConfig, LockdConfig};
use vmlock_testkit::corpus::{corpus, replay};

#[test]
fn parse_config_corpus() {
    replay(&corpus("parse_config"), fuzz_entry_parse_config);
}

#[test]
fn shipped_configs_through_the_entry() {
    fuzz_entry_parse_config(DaemonConfig::EMBEDDED_DEFAULT.as_bytes());
    fuzz_entry_parse_config(LockdConfig::EMBEDDED_DEFAULT.as_bytes());
}

/// Found by `parse_config`: a string holding a carriage return (possible only inside
/// `"""`) was written back in plain quotes, where '\r' ends the line, so the written file
/// did not parse ("unterminated string").
#[test]
fn a_string_with_a_carriage_return_is_written_triple_quoted() {
    let file = syntax::parse("a = \"\"\"x\ry\"\"\"\n").expect("parses");
    let value = &file.entries[0].value;
    assert_eq!(value, &Value::String("x\ry".to_owned()));
    assert_eq!(value.to_string(), "\"\"\"x\ry\"\"\"");
    let again = syntax::parse(&format!("a = {value}\n")).expect("written back parses");
    assert_eq!(&again.entries[0].value, value);
    fuzz_entry_parse_config(b"a = \"\"\"line 1 \"\"i\x0eline \"*  =-0;\t\r\0\0\0\x01's\"\"\"\n");
}

/// Found while sizing `parse_config` inputs: each entry's line and column were counted from
/// the start of the file, so parsing was quadratic (1 MiB of `a=1` lines took 88 s in a
/// release build; the 10 MiB files the loader accepts would take hours). Positions are now
/// counted on from the previous entry. Generous bound: a linear debug build takes seconds
/// at most, even on a loaded 2-core machine.
#[test]
fn parsing_is_linear_in_the_number_of_entries() {
    let text = format!("{}\nb = 'é'; c = 2\n", "a=1\n".repeat(1 << 18));
    let started = std::time::Instant::now();
    let file = syntax::parse(&text).expect("parses");
    let took = started.elapsed();
    assert_eq!(file.entries.len(), (1 << 18) + 2);
    let last = &file.entries[(1 << 18) + 1];
    assert_eq!((last.line, last.column), ((1 << 18) + 2, 10));
    assert_eq!(
        syntax::line_column(text.as_bytes(), text.rfind('c').unwrap()),
        (last.line, last.column)
    );
    assert!(took.as_secs() < 20, "1 MiB took {took:?}");
}
