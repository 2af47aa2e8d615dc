//! The `key = value` grammar: what parses to what, and where malformed input is refused.
//!
//! Line numbers and messages of the malformed cases were checked against libvirt 9.0's
//! virtlockd (`virtlockd -f FILE` prints `FILE:LINE: MESSAGE`); columns are ours.

use vmlock_conf::syntax::{self, ConfFile, MAX_LIST_DEPTH, Value};

fn parse(text: &str) -> ConfFile {
    match syntax::parse(text) {
        Ok(file) => file,
        Err(e) => panic!("{text:?} should parse, got {e}"),
    }
}

fn only_value(text: &str) -> Value {
    let file = parse(text);
    assert_eq!(file.entries.len(), 1, "{text:?}");
    file.entries[0].value.clone()
}

fn s(text: &str) -> Value {
    Value::String(text.to_owned())
}

#[test]
fn empty_and_comment_only_files_have_no_entries() {
    for text in [
        "",
        "# only a comment",
        "#\n#\n",
        "# a\n\n\n# b\n",
        "a = 1\n\n\n\n",
    ] {
        let entries = parse(text).entries;
        assert_eq!(
            entries.len(),
            usize::from(text.starts_with('a')),
            "{text:?}"
        );
    }
}

#[test]
fn strings_take_every_quoting_and_no_escapes() {
    assert_eq!(only_value(r#"a = "x y""#), s("x y"));
    assert_eq!(only_value("a = 'x\"y'"), s("x\"y"));
    assert_eq!(only_value(r#"a = "c:\dir\n""#), s(r"c:\dir\n"));
    let triple = "a = \"\"\"one\ntwo 'and' \"three\" x\"\"\"\n";
    assert_eq!(only_value(triple), s("one\ntwo 'and' \"three\" x"));
    // The first `"""` ends the string, so a string cannot end with a quote.
    assert!(syntax::parse("a = \"\"\"x\"\"\"\"\n").is_err());
    assert_eq!(only_value("a = \"\"\"\"\"\"\n"), s(""));
    assert_eq!(only_value("a = ''"), s(""));
    assert_eq!(only_value("a = \"é ünï\""), s("é ünï"));
}

#[test]
fn string_value_stops_at_nul_as_in_libvirt() {
    assert_eq!(only_value("a = \"x\0y\"\n"), s("x"));
}

#[test]
fn numbers_keep_the_sign_that_was_written() {
    assert_eq!(only_value("a = 0"), Value::ULong(0));
    assert_eq!(only_value("a = 007"), Value::ULong(7));
    assert_eq!(only_value("a = +5"), Value::ULong(5));
    assert_eq!(only_value("a = -0"), Value::Int(0));
    assert_eq!(only_value("a = -42"), Value::Int(-42));
    assert_eq!(
        only_value("a = 18446744073709551615"),
        Value::ULong(u64::MAX)
    );
    assert_eq!(only_value("a = -9223372036854775808"), Value::Int(i64::MIN));
}

#[test]
fn lists_allow_newlines_trailing_commas_and_nesting() {
    let list = |items: Vec<Value>| Value::List(items);
    assert_eq!(only_value("a = []"), list(vec![]));
    assert_eq!(only_value("a = [\n\n]"), list(vec![]));
    assert_eq!(only_value("a = [ 1 , ]"), list(vec![Value::ULong(1)]));
    assert_eq!(
        only_value("a = [\n  \"x\",\n\t'y'\n  , -1,\n]"),
        list(vec![s("x"), s("y"), Value::Int(-1)])
    );
    assert_eq!(
        only_value("a = [[1, [\"z\"]], []]"),
        list(vec![
            list(vec![Value::ULong(1), list(vec![s("z")])]),
            list(vec![])
        ])
    );
}

#[test]
fn statements_are_separated_by_newlines_or_semicolons() {
    let file = parse("a=1;b = 2 ;\n c = 3\r\n\td\t=\t4 # trailing\r  e = [1] # after list\n");
    let keys: Vec<&str> = file.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["a", "b", "c", "d", "e"]);
    assert_eq!(file.entries[3].value, Value::ULong(4));
}

#[test]
fn entries_record_line_and_column_of_the_key() {
    let file = parse("# head\n\nfirst = 1\n   second = \"\"\"x\ny\"\"\"\n\tthird_3 = 'z'\n");
    let pos: Vec<(&str, usize, usize)> = file
        .entries
        .iter()
        .map(|e| (e.key.as_str(), e.line, e.column))
        .collect();
    assert_eq!(pos, [("first", 3, 1), ("second", 4, 4), ("third_3", 6, 2)]);
}

#[test]
fn duplicate_keys_are_kept_and_the_first_one_is_found() {
    let file = parse("a = 1\nb = 2\na = \"x\"\na = 3\n");
    assert_eq!(file.entries.len(), 4);
    let a = file.get("a").map(|e| (&e.value, e.line));
    assert_eq!(a, Some((&Value::ULong(1), 1)));
    assert!(file.get("c").is_none());
    let dups: Vec<(usize, usize)> = file.duplicates().map(|(f, d)| (f.line, d.line)).collect();
    assert_eq!(dups, [(1, 3), (1, 4)]);
}

#[test]
fn display_writes_values_back_in_the_file_syntax() {
    let value = Value::List(vec![
        s("p"),
        s("q\"r"),
        s("t\nu"),
        Value::Int(0),
        Value::ULong(9),
    ]);
    let text = format!("k = {value}\n");
    assert_eq!(text, "k = [ \"p\", 'q\"r', \"\"\"t\nu\"\"\", -0, 9 ]\n");
    assert_eq!(only_value(&text), value);
}

/// Malformed inputs: (input, line, column, message fragment).
const MALFORMED: &[(&str, usize, usize, &str)] = &[
    ("\n", 2, 1, "expecting a name"),
    ("  ", 1, 3, "expecting a name"),
    ("=1", 1, 1, "expecting a name"),
    ("_a = 1", 1, 1, "expecting a name"),
    ("9a = 1", 1, 1, "expecting a name"),
    ("é = 1", 1, 1, "expecting a name"),
    ("a = 1 ;; b = 2", 1, 8, "expecting a name"),
    ("a = 1 ;\n; b = 2", 2, 1, "expecting a name"),
    ("a = 1\r\n_b = 2", 2, 1, "expecting a name"),
    ("a", 1, 2, "expecting an assignment"),
    ("a\n= 1", 1, 2, "expecting an assignment"),
    ("a-b = 1", 1, 2, "expecting an assignment"),
    ("a =", 1, 4, "expecting a value"),
    ("a =\n1", 1, 4, "expecting a value"),
    ("a = x", 1, 5, "expecting a value"),
    ("a = true", 1, 5, "expecting a value"),
    ("a = -", 1, 6, "unterminated number"),
    ("a = --1", 1, 6, "unterminated number"),
    ("a = +x", 1, 6, "unterminated number"),
    ("a = 12abc", 1, 7, "expecting a separator"),
    ("a = 1 b = 2", 1, 7, "expecting a separator"),
    ("a = \"a\\\"b\"", 1, 9, "expecting a separator"),
    ("a = \"é\" x", 1, 9, "expecting a separator"),
    ("a = '''x'", 1, 7, "expecting a separator"),
    ("a = \"\"\"\"\"\"", 1, 7, "expecting a separator"),
    ("a = \"abc", 1, 9, "unterminated string"),
    ("a = \"abc\nb = 1", 1, 9, "unterminated string"),
    ("a = 'abc", 1, 9, "unterminated string"),
    ("a = 'abc\rd'", 1, 9, "unterminated string"),
    ("a = \"\"\"abc\ndef\n", 2, 3, "unterminated string"),
    ("a = [1, 2", 1, 10, "list is not closed with ]"),
    ("a = [1, 2\n", 2, 1, "list is not closed with ]"),
    ("a = [", 1, 6, "list is not closed with ]"),
    ("a = [1 2]", 1, 8, "expecting a separator in list"),
    (
        "x = 1\ny = 2\nz = [\n  \"a\",\n  \"b\"\n  \"c\"\n]",
        6,
        3,
        "expecting a separator in list",
    ),
    ("a = [,]", 1, 6, "expecting a value"),
    ("a = [1,,2]", 1, 8, "expecting a value"),
    ("a = [1,", 1, 8, "expecting a value"),
    (
        "a = [ 1, # no comments in lists\n 2 ]",
        1,
        10,
        "expecting a value",
    ),
    // libvirt wraps these numbers around silently; we refuse them.
    ("a = 18446744073709551616", 1, 5, "number out of range"),
    (
        "ok = 1\na = -9223372036854775809",
        2,
        5,
        "number out of range",
    ),
];

#[test]
fn malformed_inputs_are_refused_where_libvirt_refuses_them() {
    assert!(MALFORMED.len() >= 20);
    let mut failures = Vec::new();
    for &(text, line, column, fragment) in MALFORMED {
        match syntax::parse(text) {
            Ok(file) => failures.push(format!("{text:?}: parsed to {file:?}")),
            Err(e) if (e.line, e.column) != (line, column) || !e.message.contains(fragment) => {
                failures.push(format!(
                    "{text:?}: got {e}, want {line}:{column}: {fragment}"
                ));
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn parse_error_displays_line_column_and_message() {
    let err = syntax::parse("a = 1\nb = ?").err().map(|e| e.to_string());
    assert_eq!(err.as_deref(), Some("2:5: expecting a value"));
}

#[test]
fn nesting_is_bounded() {
    let ok = format!(
        "a = {}{}",
        "[".repeat(MAX_LIST_DEPTH),
        "]".repeat(MAX_LIST_DEPTH)
    );
    assert!(syntax::parse(&ok).is_ok());
    let deep = format!("a = {}", "[".repeat(MAX_LIST_DEPTH + 1));
    let err = syntax::parse(&deep).err();
    let where_ = err.as_ref().map(|e| (e.line, e.column, e.message.as_str()));
    assert_eq!(
        where_,
        Some((1, 5 + MAX_LIST_DEPTH, "lists nested too deeply"))
    );
}

#[test]
fn non_utf8_is_allowed_in_comments_but_not_in_strings() {
    let file = syntax::parse_bytes(b"# caf\xe9\na = 1 # \xff\n");
    assert_eq!(file.map(|f| f.entries.len()), Ok(1));
    let err = syntax::parse_bytes(b"a = 1\nb = \"caf\xe9\"\n").err();
    let where_ = err.as_ref().map(|e| (e.line, e.column, e.message.as_str()));
    assert_eq!(where_, Some((2, 5, "string is not valid UTF-8")));
}

#[test]
fn line_column_counts_newlines_and_characters() {
    let text = "ab\ncdé\r\nx".as_bytes();
    assert_eq!(syntax::line_column(text, 0), (1, 1));
    assert_eq!(syntax::line_column(text, 3), (2, 1));
    // 'é' is two bytes but one column.
    assert_eq!(syntax::line_column(text, 7), (2, 4));
    assert_eq!(syntax::line_column(text, text.len()), (3, 2));
}
