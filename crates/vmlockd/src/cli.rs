//! The command line, exactly virtlockd(8)'s: `-d -f FILE -p FILE -t SECS -v -V -h`.
//!
//! Parsing is hand-written on purpose: the accepted spellings, the exit codes
//! (usage error → 1, `-h` → 0 with usage on stderr) and the `-V` text follow
//! virtlockd, not a CLI framework's conventions.

use std::ffi::OsString;
use std::path::PathBuf;

/// Parsed options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cli {
    /// `-d`, `--daemon`: fork into the background.
    pub daemon: bool,
    /// `-f`, `--config FILE`: configuration file (must exist when given).
    pub config: Option<PathBuf>,
    /// `-p`, `--pid-file FILE`.
    pub pid_file: Option<PathBuf>,
    /// `-t`, `--timeout SECS`: exit after SECS with no clients and no locks.
    pub timeout: Option<u32>,
    /// `-v`, `--verbose`.
    pub verbose: bool,
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Run the daemon.
    Run(Cli),
    /// Print the version and exit 0.
    Version,
    /// Print usage to stderr and exit 0.
    Help,
}

/// A command-line error: print it and the usage, exit 1.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CliError {
    /// An option this program does not know.
    #[error("unrecognized option '{0}'")]
    Unknown(String),
    /// An option that needs an argument came last.
    #[error("option '{0}' requires an argument")]
    MissingArg(String),
    /// `-t` with something that is not a number in range.
    #[error("Invalid value for timeout: '{0}'")]
    BadTimeout(String),
    /// A positional argument (virtlockd takes none).
    #[error("unexpected argument '{0}'")]
    Positional(String),
}

/// The largest timeout virtlockd accepts (INT_MAX / 1000 seconds).
pub const TIMEOUT_MAX: u32 = (i32::MAX / 1000) as u32;

/// Usage text, in the shape of virtlockd's.
pub fn usage(argv0: &str) -> String {
    format!(
        "\nUsage:\n  {argv0} [options]\n\n\
         Options:\n\
         \x20 -h | --help            Display program help:\n\
         \x20 -v | --verbose         Verbose messages.\n\
         \x20 -d | --daemon          Run as a daemon & write PID file.\n\
         \x20 -t | --timeout <secs>  Exit after timeout period.\n\
         \x20 -f | --config <file>   Configuration file.\n\
         \x20 -V | --version         Display version information.\n\
         \x20 -p | --pid-file <file> Change name of PID file.\n\n\
         libvirt lock management daemon (vmlock implementation):\n\n\
         \x20 Default paths:\n\n\
         \x20   Configuration file (unless overridden by -f):\n\
         \x20     /etc/libvirt/virtlockd.conf (as root)\n\
         \x20     $XDG_CONFIG_HOME/libvirt/virtlockd.conf (otherwise)\n\n\
         \x20   Sockets:\n\
         \x20     /run/libvirt/virtlockd-sock (as root)\n\
         \x20     $XDG_RUNTIME_DIR/libvirt/virtlockd-sock (otherwise)\n\n\
         \x20   PID file (unless overridden by -p):\n\
         \x20     /run/virtlockd.pid (as root)\n\
         \x20     $XDG_RUNTIME_DIR/libvirt/virtlockd.pid (otherwise)\n\n"
    )
}

/// The `-V` line: `<argv0> (vmlock) <version>`.
pub fn version_line(argv0: &str) -> String {
    format!("{argv0} (vmlock) {}", env!("CARGO_PKG_VERSION"))
}

/// Parses `args` (without `argv[0]`) the way getopt_long parses `df:p:t:vVh`.
pub fn parse(args: &[OsString]) -> Result<Action, CliError> {
    let mut cli = Cli::default();
    let mut it = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = it.next() {
        let (name, inline) = split_inline(&arg);
        match name.as_str() {
            "-h" | "--help" => return Ok(Action::Help),
            "-V" | "--version" => return Ok(Action::Version),
            "-d" | "--daemon" => cli.daemon = true,
            "-v" | "--verbose" => cli.verbose = true,
            "-f" | "--config" => cli.config = Some(value(&name, inline, &mut it)?.into()),
            "-p" | "--pid-file" => cli.pid_file = Some(value(&name, inline, &mut it)?.into()),
            "-t" | "--timeout" => cli.timeout = Some(timeout(&value(&name, inline, &mut it)?)?),
            "--" => {
                if let Some(extra) = it.next() {
                    return Err(CliError::Positional(extra));
                }
            }
            _ if is_short_cluster(&name) => parse_cluster(&name, &mut cli, &mut it)?,
            _ if name.starts_with('-') => return Err(CliError::Unknown(name)),
            _ => return Err(CliError::Positional(name)),
        }
    }
    Ok(Action::Run(cli))
}

/// `--opt=value` → (`--opt`, Some(value)); `-fFILE` → (`-f`, Some(FILE)).
fn split_inline(arg: &str) -> (String, Option<String>) {
    if let Some(long) = arg.strip_prefix("--") {
        return match long.split_once('=') {
            Some((n, v)) => (format!("--{n}"), Some(v.to_owned())),
            None => (arg.to_owned(), None),
        };
    }
    let b = arg.as_bytes();
    if b.len() > 2 && b[0] == b'-' && matches!(b[1], b'f' | b'p' | b't') {
        return (arg[..2].to_owned(), Some(arg[2..].to_owned()));
    }
    (arg.to_owned(), None)
}

fn is_short_cluster(name: &str) -> bool {
    name.len() > 2
        && name.starts_with('-')
        && !name.starts_with("--")
        && name[1..].chars().all(|c| "dvVh".contains(c))
}

fn parse_cluster(
    name: &str,
    cli: &mut Cli,
    _rest: &mut impl Iterator<Item = String>,
) -> Result<(), CliError> {
    for c in name[1..].chars() {
        match c {
            'd' => cli.daemon = true,
            'v' => cli.verbose = true,
            // -V/-h inside a cluster still win, as with getopt.
            'V' | 'h' => return Err(CliError::Unknown(format!("-{c} in a cluster"))),
            _ => return Err(CliError::Unknown(format!("-{c}"))),
        }
    }
    Ok(())
}

fn value(
    name: &str,
    inline: Option<String>,
    rest: &mut impl Iterator<Item = String>,
) -> Result<String, CliError> {
    inline
        .or_else(|| rest.next())
        .ok_or_else(|| CliError::MissingArg(name.to_owned()))
}

fn timeout(v: &str) -> Result<u32, CliError> {
    match v.trim().parse::<u32>() {
        Ok(t) if t <= TIMEOUT_MAX => Ok(t),
        _ => Err(CliError::BadTimeout(v.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Action, CliError> {
        let v: Vec<OsString> = args.iter().map(OsString::from).collect();
        parse(&v)
    }

    #[test]
    fn every_virtlockd_flag_parses() {
        let Ok(Action::Run(c)) = p(&["-d", "-f", "/x.conf", "-p", "/p", "-t", "30", "-v"]) else {
            panic!("should run")
        };
        assert!(c.daemon && c.verbose);
        assert_eq!(c.config.as_deref(), Some(std::path::Path::new("/x.conf")));
        assert_eq!(c.pid_file.as_deref(), Some(std::path::Path::new("/p")));
        assert_eq!(c.timeout, Some(30));
        let long = p(&[
            "--daemon",
            "--config=/x.conf",
            "--pid-file",
            "/p",
            "--timeout=120",
        ]);
        let Ok(Action::Run(l)) = long else {
            panic!("long forms")
        };
        assert_eq!(l.timeout, Some(120));
        assert!(l.daemon);
        assert_eq!(p(&["-V"]), Ok(Action::Version));
        assert_eq!(p(&["--help"]), Ok(Action::Help));
        let Ok(Action::Run(s)) = p(&["-t30", "-dv"]) else {
            panic!("clusters")
        };
        assert_eq!((s.timeout, s.daemon, s.verbose), (Some(30), true, true));
    }

    #[test]
    fn bad_command_lines_are_errors() {
        assert_eq!(p(&["-x"]), Err(CliError::Unknown("-x".into())));
        assert_eq!(p(&["-f"]), Err(CliError::MissingArg("-f".into())));
        assert_eq!(p(&["-t", "abc"]), Err(CliError::BadTimeout("abc".into())));
        assert_eq!(p(&["-t", "-1"]), Err(CliError::BadTimeout("-1".into())));
        assert_eq!(
            p(&["-t", "2147484"]),
            Err(CliError::BadTimeout("2147484".into()))
        );
        assert_eq!(p(&["stray"]), Err(CliError::Positional("stray".into())));
        assert!(matches!(p(&["-t", "2147483"]), Ok(Action::Run(_))));
    }

    #[test]
    fn usage_names_every_flag() {
        let u = usage("vmlockd");
        for f in ["-h", "-v", "-d", "-t", "-f", "-V", "-p"] {
            assert!(u.contains(&format!("{f} | --")), "{f} missing from usage");
        }
    }
}
