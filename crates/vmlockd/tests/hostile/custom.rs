//! Hostile cases that need more than "send bytes, read the answer":
//! symlinks, foreign uids, stalls, floods, clients that never read.

use std::io::{ErrorKind, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use vmlock_testkit::frames::{self, FLAG_AUTOCREATE, hex};
use vmlock_testkit::sentinel;
use vmlock_testkit::{RawConn, procfs};

use crate::PROMPT;
use crate::cases::MESSAGE_MAX;
use crate::table::{Ctx, HOSTILE_PID, describe, is_ok};

fn conn(ctx: &Ctx) -> Result<RawConn, String> {
    RawConn::connect(&ctx.d.socket_path()).map_err(|e| format!("connect: {e}"))
}

fn registered(ctx: &Ctx) -> Result<RawConn, String> {
    let mut c = conn(ctx)?;
    sentinel::register(&mut c, "hostile", HOSTILE_PID)?;
    Ok(c)
}

fn served(ctx: &Ctx, during: &str) -> Result<(), String> {
    sentinel::served(&ctx.d, &ctx.fresh_ls, PROMPT)
        .map(drop)
        .map_err(|e| format!("{during}: {e}"))
}

fn expect_reply(c: &mut RawConn, frame: &[u8], want: &str) -> Result<(), String> {
    let r = c.call(frame).map_err(|e| format!("no reply: {e}"))?;
    let got = describe(&r);
    if got != want {
        return Err(format!("expected {want:?}, got {got:?}"));
    }
    Ok(())
}

/// AUTOCREATE through a dangling symlink inside the lockspace must not
/// create the target outside it (`O_NOFOLLOW`).
pub fn symlink_in_lockspace(ctx: &mut Ctx) -> Result<(), String> {
    let ls = ctx.sentinel.locks[1].lockspace.clone();
    let target = ctx.d.dir().join("outside-target");
    let link = format!("{ls}/evil");
    std::os::unix::fs::symlink(&target, &link).map_err(|e| e.to_string())?;
    let mut c = registered(ctx)?;
    let want = format!(
        "error 38 Unable to open/create resource {link}: Too many levels of symbolic links (proc 6)"
    );
    let r = expect_reply(
        &mut c,
        &frames::acquire(1, &ls, "evil", FLAG_AUTOCREATE),
        &want,
    );
    let created = target.exists();
    std::fs::remove_file(&link).map_err(|e| e.to_string())?;
    r?;
    if created {
        return Err("the symlink's target outside the lockspace was created".into());
    }
    Ok(())
}

/// A symlink to the sentinel's disk names the same file: busy.
pub fn disk_through_symlink(ctx: &mut Ctx) -> Result<(), String> {
    let link = ctx.d.dir().join("link.img");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&ctx.sentinel.locks[0].path, &link).map_err(|e| e.to_string())?;
    let link = link.to_string_lossy().into_owned();
    let mut c = registered(ctx)?;
    let want = format!("error 87 resource busy: Lockspace resource '{link}' is locked (proc 6)");
    expect_reply(&mut c, &frames::acquire(1, "", &link, 0), &want)
}

const PROBE: &str = "import socket,sys\n\
s=socket.socket(socket.AF_UNIX)\n\
s.connect(sys.argv[1])\n\
s.settimeout(3)\n\
try:\n    s.sendall(bytes.fromhex(sys.argv[2])); r=s.recv(1)\n\
except OSError:\n    r=b''\n\
print('closed' if r==b'' else 'answered')";

/// A peer of another uid is closed at once, without a reply (root daemon).
pub fn other_uid(ctx: &mut Ctx) -> Result<(), String> {
    let sock = ctx.d.socket_path();
    let libvirt = ctx.d.run_dir().join("libvirt");
    for p in [ctx.d.root(), &ctx.d.run_dir(), &libvirt] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
    }
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777))
        .map_err(|e| e.to_string())?;
    let reg = frames::register(0, [1; 16], "vm", 1, HOSTILE_PID, 0);
    let out = Command::new("/usr/bin/python3")
        .args(["-c", PROBE])
        .arg(&sock)
        .arg(hex(&reg).replace(' ', ""))
        .uid(65534)
        .gid(65534)
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if said != "closed" {
        return Err(format!("uid 65534 was not refused: {said:?} {out:?}"));
    }
    if !ctx.d.log_text().contains("Disallowing client") {
        return Err("no 'Disallowing client' log line".into());
    }
    Ok(())
}

fn claim_max(c: &mut RawConn, body: usize) -> Result<(), String> {
    let mut f = (4 + MESSAGE_MAX).to_be_bytes().to_vec();
    f.resize(4 + body, 0x41);
    c.send(&f).map_err(|e| format!("send: {e}"))
}

/// A legal but huge length word, a short body, then nothing: others are
/// served meanwhile and the stalled connection stays open.
pub fn huge_claim_then_stall(ctx: &mut Ctx) -> Result<(), String> {
    let mut c = conn(ctx)?;
    claim_max(&mut c, 1000)?;
    served(ctx, "while a 32 MiB frame is pending")?;
    if !c.expect_silence(Duration::from_millis(50)) {
        return Err("the stalled connection was answered or closed".into());
    }
    Ok(())
}

/// A huge claim, 1 MiB of it, then a close.
pub fn huge_claim_then_close(ctx: &mut Ctx) -> Result<(), String> {
    let mut c = conn(ctx)?;
    claim_max(&mut c, 1 << 20)?;
    drop(c);
    Ok(())
}

/// The largest legal frame: a REGISTER followed by 32 MiB of padding, which
/// is ignored (bytes after a call's arguments are, as in libvirt).
pub fn max_frame(ctx: &mut Ctx) -> Result<(), String> {
    let mut f = frames::register(9, [1; 16], "vm", 1, HOSTILE_PID, 0);
    f.resize(4 + MESSAGE_MAX as usize, 0);
    f[..4].copy_from_slice(&(4 + MESSAGE_MAX).to_be_bytes());
    let mut c = conn(ctx)?;
    let r = c.call(&f).map_err(|e| format!("no reply: {e}"))?;
    if !is_ok(&r, 1, 9) {
        return Err(format!("expected OK, got {}", describe(&r)));
    }
    Ok(())
}

/// Connections that each sent one maximal frame and then idle (as a VM's
/// holder connection does for its whole life) must not each pin a 32 MiB
/// buffer: RSS returns to within 24 MiB of where it started.
pub fn idle_after_max_frames(ctx: &mut Ctx) -> Result<(), String> {
    let pid = ctx.d.pid();
    let rss0 = procfs::rss_kib(pid).ok_or("no VmRSS")?;
    let mut f = frames::register(9, [1; 16], "vm", 1, HOSTILE_PID, 0);
    f.resize(4 + MESSAGE_MAX as usize, 0);
    f[..4].copy_from_slice(&(4 + MESSAGE_MAX).to_be_bytes());
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut c = conn(ctx)?;
        let r = c.call(&f).map_err(|e| format!("no reply: {e}"))?;
        if !is_ok(&r, 1, 9) {
            return Err(format!("expected OK, got {}", describe(&r)));
        }
        idle.push(c);
    }
    let limit = rss0 + 24 * 1024;
    let mut rss = 0;
    let settled = vmlock_testkit::wait_until(Duration::from_secs(3), || {
        rss = procfs::rss_kib(pid).unwrap_or(u64::MAX);
        rss <= limit
    });
    if !settled {
        return Err(format!(
            "4 idle connections pin memory: RSS {rss0} KiB -> {rss} KiB"
        ));
    }
    Ok(())
}

/// Twelve clients each send 24 MiB of a 32 MiB frame and stall: together
/// they would hold 288 MiB. The daemon's budget for large receive buffers
/// (128 MiB) closes the excess ones; RSS stays well under what they sent,
/// and everybody else is served meanwhile.
pub fn many_stalled_huge_frames(ctx: &mut Ctx) -> Result<(), String> {
    let pid = ctx.d.pid();
    let rss0 = procfs::rss_kib(pid).ok_or("no VmRSS")?;
    let chunk = vec![0u8; 1024 * 1024];
    let mut held = Vec::new();
    for _ in 0..12 {
        let mut c = conn(ctx)?;
        let mut sent_all = c.send(&(4 + MESSAGE_MAX).to_be_bytes()).is_ok();
        for _ in 0..24 {
            if !sent_all || c.send(&chunk).is_err() {
                sent_all = false;
                break;
            }
        }
        if sent_all {
            held.push(c);
        }
    }
    // Those over budget are closed once the daemon reads their bytes: at
    // most 128 MiB / 24 MiB of them can stay.
    let over = vmlock_testkit::wait_until(Duration::from_secs(5), || {
        held.retain_mut(|c| !c.expect_closed(Duration::from_millis(1)));
        held.len() <= 128 / 24
    });
    let rss = procfs::rss_kib(pid).ok_or("no VmRSS")?;
    served(ctx, "while huge frames stall")?;
    if !over {
        return Err(format!("only {} of 12 closed", 12 - held.len()));
    }
    if rss > rss0 + 200 * 1024 {
        return Err(format!(
            "RSS {rss0} KiB -> {rss} KiB with 288 MiB in flight"
        ));
    }
    Ok(())
}

/// A valid call followed by a bad length word: answered, then closed.
pub fn good_then_garbage(ctx: &mut Ctx) -> Result<(), String> {
    let mut c = conn(ctx)?;
    let mut f = frames::create_lockspace(1, "");
    f.extend_from_slice(&2u32.to_be_bytes());
    c.send(&f).map_err(|e| e.to_string())?;
    let r = c.recv_frame().map_err(|e| format!("no reply: {e}"))?;
    if !is_ok(&r, 8, 1) {
        return Err(format!("expected OK, got {}", describe(&r)));
    }
    if !c.expect_closed(Duration::from_secs(5)) {
        return Err("not closed after the bad length".into());
    }
    Ok(())
}

/// A call, then shutdown(SHUT_WR): the call is answered, then the
/// connection is closed.
pub fn half_close(ctx: &mut Ctx) -> Result<(), String> {
    let mut c = conn(ctx)?;
    c.send(&frames::create_lockspace(1, ""))
        .map_err(|e| e.to_string())?;
    c.stream()
        .shutdown(std::net::Shutdown::Write)
        .map_err(|e| e.to_string())?;
    let r = c.recv_frame().map_err(|e| format!("no reply: {e}"))?;
    if !is_ok(&r, 8, 1) {
        return Err(format!("expected OK, got {}", describe(&r)));
    }
    if !c.expect_closed(Duration::from_secs(5)) {
        return Err("not closed after EOF".into());
    }
    Ok(())
}

/// Many requests, then close without reading: the daemon's writes fail
/// (EPIPE) and nothing else happens.
pub fn close_before_reading(ctx: &mut Ctx) -> Result<(), String> {
    for _ in 0..20 {
        let mut c = registered(ctx)?;
        let mut batch = Vec::new();
        for serial in 0..200 {
            batch.extend(frames::acquire(serial, "", "/nonexistent", 0));
        }
        c.send(&batch).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Hundreds of connections stuck in the middle of a length word or a
/// header: everyone else is served promptly.
pub fn slowloris(ctx: &mut Ctx) -> Result<(), String> {
    let before = procfs::open_fds(ctx.d.pid()).unwrap_or(0);
    let mut stuck = Vec::new();
    for i in 0..300 {
        let mut c = conn(ctx)?;
        let f = frames::create_lockspace(1, "");
        let cut = if i % 2 == 0 { 2 } else { 14 };
        c.send(&f[..cut]).map_err(|e| e.to_string())?;
        stuck.push(c);
    }
    served(ctx, "with 300 stalled connections")?;
    let during = procfs::open_fds(ctx.d.pid()).unwrap_or(0);
    if during < before + 250 {
        return Err(format!(
            "only {during} fds (from {before}): connections not accepted?"
        ));
    }
    served(ctx, "again with 300 stalled connections")?;
    for c in &mut stuck[..5] {
        if !c.expect_silence(Duration::from_millis(10)) {
            return Err("a stalled connection was answered or closed".into());
        }
    }
    Ok(())
}

/// 20000 PINGs in one write, read back as 20000 PONGs while another
/// client is served promptly.
pub fn ping_flood(ctx: &mut Ctx) -> Result<(), String> {
    const N: usize = 20_000;
    let mut c = conn(ctx)?;
    let mut w = c.stream().try_clone().map_err(|e| e.to_string())?;
    let writer = std::thread::spawn(move || {
        let batch: Vec<u8> = frames::ping().repeat(N);
        w.write_all(&batch).map_err(|e| e.to_string())
    });
    let pong = frames::pong();
    let t0 = Instant::now();
    for i in 0..N {
        if i == N / 4 {
            served(ctx, "during a PING flood")?;
        }
        let f = c.recv_frame().map_err(|e| format!("PONG {i}: {e}"))?;
        if f != pong {
            return Err(format!("reply {i} is not a PONG: {}", hex(&f)));
        }
    }
    writer.join().map_err(|_| "writer panicked".to_string())??;
    if t0.elapsed() > Duration::from_secs(20) {
        return Err(format!("{N} PONGs took {:?}", t0.elapsed()));
    }
    Ok(())
}

/// Writes PINGs on a non-blocking socket until the kernel pushes back (or
/// `cap` bytes); never reads. Returns the bytes written.
fn push_until_blocked(c: &RawConn, cap: usize) -> Result<usize, String> {
    let mut s = c.stream();
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    let chunk = frames::ping().repeat(512);
    let mut sent = 0;
    let mut stalls = 0;
    while sent < cap && stalls < 3 {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                stalls += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(format!("write: {e}")),
        }
    }
    Ok(sent)
}

/// 40 clients pipeline PINGs and never read a PONG: the daemon blocks
/// only those connections, serves others promptly and its memory stays
/// bounded (RSS growth under 16 MiB).
pub fn never_read(ctx: &mut Ctx) -> Result<(), String> {
    let pid = ctx.d.pid();
    let rss0 = procfs::rss_kib(pid).ok_or("no VmRSS")?;
    let mut hogs = Vec::new();
    let mut total = 0;
    for _ in 0..40 {
        let c = conn(ctx)?;
        total += push_until_blocked(&c, 4 << 20)?;
        hogs.push(c);
    }
    served(ctx, "with 40 clients that never read")?;
    // Push again: the daemon must not have buffered what it could not send.
    for c in &hogs {
        total += push_until_blocked(c, 1 << 20)?;
    }
    served(ctx, "after pushing more")?;
    let rss1 = procfs::rss_kib(pid).ok_or("no VmRSS")?;
    if rss1 > rss0 + 16 * 1024 {
        return Err(format!(
            "RSS grew from {rss0} KiB to {rss1} KiB for {total} bytes sent"
        ));
    }
    Ok(())
}

/// Connections that come and go (some after a PING, some at once).
pub fn churn(ctx: &mut Ctx) -> Result<(), String> {
    let fds0 = procfs::open_fds(ctx.d.pid()).unwrap_or(0);
    for i in 0..500 {
        let mut c = conn(ctx)?;
        if i % 5 == 0 && !c.barrier_is_pong() {
            return Err(format!("connection {i} not served"));
        }
    }
    let settled = vmlock_testkit::wait_until(Duration::from_secs(5), || {
        procfs::open_fds(ctx.d.pid()).unwrap_or(usize::MAX) <= fds0 + 5
    });
    if !settled {
        let now = procfs::open_fds(ctx.d.pid()).unwrap_or(0);
        return Err(format!("descriptors leaked: {fds0} before, {now} after"));
    }
    Ok(())
}
