//! `vmlockctl`: a command-line lock manager for VM disks that speaks virtlockd's
//! protocol (to `vmlockd` or libvirt's `virtlockd`).
//!
//! ```text
//! main ─► run(argv) ─► Cli::try_parse ─► exec     (exec.rs: parent ⇄ child ⇄ CMD)
//!                                      ├► check    (check.rs, holder.rs: F_OFD_GETLK)
//!                                      ├► acquire / release / register  (simple.rs)
//!                                      ├► holders  (holders.rs: etcd, read-only)
//!                                      └► status / list / release --force
//!                                                  (inquiry.rs: the admin socket)
//!           error ─► "vmlockctl: <chain>" on stderr, exit code (error.rs)
//! ```
//!
//! Exit codes: 0 ok, 1 error, 2 usage, 3 busy; `exec` passes CMD's status on.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod check;
pub mod cli;
pub mod error;
pub mod exec;
pub mod holder;
pub mod holders;
pub mod inquiry;
pub mod resources;
pub mod simple;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;

use cli::{Cli, Command};
use error::{CtlError, EXIT_OK};

/// Runs vmlockctl with `argv` and returns the exit code.
pub fn run(argv: Vec<OsString>) -> u8 {
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return e.exit_code() as u8;
        }
    };
    let socket = cli
        .socket
        .clone()
        .unwrap_or_else(vmlock_client::default_socket_path);
    if let (Command::Exec(args), Some(fd)) = (&cli.command, std::env::var_os(exec::STATUS_FD_ENV)) {
        return exec::child(&socket, args, &fd.to_string_lossy());
    }
    match dispatch(&cli, socket, &argv) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vmlockctl: {}", e.chain());
            e.exit_code()
        }
    }
}

fn dispatch(cli: &Cli, socket: PathBuf, argv: &[OsString]) -> Result<u8, CtlError> {
    let admin = cli
        .admin_socket
        .clone()
        .unwrap_or_else(|| inquiry::admin_socket_for(&socket));
    match &cli.command {
        Command::Exec(_) => exec::parent(argv),
        Command::Check(args) => {
            check::run(args, Some(&admin), &mut std::io::stdout().lock()).map(|()| EXIT_OK)
        }
        Command::Acquire(args) => simple::acquire(&socket, args).map(|()| EXIT_OK),
        Command::Release(args) if args.force => {
            simple::force_release(&admin, args, &mut std::io::stdout().lock()).map(|()| EXIT_OK)
        }
        Command::Release(args) => simple::release(&socket, &args.lock).map(|()| EXIT_OK),
        Command::Status(args) => {
            inquiry::status(&admin, args.json, &mut std::io::stdout().lock()).map(|()| EXIT_OK)
        }
        Command::List(args) => {
            let filter = vmlock_proto::inquiry::ListFilter {
                lockspace: args.lockspace.clone(),
                path: args.path.clone(),
                owner_name: args.owner_name.clone(),
                owner_uuid: args.owner_uuid.map(|u| *u.as_bytes()),
                pid: args.owner_pid,
            };
            inquiry::list(&admin, filter, args.json, &mut std::io::stdout().lock())
                .map(|()| EXIT_OK)
        }
        Command::Register(args) => simple::register(&socket, args).map(|()| EXIT_OK),
        Command::Holders(args) => {
            holders::run(args, &mut std::io::stdout().lock()).map(|()| EXIT_OK)
        }
    }
}
