//! Properties of the parser over generated input: it never panics, errors point inside
//! the input, and values written with `Display` parse back to themselves.

use proptest::prelude::*;
use vmlock_conf::syntax::{self, Value};
use vmlock_conf::{DaemonConfig, LockdConfig};

/// Strings `Display` can always write back: no quote may end them and no EOL may appear
/// outside a triple-quoted string, so keep to characters without quotes or line breaks.
fn plain_string() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 _/:.,#=\\[\\]\\\\é-]{0,12}"
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        plain_string().prop_map(Value::String),
        any::<u64>().prop_map(Value::ULong),
        (i64::MIN..=0i64).prop_map(Value::Int),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(Value::List)
    })
}

/// Input built from the grammar's own tokens, so that it gets deep into the parser.
fn token_soup() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "a", "key_1", " ", "\t", "\n", "\r", "=", ";", "#", "[", "]", ",", "\"", "'", "\"\"\"",
        "-", "+", "0", "42", "x", "é", "\0",
    ]);
    prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

proptest! {
    #[test]
    fn parser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Err(e) = syntax::parse_bytes(&bytes) {
            let (last_line, _) = syntax::line_column(&bytes, bytes.len());
            prop_assert!(e.line >= 1 && e.line <= last_line && e.column >= 1);
        }
    }

    #[test]
    fn parser_and_typed_configs_never_panic_on_token_soup(text in token_soup()) {
        if let Err(e) = syntax::parse(&text) {
            let lines = 1 + text.matches('\n').count();
            prop_assert!(e.line >= 1 && e.line <= lines, "{e} for {text:?}");
        }
        let _ = DaemonConfig::parse(&text);
        let _ = LockdConfig::parse(&text);
    }

    #[test]
    fn displayed_values_parse_back(v in value(), key in "[a-z][a-z0-9_]{0,8}") {
        let text = format!("{key} = {v} # comment\n");
        let file = syntax::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
        prop_assert_eq!(file.entries.len(), 1);
        prop_assert_eq!(&file.entries[0].key, &key);
        prop_assert_eq!(&file.entries[0].value, &v);
    }
}
