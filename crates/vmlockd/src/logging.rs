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
use std::sync::{Arc, Mutex};

use tracing::Level;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterFn, LevelFilter, filter_fn};
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

/// A malformed setting.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid log {what} '{text}'")]
pub struct LogError {
    what: &'static str,
    text: String,
}

fn priority(s: &str, what: &'static str, text: &str) -> Result<u8, LogError> {
    match s.parse::<u8>() {
        Ok(p @ 1..=4) => Ok(p),
        _ => Err(LogError {
            what,
            text: text.to_owned(),
        }),
    }
}

/// Parses `log_filters`.
pub fn parse_filters(text: &str) -> Result<Vec<(u8, String)>, LogError> {
    text.split_whitespace()
        .map(|f| {
            let (p, name) = f.split_once(':').ok_or(LogError {
                what: "filter",
                text: f.into(),
            })?;
            let name = name.trim_start_matches('+');
            Ok((priority(p, "filter", f)?, name.to_owned()))
        })
        .collect()
}

/// Parses `log_outputs`.
pub fn parse_outputs(text: &str) -> Result<Vec<Output>, LogError> {
    text.split_whitespace()
        .map(|o| {
            let bad = || LogError {
                what: "output",
                text: o.into(),
            };
            let mut parts = o.splitn(3, ':');
            let p = priority(parts.next().ok_or_else(bad)?, "output", o)?;
            let dest = match (parts.next(), parts.next()) {
                (Some("stderr"), None) => Dest::Stderr,
                (Some("journald"), None) => Dest::Journald,
                (Some("file"), Some(path)) if path.starts_with('/') => Dest::File(path.into()),
                (Some("syslog"), Some(ident)) if !ident.is_empty() => Dest::Syslog(ident.into()),
                _ => return Err(bad()),
            };
            Ok(Output { priority: p, dest })
        })
        .collect()
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
        level = priority(d.trim(), "level", &d)?;
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

/// The default outputs (spec §8.7).
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

/// Installs the global subscriber. Returns warnings to log once it is up.
pub fn install(s: &Settings, outputs: Vec<Output>) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut layers: Vec<Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>> = Vec::new();
    for o in outputs {
        let filter = event_filter(s, o.priority);
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
        let ansi =
            matches!(writer, BoxWriter::Stderr) && io::IsTerminal::is_terminal(&io::stderr());
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(ansi)
            .with_target(true)
            .with_filter(filter);
        layers.push(Box::new(layer));
    }
    let _ = tracing_subscriber::registry().with(layers).try_init();
    warnings
}

fn event_filter(
    s: &Settings,
    out_priority: u8,
) -> FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool + Send + Sync + 'static> {
    let global = s.level;
    let filters = s.filters.clone();
    filter_fn(move |meta| {
        let prio = filters
            .iter()
            .find(|(_, name)| meta.target().contains(name.as_str()))
            .map_or(global, |(p, _)| *p);
        let want = LevelFilter::from_level(to_level(prio.max(out_priority)));
        *meta.level() <= want
    })
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

/// A writer for one event.
#[derive(Debug)]
pub struct LineWriter {
    target: BoxWriter,
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
        let _ = match &self.target {
            BoxWriter::Stderr => io::stderr().write_all(&line),
            BoxWriter::File(f) => f.lock().map_or(Ok(()), |mut f| f.write_all(&line)),
            BoxWriter::Datagram(s) => s.send(self.level, &line),
        };
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

impl<'a> MakeWriter<'a> for BoxWriter {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            target: self.clone(),
            level: Level::INFO,
            buf: Vec::with_capacity(160),
        }
    }
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> LineWriter {
        LineWriter {
            target: self.clone(),
            level: *meta.level(),
            buf: Vec::with_capacity(160),
        }
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
        for bad in [
            "5:stderr",
            "x:stderr",
            "1:file:relative",
            "1:syslog:",
            "1:nowhere",
            "1",
        ] {
            assert!(parse_outputs(bad).is_err(), "{bad} should be rejected");
        }
        assert!(parse_filters("locking").is_err());
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
