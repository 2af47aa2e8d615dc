//! The soak log format and its parser.
//!
//! One file per client, `<client>.log`, one event per line, times in
//! nanoseconds of `CLOCK_MONOTONIC`:
//!
//! ```text
//! <ns> grant   <disk> x|s        taken right AFTER the OK reply arrived
//! <ns> release <disk> x|s        taken right BEFORE the RELEASE was sent
//! <ns> kill    <client>          (driver) taken right BEFORE SIGKILL:
//!                                ends every holding of <client>
//! <ns> error   <free text>       a call failed in a way nobody expected
//! ```
//!
//! A logged holding is therefore a sub-interval of the real one, so an
//! overlap between two logged holdings is an overlap of the real ones.
//! A final line without its newline (a process killed mid-write) is
//! ignored and counted.

use std::fmt;

/// Shared or exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// `s`: any number of shared holders.
    Shared,
    /// `x`: one holder, nobody else.
    Exclusive,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        match s {
            "s" => Some(Mode::Shared),
            "x" => Some(Mode::Exclusive),
            _ => None,
        }
    }

    /// `s` or `x`.
    pub fn letter(self) -> &'static str {
        match self {
            Mode::Shared => "s",
            Mode::Exclusive => "x",
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// The lock was granted.
    Grant {
        /// The disk (resource) name.
        disk: String,
        /// How.
        mode: Mode,
    },
    /// The lock is about to be released.
    Release {
        /// The disk.
        disk: String,
        /// How it was held.
        mode: Mode,
    },
    /// The driver is about to SIGKILL `client`.
    Kill {
        /// The killed client's log name.
        client: String,
    },
    /// An unexpected failure.
    Error {
        /// What the client wrote.
        text: String,
    },
}

/// One event of one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `CLOCK_MONOTONIC` nanoseconds.
    pub t: u64,
    /// The client whose log this line is in.
    pub client: String,
    /// What.
    pub kind: Kind,
}

/// A line that is not in the format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The log's client name.
    pub client: String,
    /// 1-based line number.
    pub line: usize,
    /// The offending text.
    pub text: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: bad line {:?}", self.client, self.line, self.text)
    }
}

impl std::error::Error for ParseError {}

/// Parses one line (without its newline).
pub fn parse_line(client: &str, line: &str) -> Option<Event> {
    let mut it = line.splitn(3, ' ');
    let t = it.next()?.parse().ok()?;
    let verb = it.next()?;
    let rest = it.next().unwrap_or("");
    let kind = match verb {
        "grant" | "release" => {
            let (disk, mode) = rest.split_once(' ')?;
            let (disk, mode) = (disk.to_string(), Mode::parse(mode)?);
            if disk.is_empty() {
                return None;
            }
            if verb == "grant" {
                Kind::Grant { disk, mode }
            } else {
                Kind::Release { disk, mode }
            }
        }
        "kill" if !rest.is_empty() && !rest.contains(' ') => Kind::Kill {
            client: rest.to_string(),
        },
        "error" => Kind::Error {
            text: rest.to_string(),
        },
        _ => return None,
    };
    let client = client.to_string();
    Some(Event { t, client, kind })
}

/// The events of one log file's text. Returns the events and whether a
/// truncated last line was dropped.
pub fn parse_log(client: &str, text: &str) -> Result<(Vec<Event>, bool), ParseError> {
    let (body, truncated) = match text.rfind('\n') {
        Some(i) => (&text[..i], i + 1 < text.len()),
        None => ("", !text.is_empty()),
    };
    let mut out = Vec::new();
    for (i, line) in body.split('\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        match parse_line(client, line) {
            Some(ev) => out.push(ev),
            None => {
                return Err(ParseError {
                    client: client.to_string(),
                    line: i + 1,
                    text: line.to_string(),
                });
            }
        }
    }
    Ok((out, truncated))
}

/// Formats an event as its log line (with the newline).
pub fn format_line(t: u64, kind: &Kind) -> String {
    match kind {
        Kind::Grant { disk, mode } => format!("{t} grant {disk} {}\n", mode.letter()),
        Kind::Release { disk, mode } => format!("{t} release {disk} {}\n", mode.letter()),
        Kind::Kill { client } => format!("{t} kill {client}\n"),
        Kind::Error { text } => format!("{t} error {}\n", text.replace('\n', " ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let kinds = [
            Kind::Grant {
                disk: "d1".into(),
                mode: Mode::Exclusive,
            },
            Kind::Release {
                disk: "d1".into(),
                mode: Mode::Shared,
            },
            Kind::Kill {
                client: "h3".into(),
            },
            Kind::Error {
                text: "acquire d1: code 38 boom".into(),
            },
        ];
        for k in kinds {
            let line = format_line(42, &k);
            let ev = parse_line("c", line.trim_end_matches('\n')).expect("parses");
            assert_eq!(ev.kind, k);
            assert_eq!(ev.t, 42);
        }
    }

    #[test]
    fn bad_lines_are_rejected_with_their_number() {
        let e = parse_log("c1", "1 grant d x\n2 grant d q\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(parse_line("c", "x grant d x").is_none());
        assert!(parse_line("c", "1 frobnicate d x").is_none());
        assert!(parse_line("c", "1 kill").is_none());
        assert!(parse_line("c", "1 grant  x").is_none());
    }

    #[test]
    fn a_truncated_last_line_is_dropped_and_reported() {
        let (evs, cut) = parse_log("c", "1 grant d x\n2 relea").expect("parses");
        assert_eq!(evs.len(), 1);
        assert!(cut);
        let (evs, cut) = parse_log("c", "1 grant d x\n").expect("parses");
        assert_eq!(evs.len(), 1);
        assert!(!cut);
    }
}
