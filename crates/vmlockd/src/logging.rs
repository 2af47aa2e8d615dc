//! libvirt's logging settings on top of `tracing`.
//!
//! ```text
//! level   1 debug · 2 info · 3 warning (default) · 4 error
//! filters "1:locking 4:rpc"     → events whose target contains "locking" log from debug
//! outputs "3:stderr 1:file:/var/log/x.log 3:journald 3:syslog:vmlockd"
//! precedence (low → high): config file, LIBVIRT_DEBUG / LIBVIRT_LOG_FILTERS /
//!                          LIBVIRT_LOG_OUTPUTS, then -v (at least info)
//! ```
//! journald and syslog are written natively (one datagram per line to
//! `/run/systemd/journal/socket` or `/dev/log`); when the socket is missing
//! the output falls back to stderr with a warning. Policy for levels is in
//! `docs/logging.md`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use tracing::Level;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// Standard error.
    Stderr,
    /// A file (appended).
    File(PathBuf),
    /// The systemd journal.
    Journald,
    /// syslog with an identifier.
    Syslog(String),
}

/// One output: a minimum libvirt priority and a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// 1..=4.
    pub priority: u8,
    /// Where.
    pub dest: Dest,
}

/// The resolved settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Global minimum priority.
    pub level: u8,
    /// `(priority, match)` pairs.
    pub filters: Vec<(u8, String)>,
    /// Outputs; empty means the default.
    pub outputs: Vec<Output>,
}

/// A malformed setting; the text is libvirt's (`virlog.c`), so the admin
/// program can send it as is (code 8, `invalid argument: …`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct LogError(String);

impl LogError {
    /// libvirt's message, without the `invalid argument: ` prefix.
    pub fn detail(&self) -> &str {
        &self.0
    }
}

/// libvirt's `virStrToLong_uip` on a priority: decimal digits after an
/// optional `+` (as `strtoul` reads them), 1..=4.
fn priority_of(s: &str) -> Option<u8> {
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match s.parse::<u32>() {
        Ok(p @ 1..=4) => u8::try_from(p).ok(),
        _ => None,
    }
}

fn priority(s: &str, what: &str, text: &str) -> Result<u8, LogError> {
    priority_of(s.trim()).ok_or_else(|| LogError(format!("Invalid {what} '{s}' for '{text}'")))
}

/// One filter, `prio:match` (libvirt splits on every `:` and ignores a third field; a
/// leading `+` asks for stack traces and is accepted and dropped).
fn parse_filter(f: &str) -> Result<(u8, String), LogError> {
    let mut tokens = f.split(':');
    let (Some(p), Some(m)) = (tokens.next(), tokens.next()) else {
        return Err(LogError(format!("Malformed format for filter '{f}'")));
    };
    let prio = priority_of(p)
        .ok_or_else(|| LogError(format!("Invalid priority '{p}' for filter '{f}'")))?;
    let name = m.strip_prefix('+').unwrap_or(m);
    if name.is_empty() {
        return Err(LogError(format!("Invalid match string '{m}'")));
    }
    Ok((prio, name.to_owned()))
}

/// One output, `prio:dest[:data]`.
fn parse_output(o: &str) -> Result<Output, LogError> {
    let tokens: Vec<&str> = o.split(':').collect();
    let [p, d, rest @ ..] = tokens.as_slice() else {
        return Err(LogError(format!("Malformed format for log output '{o}'")));
    };
    let prio = priority_of(p)
        .ok_or_else(|| LogError(format!("Invalid log priority '{p}' for log output '{o}'")))?;
    let needs_data = match *d {
        "stderr" | "journald" => false,
        "file" | "syslog" => true,
        _ => {
            return Err(LogError(format!(
                "Invalid log destination '{d}' for log output '{o}'"
            )));
        }
    };
    let dest = match (needs_data, rest) {
        (false, []) if *d == "stderr" => Dest::Stderr,
        (false, []) => Dest::Journald,
        (true, [data]) if *d == "file" => Dest::File(absolute(data)),
        (true, [data]) => Dest::Syslog((*data).to_owned()),
        _ => {
            return Err(LogError(format!(
                "Log output '{o}' does not meet the format requirements for destination type '{d}'"
            )));
        }
    };
    Ok(Output {
        priority: prio,
        dest,
    })
}

/// A file output's path made absolute against the working directory (libvirt's
/// `g_canonicalize_filename`).
fn absolute(path: &str) -> PathBuf {
    let p = std::path::Path::new(path);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    std::env::current_dir().map_or_else(|_| p.to_path_buf(), |d| d.join(p))
}

/// Parses `log_filters` (space-separated, empty items skipped, as libvirt).
pub fn parse_filters(text: &str) -> Result<Vec<(u8, String)>, LogError> {
    text.split([' ', '\t', '\n'])
        .filter(|f| !f.is_empty())
        .map(parse_filter)
        .collect()
}

/// Parses `log_outputs`; a later output to the same destination replaces an
/// earlier one (libvirt's `virLogParseOutputs`).
pub fn parse_outputs(text: &str) -> Result<Vec<Output>, LogError> {
    let mut list: Vec<Output> = Vec::new();
    for o in text.split([' ', '\t', '\n']).filter(|o| !o.is_empty()) {
        let out = parse_output(o)?;
        list.retain(|e| e.dest != out.dest);
        list.push(out);
    }
    Ok(list)
}

/// Combines the config, the environment and `-v`.
pub fn resolve(
    conf: &vmlock_conf::DaemonConfig,
    env: impl Fn(&str) -> Option<String>,
    verbose: bool,
) -> Result<Settings, LogError> {
    let mut level = if conf.log_level == 0 {
        3
    } else {
        conf.log_level.clamp(1, 4) as u8
    };
    let mut filters = parse_filters(conf.log_filters.as_deref().unwrap_or(""))?;
    let mut outputs = parse_outputs(conf.log_outputs.as_deref().unwrap_or(""))?;
    if let Some(d) = env("LIBVIRT_DEBUG").filter(|s| !s.is_empty()) {
        level = priority(&d, "log level", "LIBVIRT_DEBUG")?;
    }
    if let Some(f) = env("LIBVIRT_LOG_FILTERS").filter(|s| !s.is_empty()) {
        filters = parse_filters(&f)?;
    }
    if let Some(o) = env("LIBVIRT_LOG_OUTPUTS").filter(|s| !s.is_empty()) {
        outputs = parse_outputs(&o)?;
    }
    if verbose {
        level = level.min(2);
    }
    Ok(Settings {
        level,
        filters,
        outputs,
    })
}

fn to_level(p: u8) -> Level {
    match p {
        1 => Level::DEBUG,
        2 => Level::INFO,
        3 => Level::WARN,
        _ => Level::ERROR,
    }
}

fn journal_socket() -> &'static str {
    "/run/systemd/journal/socket"
}

/// The default outputs (docs/protocol.md §8.7).
pub fn default_outputs(
    level: u8,
    daemonized: bool,
    privileged: bool,
    home: Option<PathBuf>,
) -> Vec<Output> {
    let journald = std::path::Path::new(journal_socket()).exists();
    let dest = if journald && (daemonized || !io::IsTerminal::is_terminal(&io::stdin())) {
        return vec![Output {
            priority: level.max(2),
            dest: Dest::Journald,
        }];
    } else if daemonized && privileged {
        Dest::File("/var/log/libvirt/virtlockd.log".into())
    } else if daemonized {
        Dest::File(
            home.unwrap_or_default()
                .join(".cache/libvirt/virtlockd.log"),
        )
    } else {
        Dest::Stderr
    };
    vec![Output {
        priority: level,
        dest,
    }]
}

/// The settings in force, shared by the subscriber and the admin program.
#[derive(Debug)]
struct Live {
    level: u8,
    filters: Vec<(u8, String)>,
    outputs: Vec<(Output, BoxWriter)>,
    /// What an empty `daemon-log-outputs` goes back to.
    default: Vec<Output>,
}

impl Live {
    /// The least severe priority an event of `target` needs on `out_priority`.
    fn admits(&self, meta: &tracing::Metadata<'_>, out_priority: u8) -> bool {
        let prio = self
            .filters
            .iter()
            .find(|(_, name)| meta.target().contains(name.as_str()))
            .map_or(self.level, |(p, _)| *p);
        *meta.level() <= LevelFilter::from_level(to_level(prio.max(out_priority)))
    }

    fn enabled(&self, meta: &tracing::Metadata<'_>) -> bool {
        self.outputs
            .iter()
            .any(|(o, _)| self.admits(meta, o.priority))
    }
}

/// The running logger's settings, changeable at run time (admin procedures 14–17).
#[derive(Debug, Clone)]
pub struct LogHandle {
    live: Arc<RwLock<Live>>,
}

static HANDLE: std::sync::OnceLock<LogHandle> = std::sync::OnceLock::new();

/// The installed logger's handle (`None` before [`install`], e.g. in unit tests).
pub fn handle() -> Option<&'static LogHandle> {
    HANDLE.get()
}

fn read(live: &RwLock<Live>) -> std::sync::RwLockReadGuard<'_, Live> {
    live.read().unwrap_or_else(|p| p.into_inner())
}

impl LogHandle {
    /// `daemon-log-outputs`: libvirt's text (`3:stderr 1:file:/x`) and the count.
    pub fn outputs_text(&self) -> (String, u32) {
        let l = read(&self.live);
        let text: Vec<String> = l.outputs.iter().map(|(o, _)| o.to_string()).collect();
        (text.join(" "), l.outputs.len() as u32)
    }

    /// `daemon-log-filters`: libvirt's text (`1:*locking* 4:*rpc* `, each
    /// followed by a space; `None` when there are none) and the count.
    pub fn filters_text(&self) -> (Option<String>, u32) {
        let l = read(&self.live);
        if l.filters.is_empty() {
            return (None, 0);
        }
        let text: String = l
            .filters
            .iter()
            .map(|(p, m)| format!("{p}:*{m}* "))
            .collect();
        (Some(text), l.filters.len() as u32)
    }

    /// Replaces the filters (`None` or empty: no filters).
    pub fn set_filters(&self, text: Option<&str>) -> Result<(), LogError> {
        let filters = parse_filters(text.unwrap_or(""))?;
        self.live.write().unwrap_or_else(|p| p.into_inner()).filters = filters;
        tracing::callsite::rebuild_interest_cache();
        Ok(())
    }

    /// Replaces the outputs (`None` or empty: the default output). An output
    /// that cannot be opened fails the whole change; nothing is replaced.
    pub fn set_outputs(&self, text: Option<&str>) -> Result<(), LogError> {
        let parsed = match text.filter(|t| !t.is_empty()) {
            Some(t) => parse_outputs(t)?,
            None => read(&self.live).default.clone(),
        };
        let mut opened = Vec::with_capacity(parsed.len());
        for o in parsed {
            let w = writer_for(&o.dest)
                .map_err(|e| LogError(format!("cannot open log output '{o}': {e}")))?;
            opened.push((o, w));
        }
        self.live.write().unwrap_or_else(|p| p.into_inner()).outputs = opened;
        tracing::callsite::rebuild_interest_cache();
        Ok(())
    }
}

impl std::fmt::Display for Output {
    /// libvirt's form: `3:stderr`, `3:journald`, `1:file:/path`, `3:syslog:ident`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.priority;
        match &self.dest {
            Dest::Stderr => write!(f, "{p}:stderr"),
            Dest::Journald => write!(f, "{p}:journald"),
            Dest::File(path) => write!(f, "{p}:file:{}", path.display()),
            Dest::Syslog(ident) => write!(f, "{p}:syslog:{ident}"),
        }
    }
}

/// Installs the global subscriber: one formatting layer whose filter and
/// destinations are read from the shared settings, so the admin program can
/// change both while the daemon runs. `default` is what an empty
/// `daemon-log-outputs` restores. Returns warnings to log once it is up.
pub fn install(s: &Settings, outputs: Vec<Output>, default: Vec<Output>) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut opened = Vec::with_capacity(outputs.len());
    for o in outputs {
        let writer = match writer_for(&o.dest) {
            Ok(w) => w,
            Err(e) => {
                warnings.push(format!(
                    "log output {:?} unavailable ({e}): using stderr",
                    o.dest
                ));
                BoxWriter::Stderr
            }
        };
        opened.push((o, writer));
    }
    let live = Arc::new(RwLock::new(Live {
        level: s.level,
        filters: s.filters.clone(),
        outputs: opened,
        default,
    }));
    let for_filter = Arc::clone(&live);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(Router {
            live: Arc::clone(&live),
        })
        .with_ansi(false)
        .with_target(true)
        .with_filter(filter_fn(move |meta| read(&for_filter).enabled(meta)));
    if tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .is_ok()
    {
        let _ = HANDLE.set(LogHandle { live });
    }
    warnings
}

/// Sends each formatted line to every output that admits its event.
#[derive(Debug)]
struct Router {
    live: Arc<RwLock<Live>>,
}

impl<'a> MakeWriter<'a> for Router {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> LineWriter {
        let l = read(&self.live);
        LineWriter {
            targets: l.outputs.iter().map(|(_, w)| w.clone()).collect(),
            level: Level::INFO,
            buf: Vec::with_capacity(160),
        }
    }
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> LineWriter {
        let l = read(&self.live);
        LineWriter {
            targets: l
                .outputs
                .iter()
                .filter(|(o, _)| l.admits(meta, o.priority))
                .map(|(_, w)| w.clone())
                .collect(),
            level: *meta.level(),
            buf: Vec::with_capacity(160),
        }
    }
}

/// A destination as a `MakeWriter`.
#[derive(Debug, Clone)]
enum BoxWriter {
    Stderr,
    File(Arc<Mutex<File>>),
    Datagram(Arc<DatagramSink>),
}

#[derive(Debug)]
struct DatagramSink {
    sock: UnixDatagram,
    journald: bool,
    ident: String,
}

fn writer_for(d: &Dest) -> io::Result<BoxWriter> {
    Ok(match d {
        Dest::Stderr => BoxWriter::Stderr,
        Dest::File(p) => {
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let f = OpenOptions::new().create(true).append(true).open(p)?;
            BoxWriter::File(Arc::new(Mutex::new(f)))
        }
        Dest::Journald | Dest::Syslog(_) => {
            let sock = UnixDatagram::unbound()?;
            let (path, journald, ident) = match d {
                Dest::Syslog(i) => ("/dev/log", false, i.clone()),
                _ => (journal_socket(), true, "vmlockd".to_owned()),
            };
            sock.connect(path)?;
            BoxWriter::Datagram(Arc::new(DatagramSink {
                sock,
                journald,
                ident,
            }))
        }
    })
}

/// A writer for one event: the line is buffered and written to each target on drop.
#[derive(Debug)]
pub struct LineWriter {
    targets: Vec<BoxWriter>,
    level: Level,
    buf: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        let line = std::mem::take(&mut self.buf);
        for t in &self.targets {
            let _ = match t {
                BoxWriter::Stderr => io::stderr().write_all(&line),
                BoxWriter::File(f) => f.lock().map_or(Ok(()), |mut f| f.write_all(&line)),
                BoxWriter::Datagram(s) => s.send(self.level, &line),
            };
        }
    }
}

impl DatagramSink {
    fn send(&self, level: Level, line: &[u8]) -> io::Result<()> {
        let prio = match level {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        };
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end();
        let msg = if self.journald {
            format!(
                "PRIORITY={prio}\nSYSLOG_IDENTIFIER={}\nMESSAGE={}\n",
                self.ident,
                text.replace('\n', " ")
            )
        } else {
            format!(
                "<{}>{}[{}]: {text}",
                24 + prio,
                self.ident,
                std::process::id()
            )
        };
        self.sock.send(msg.as_bytes()).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libvirt_filter_and_output_syntax_parses() {
        let f = parse_filters("1:locking 4:object +2:rpc").expect("filters");
        assert_eq!(
            f,
            vec![
                (1, "locking".into()),
                (4, "object".into()),
                (2, "rpc".into())
            ]
        );
        let o = parse_outputs("3:syslog:virtlockd 1:file:/var/log/x.log 3:journald 2:stderr")
            .expect("outputs");
        assert_eq!(o.len(), 4);
        assert_eq!(
            o[1],
            Output {
                priority: 1,
                dest: Dest::File("/var/log/x.log".into())
            }
        );
        for (bad, why) in [
            (
                "5:stderr",
                "Invalid log priority '5' for log output '5:stderr'",
            ),
            (
                "x:stderr",
                "Invalid log priority 'x' for log output 'x:stderr'",
            ),
            (
                "1:nowhere",
                "Invalid log destination 'nowhere' for log output '1:nowhere'",
            ),
            ("1", "Malformed format for log output '1'"),
            (
                "1:stderr:x",
                "Log output '1:stderr:x' does not meet the format requirements for destination type 'stderr'",
            ),
            (
                "1:file",
                "Log output '1:file' does not meet the format requirements for destination type 'file'",
            ),
        ] {
            assert_eq!(
                parse_outputs(bad).map(drop),
                Err(LogError(why.into())),
                "{bad}"
            );
        }
        let rel = parse_outputs("1:file:rel.log").expect("relative file");
        assert!(matches!(&rel[0].dest, Dest::File(p) if p.is_absolute() && p.ends_with("rel.log")));
        assert_eq!(
            parse_filters("locking").map(drop),
            Err(LogError("Malformed format for filter 'locking'".into()))
        );
        assert_eq!(
            parse_filters("x:bad").map(drop),
            Err(LogError("Invalid priority 'x' for filter 'x:bad'".into()))
        );
        assert_eq!(
            parse_filters("1:+").map(drop),
            Err(LogError("Invalid match string '+'".into()))
        );
    }

    #[test]
    fn outputs_print_and_replace_like_libvirt() {
        let o = parse_outputs("3:stderr  1:file:/x.log 2:stderr 3:syslog:vmlockd").expect("o");
        let text: Vec<String> = o.iter().map(ToString::to_string).collect();
        assert_eq!(text, ["1:file:/x.log", "2:stderr", "3:syslog:vmlockd"]);
    }

    #[test]
    fn environment_beats_config_and_verbose_beats_both() {
        let conf = vmlock_conf::DaemonConfig {
            log_level: 4,
            log_filters: Some("1:locking".into()),
            ..Default::default()
        };
        let none = |_: &str| None;
        assert_eq!(resolve(&conf, none, false).expect("r").level, 4);
        let env = |k: &str| (k == "LIBVIRT_DEBUG").then(|| "3".to_owned());
        assert_eq!(resolve(&conf, env, false).expect("r").level, 3);
        assert_eq!(resolve(&conf, env, true).expect("r").level, 2);
        assert_eq!(
            resolve(&conf, none, false).expect("r").filters,
            vec![(1, "locking".into())]
        );
    }
}
