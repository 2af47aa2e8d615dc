//! libvirt's `lockd.so` in processes that are their own lock owner and
//! start and pause their domain over and over, with exactly the calls
//! libvirt makes around a QEMU start and a pause:
//!
//! ```text
//! loop: new(owner pid = self)  disk  acquire(RESTRICT) → fd kept
//!       release (a new connection)  free  close(fd)
//! ```
//!
//! The close of one cycle's kept connection must take effect before the
//! next cycle's requests: otherwise it releases the next cycle's lock and
//! the daemon terminates a healthy process. Every cycle must succeed and no
//! process may be terminated, in direct and lease-file mode, one process
//! and several at once, against both daemons; for vmlockd also while it
//! re-execs itself in the middle of the loop.

#[allow(dead_code)]
mod common;

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Ctx, differential, within};
use vmlock_testkit::tool_binary;
use vmlock_testkit::{Daemon, DaemonSpec, Flavor};

/// Cycles per process.
const CYCLES: usize = 1000;

/// The script of one process: `cycles` start/pause cycles of one domain.
fn script(init: &str, n: usize, disk: &str, cycles: usize) -> String {
    let mut s = format!("{init}\n");
    for _ in 0..cycles {
        s.push_str(&format!(
            "new 7c71982d-0713-2794-a5a4-8d0fc7b80{n:03} cyc{n} {} self\n\
             disk {disk}\n\
             acquire restrict\n\
             release\n\
             free\n\
             close-fds\n",
            n + 1
        ));
    }
    s
}

/// Starts `procs` looping processes in the daemon's namespace, each on a
/// disk of its own.
fn start(ctx: &Ctx, init: &str, procs: usize, cycles: usize) -> Vec<(Child, usize)> {
    (0..procs)
        .map(|n| {
            let disk = ctx.p(&format!("cyc{n}.img"));
            common::touch(std::path::Path::new(&disk));
            let text = script(init, n, &disk, cycles);
            let lines = text.lines().count();
            let mut child = ctx
                .d
                .run_in_ns(&tool_binary("vmlock-plugin-run"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn vmlock-plugin-run");
            let mut stdin = child.stdin.take().expect("stdin");
            // The runner reads line by line; a writer thread keeps a large
            // script from filling the pipe while its output fills the other.
            std::thread::spawn(move || {
                let _ = stdin.write_all(text.as_bytes());
            });
            (child, lines)
        })
        .collect()
}

/// Waits for every process and checks that each ran to the end on its own
/// (not terminated by the daemon) and that every command succeeded.
fn finish(children: Vec<(Child, usize)>, what: &str) {
    for (n, (mut child, lines)) in children.into_iter().enumerate() {
        let mut stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            let mut out = String::new();
            let _ = stdout.read_to_string(&mut out);
            out
        });
        let done = within(120, || child.try_wait().ok().flatten().is_some());
        if !done {
            let _ = child.kill();
        }
        let status = child.wait().expect("wait");
        let out = reader.join().expect("reader");
        let results: Vec<&str> = out.lines().collect();
        let failed: Vec<(usize, &&str)> = results
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.starts_with("ok"))
            .take(5)
            .collect();
        assert!(
            done && status.success(),
            "{what}: process {n} ended with {status:?} (signal {:?}) after {} of {lines} commands",
            status.signal(),
            results.len()
        );
        assert!(failed.is_empty(), "{what}: process {n} failed: {failed:?}");
        assert_eq!(
            results.len(),
            lines,
            "{what}: process {n}: one result per command"
        );
        let acquired = results.iter().filter(|l| l.starts_with("ok fd=")).count();
        assert_eq!(
            acquired,
            (lines - 1) / 6,
            "{what}: process {n}: every cycle kept a connection"
        );
    }
}

fn run(ctx: &mut Ctx, init: &str, procs: usize, what: &str) {
    let t0 = Instant::now();
    finish(start(ctx, init, procs, CYCLES), what);
    eprintln!(
        "{} {what}: {procs} x {CYCLES} cycles in {:?}",
        ctx.flavor().name(),
        t0.elapsed()
    );
    ctx.note(format!(
        "{what}: {procs} x {CYCLES} cycles, none terminated"
    ));
}

#[test]
fn start_pause_cycles_with_the_kept_fd_direct_mode() {
    differential(|ctx| {
        run(ctx, "init", 1, "direct, one process");
        run(ctx, "init", 4, "direct, four processes");
    });
}

#[test]
fn start_pause_cycles_with_the_kept_fd_lease_file_mode() {
    differential(|ctx| {
        let conf = ctx.dir().join("qemu-lockd.conf");
        let files = ctx.p("files");
        std::fs::write(&conf, format!("file_lockspace_dir = \"{files}\"\n")).expect("conf");
        let init = format!("init {}", conf.display());
        run(ctx, &init, 1, "lease files, one process");
        run(ctx, &init, 4, "lease files, four processes");
    });
}

/// vmlockd only: virtlockd's own re-exec gives up (and drops every lock)
/// when a client has connected but not registered yet, which this loop
/// makes likely at any moment.
#[test]
fn start_pause_cycles_through_re_execs() {
    let spec = DaemonSpec::new(Flavor::Ours).config("log_level = 2\n");
    let d = Daemon::start(spec).expect("start vmlockd");
    let mut ctx = Ctx { d, t: Vec::new() };
    let children = start(&ctx, "init", 4, CYCLES);
    let t0 = Instant::now();
    for i in 0..5 {
        std::thread::sleep(Duration::from_millis(150));
        ctx.d.signal(libc::SIGUSR1).expect("SIGUSR1");
        // One signal at a time: two sent while an image starts up (its
        // signals still blocked) would merge into one re-exec.
        let logged = vmlock_testkit::wait_until(Duration::from_secs(30), || {
            ctx.d.log_text().matches("SIGUSR1: re-exec").count() > i
        });
        assert!(
            logged,
            "re-exec {} not logged:\n{}",
            i + 1,
            ctx.d.log_text()
        );
    }
    finish(children, "direct, four processes, five re-execs");
    eprintln!("four processes through five re-execs: {:?}", t0.elapsed());
    ctx.d.assert_alive();
    let log = ctx.d.log_text();
    let execs = log.matches("SIGUSR1: re-exec").count();
    assert!(execs >= 5, "five re-execs logged ({execs}):\n{log}");
    assert!(
        !log.contains("terminated lock holder")
            && !log.contains("holder connection closed: released"),
        "no lock released by a close, no holder terminated:\n{log}"
    );
}
