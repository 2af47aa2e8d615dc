//! Every subcommand and long flag that `--help` shows is documented in
//! `docs/man/vmlockctl.1.md`, and the documented exit codes match the code.

use std::collections::BTreeSet;
use std::process::Command;

fn help(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_vmlockctl"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(o.status.success());
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn man_page() -> String {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/man/vmlockctl.1.md");
    std::fs::read_to_string(p).expect("docs/man/vmlockctl.1.md")
}

/// Subcommand names listed under "Commands:".
fn subcommands(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .filter(|c| c != "help")
        .collect()
}

/// Every `--flag` mentioned in a help text.
fn flags(text: &str) -> BTreeSet<String> {
    text.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_alphanumeric())
                .to_owned()
        })
        .map(|w| w.split('=').next().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn every_subcommand_and_flag_is_in_the_man_page() {
    let man = man_page();
    let top = help(&[]);
    let subs = subcommands(&top);
    assert_eq!(
        subs,
        [
            "exec", "check", "acquire", "release", "register", "holders", "status", "list"
        ]
    );
    let mut all = flags(&top);
    for s in &subs {
        assert!(
            man.contains(&format!("vmlockctl {s}")) || man.contains(&format!("## {s}")),
            "{s}"
        );
        all.extend(flags(&help(&[s])));
    }
    assert!(all.contains("--lockspace-dir") && all.contains("--json"));
    assert!(all.contains("--force") && all.contains("--admin-socket"));
    for f in &all {
        assert!(man.contains(f.as_str()), "{f} missing from the man page");
    }
}

#[test]
fn exit_codes_are_documented() {
    let man = man_page();
    for (code, value) in [
        ("0", vmlockctl::error::EXIT_OK),
        ("1", vmlockctl::error::EXIT_ERROR),
        ("2", vmlockctl::error::EXIT_USAGE),
        ("3", vmlockctl::error::EXIT_BUSY),
        ("126", vmlockctl::error::EXIT_CANNOT_EXEC),
        ("127", vmlockctl::error::EXIT_NOT_FOUND),
    ] {
        assert_eq!(code, value.to_string());
        assert!(
            man.contains(&format!("**{code}**")),
            "exit code {code} undocumented"
        );
    }
}
