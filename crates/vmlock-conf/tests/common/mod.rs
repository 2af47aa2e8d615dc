//! Helpers shared by the integration tests.

/// Turns the commented-out examples of a libvirt-style config file into live settings:
/// every line `#key = value` loses its `#`, and so do the following lines of a list that
/// the example opens and does not close on its own line. Prose comments stay comments.
pub fn uncomment_examples(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_list = false;
    for line in text.lines() {
        let body = line.strip_prefix('#');
        let live = match body {
            Some(b) if in_list => {
                in_list = !b.contains(']');
                Some(b)
            }
            Some(b) if is_assignment(b) => {
                in_list = b.contains('[') && !b.contains(']');
                Some(b)
            }
            _ => None,
        };
        out.push_str(live.unwrap_or(line));
        out.push('\n');
    }
    out
}

/// `name =` at the very start of the text, `name` in libvirt's key syntax.
fn is_assignment(text: &str) -> bool {
    let name_len = text
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count();
    let starts_alpha = text.bytes().next().is_some_and(|b| b.is_ascii_alphabetic());
    starts_alpha
        && text[name_len..]
            .trim_start_matches([' ', '\t'])
            .starts_with('=')
}

/// The keys of the commented-out examples, in order.
pub fn example_keys(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix('#'))
        .filter(|b| is_assignment(b))
        .map(|b| {
            b.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}
