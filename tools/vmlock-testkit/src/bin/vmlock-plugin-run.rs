//! `vmlock-plugin-run [--plugin LOCKD_SO] [SCRIPT]`: runs a scenario (a
//! file, or stdin) against libvirt's `lockd.so`; see
//! [`vmlock_testkit::script`] for the command language.

#![forbid(unsafe_code)]

use std::io::BufReader;
use std::path::PathBuf;

use vmlock_testkit::script::{LOCKD_SO, Runner, run};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut plugin = PathBuf::from(LOCKD_SO);
    let mut script = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--plugin" => plugin = args.next().map(PathBuf::from).unwrap_or(plugin),
            "-h" | "--help" => {
                eprintln!("usage: vmlock-plugin-run [--plugin LOCKD_SO] [SCRIPT]");
                return;
            }
            _ => script = Some(a),
        }
    }
    let mut runner = Runner::new(&plugin);
    let out = std::io::stdout();
    let result = match script {
        Some(path) => match std::fs::File::open(&path) {
            Ok(f) => run(&mut runner, BufReader::new(f), out.lock()),
            Err(e) => Err(e),
        },
        None => run(&mut runner, std::io::stdin().lock(), out.lock()),
    };
    if let Err(e) = result {
        eprintln!("vmlock-plugin-run: {e}");
        std::process::exit(1);
    }
}
