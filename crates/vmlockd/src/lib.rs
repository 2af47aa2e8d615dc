//! vmlockd: a drop-in, wire-compatible replacement for libvirt's virtlockd.
//!
//! `main` is thin: [`main_entry`] parses virtlockd's command line, loads the
//! configuration (or the embedded default), sets up logging, takes the pid
//! file, binds or adopts the sockets and runs `daemon::serve` on a tokio
//! runtime. [`run`] is the same daemon without the process around it (given
//! sockets, a configuration and a shutdown future), for tests and embedding.
//! Lock semantics live in the `lockspace` crate; the wire format in
//! `vmlock-proto`; this crate owns processes, sockets and lifecycles.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

// The public surface is the two programs' entry points (and what the
// crate's own tests and fuzz targets reach); every module is crate-private,
// so the compiler reports whatever nothing uses.
mod activation;
mod adoption;
mod backend;
mod cli;
#[cfg(feature = "etcd")]
mod cluster;
mod conn;
mod ctx;
mod daemon;
mod dispatch;
mod dlm;
mod error;
mod fenced;
#[cfg(feature = "etcd")]
mod fencelink;
mod fsexec;
mod fuzzing;
mod lifeline;
mod logging;
mod lslist;
mod metrics;
mod owners;
mod paths;
mod pidfile;
mod ratelimit;
mod restart;
mod server;
mod session;
mod stats;
mod terminate;

pub use fenced::main_entry as fenced_main;

#[doc(hidden)]
#[cfg(feature = "etcd")]
pub use fencelink::{FenceLink, LinkConfig};
#[doc(hidden)]
pub use fuzzing::{fuzz_entry_read_state, fuzz_entry_read_statebin};

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::ctx::{Ctx, Handover, ServerKind};
use crate::daemon::{Listener, Stopped};

/// virtlockd's exit codes (`virdaemon.h`).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Generic failure, including the pid file.
    pub const FAILURE: u8 = 1;
    /// The run dir could not be created.
    pub const RUNDIR: u8 = 2;
    /// Initialisation failed.
    pub const INIT: u8 = 3;
    /// Signal handlers could not be installed.
    pub const SIGNAL: u8 = 4;
    /// Sockets could not be set up.
    pub const NETWORK: u8 = 6;
    /// Re-exec failed.
    pub const REEXEC: u8 = 9;
}

/// A start-up failure: the exit code, what failed and, when another error
/// is the reason, that error as its source.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct Fatal {
    /// Exit code.
    pub code: u8,
    /// What failed ("Can't load config file '/x'").
    what: String,
    /// Why, when another error says it.
    #[source]
    cause: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Fatal {
    /// A failure that is its own reason.
    fn new(code: u8, what: impl std::fmt::Display) -> Fatal {
        Fatal {
            code,
            what: what.to_string(),
            cause: None,
        }
    }

    /// `what` failed because of `cause`.
    fn caused(
        code: u8,
        what: impl Into<String>,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Fatal {
        Fatal {
            code,
            what: what.into(),
            cause: Some(cause.into()),
        }
    }

    /// The line printed and logged: what failed, then its cause
    /// ("Can't load config file '/x': No such file or directory").
    pub fn report(&self) -> String {
        match &self.cause {
            Some(c) => format!("{}: {c}", self.what),
            None => self.what.clone(),
        }
    }
}

/// The signals the daemon handles: blocked from the first instruction of
/// `main` until the handlers are in place (see [`vmlock_sys::signal`]).
pub const HANDLED_SIGNALS: [i32; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// The whole program: returns the process exit code.
pub fn main_entry() -> ExitCode {
    // A re-exec'd image runs with default dispositions until its handlers
    // are installed: a SIGUSR1 or SIGTERM arriving meanwhile must wait, not
    // kill the daemon (and drop every lock).
    let _ = vmlock_sys::signal::block(&HANDLED_SIGNALS);
    let args: Vec<OsString> = std::env::args_os().collect();
    let argv0 = args
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_else(|| "vmlockd".into());
    let rest = args.get(1..).unwrap_or_default();
    match cli::parse(rest) {
        Ok(cli::Action::Help) => {
            eprint!("{}", cli::usage(&argv0));
            ExitCode::SUCCESS
        }
        Ok(cli::Action::Version) => {
            println!("{}", cli::version_line(&argv0));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{argv0}: {e}");
            eprint!("{}", cli::usage(&argv0));
            ExitCode::from(exit::FAILURE)
        }
        Ok(cli::Action::Run(c)) => match run_process(c) {
            Ok(()) => ExitCode::SUCCESS,
            Err(f) => {
                let report = f.report();
                eprintln!("{argv0}: {report}");
                tracing::error!("{report}");
                ExitCode::from(f.code)
            }
        },
    }
}

/// Loads the config: `-f` must exist; the implicit default path may be
/// missing, in which case the embedded default is used.
pub fn load_config(
    cli: &cli::Cli,
    env: &paths::Env,
) -> Result<(vmlock_conf::DaemonConfig, Vec<vmlock_conf::Warning>), Fatal> {
    let (path, explicit) = match &cli.config {
        Some(p) => (p.clone(), true),
        None => (env.default_config(), false),
    };
    if !explicit && !path.exists() {
        return vmlock_conf::DaemonConfig::parse(vmlock_conf::DaemonConfig::EMBEDDED_DEFAULT)
            .map_err(|e| Fatal::caused(exit::FAILURE, "embedded default config", e));
    }
    vmlock_conf::DaemonConfig::load(&path).map_err(|e| {
        let what = format!("Can't load config file '{}'", path.display());
        Fatal::caused(exit::FAILURE, what, e)
    })
}

fn run_process(cli: cli::Cli) -> Result<(), Fatal> {
    let _ = stats::IMAGE_START.set(std::time::Instant::now());
    // First, while this is the only thread: consume systemd's variables.
    let act_env = activation::ActivationEnv::take_from_process();
    let env = paths::Env::from_process();
    // Before anything opens a descriptor: adopt what a previous image handed over.
    let state_file = env.paths(None, None).state_file;
    let t0 = std::time::Instant::now();
    let (inherited, mut restore_log) = restart::take_inherited(&state_file, vmlock_sys::getpid());
    if inherited.is_some() {
        restore_log.push(format!(
            "re-exec: state read and descriptors adopted in {:?}",
            t0.elapsed()
        ));
    }
    restore_log.extend(act_env.unset_errors.iter().cloned());
    let (conf, conf_warnings) = load_config(&cli, &env)?;
    let settings = logging::resolve(&conf, |k| std::env::var(k).ok(), cli.verbose)
        .map_err(|e| Fatal::new(exit::FAILURE, e))?;
    let report = if cli.daemon && inherited.is_none() {
        Some(vmlock_sys::process::daemonize().map_err(|e| Fatal::new(exit::FAILURE, e))?)
    } else {
        None
    };
    let default =
        logging::default_outputs(settings.level, cli.daemon, env.privileged, env.home.clone());
    let outputs = if settings.outputs.is_empty() {
        default.clone()
    } else {
        settings.outputs.clone()
    };
    for w in logging::install(&settings, outputs, default) {
        warn!("{w}");
    }
    for w in conf_warnings {
        warn!("config line {}: {} ({})", w.line, w.message, w.key);
    }
    for line in restore_log {
        // Timings are routine; everything else there is a problem found.
        if line.starts_with("re-exec: ") {
            info!("{line}");
        } else {
            warn!("{line}");
        }
    }
    let started = start(&cli, &env, &conf, act_env, inherited);
    match (started, report) {
        (Ok(s), Some(r)) => {
            r.success();
            s.run()
        }
        (Ok(s), None) => s.run(),
        (Err(f), Some(r)) => {
            r.failure(&f.report());
            Err(f)
        }
        (Err(f), None) => Err(f),
    }
}

/// A daemon ready to serve.
struct Started {
    runtime: tokio::runtime::Runtime,
    ctx: Arc<Ctx>,
    listeners: Vec<Listener>,
    conns: Vec<(ServerKind, Handover)>,
    signals: daemon::Signals,
    timeout: Option<u32>,
    state_file: std::path::PathBuf,
    pid_file: pidfile::PidFile,
}

fn start(
    cli: &cli::Cli,
    env: &paths::Env,
    conf: &vmlock_conf::DaemonConfig,
    act_env: activation::ActivationEnv,
    inherited: Option<restart::Inherited>,
) -> Result<Started, Fatal> {
    // Settings are checked before anything is created: a daemon that will
    // not start never shows a socket a client could connect to.
    let metrics_listen = match &conf.metrics_listen {
        Some(text) => Some((
            text,
            metrics::Listen::parse(text).map_err(|e| Fatal::new(exit::INIT, e))?,
        )),
        None => None,
    };
    let sock_dir = conf.unix_sock_dir.as_deref().map(Path::new);
    let p = env.paths(cli.pid_file.as_deref(), sock_dir);
    make_run_dir(&p.run_dir, env.privileged)?;
    if let Some(d) = sock_dir {
        make_run_dir(d, env.privileged)?;
    }
    let pid_file = pidfile::PidFile::acquire(&p.pid_file, vmlock_sys::getpid())
        .map_err(|e| Fatal::new(exit::FAILURE, e))?;
    match vmlock_sys::limits::raise_nofile() {
        // Counting means listing /proc/self/fd: milliseconds with the
        // thousands of lock descriptors a re-exec inherits, so only then
        // is the count left out (the restore logs the number of locks).
        Ok((soft, _)) if inherited.is_some() => info!("descriptor limit {soft}"),
        Ok((soft, _)) => info!(
            "descriptor limit {soft}, {} in use",
            vmlock_sys::limits::open_fd_count().unwrap_or(0)
        ),
        Err(e) => warn!("cannot raise the descriptor limit: {e}"),
    }
    let lock_kind = match conf.lock_kind {
        vmlock_conf::LockKindSetting::Ofd => lockspace::LockKind::Ofd,
        vmlock_conf::LockKindSetting::Posix => lockspace::LockKind::Posix,
    };
    // Before the engine: an adopted lease may need fencing at once.
    let cluster = start_cluster(conf, env.privileged).map_err(|e| match e {
        backend::StartError::Failed { backend, source } => Fatal::caused(
            exit::INIT,
            format!("cannot start the {backend} back end"),
            source,
        ),
        e @ backend::StartError::NotBuilt(_) => Fatal::new(exit::INIT, e),
    })?;
    let opts = lockspace::EngineOptions {
        lock_kind,
        arbiter: cluster.as_ref().map(Backend::arbiter),
        // vmlockd runs no other program: lock descriptors stay inheritable,
        // so a re-exec hands them on without one `fcntl` each (restart/).
        inherit_fds: true,
    };
    // One event-loop thread: every request is a few microseconds of CPU, and
    // on small hosts extra workers cost more in wake-ups than they add.
    // Calls that may block (network filesystems, holder termination) run on
    // tokio's blocking pool, never on this thread.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .thread_name("vmlockd-worker")
        .enable_all()
        .build()
        .map_err(|e| Fatal::caused(exit::INIT, "cannot start the runtime", e))?;
    let signals = {
        let _rt = runtime.enter();
        daemon::Signals::install().map_err(|e| Fatal::new(exit::SIGNAL, e))?
    };
    // Handlers in place: what arrived since `main` began is delivered now,
    // to this thread (threads started before keep them blocked).
    vmlock_sys::signal::unblock(&HANDLED_SIGNALS).map_err(|e| Fatal::new(exit::SIGNAL, e))?;
    let cold_start = inherited.is_none();
    let (engine, listeners, conns, next_ids) = match inherited {
        Some(inh) => {
            let t0 = std::time::Instant::now();
            let r = restored(inh.restore(opts));
            info!("re-exec: restore took {:?}", t0.elapsed());
            // The previous image may have left a memory releaser behind
            // (`vmlock_sys::mem::ExecReleaser`); vmlockd has no other children.
            if let Err(e) = vmlock_sys::mem::reap_children_in_background() {
                warn!("cannot start the thread that reaps the previous image's releaser: {e}");
            }
            // Heap the restore was given and did not use goes back once
            // the daemon serves (not on the way to the first client).
            runtime.spawn(async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                vmlock_sys::mem::trim();
            });
            r
        }
        None => (
            lockspace::Engine::new(opts),
            listeners(&p, act_env)?,
            Vec::new(),
            ((1, 1), (None, None)),
        ),
    };
    let (next_ids, limits) = next_ids;
    // Lockspaces libvirt created before a restart (docs/quirks.md #17): remembered
    // beside the sockets; a re-exec carries them in its state instead.
    if cold_start {
        lslist::restore(&engine, &p.lockspace_list);
    }
    let lockspaces = lslist::LockspaceList::new(p.lockspace_list.clone(), engine.lockspace_paths());
    lockspaces.sync();
    let engine = Arc::new(engine);
    let hooks = cluster.as_ref().map(|c| {
        c.attach(&engine);
        c.hooks()
    });
    let reexec_locks = (!cold_start).then(|| engine.counts().0);
    let ctx = context(conf, engine, hooks, Some(lockspaces));
    if let Some(n) = reexec_locks {
        ctx.shared.stats.set_reexec(n);
        ctx.shared.owners.adopt(stats::carried_owners());
    }
    ctx.main
        .next_id
        .store(next_ids.0, std::sync::atomic::Ordering::Relaxed);
    ctx.admin
        .next_id
        .store(next_ids.1, std::sync::atomic::Ordering::Relaxed);
    // A limit changed with virt-admin survives a re-exec, as in virtlockd.
    for (st, limit) in [(&ctx.main, limits.0), (&ctx.admin, limits.1)] {
        if let Some(n) = limit.and_then(|n| usize::try_from(n).ok()) {
            use std::sync::atomic::Ordering::Relaxed;
            st.max_clients.store(n, Relaxed);
            st.max_unauth_clients.fetch_min(n, Relaxed);
        }
    }
    let ctx = Arc::new(ctx);
    if let Some((text, listen)) = metrics_listen {
        let bound = metrics::bind(&listen).map_err(|e| {
            Fatal::caused(
                exit::INIT,
                format!("cannot listen for metrics on {text}"),
                e,
            )
        })?;
        info!("metrics at {text}");
        runtime.spawn(metrics::serve(ctx.clone(), bound));
    }
    Ok(Started {
        runtime,
        ctx,
        listeners,
        conns,
        signals,
        timeout: cli.timeout,
        state_file: p.state_file,
        pid_file,
    })
}

/// The state every connection shares, for `engine` with `conf`'s settings.
fn context(
    conf: &vmlock_conf::DaemonConfig,
    engine: Arc<lockspace::Engine>,
    hooks: Option<Arc<dyn session::ClusterHooks>>,
    lockspaces: Option<lslist::LockspaceList>,
) -> Ctx {
    let shared = Arc::new(session::Shared {
        owners: owners::Owners::new(conf.refusal_names_holder),
        stats: stats::Stats::new(conf.lock_kind.as_str(), conf.metrics_listen.is_some()),
        engine,
        // With a cluster back end every acquire is a network round trip:
        // keep all of them off the event loop.
        fs: fsexec::FsExec::new(hooks.is_some()),
        cluster: hooks,
        lockspaces,
        lifelines: lifeline::Lifelines::new(Duration::from_millis(u64::from(
            conf.holder_kill_grace_ms,
        ))),
    });
    Ctx::new(shared, conf.max_clients, conf.admin_max_clients)
}

/// The sockets [`run`] serves: already bound and listening.
#[derive(Debug)]
pub struct Listeners {
    /// virtlockd's socket: the lock program.
    pub lock: std::os::unix::net::UnixListener,
    /// The admin socket (the admin and inquiry programs), if any.
    pub admin: Option<std::os::unix::net::UnixListener>,
}

/// The daemon without the process around it: serves `listeners` with the
/// engine and limits of `config` until `shutdown` completes, then closes
/// every connection as a shutdown does and returns, every lock released.
///
/// What [`main_entry`] adds is the process: command line, pid file,
/// logging, signals, socket activation, the idle timeout, re-exec, named
/// lockspaces remembered across restarts, metrics and the cluster back end
/// (`lock_backend` other than `"file"` is refused here).
pub fn run(
    listeners: Listeners,
    config: &vmlock_conf::DaemonConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Fatal> {
    if config.lock_backend != "file" {
        return Err(Fatal::new(
            exit::INIT,
            format!(
                "run() serves lock_backend = \"file\" only, not \"{}\"",
                config.lock_backend
            ),
        ));
    }
    let lock_kind = match config.lock_kind {
        vmlock_conf::LockKindSetting::Ofd => lockspace::LockKind::Ofd,
        vmlock_conf::LockKindSetting::Posix => lockspace::LockKind::Posix,
    };
    let engine = lockspace::Engine::new(lockspace::EngineOptions {
        lock_kind,
        arbiter: None,
        // Nothing is handed to another program.
        inherit_fds: false,
    });
    let ctx = Arc::new(context(config, Arc::new(engine), None, None));
    let mut served = vec![Listener {
        kind: ServerKind::Main,
        fd: listeners.lock.into(),
        unlink: None,
    }];
    served.extend(listeners.admin.map(|l| Listener {
        kind: ServerKind::Admin,
        fd: l.into(),
        unlink: None,
    }));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Fatal::caused(exit::INIT, "cannot start the runtime", e))?;
    let stop = async {
        shutdown.await;
        Ok(Stopped::Shutdown)
    };
    runtime
        .block_on(daemon::serve(ctx, served, Vec::new(), stop, None))
        .map_err(|e| Fatal::new(exit::INIT, e))?;
    Ok(())
}

use backend::{Backend, start_cluster};

type RestoredParts = (
    lockspace::Engine,
    Vec<Listener>,
    Vec<(ServerKind, Handover)>,
    // Next client ids and client limits, main and admin.
    ((u64, u64), (Option<u64>, Option<u64>)),
);

fn restored(r: restart::Restored) -> RestoredParts {
    for p in &r.problems {
        warn!("re-exec restore: {p}");
    }
    for p in &r.report.problems {
        warn!("re-exec restore: {p:?}");
    }
    let (resources, lockspaces) = r.engine.counts();
    info!(
        "restored after re-exec: {} resources in {} lockspaces, {} clients, {} listeners",
        resources,
        lockspaces,
        r.conns.len(),
        r.listeners.len()
    );
    (r.engine, r.listeners, r.conns, (r.next_ids, r.max_clients))
}

impl Started {
    fn run(self) -> Result<(), Fatal> {
        let Started {
            runtime,
            ctx,
            mut listeners,
            mut conns,
            mut signals,
            timeout,
            state_file,
            // Held (locked) until the daemon exits; a re-exec keeps the same pid.
            pid_file: _pid_file,
        } = self;
        let argv: Vec<OsString> = std::env::args_os().collect();
        let wd = activation::watchdog_period(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        if let Some(period) = wd {
            info!("systemd watchdog: pinging every {period:?}");
            runtime.spawn(activation::watchdog(period));
        }
        loop {
            let r = runtime.block_on(daemon::serve(
                ctx.clone(),
                listeners,
                conns,
                daemon::wait_for_stop(&ctx, &mut signals),
                timeout,
            ));
            let (stopped, back) = r.map_err(|e| Fatal::new(exit::INIT, e))?;
            if stopped == Stopped::Shutdown {
                for l in &back {
                    if let Some(path) = &l.unlink {
                        let _ = std::fs::remove_file(path);
                    }
                }
                info!("shut down");
                return Ok(());
            }
            let parked = std::mem::take(&mut *ctx.parked.lock().unwrap_or_else(|p| p.into_inner()));
            let err = restart::exec(&ctx, &back, &parked, &state_file, &argv);
            tracing::error!(
                "re-exec of {:?} failed: {err}; still serving, every lock held",
                argv.first()
            );
            listeners = back;
            conns = parked;
        }
    }
}

fn make_run_dir(dir: &Path, privileged: bool) -> Result<(), Fatal> {
    let old = vmlock_sys::umask(if privileged { 0o022 } else { 0o077 });
    let r = std::fs::create_dir_all(dir);
    vmlock_sys::umask(old);
    r.map_err(|e| {
        let what = format!("Unable to create rundir {}", dir.display());
        Fatal::caused(exit::RUNDIR, what, e)
    })
}

fn listeners(p: &paths::Paths, act_env: activation::ActivationEnv) -> Result<Vec<Listener>, Fatal> {
    let named = activation::parse(&act_env, std::process::id())
        .map_err(|e| Fatal::new(exit::NETWORK, e))?;
    if let Some(named) = named {
        let act = activation::claim(named).map_err(|e| Fatal::new(exit::NETWORK, e))?;
        let mut out: Vec<Listener> = Vec::new();
        for (kind, fds) in [(ServerKind::Main, act.main), (ServerKind::Admin, act.admin)] {
            out.extend(fds.into_iter().map(|fd| Listener {
                kind,
                fd,
                unlink: None,
            }));
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    for (kind, path) in [
        (ServerKind::Main, &p.sock),
        (ServerKind::Admin, &p.admin_sock),
    ] {
        let fd = daemon::bind(path).map_err(|e| {
            let what = format!("Failed to bind socket to '{}'", path.display());
            Fatal::caused(exit::NETWORK, what, e)
        })?;
        out.push(Listener {
            kind,
            fd,
            unlink: Some(path.clone()),
        });
    }
    Ok(out)
}
