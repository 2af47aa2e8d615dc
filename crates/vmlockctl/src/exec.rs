//! `vmlockctl exec`: run a command holding disk locks, the way libvirt starts QEMU.
//!
//! ```text
//! parent (vmlockctl)                     child (vmlockctl again, then CMD; same pid)
//! pipe(status); spawn self ───────────►  connect; REGISTER(owner pid = own pid)
//!                                        ACQUIRE x N (leases, then disks)
//!                                        RESTRICT; clear CLOEXEC on the socket
//!   read(status) ◄── EOF at exec ──────  exec(CMD)   (keeps the restricted connection)
//!   read(status) ◄── "exit N" ─────────  or: report, print the error, exit N
//! wait(child) -> CMD's status, 128+signal, or N
//! ```
//!
//! Signals sent to the parent (SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1,
//! SIGUSR2) are passed on to CMD, so a service manager stopping `vmlockctl
//! exec` stops the VM, whose exit then releases the locks.
//!
//! The child re-runs this binary (no `fork` in safe Rust): the parent sets
//! [`STATUS_FD_ENV`] to the write end of the status pipe, which the child makes
//! close-on-exec, so a successful exec closes it without a word.
//!
//! Because the child registered *itself*, the daemon ties the locks to the
//! connection that CMD inherits: when CMD exits they are released, and if CMD
//! closed the descriptor while running, the daemon would kill it (libvirt's
//! fencing, docs/protocol.md §5.4).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::Command;

use vmlock::LockError;
use vmlock::lockd::WireResource;
use vmlock_client::{Client, ClientError};

use crate::cli::ExecArgs;
use crate::error::CtlError;
use crate::holder::probe;
use crate::resources::{command_name, lockspaces, owner, wire_resources};

/// Environment variable naming the status-pipe descriptor in the child.
pub const STATUS_FD_ENV: &str = "VMLOCKCTL_EXEC_STATUS_FD";

fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> CtlError + '_ {
    move |source| CtlError::Io {
        what: what.to_owned(),
        source,
    }
}

/// Signals sent to `vmlockctl exec` that are passed on to CMD.
const FORWARDED: [i32; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Passes the signals sent to us on to CMD (our child, so its pid cannot be
/// recycled before we reap it). Those the kernel sends itself, such as the
/// terminal's Ctrl-C, reach CMD directly (same process group) and are not
/// sent twice.
fn forward_signals(pid: u32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    let job = move || {
        while let Ok(c) = vmlock_sys::signal::wait(&FORWARDED) {
            if !c.from_kernel {
                let _ = vmlock_sys::process::kill(pid, c.signo);
            }
        }
    };
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .spawn(job);
}

/// The parent: spawns the child with the same arguments and passes its status on.
pub fn parent(argv: &[OsString]) -> Result<u8, CtlError> {
    // Blocked here (inherited by every thread started later), taken by the
    // forwarding thread. The child inherits the mask too and unblocks them
    // before it execs CMD.
    vmlock_sys::signal::block(&FORWARDED).map_err(io_err("cannot block signals"))?;
    let (mut reader, writer) = std::io::pipe().map_err(io_err("cannot create a pipe"))?;
    vmlock_sys::fd::set_cloexec(writer.as_fd(), false)
        .map_err(io_err("cannot prepare the status pipe"))?;
    let exe = std::env::current_exe().map_err(io_err("cannot find this program"))?;
    let mut child = Command::new(exe)
        .args(argv.iter().skip(1))
        .env(STATUS_FD_ENV, writer.as_raw_fd().to_string())
        .spawn()
        .map_err(io_err("cannot start the lock holder"))?;
    forward_signals(child.id());
    drop(writer);
    let mut report = String::new();
    let _ = reader.read_to_string(&mut report);
    let status = child
        .wait()
        .map_err(io_err("cannot wait for the command"))?;
    if let Some(code) = report.trim().strip_prefix("exit ") {
        return Ok(code.parse().unwrap_or(crate::error::EXIT_ERROR));
    }
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(sig)) => 128u8.wrapping_add(sig as u8),
        (None, None) => crate::error::EXIT_ERROR,
    })
}

/// The child: takes the locks and execs CMD; returns only on failure, after
/// reporting the exit code on the status pipe.
pub fn child(socket: &Path, args: &ExecArgs, status_fd: &str) -> u8 {
    // The parent blocks the forwarded signals and a spawned process keeps
    // that mask: CMD must start with them deliverable.
    let _ = vmlock_sys::signal::unblock(&FORWARDED);
    let status = status_fd
        .parse()
        .ok()
        .and_then(|n| vmlock_sys::fd::adopt(n).ok())
        .map(std::fs::File::from);
    let mut holder = None;
    let err = lock_and_exec(socket, args, &mut holder);
    let code = err.exit_code();
    if let Some(mut f) = status {
        let _ = writeln!(f, "exit {code}");
    }
    eprintln!("vmlockctl: {}", err.chain());
    drop(holder);
    code
}

/// Connects, registers this process, acquires, restricts, and execs CMD. The
/// connection is parked in `holder` so that it outlives an error report.
fn lock_and_exec(socket: &Path, args: &ExecArgs, holder: &mut Option<UnixStream>) -> CtlError {
    let Some(cmd) = args.command.first() else {
        return CtlError::Usage("no command given".into());
    };
    let result = (|| {
        let resources = wire_resources(&args.resources, &[])?;
        create_lockspaces(socket, &resources)?;
        let owner = owner(&args.owner, std::process::id(), &command_name(cmd))?;
        let mut client = Client::connect(socket)?;
        client.register(&owner)?;
        let stream = client.as_fd().try_clone_to_owned();
        *holder = stream.ok().map(UnixStream::from);
        acquire_all(&mut client, &resources)?;
        client.restrict()?;
        let conn = client.into_stream();
        vmlock_sys::fd::set_cloexec(conn.as_fd(), false)
            .map_err(io_err("cannot pass the lock connection on"))?;
        *holder = Some(conn);
        Ok::<(), CtlError>(())
    })();
    if let Err(e) = result {
        return e;
    }
    let source = Command::new(cmd)
        .args(&args.command[1..])
        .env_remove(STATUS_FD_ENV)
        .exec();
    CtlError::Exec {
        cmd: cmd.to_string_lossy().into_owned(),
        source,
    }
}

/// CREATE_LOCKSPACE for every lockspace the resources use.
pub fn create_lockspaces(socket: &Path, resources: &[WireResource]) -> Result<(), CtlError> {
    for ls in lockspaces(resources) {
        Client::connect(socket)?.create_lockspace(&ls)?;
    }
    Ok(())
}

/// ACQUIRE each resource; a busy answer becomes [`CtlError::Busy`] naming the holder.
pub fn acquire_all(client: &mut Client, resources: &[WireResource]) -> Result<(), CtlError> {
    for r in resources {
        client
            .acquire_resource(&r.lockspace, &r.name, r.flags)
            .map_err(|e| acquire_error(e, r))?;
    }
    Ok(())
}

/// Turns an ACQUIRE failure into the CLI's error.
pub fn acquire_error(e: ClientError, r: &WireResource) -> CtlError {
    if !e.is_busy() {
        return CtlError::Lock(LockError::Resource {
            action: "acquire",
            resource: r.label.clone(),
            source: e,
        });
    }
    // vmlockd names the holder in the refusal (refusal_names_holder);
    // otherwise the kernel tells what it can.
    let text = e.to_string();
    let named = text
        .split_once(" is locked by ")
        .map(|(_, who)| format!("held by {who}"));
    let holder = named.or_else(|| probe(&r.lease_file()).ok().and_then(|p| p.holder_text()));
    let what = if r.label.starts_with("lease ") {
        r.label.clone()
    } else {
        format!("disk {}", r.label)
    };
    CtlError::Busy(match holder {
        Some(h) => format!("{what} is busy: locked by another owner, {h}"),
        None => format!("{what} is busy: locked by another owner"),
    })
}
