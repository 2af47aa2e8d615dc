//! The shape of a hostile case and how one is run and judged.

use std::time::Duration;

use vmlock_testkit::frames::{self, decode_reply, hex};
use vmlock_testkit::sentinel::Sentinel;
use vmlock_testkit::{Daemon, RawConn};

/// How long a close or a reply may take.
const WAIT: Duration = Duration::from_secs(5);

/// The daemon, the sentinel and a lockspace for fresh clients.
pub struct Ctx {
    pub d: Daemon,
    pub sentinel: Sentinel,
    pub fresh_ls: String,
}

/// The state of the connection before the case's bytes are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prelude {
    /// Just connected.
    Fresh,
    /// REGISTERed as a fake owner (pid 4200000, not ours).
    Registered,
    /// REGISTERed, then RESTRICTed.
    Restricted,
}

/// A custom attack: returns `Err` with the reason when the daemon misbehaved.
pub type Custom = fn(&mut Ctx) -> Result<(), String>;

/// What the case does.
pub enum Action {
    /// Send these bytes (in one write) on a connection in the given state.
    Send(Prelude, Vec<u8>),
    /// Send these bytes one byte per write.
    Trickle(Prelude, Vec<u8>),
    /// Anything else.
    Custom(Custom),
}

/// What must come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// The 28-byte OK reply for (proc, serial).
    Ok { proc_: i32, serial: u32 },
    /// Exactly this error: code, domain and message, echoing proc and serial.
    Error {
        proc_: i32,
        serial: u32,
        code: i32,
        domain: i32,
        text: String,
    },
    /// A keepalive PONG.
    Pong,
    /// Nothing (dropped): the next PING is answered with the PONG.
    Silent,
    /// The connection is closed without a byte written.
    Closed,
    /// Judged by the custom action itself.
    ByAction,
}

/// One row of the table.
pub struct Case {
    pub name: String,
    pub action: Action,
    pub expect: Expect,
}

/// An error expectation for a lock-program call.
pub fn error(proc_: i32, serial: u32, code: i32, domain: i32, text: &str) -> Expect {
    Expect::Error {
        proc_,
        serial,
        code,
        domain,
        text: text.to_owned(),
    }
}

/// A fake owner pid for hostile connections (never a holder connection).
pub const HOSTILE_PID: u32 = 4_200_000;

fn prelude(d: &Daemon, p: Prelude) -> Result<RawConn, String> {
    let mut c = RawConn::connect(&d.socket_path()).map_err(|e| format!("connect: {e}"))?;
    if p == Prelude::Fresh {
        return Ok(c);
    }
    vmlock_testkit::sentinel::register(&mut c, "hostile", HOSTILE_PID)?;
    if p == Prelude::Restricted {
        let r = c.call(&frames::restrict(0, 0)).map_err(|e| e.to_string())?;
        if r != frames::ok_reply(frames::procs::RESTRICT, 0) {
            return Err(format!("RESTRICT failed: {}", hex(&r)));
        }
    }
    Ok(c)
}

fn send(c: &mut RawConn, bytes: &[u8], trickle: bool) -> Result<(), String> {
    if !trickle {
        return c.send(bytes).map_err(|e| format!("send: {e}"));
    }
    for b in bytes {
        c.send(std::slice::from_ref(b))
            .map_err(|e| format!("send: {e}"))?;
    }
    Ok(())
}

impl Case {
    /// Runs the case and judges the outcome.
    pub fn run(&self, ctx: &mut Ctx) -> Result<(), String> {
        let (p, bytes, trickle) = match &self.action {
            Action::Custom(f) => return f(ctx),
            Action::Send(p, b) => (*p, b, false),
            Action::Trickle(p, b) => (*p, b, true),
        };
        let mut c = prelude(&ctx.d, p)?;
        send(&mut c, bytes, trickle)?;
        judge(&mut c, &self.expect)
    }
}

fn judge(c: &mut RawConn, expect: &Expect) -> Result<(), String> {
    c.stream()
        .set_read_timeout(Some(WAIT))
        .map_err(|e| e.to_string())?;
    match expect {
        Expect::Closed => {
            if c.expect_closed(WAIT) {
                Ok(())
            } else {
                Err("expected a close without a reply".into())
            }
        }
        Expect::Silent => match c.barrier() {
            Ok(f) if f == frames::pong() => Ok(()),
            Ok(f) => Err(format!("expected silence, got {}", hex(&f))),
            Err(e) => Err(format!("expected silence, connection lost: {e}")),
        },
        Expect::Pong => expect_frame(c, &frames::pong()),
        Expect::Ok { proc_, serial } => expect_frame(c, &frames::ok_reply(*proc_, *serial)),
        Expect::Error { .. } => expect_error(c, expect),
        Expect::ByAction => Ok(()),
    }
}

fn expect_frame(c: &mut RawConn, want: &[u8]) -> Result<(), String> {
    let got = c.recv_frame().map_err(|e| format!("no reply: {e}"))?;
    if got != want {
        return Err(format!(
            "expected {}, got {} {:?}",
            hex(want),
            hex(&got),
            frames::try_decode_reply(&got).ok().and_then(|r| r.1)
        ));
    }
    // The connection stays usable after an answer.
    if !c.barrier_is_pong() {
        return Err("connection unusable after the reply".into());
    }
    Ok(())
}

fn expect_error(c: &mut RawConn, expect: &Expect) -> Result<(), String> {
    let Expect::Error {
        proc_,
        serial,
        code,
        domain,
        text,
    } = expect
    else {
        return Err("not an error expectation".into());
    };
    let got = c.recv_frame().map_err(|e| format!("no reply: {e}"))?;
    let (h, e) = frames::try_decode_reply(&got).map_err(|e| format!("bad reply: {e}"))?;
    let Some(e) = e else {
        return Err(format!("expected error {code}, got OK {}", hex(&got)));
    };
    let want = (*proc_, *serial, frames::types::REPLY, *code, *domain);
    let seen = (h.proc_, h.serial, h.ty, e.code, e.domain);
    if want != seen || e.text() != text || e.level != 2 {
        return Err(format!(
            "expected (proc, serial, type, code, domain) {want:?} {text:?}, got {seen:?} {:?}",
            e.text()
        ));
    }
    if !c.barrier_is_pong() {
        return Err("connection unusable after the error reply".into());
    }
    Ok(())
}

/// The whole frame for `header` and `payload`, with a correct length word.
pub fn frame_with(h: frames::Header, payload: &[u8]) -> Vec<u8> {
    frames::frame(h, payload)
}

/// A CALL header of the lock program with the given fields changed.
pub fn header(proc_: i32, serial: u32) -> frames::Header {
    frames::Header::call(proc_, serial)
}

/// Decodes a reply for error messages.
pub fn describe(reply: &[u8]) -> String {
    match frames::try_decode_reply(reply) {
        Ok((h, Some(e))) => format!("error {} {} (proc {})", e.code, e.text(), h.proc_),
        Ok((h, None)) => format!("ok proc {} serial {}", h.proc_, h.serial),
        Err(_) => hex(reply),
    }
}

/// Whether `reply` is the OK reply to (proc, serial).
pub fn is_ok(reply: &[u8], proc_: i32, serial: u32) -> bool {
    reply == frames::ok_reply(proc_, serial).as_slice() && decode_reply(reply).1.is_none()
}
