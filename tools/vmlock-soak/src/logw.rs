//! Writing a client's event log: one `write(2)` per line on an `O_APPEND`
//! file, stamped with `CLOCK_MONOTONIC` (see `vmlock_soak_check::log`).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use vmlock_soak_check::log::format_line;
use vmlock_soak_check::{Kind, Mode};

/// Now, in `CLOCK_MONOTONIC` nanoseconds.
pub fn now() -> u64 {
    vmlock_sys::clock::monotonic_ns()
}

/// An append-only event log.
#[derive(Debug)]
pub struct LogW {
    file: File,
}

impl LogW {
    /// Creates (or appends to) `dir/<client>.log`.
    pub fn open(dir: &Path, client: &str) -> io::Result<LogW> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{client}.log")))?;
        Ok(LogW { file })
    }

    fn put(&mut self, t: u64, kind: &Kind) {
        // A lost log line weakens the proof but never fakes one; report it.
        if let Err(e) = self.file.write_all(format_line(t, kind).as_bytes()) {
            eprintln!("vmlock-soak: log write failed: {e}");
        }
    }

    /// Logs a grant; call right after the OK reply arrived.
    pub fn grant(&mut self, disk: &str, mode: Mode) {
        let disk = disk.to_string();
        self.put(now(), &Kind::Grant { disk, mode });
    }

    /// Logs a release; call right before sending the RELEASE. Returns the
    /// time stamp.
    pub fn release(&mut self, disk: &str, mode: Mode) -> u64 {
        let t = now();
        let disk = disk.to_string();
        self.put(t, &Kind::Release { disk, mode });
        t
    }

    /// Logs that `client` is about to be SIGKILLed; returns the stamp.
    pub fn kill(&mut self, client: &str) -> u64 {
        let t = now();
        let client = client.to_string();
        self.put(t, &Kind::Kill { client });
        t
    }

    /// Logs an unexpected failure.
    pub fn error(&mut self, text: &str) {
        let text = text.to_string();
        self.put(now(), &Kind::Error { text });
    }
}
