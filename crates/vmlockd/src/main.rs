//! vmlockd: see the library crate.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    vmlockd::main_entry()
}
