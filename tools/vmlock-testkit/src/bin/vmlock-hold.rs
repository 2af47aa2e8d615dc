//! `vmlock-hold (--posix|--ofd) (--shared|--exclusive) PATH`
//!
//! Tries a non-blocking lock on byte 0, length 1 of PATH, prints `locked` or
//! `busy`, and (if locked) holds it until stdin reaches EOF. Classic POSIX
//! locks never conflict inside one process, so tests use this to show
//! cross-process conflicts with a daemon.
//!
//! `vmlock-hold --register SOCKET LOCKSPACE NAME [--shared] [--autocreate] [--twice]`
//!
//! A lock holder speaking the wire protocol: connects, REGISTERs its *own*
//! pid as owner, ACQUIREs the resource (twice with `--twice`) and prints one
//! `ok` or `err <code> <message>` line per ACQUIRE. A stdin line `close` closes the connection (the process stays
//! alive: the daemon is expected to kill it) after printing `closing`;
//! EOF exits.

#![forbid(unsafe_code)]

use std::io::{BufRead, Write};
use std::os::fd::AsFd;

use vmlock_sys::lock::{LockKind, LockType, try_lock};
use vmlock_testkit::{RawConn, decode_reply, frames};

fn usage() -> ! {
    eprintln!("usage: vmlock-hold (--posix|--ofd) (--shared|--exclusive) PATH");
    eprintln!(
        "       vmlock-hold --register SOCKET LOCKSPACE NAME [--shared] [--autocreate] [--twice]"
    );
    std::process::exit(2)
}

fn say(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    say(&format!("error {what}: {e}"));
    std::process::exit(1)
}

/// Reads stdin until EOF, calling `on_line` for each line.
fn until_eof(mut on_line: impl FnMut(&str)) {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        match line {
            Ok(l) => on_line(l.trim()),
            Err(_) => break,
        }
    }
}

fn hold_file(args: &[String]) {
    let [kind, ty, path] = args else { usage() };
    let kind = match kind.as_str() {
        "--posix" => LockKind::Posix,
        "--ofd" => LockKind::Ofd,
        _ => usage(),
    };
    let ty = match ty.as_str() {
        "--shared" => LockType::Shared,
        "--exclusive" => LockType::Exclusive,
        _ => usage(),
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(ty == LockType::Exclusive)
        .open(path)
        .unwrap_or_else(|e| fail("open", e));
    match try_lock(file.as_fd(), kind, ty) {
        Ok(true) => say("locked"),
        Ok(false) => return say("busy"),
        Err(e) => fail("lock", e),
    }
    until_eof(|_| {});
}

fn holder(args: &[String]) {
    let [sock, lockspace, name, rest @ ..] = args else {
        usage()
    };
    let mut flags = 0;
    let mut times = 1;
    for f in rest {
        flags |= match f.as_str() {
            "--shared" => frames::FLAG_SHARED,
            "--autocreate" => frames::FLAG_AUTOCREATE,
            "--twice" => {
                times = 2;
                0
            }
            _ => usage(),
        };
    }
    let mut conn = RawConn::connect(sock.as_ref()).unwrap_or_else(|e| fail("connect", e));
    let uuid = *b"vmlock-hold-uuid";
    let reg = frames::register(0, uuid, "holder", 1, std::process::id(), 0);
    let reply = conn.call(&reg).unwrap_or_else(|e| fail("register", e));
    if let (_, Some(e)) = decode_reply(&reply) {
        fail("register", format!("{} {}", e.code, e.text()));
    }
    for serial in 1..=times {
        let acq = frames::acquire(serial, lockspace, name, flags);
        let reply = conn.call(&acq).unwrap_or_else(|e| fail("acquire", e));
        match decode_reply(&reply) {
            (_, Some(e)) => say(&format!("err {} {}", e.code, e.text())),
            (_, None) => say("ok"),
        }
    }
    let mut conn = Some(conn);
    until_eof(|line| {
        if line == "close" {
            // Announce first: the daemon may kill us right after the close.
            say("closing");
            drop(conn.take());
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--register") => holder(&args[1..]),
        Some(_) => hold_file(&args),
        None => usage(),
    }
}
