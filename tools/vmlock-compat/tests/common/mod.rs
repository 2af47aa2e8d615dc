//! Shared helpers of the differential suite: run one scenario against every
//! flavor, record a normalised transcript of every reply and observation,
//! and require the transcripts to be identical, and identical to the one
//! libvirt's virtlockd gave when the test was written.
//!
//! Normalisation: each daemon gets its own temp dir of the same length
//! (`/tmp/vmlock-tXXXXXX`); that prefix is replaced by `/tmp/vmlock-t@@@@@@`
//! in reply bytes, so byte lengths stay exact.
//!
//! Pinned transcripts: comparing the flavors with each other checks nothing
//! when only one runs (`LOCKD_UNDER_TEST=ours`, or virtlockd missing outside
//! CI). So every test's transcript is also compared with virtlockd's, kept
//! in `tests/transcripts/<test file>/<test>.json` (a JSON array of lines,
//! exact to the byte). `VMLOCK_PIN_TRANSCRIPTS=1` (with virtlockd among the
//! flavors) writes virtlockd's transcript there instead of reading it: for
//! a new test, or after a deliberate change of a scenario. A test without a
//! pinned transcript fails.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vmlock_testkit::frames::{self, Header, WireError, hex};
use vmlock_testkit::{Daemon, DaemonSpec, Flavor, RawConn, decode_reply};

/// A UUID for the owners the tests register.
pub const UUID_A: [u8; 16] = *b"\xc7\xa5\xfd\xbd\xed\xaf\x94\x55\x92\x6a\xd6\x5c\x16\xdb\x18\x09";
/// Another UUID.
pub const UUID_B: [u8; 16] = *b"\x3e\x2b\x1c\x0a\x5a\x4d\x4f\x4e\x9c\x2b\x0a\x1b\x2c\x3d\x4e\x5f";
/// Fake owner pids: no process with these pids ever connects, so locks
/// owned by them are never released by a close (and nobody gets killed).
pub const PID_A: u32 = 4_194_001;
/// Another fake owner pid.
pub const PID_B: u32 = 4_194_002;
/// A third fake owner pid.
pub const PID_C: u32 = 4_194_003;

/// A decoded reply, with its raw bytes.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The frame, length word included (not normalised).
    pub raw: Vec<u8>,
    /// Its header.
    pub header: Header,
    /// The error of an ERROR reply.
    pub err: Option<WireError>,
}

impl Reply {
    /// 0 for success, else the error code.
    pub fn code(&self) -> i32 {
        self.err.as_ref().map_or(0, |e| e.code)
    }
    /// The error message, or "".
    pub fn text(&self) -> &str {
        self.err.as_ref().map_or("", |e| e.text())
    }
    /// The error's domain, or 0.
    pub fn domain(&self) -> i32 {
        self.err.as_ref().map_or(0, |e| e.domain)
    }
}

/// One flavor's run of a scenario.
#[derive(Debug)]
pub struct Ctx {
    /// The daemon.
    pub d: Daemon,
    /// The transcript.
    pub t: Vec<String>,
}

impl Ctx {
    /// The flavor under test.
    pub fn flavor(&self) -> Flavor {
        self.d.flavor()
    }
    /// A path in the scratch dir, as a string.
    pub fn p(&self, rel: &str) -> String {
        self.d.dir().join(rel).to_string_lossy().into_owned()
    }
    /// The scratch dir.
    pub fn dir(&self) -> PathBuf {
        self.d.dir()
    }
    /// A new connection.
    pub fn conn(&self) -> RawConn {
        self.d.connect()
    }
    /// Replaces the per-daemon temp dir prefix by a same-length placeholder.
    pub fn norm(&self, bytes: &[u8]) -> Vec<u8> {
        let root = self.d.root().to_string_lossy().into_owned();
        let keep = "/tmp/vmlock-t".len().min(root.len());
        let placeholder = format!("{}{}", &root[..keep], "@".repeat(root.len() - keep));
        replace(bytes, root.as_bytes(), placeholder.as_bytes())
    }
    /// Normalises a text line the same way.
    pub fn norm_text(&self, s: &str) -> String {
        String::from_utf8_lossy(&self.norm(s.as_bytes())).into_owned()
    }
    /// Records an observation.
    pub fn note(&mut self, s: impl AsRef<str>) {
        let line = self.norm_text(s.as_ref());
        self.t.push(line);
    }
    /// Sends `frame` on `c`, reads the reply and records it.
    pub fn call(&mut self, c: &mut RawConn, frame: &[u8]) -> Reply {
        let r = self.call_quiet(c, frame);
        let text = self.norm_text(r.text());
        let line = describe(&self.norm(&r.raw), &r, &text);
        self.t.push(line);
        r
    }
    /// Like [`Ctx::call`] but records nothing (for flavor-specific steps).
    pub fn call_quiet(&mut self, c: &mut RawConn, frame: &[u8]) -> Reply {
        let raw = match c.call(frame) {
            Ok(r) => r,
            Err(e) => {
                self.d.assert_alive();
                panic!("{}: no reply to {}: {e}", self.flavor().name(), hex(frame));
            }
        };
        let (header, err) = decode_reply(&raw);
        Reply { raw, header, err }
    }
    /// A connection registered as owner `pid` (name "vm", id 1).
    pub fn owner(&mut self, pid: u32) -> RawConn {
        let mut c = self.conn();
        let r = self.call(&mut c, &frames::register(0, UUID_A, "vm", 1, pid, 0));
        assert_eq!(
            r.code(),
            0,
            "{}: register: {}",
            self.flavor().name(),
            r.text()
        );
        c
    }
    /// Records whether `rel` exists in the scratch dir, and its mode.
    pub fn note_file(&mut self, rel: &str) {
        self.note_file_as(rel, rel);
    }
    /// Like [`Ctx::note_file`], recorded under `label` (for names that
    /// differ between flavors, such as hashes of per-daemon paths).
    pub fn note_file_as(&mut self, rel: &str, label: &str) {
        use std::os::unix::fs::PermissionsExt;
        let state = match std::fs::metadata(self.dir().join(rel)) {
            Ok(m) => format!("mode {:o}", m.permissions().mode() & 0o7777),
            Err(_) => "absent".to_string(),
        };
        self.note(format!("file {label}: {state}"));
    }
}

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    if from.is_empty() {
        return hay.to_vec();
    }
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

fn describe(norm: &[u8], r: &Reply, text: &str) -> String {
    let h = r.header;
    let what = match &r.err {
        None => "OK".to_string(),
        Some(e) => format!("ERR {}/{} {text:?}", e.code, e.domain),
    };
    format!(
        "reply proc={} serial={} {what} | {}",
        h.proc_,
        h.serial,
        hex(norm)
    )
}

/// Runs `scenario` against every flavor (`LOCKD_UNDER_TEST`), each with a
/// fresh daemon from `spec` (vmlockd with virtlockd's error texts:
/// [`DaemonSpec::virtlockd_texts`]), and asserts the transcripts are
/// identical, to each other and to virtlockd's pinned one.
pub fn differential_with(spec: impl Fn(Flavor) -> DaemonSpec, scenario: impl Fn(&mut Ctx)) {
    let mut runs: Vec<(Flavor, Vec<String>)> = Vec::new();
    for f in Flavor::from_env() {
        let d = Daemon::start(spec(f).virtlockd_texts())
            .unwrap_or_else(|e| panic!("start {}: {e}", f.name()));
        let mut ctx = Ctx { d, t: Vec::new() };
        scenario(&mut ctx);
        ctx.d.assert_alive();
        eprintln!("--- transcript of {}:", f.name());
        for line in &ctx.t {
            eprintln!("  {line}");
        }
        runs.push((f, ctx.t));
    }
    compare(&runs);
    check_pinned(runs.iter().map(|(f, t)| (*f, f.name(), t.as_slice())));
}

/// [`differential_with`] with default daemons.
pub fn differential(scenario: impl Fn(&mut Ctx)) {
    differential_with(DaemonSpec::new, scenario)
}

/// Panics with the first difference between the transcripts.
pub fn compare(runs: &[(Flavor, Vec<String>)]) {
    let Some((f0, t0)) = runs.first() else { return };
    for (f, t) in &runs[1..] {
        for (i, (a, b)) in t0.iter().zip(t).enumerate() {
            assert_eq!(
                a,
                b,
                "step {i} differs: {} (left) vs {} (right)",
                f0.name(),
                f.name()
            );
        }
        assert_eq!(
            t0.len(),
            t.len(),
            "{} and {} ran different step counts",
            f0.name(),
            f.name()
        );
    }
}

/// Writes an empty file (a "disk") in the scratch dir, world-writable.
pub fn touch(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, b"").unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666));
}

/// The testkit's `vmlock-hold`.
pub fn hold_bin() -> PathBuf {
    vmlock_testkit::tool_binary("vmlock-hold")
}

/// Polls for up to `secs` seconds.
pub fn within(secs: u64, cond: impl FnMut() -> bool) -> bool {
    vmlock_testkit::wait_until(Duration::from_secs(secs), cond)
}

/// The environment variable that pins transcripts instead of checking them.
pub const PIN_VAR: &str = "VMLOCK_PIN_TRANSCRIPTS";

/// Where virtlockd's transcript of the running test is pinned. The test is
/// named by its thread (the test harness runs each test on a thread named
/// after it).
pub fn pinned_path() -> PathBuf {
    let thread = std::thread::current();
    let test = match thread.name() {
        Some(name) if name != "main" => name.replace("::", "__"),
        _ => panic!(
            "a differential scenario must run on its test's own thread (the \
             thread's name names the pinned transcript)"
        ),
    };
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/transcripts")
        .join(env!("CARGO_CRATE_NAME"))
        .join(format!("{test}.json"))
}

/// Checks each run's transcript (`label` names the run in messages) against
/// the one virtlockd gave, pinned at [`pinned_path`]; with
/// `VMLOCK_PIN_TRANSCRIPTS=1`, first pins the transcript of the first run
/// of virtlockd.
pub fn check_pinned<'a>(runs: impl IntoIterator<Item = (Flavor, &'a str, &'a [String])>) {
    let runs: Vec<(Flavor, &str, &[String])> = runs.into_iter().collect();
    let path = pinned_path();
    if std::env::var_os(PIN_VAR).is_some_and(|v| v == "1") {
        let Some((_, _, theirs)) = runs.iter().find(|(f, _, _)| *f == Flavor::Theirs) else {
            panic!(
                "{PIN_VAR}=1 pins virtlockd's transcript, but virtlockd did not run (LOCKD_UNDER_TEST)"
            );
        };
        let mut text = serde_json::to_string_pretty(theirs).expect("transcript as JSON");
        text.push('\n');
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        }
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        eprintln!("pinned virtlockd's transcript in {}", path.display());
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "no transcript of virtlockd pinned for this test ({}: {e}): run it once with \
             {PIN_VAR}=1 and virtlockd installed, and check the file in",
            path.display()
        )
    });
    let pinned: Vec<String> = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: not a JSON array of lines: {e}", path.display()));
    assert!(
        !pinned.is_empty(),
        "{}: an empty transcript checks nothing",
        path.display()
    );
    for (_, label, t) in runs {
        if let Some(at) = first_difference(&pinned, t) {
            panic!(
                "the transcript of {label} differs from virtlockd's pinned one ({}) at line {}:\n\
                 --- virtlockd (pinned)\n{}--- {label}\n{}",
                path.display(),
                at + 1,
                context(&pinned, at),
                context(t, at),
            );
        }
    }
}

/// The index of the first differing line (or where one transcript ends).
pub fn first_difference(a: &[String], b: &[String]) -> Option<usize> {
    let common = a.iter().zip(b).position(|(x, y)| x != y);
    common.or_else(|| (a.len() != b.len()).then(|| a.len().min(b.len())))
}

/// Lines around `at`, the one at `at` marked and quoted (so trailing
/// spaces show).
pub fn context(lines: &[String], at: usize) -> String {
    let mut s = String::new();
    let first = at.saturating_sub(6);
    for (i, line) in lines.iter().enumerate().take(at + 4).skip(first) {
        if i == at {
            let _ = writeln!(s, ">{:4} {line:?}", i + 1);
        } else {
            let _ = writeln!(s, " {:4} {line}", i + 1);
        }
    }
    if at >= lines.len() {
        let _ = writeln!(s, ">{:4} (end of transcript)", at + 1);
    }
    s
}
