//! The command line (clap derive). Every flag here must appear in
//! `docs/man/vmlockctl.1.md`; a test checks it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use vmlock::Uuid;

/// Command-line lock manager for VM disks, speaking virtlockd's protocol.
#[derive(Debug, Parser)]
#[command(name = "vmlockctl", version, about, long_about = None)]
pub struct Cli {
    /// Lock daemon socket [default: the one libvirt's lockd.so uses]
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// The daemon's admin socket, for status, list, check and release --force
    /// [default: virtlockd-admin-sock beside the lock daemon socket]
    #[arg(long, global = true, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run CMD holding locks on disks, as libvirt does when it starts QEMU
    Exec(ExecArgs),
    /// Report whether disks (or their lease files) are locked, and by whom
    Check(CheckArgs),
    /// Register an owner and acquire resources for it (for scripts)
    Acquire(LockArgs),
    /// Register an owner and release resources it holds (for scripts), or
    /// with --force release another owner's lock through the admin socket
    Release(ReleaseArgs),
    /// Register an owner on a connection, optionally restrict it, then hang up
    Register(RegisterArgs),
    /// Show which hosts and VMs hold disks cluster-wide (etcd back end)
    Holders(HoldersArgs),
    /// Show the daemon's state: clients, owners, locks, re-exec, etcd lease
    Status(StatusArgs),
    /// List the locks the daemon holds, one row per lock and owner
    List(ListArgs),
}

/// `status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// `list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// Only locks in this lockspace directory ("" for direct disk locks)
    #[arg(long, value_name = "DIR")]
    pub lockspace: Option<String>,
    /// Only the lock of this disk or lease file
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,
    /// Only locks of the owner (domain) with this name
    #[arg(long = "owner-name", value_name = "NAME")]
    pub owner_name: Option<String>,
    /// Only locks of the owner (domain) with this UUID
    #[arg(long = "owner-uuid", value_name = "UUID", value_parser = parse_uuid)]
    pub owner_uuid: Option<Uuid>,
    /// Only locks of this owner pid
    #[arg(long = "owner-pid", value_name = "PID")]
    pub owner_pid: Option<u32>,
}

/// `release`.
#[derive(Debug, Clone, Args)]
pub struct ReleaseArgs {
    /// What to release, and for whom.
    #[command(flatten)]
    pub lock: LockArgs,
    /// Release another owner's lock through the admin socket (root): allowed
    /// when its holder is gone; --pid picks one owner [default: every owner]
    #[arg(long)]
    pub force: bool,
    /// With --force: if the holder is running, terminate it (SIGTERM, then
    /// SIGKILL) and release only after it exited
    #[arg(long, requires = "force")]
    pub terminate: bool,
}

/// Who owns the locks (REGISTER).
#[derive(Debug, Clone, Args)]
pub struct OwnerArgs {
    /// Owner (domain) name [default: the command name, or "vmlockctl"]
    #[arg(long, value_name = "N")]
    pub name: Option<String>,
    /// Owner (domain) UUID [default: random]
    #[arg(long, value_name = "U", value_parser = parse_uuid)]
    pub uuid: Option<Uuid>,
    /// Owner (domain) id, must not be 0
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub id: u32,
}

/// Resources to lock, named as libvirt's lockd driver names them.
#[derive(Debug, Clone, Args)]
pub struct ResourceArgs {
    /// A disk to lock exclusively, or shared with the ":shared" suffix (repeatable)
    #[arg(long = "disk", value_name = "PATH[:shared]")]
    pub disks: Vec<String>,
    /// An explicit lease: KEY in the lockspace directory LOCKSPACE (repeatable)
    #[arg(long = "lease", value_name = "LOCKSPACE:KEY")]
    pub leases: Vec<String>,
    /// Lock disks through lease files named by the SHA-256 of their path in DIR
    /// (like file_lockspace_dir), instead of the disk files themselves
    #[arg(long, value_name = "DIR")]
    pub lockspace_dir: Option<String>,
}

/// `exec`.
#[derive(Debug, Clone, Args)]
pub struct ExecArgs {
    /// Owner identity (the owner pid is CMD's pid).
    #[command(flatten)]
    pub owner: OwnerArgs,
    /// What to lock.
    #[command(flatten)]
    pub resources: ResourceArgs,
    /// The command to run and its arguments
    #[arg(required = true, last = true, value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,
}

/// `check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Check the lease files in DIR (SHA-256 of each path) instead of the paths
    #[arg(long, value_name = "DIR")]
    pub lockspace_dir: Option<PathBuf>,
    /// Print a JSON array instead of text
    #[arg(long)]
    pub json: bool,
    /// Disk paths to check
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<String>,
}

/// `acquire` and `release`.
#[derive(Debug, Clone, Args)]
pub struct LockArgs {
    /// Owner pid the locks are taken for [default: the parent process]
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// Owner identity.
    #[command(flatten)]
    pub owner: OwnerArgs,
    /// What to lock or unlock.
    #[command(flatten)]
    pub resources: ResourceArgs,
    /// Take the disks given as plain PATH arguments shared
    #[arg(long)]
    pub shared: bool,
    /// More disks, like --disk
    #[arg(value_name = "PATH")]
    pub paths: Vec<String>,
}

/// `register`.
#[derive(Debug, Clone, Args)]
pub struct RegisterArgs {
    /// Owner pid [default: the parent process]
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// Owner identity.
    #[command(flatten)]
    pub owner: OwnerArgs,
    /// Send RESTRICT after REGISTER
    #[arg(long)]
    pub restrict: bool,
}

/// `holders`.
#[derive(Debug, Clone, Args)]
pub struct HoldersArgs {
    /// The daemon config with the etcd settings [default: /etc/libvirt/virtlockd.conf]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Look up the lease files named by the SHA-256 of each PATH in DIR
    #[arg(long, value_name = "DIR")]
    pub lockspace_dir: Option<String>,
    /// An explicit lease: KEY in the lockspace LOCKSPACE (repeatable)
    #[arg(long = "lease", value_name = "LOCKSPACE:KEY")]
    pub leases: Vec<String>,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
    /// Disk paths to look up
    #[arg(value_name = "PATH")]
    pub paths: Vec<String>,
}

fn parse_uuid(s: &str) -> Result<Uuid, String> {
    Uuid::parse_str(s).map_err(|e| format!("invalid UUID: {e}"))
}
