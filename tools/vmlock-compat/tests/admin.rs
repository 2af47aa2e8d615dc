//! libvirt's own `virt-admin` CLI against each daemon's admin socket: the
//! output of every command must be the same for vmlockd as for virtlockd.
//!
//! Three scenarios, each on fresh daemons (one per flavor):
//!
//! 1. No lock clients: `version`, `srv-list`, thread-pool and client
//!    information of both servers (`virtlockd`, `admin`), the client list of
//!    the admin server and `client-info` of virt-admin's own admin
//!    connection, the log settings, and lookups of a server and of clients
//!    that do not exist.
//! 2. Settings: `srv-threadpool-set`, `srv-update-tls`, `srv-clients-set`,
//!    `daemon-log-filters`, `daemon-log-outputs` (valid and invalid values,
//!    each followed by a read-back) and `daemon-timeout`.
//! 3. Lock clients: four raw connections, one registered (fake owner pid),
//!    one refused a call (RESTRICT before REGISTER), one that called an
//!    unknown procedure and one that only sent a keepalive; the client list
//!    and counts, `client-info` of each (on virtlockd the last two have no
//!    identity and cannot be described; vmlockd describes them: the one
//!    deliberate difference, checked per flavor), `client-disconnect` of
//!    the keepalive-only one (the test
//!    checks that its socket is closed by the daemon and that the others
//!    still answer), the list again.
//!
//! virt-admin runs as root inside the daemon's mount namespace, where
//! `virtlockd:///system` is that daemon's `/run/libvirt/virtlockd-admin-sock`.
//! The transcript of a run is, per command: the command line, the exit
//! code, stdout and stderr line by line, byte-exact after the normalisation
//! of [`Norm`] (times, pids, admin-server client ids), which keeps every
//! value's width so that virt-admin's table alignment is still compared.
//!
//! When libvirt's virtlockd is among the flavors, it runs twice (two fresh
//! instances) and those two transcripts are compared first: a difference
//! there means the normalisation is incomplete, not that vmlockd is wrong.
//! `LOCKD_UNDER_TEST=theirs` therefore checks the test itself. Every run is
//! also compared with virtlockd's transcript pinned in `tests/transcripts/`,
//! so a run of vmlockd alone is checked too.

#[allow(dead_code)]
mod common;

use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Ctx, PID_A, context, first_difference};
use vmlock_testkit::frames::{self, Xdr};
use vmlock_testkit::{Daemon, DaemonSpec, Flavor};

/// libvirt's admin CLI (Debian package `libvirt-clients`).
const VIRT_ADMIN: &str = "/usr/bin/virt-admin";
/// As root, this URI is `/run/libvirt/virtlockd-admin-sock`.
const ADMIN_URI: &str = "virtlockd:///system";
/// How long one virt-admin command may take (it normally takes ~20 ms).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the daemon has to close a connection after `client-disconnect`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn admin_queries_without_lock_clients() {
    admin_differential(|run| {
        for cmd in [
            "version",
            "srv-list",
            "srv-threadpool-info virtlockd",
            "srv-threadpool-info admin",
            "srv-clients-list virtlockd",
            "srv-clients-info virtlockd",
            "srv-clients-info admin",
        ] {
            run.va(&words(cmd));
        }
        // The admin server lists the one client it has: the virt-admin
        // process asking. Client ids count up per server, so the next
        // virt-admin connection gets the next id and can describe itself.
        let listed = run.va(&words("srv-clients-list admin"));
        match client_ids(&listed.stdout).as_slice() {
            [own] => {
                let next = (own + 1).to_string();
                run.va_as(
                    &["client-info", "admin", &next],
                    "client-info admin <own id>",
                );
            }
            other => run.note(format!("expected one admin client, listed {other:?}")),
        }
        for cmd in [
            "daemon-log-filters",
            "daemon-log-outputs",
            "srv-clients-list nope",
            "srv-threadpool-info nope",
            "srv-clients-info nope",
            "client-info admin 99",
            "client-info virtlockd 99",
            "client-disconnect admin 99",
        ] {
            run.va(&words(cmd));
        }
    });
}

#[test]
fn admin_settings_are_validated_and_read_back() {
    admin_differential(|run| {
        for cmd in [
            &["srv-threadpool-set", "virtlockd", "--max-workers", "5"][..],
            &["srv-threadpool-set", "virtlockd", "--min-workers", "2"],
            // Not --prio-workers: virt-admin itself refuses that option.
            // Growing the priority pool is synchronous in libvirt (its
            // threads are created before the reply); shrinking it is not
            // (the threads leave in their own time), so it is not read back.
            &["srv-threadpool-set", "virtlockd", "--priority-workers", "3"],
            &["srv-threadpool-info", "virtlockd"],
            &["srv-update-tls", "virtlockd"],
            &["srv-clients-set", "virtlockd", "--max-clients", "10"],
            &["srv-clients-set", "virtlockd", "--max-unauth-clients", "5"],
            &["srv-clients-set", "virtlockd", "--max-clients", "10"],
            &["srv-clients-info", "virtlockd"],
            &["daemon-log-filters", "1:locking 4:rpc"],
            &["daemon-log-filters"],
            &["daemon-log-filters", "x:bad"],
            &["daemon-log-filters", ""],
            &["daemon-log-filters"],
            &["daemon-log-outputs", "2:stderr"],
            &["daemon-log-outputs"],
            &["daemon-log-outputs", "9:nope"],
            &["daemon-log-outputs", "3:file"],
            &["daemon-log-outputs"],
            &["daemon-timeout", "--timeout", "0"],
        ] {
            run.va(cmd);
        }
    });
}

#[test]
fn admin_lists_describes_and_disconnects_lock_clients() {
    admin_differential(|run| {
        // Each connection has had an answer before the next one connects,
        // so the daemon accepted them in this order: their ids ascend.
        // On virtlockd a client has an identity (which `client-info`
        // needs) once one of its calls was dispatched to a procedure, even
        // a refused one; an unknown procedure or a keepalive gives none.
        let mut registered = run.ctx.owner(PID_A);
        let mut refused = run.ctx.conn();
        run.ctx.call(&mut refused, &frames::restrict(1, 0));
        let mut unknown = run.ctx.conn();
        run.ctx.call(&mut unknown, &frames::call(99, 1, Xdr::new()));
        let mut silent = run.ctx.conn();
        let pong = silent.barrier_is_pong();
        run.note(format!("keepalive-only connection answers: {pong}"));

        let listed = run.va(&words("srv-clients-list virtlockd"));
        let ids: Vec<String> = client_ids(&listed.stdout)
            .iter()
            .map(u64::to_string)
            .collect();
        let [registered_id, refused_id, unknown_id, silent_id] = ids.as_slice() else {
            run.note(format!("expected four lock clients, listed {ids:?}"));
            return;
        };
        let [registered_id, refused_id, unknown_id, silent_id] =
            [registered_id, refused_id, unknown_id, silent_id].map(String::clone);
        run.va(&words("srv-clients-info virtlockd"));
        for id in [&registered_id, &refused_id] {
            run.va(&["client-info", "virtlockd", id]);
        }
        for id in [&unknown_id, &silent_id] {
            run.client_info_without_identity(id);
        }

        run.va(&["client-disconnect", "virtlockd", &silent_id]);
        let closed = silent.expect_closed(CLOSE_TIMEOUT);
        run.note(format!(
            "disconnected connection closed by the daemon: {closed}"
        ));
        let mut answering = true;
        for (name, conn) in [
            ("registered", &mut registered),
            ("refused", &mut refused),
            ("unknown", &mut unknown),
        ] {
            let pong = conn.barrier_is_pong();
            run.note(format!(
                "{name} connection still answers a keepalive: {pong}"
            ));
            answering &= pong;
        }

        run.va(&words("srv-clients-list virtlockd"));
        run.va(&words("srv-clients-info virtlockd"));
        run.va(&["client-disconnect", "virtlockd", &silent_id]);
        run.assert_that(closed, "client-disconnect did not close the connection");
        run.assert_that(answering, "another connection stopped answering");
    });
}

/// One flavor's daemon, driven by virt-admin, with its transcript.
struct AdminRun {
    /// The daemon and the transcript (`ctx.t`).
    ctx: Ctx,
    /// stdout and stderr of the current command (files: no pipe to drain).
    out_path: PathBuf,
    err_path: PathBuf,
}

/// What one virt-admin command printed (not normalised).
#[derive(Debug)]
struct Output {
    stdout: String,
}

impl AdminRun {
    fn new(d: Daemon) -> AdminRun {
        let out_path = d.root().join("virt-admin.out");
        let err_path = d.root().join("virt-admin.err");
        AdminRun {
            ctx: Ctx { d, t: Vec::new() },
            out_path,
            err_path,
        }
    }

    /// Records a line.
    fn note(&mut self, line: impl AsRef<str>) {
        self.ctx.note(line);
    }

    /// Runs `virt-admin -c virtlockd:///system <args>` and records it.
    fn va(&mut self, args: &[&str]) -> Output {
        let shown = args
            .iter()
            .map(|a| shell_word(a))
            .collect::<Vec<_>>()
            .join(" ");
        self.va_as(args, &shown)
    }

    /// Like [`AdminRun::va`], recording the command line as `shown` (for
    /// arguments that differ between runs, such as an admin client id).
    fn va_as(&mut self, args: &[&str], shown: &str) -> Output {
        let (status, stdout, stderr, norm) = self.run_va(args);
        self.note(format!("$ virt-admin {shown}"));
        let Some(status) = status else {
            self.note(format!("  (no exit within {COMMAND_TIMEOUT:?})"));
            self.fail(&format!("virt-admin {shown} hung"));
        };
        self.note(format!("  exit {}", exit_code(status)));
        for (stream, text) in [("out", &stdout), ("err", &stderr)] {
            for line in norm.text(args, text) {
                self.note(format!("  {stream}|{line}"));
            }
        }
        Output { stdout }
    }

    /// Runs virt-admin without recording anything: exit status (`None`:
    /// hung and killed), stdout, stderr and the normalisation for them.
    fn run_va(&mut self, args: &[&str]) -> (Option<ExitStatus>, String, String, Norm) {
        let mut cmd = self.ctx.d.run_in_ns(Path::new(VIRT_ADMIN));
        cmd.arg("-c")
            .arg(ADMIN_URI)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C")
            .env("HOME", self.ctx.d.root())
            .stdin(Stdio::null())
            .stdout(create(&self.out_path))
            .stderr(create(&self.err_path));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {VIRT_ADMIN}: {e}"));
        // unshare and sh both exec: the child is virt-admin itself.
        let norm = Norm::new(child.id());
        let status = wait_for(&mut child, COMMAND_TIMEOUT);
        (
            status,
            read_lossy(&self.out_path),
            read_lossy(&self.err_path),
            norm,
        )
    }

    /// `client-info` of a lock client that has made no lock call: the one
    /// deliberate difference (docs/compatibility.md, "Admin protocol").
    /// virtlockd has no identity for such a client yet and fails; vmlockd
    /// describes it. Checked per flavor; the transcript gets a neutral line.
    fn client_info_without_identity(&mut self, id: &str) {
        let (status, stdout, stderr, _) = self.run_va(&["client-info", "virtlockd", id]);
        let ok = status.is_some_and(|s| s.success());
        let as_expected = match self.ctx.flavor() {
            Flavor::Theirs => {
                !ok && stderr.contains("No identity information available for client")
            }
            _ => ok && stdout.contains("unix_process_id"),
        };
        if !as_expected {
            self.fail(&format!(
                "client-info virtlockd {id} (no lock call yet): exit {status:?}\n{stdout}{stderr}"
            ));
        }
        self.note("client-info of a client without a lock call: as documented for this daemon");
    }

    /// Panics with `what` and the transcript so far unless `cond`.
    fn assert_that(&self, cond: bool, what: &str) {
        if !cond {
            self.fail(what);
        }
    }

    fn fail(&self, what: &str) -> ! {
        let name = self.ctx.flavor().name();
        panic!(
            "{name}: {what}; transcript so far:\n{}\ndaemon log:\n{}",
            numbered(&self.ctx.t),
            self.ctx.d.log_text()
        );
    }
}

/// Runs `scenario` on a fresh daemon of every flavor (virtlockd twice, as
/// a check of the normalisation) and requires identical transcripts, the
/// same as virtlockd's pinned one (`common::check_pinned`).
fn admin_differential(scenario: impl Fn(&mut AdminRun)) {
    assert!(
        Path::new(VIRT_ADMIN).exists(),
        "{VIRT_ADMIN} is missing: scripts/install-deps.sh installs it \
         (package libvirt-clients; CI runs that script first)"
    );
    let mut labels: Vec<(Flavor, String)> = Vec::new();
    for f in Flavor::from_env() {
        labels.push((f, f.name().to_string()));
        if f == Flavor::Theirs {
            labels.push((f, "theirs (second instance)".to_string()));
        }
    }
    let mut runs: Vec<(String, Vec<String>)> = Vec::new();
    let mut flavors = Vec::new();
    for (f, label) in labels {
        let d = Daemon::start(DaemonSpec::new(f)).unwrap_or_else(|e| panic!("start {label}: {e}"));
        let mut run = AdminRun::new(d);
        scenario(&mut run);
        run.ctx.d.assert_alive();
        // Captured by the test harness: shown on failure or with --nocapture.
        eprintln!("=== transcript of {label}:\n{}", numbered(&run.ctx.t));
        runs.push((label, run.ctx.t));
        flavors.push(f);
    }
    compare_transcripts(&runs);
    common::check_pinned(
        flavors
            .iter()
            .zip(&runs)
            .map(|(f, (label, t))| (*f, label.as_str(), t.as_slice())),
    );
}

/// Panics on the first line where a transcript differs from the first
/// one, showing the difference in context (the transcripts in full are
/// printed as each run ends).
fn compare_transcripts(runs: &[(String, Vec<String>)]) {
    let Some((first_label, first)) = runs.first() else {
        return;
    };
    for (label, other) in &runs[1..] {
        let Some(at) = first_difference(first, other) else {
            continue;
        };
        let cause = if label.starts_with("theirs") {
            " (two virtlockd instances: the test's normalisation is incomplete)"
        } else {
            ""
        };
        panic!(
            "virt-admin transcripts of {first_label} and {label} differ at line {}{cause}:\n\
             --- {first_label}\n{}--- {label}\n{}",
            at + 1,
            context(first, at),
            context(other, at),
        );
    }
}

fn numbered(lines: &[String]) -> String {
    let mut s = String::new();
    for (i, line) in lines.iter().enumerate() {
        let _ = writeln!(s, "{:4} {line}", i + 1);
    }
    s
}

/// The normalisation of one virt-admin command's output. Every replacement
/// keeps the width of what it replaces except pids (which appear only as
/// `key: value` fields, never in a table).
///
/// * A time `YYYY-MM-DD hh:mm:ss+zzzz` within [`Norm::TIME_SLACK`] of now
///   becomes `YYYY-MM-DD hh:mm:ss+zzzz` literally (a time far off, e.g. a
///   timestamp sent in the wrong unit, is kept and shows as a difference).
/// * A `unix_process_id` field equal to the test process's pid becomes
///   `<PID:test>`; equal to this virt-admin's pid, `<PID:virt-admin>`.
/// * `srv-list`: the rows are sorted by server name (their ids, which
///   virt-admin assigns by position, stay in place).
/// * The output of a command about the `admin` server: the id of each
///   client-list row and the `id` field of `client-info` become `#`s (these
///   ids count virt-admin's own connections).
#[derive(Debug, Clone, Copy)]
struct Norm {
    test_pid: u32,
    virt_admin_pid: u32,
    /// Seconds since the epoch when the command ran.
    now: i64,
}

impl Norm {
    /// How far a printed time may be from now and still be normalised.
    const TIME_SLACK: i64 = 300;
    /// What a recent time becomes (same width as a time).
    const TIME: &'static str = "YYYY-MM-DD hh:mm:ss+zzzz";

    fn new(virt_admin_pid: u32) -> Norm {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Norm {
            test_pid: std::process::id(),
            virt_admin_pid,
            now,
        }
    }

    /// The normalised lines of `text`, printed by `virt-admin <args>`. A
    /// final line without a newline is marked.
    fn text(&self, args: &[&str], text: &str) -> Vec<String> {
        let about_admin = args.get(1) == Some(&"admin");
        let mut pieces: Vec<&str> = text.split('\n').collect();
        let unterminated = pieces.pop().filter(|last| !last.is_empty());
        let mut lines: Vec<String> = pieces
            .into_iter()
            .map(|l| self.line(l, about_admin))
            .collect();
        if let Some(last) = unterminated {
            lines.push(format!(
                "{}(no newline at end)",
                self.line(last, about_admin)
            ));
        }
        if args.first() == Some(&"srv-list") {
            sort_rows_keeping_ids(&mut lines);
        }
        lines
    }

    fn line(&self, line: &str, about_admin: bool) -> String {
        let line = self.times(line);
        if let Some((key, value)) = line.split_once(": ") {
            let value = match key.trim_end() {
                "unix_process_id" => self.pid(value),
                "id" if about_admin => hashes(value),
                _ => value.to_string(),
            };
            return format!("{key}: {value}");
        }
        if about_admin && let Some(id) = row_id(&line) {
            return format!(" {}{}", hashes(id), &line[1 + id.len()..]);
        }
        line
    }

    fn pid(&self, value: &str) -> String {
        match value.parse::<u32>() {
            Ok(p) if p == self.test_pid => "<PID:test>".to_string(),
            Ok(p) if p == self.virt_admin_pid => "<PID:virt-admin>".to_string(),
            _ => value.to_string(),
        }
    }

    /// Replaces every recent time in `line`.
    fn times(&self, line: &str) -> String {
        let width = Norm::TIME.len();
        let bytes = line.as_bytes();
        let mut out = String::with_capacity(line.len());
        let mut i = 0;
        while i < bytes.len() {
            if let Some(t) = bytes.get(i..i + width).and_then(parse_time)
                && (t - self.now).abs() <= Norm::TIME_SLACK
            {
                out.push_str(Norm::TIME);
                i += width;
                continue;
            }
            let ch = line[i..].chars().next().unwrap_or('\u{fffd}');
            out.push(ch);
            i += ch.len_utf8().max(1);
        }
        out
    }
}

/// Seconds since the epoch of `YYYY-MM-DD hh:mm:ss+zzzz` (virt-admin's
/// `%Y-%m-%d %H:%M:%S%z`), or None if `s` is not such a time.
fn parse_time(s: &[u8]) -> Option<i64> {
    const SHAPE: &[u8] = b"0000-00-00 00:00:00+0000";
    let fits = s.len() == SHAPE.len()
        && s.iter().zip(SHAPE).all(|(&c, &p)| match p {
            b'0' => c.is_ascii_digit(),
            b'+' => c == b'+' || c == b'-',
            _ => c == p,
        });
    if !fits {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> i64 {
        s[r].iter().fold(0, |n, &d| n * 10 + i64::from(d - b'0'))
    };
    let days = days_from_civil(num(0..4), num(5..7), num(8..10));
    let local = days * 86_400 + num(11..13) * 3600 + num(14..16) * 60 + num(17..19);
    let offset = (num(20..22) * 3600 + num(22..24) * 60) * if s[19] == b'-' { -1 } else { 1 };
    Some(local - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The leading id of a client-list row (` 12   unix   ...`).
fn row_id(line: &str) -> Option<&str> {
    let rest = line.strip_prefix(' ')?;
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let id = &rest[..digits];
    (!id.is_empty() && rest[digits..].starts_with(' ')).then_some(id)
}

/// Sorts the rows of a table by what follows their id, leaving the ids in
/// place (virt-admin numbers `srv-list` rows by position, and virtlockd
/// lists its servers in the order of a randomly seeded hash table).
fn sort_rows_keeping_ids(lines: &mut [String]) {
    let rows: Vec<usize> = (0..lines.len())
        .filter(|&i| row_id(&lines[i]).is_some())
        .collect();
    let split = |line: &str| 1 + row_id(line).map_or(0, str::len);
    let mut tails: Vec<String> = rows
        .iter()
        .map(|&i| lines[i][split(&lines[i])..].to_string())
        .collect();
    tails.sort();
    for (&i, tail) in rows.iter().zip(tails) {
        let head_len = split(&lines[i]);
        lines[i].truncate(head_len);
        lines[i].push_str(&tail);
    }
}

/// The client ids of `srv-clients-list` output (raw stdout).
fn client_ids(stdout: &str) -> Vec<u64> {
    stdout
        .lines()
        .filter_map(row_id)
        .filter_map(|id| id.parse().ok())
        .collect()
}

fn hashes(s: &str) -> String {
    "#".repeat(s.len())
}

/// Splits a command written with plain words (no quoting).
fn words(cmd: &str) -> Vec<&str> {
    cmd.split(' ').collect()
}

/// `s` as a shell would need it written.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_:./=,".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("{s:?}")
    }
}

fn exit_code(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c.to_string(),
        (None, Some(sig)) => format!("signal {sig}"),
        (None, None) => status.to_string(),
    }
}

fn create(path: &Path) -> File {
    File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()))
}

fn read_lossy(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Waits up to `timeout` for `child`; kills and reaps it if it is still
/// running then, returning None.
fn wait_for(child: &mut std::process::Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

mod normalisation {
    use super::*;

    /// 2026-11-23 12:19:01 UTC.
    const T: i64 = 1_795_436_341;

    fn norm() -> Norm {
        Norm {
            test_pid: 4242,
            virt_admin_pid: 777,
            now: T,
        }
    }

    #[test]
    fn times_are_parsed_with_their_offset() {
        assert_eq!(parse_time(b"1970-01-01 00:00:00+0000"), Some(0));
        assert_eq!(parse_time(b"2026-11-23 12:19:01+0000"), Some(T));
        assert_eq!(parse_time(b"2026-11-23 13:49:01+0130"), Some(T));
        assert_eq!(parse_time(b"2026-11-23 07:19:01-0500"), Some(T));
        assert_eq!(parse_time(b"2000-02-29 00:00:00+0000"), Some(951_782_400));
        assert_eq!(parse_time(b"2026-11-23T12:19:01+0000"), None);
        assert_eq!(parse_time(b"2026-11-23 12:19:01"), None);
    }

    #[test]
    fn recent_times_keep_their_width_and_far_ones_stay() {
        let n = norm();
        let table = [
            " Id   Transport   Connected since",
            "--------------------------------------------",
            " 2    unix        2026-11-23 12:19:03+0000",
            " 3    unix        2026-11-23 12:14:05+0000",
            " 4    unix        1970-01-21 10:43:56+0000",
            "",
        ]
        .join("\n");
        let got = n.text(&["srv-clients-list", "virtlockd"], &table);
        assert_eq!(
            got,
            [
                " Id   Transport   Connected since",
                "--------------------------------------------",
                " 2    unix        YYYY-MM-DD hh:mm:ss+zzzz",
                " 3    unix        YYYY-MM-DD hh:mm:ss+zzzz",
                " 4    unix        1970-01-21 10:43:56+0000",
            ]
        );
        assert_eq!(
            n.line("connection_time: 2026-11-23 12:19:01+0000", false),
            "connection_time: YYYY-MM-DD hh:mm:ss+zzzz"
        );
    }

    #[test]
    fn known_pids_are_named_and_others_kept() {
        let n = norm();
        assert_eq!(
            n.line("unix_process_id: 4242", false),
            "unix_process_id: <PID:test>"
        );
        assert_eq!(
            n.line("unix_process_id: 777", true),
            "unix_process_id: <PID:virt-admin>"
        );
        assert_eq!(
            n.line("unix_process_id: 4243", false),
            "unix_process_id: 4243"
        );
        // Only the pid field: a count equal to a pid is kept.
        assert_eq!(
            n.line("nclients_max        : 4242", false),
            "nclients_max        : 4242"
        );
    }

    #[test]
    fn admin_client_ids_become_hashes_of_the_same_width() {
        let n = norm();
        let list = " Id   Transport   Connected since\n\
                    --------------------------------------------\n \
                    12   unix        2026-11-23 12:19:01+0000\n\n";
        assert_eq!(
            n.text(&["srv-clients-list", "admin"], list),
            [
                " Id   Transport   Connected since",
                "--------------------------------------------",
                " ##   unix        YYYY-MM-DD hh:mm:ss+zzzz",
                "",
            ]
        );
        assert_eq!(n.line("id             : 7", true), "id             : #");
        // Ids of the lock server's clients are compared as they are.
        assert_eq!(
            n.text(&["srv-clients-list", "virtlockd"], " 12   unix   x\n"),
            [" 12   unix   x"]
        );
        assert_eq!(n.line("id             : 7", false), "id             : 7");
        // Error messages quoting a requested id are not rows.
        assert_eq!(
            n.line(
                "error: Client not found: No client with matching ID '99'",
                true
            ),
            "error: Client not found: No client with matching ID '99'"
        );
    }

    #[test]
    fn everything_else_is_kept_byte_exact() {
        let n = norm();
        let text = " Logging filters: 1:*locking* 4:*rpc* \n\nClient '2' disconnected";
        assert_eq!(
            n.text(&["daemon-log-filters"], text),
            [
                " Logging filters: 1:*locking* 4:*rpc* ",
                "",
                "Client '2' disconnected(no newline at end)",
            ]
        );
        assert!(n.text(&["version"], "").is_empty());
    }

    #[test]
    fn servers_are_listed_in_name_order_with_positional_ids() {
        let list = " Id   Name\n-----------------\n 0    virtlockd\n 1    admin\n\n";
        let sorted = [
            " Id   Name",
            "-----------------",
            " 0    admin",
            " 1    virtlockd",
            "",
        ];
        assert_eq!(norm().text(&["srv-list"], list), sorted);
        // Other tables keep their order.
        let clients = " 3    unix   b\n 2    unix   a\n";
        assert_eq!(
            norm().text(&["srv-clients-list", "virtlockd"], clients),
            [" 3    unix   b", " 2    unix   a"]
        );
    }

    #[test]
    fn client_ids_are_read_from_a_list() {
        let list = " Id   Transport   Connected since\n\
                    --------------------------------------------\n \
                    2    unix        2026-11-23 12:19:01+0000\n \
                    10   unix        2026-11-23 12:19:01+0000\n\n";
        assert_eq!(client_ids(list), [2, 10]);
        assert!(client_ids(" Id   Transport   Connected since\n---\n\n").is_empty());
    }

    #[test]
    fn transcripts_differ_at_the_first_unequal_line() {
        let a: Vec<String> = ["x", "y", "z"].map(String::from).to_vec();
        let b: Vec<String> = ["x", "y!", "z"].map(String::from).to_vec();
        assert_eq!(first_difference(&a, &a), None);
        assert_eq!(first_difference(&a, &b), Some(1));
        assert_eq!(first_difference(&a, &a[..2]), Some(2));
        assert!(context(&a, 1).contains(">   2 \"y\""));
        assert!(context(&a[..2], 2).contains("(end of transcript)"));
    }

    #[test]
    fn shell_words_are_quoted_when_needed() {
        assert_eq!(shell_word("srv-list"), "srv-list");
        assert_eq!(shell_word("1:locking 4:rpc"), "\"1:locking 4:rpc\"");
        assert_eq!(shell_word(""), "\"\"");
    }
}
