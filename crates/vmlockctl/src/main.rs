//! The `vmlockctl` binary: see the library for everything.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(vmlockctl::run(std::env::args_os().collect()))
}
