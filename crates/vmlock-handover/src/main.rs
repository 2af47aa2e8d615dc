//! `vmlock-handover --to vmlockd|virtlockd`: the live hand-over the vmlock
//! Debian package runs from its maintainer scripts (see the library docs).
//! Exit status: 0 done (or nothing to do), 1 nothing was handed over (the
//! daemon serves on as before), 2 the daemon was signalled and something
//! after that went wrong.

#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use vmlock_handover::{Failure, Options, Outcome, Target, hand_over};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum To {
    Vmlockd,
    Virtlockd,
}

/// Re-execs the running lock daemon into the program /usr/sbin/virtlockd
/// names now, and checks that it answers with the same locks.
#[derive(Debug, Parser)]
#[command(name = "vmlock-handover", version)]
struct Args {
    /// The daemon the program must be.
    #[arg(long, value_enum)]
    to: To,
    /// The path the daemon was started as (and re-execs).
    #[arg(long, default_value = "/usr/sbin/virtlockd")]
    program: PathBuf,
    /// The daemon's pid file (where systemd does not run).
    #[arg(long, default_value = "/run/virtlockd.pid")]
    pid_file: PathBuf,
    /// The daemon's main socket.
    #[arg(long, default_value = "/run/libvirt/virtlockd-sock")]
    socket: PathBuf,
    /// The systemd unit (used when /run/systemd/system exists).
    #[arg(long, default_value = "virtlockd.service")]
    unit: String,
    /// Seconds the re-exec and the first answer may take.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let o = Options {
        target: match a.to {
            To::Vmlockd => Target::Vmlockd,
            To::Virtlockd => Target::Virtlockd,
        },
        program: a.program,
        pid_file: a.pid_file,
        socket: a.socket,
        systemd: None,
        unit: a.unit,
        timeout: Duration::from_secs(a.timeout),
    };
    match hand_over(&o) {
        Ok(Outcome::NoDaemon(why)) => {
            println!("vmlock-handover: {why}: nothing to hand over");
            ExitCode::SUCCESS
        }
        Ok(Outcome::AlreadyThere { pid }) => {
            println!(
                "vmlock-handover: the lock daemon (pid {pid}) already runs {} ({})",
                o.program.display(),
                o.target.name()
            );
            ExitCode::SUCCESS
        }
        Ok(Outcome::HandedOver { pid, locks, took }) => {
            println!(
                "vmlock-handover: the lock daemon (pid {pid}) now runs {} ({}) with all its \
                 {locks} locks; it answered {took:.1?} after the signal",
                o.program.display(),
                o.target.name()
            );
            ExitCode::SUCCESS
        }
        Err(f @ Failure::NotHandedOver(_)) => {
            eprintln!("vmlock-handover: ERROR: {f}; the lock daemon serves on as before");
            ExitCode::from(1)
        }
        Err(f @ Failure::HandedOverBadly(_)) => {
            eprintln!("vmlock-handover: ERROR: {f}");
            ExitCode::from(2)
        }
    }
}
