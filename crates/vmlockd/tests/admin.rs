//! The admin program's effects that virt-admin's output alone does not show
//! (the differential suite, `vmlock-compat/tests/admin.rs`, compares that
//! output with virtlockd's): a disconnected holder loses its leases and its
//! process, log filters and the idle timeout change the running daemon,
//! CONNECT_CLOSE closes after its reply, bad admin calls leave the
//! connection usable.
//!
//! Each test runs the real binary as root in a private mount namespace.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use vmlock_proto::admin::{Call, ClientRef, PROGRAM, Procedure, Ret, ServerRef, VERSION};
use vmlock_proto::error::WireError;
use vmlock_proto::frame::{encode_frame, parse_body};
use vmlock_proto::header::{Header, MessageType, Status};
use vmlock_proto::xdr::Encoder;
use vmlock_proto::xdr::XdrDecode;
use vmlock_testkit::frames::{self, decode_reply};
use vmlock_testkit::{Daemon, DaemonSpec, Flavor, RawConn, tool_binary, wait_until};

fn ours(config: &str) -> Daemon {
    Daemon::start(DaemonSpec::new(Flavor::Ours).config(config)).expect("start vmlockd")
}

/// An admin connection that numbers its calls.
struct Admin {
    conn: RawConn,
    serial: u32,
}

impl Admin {
    fn open(d: &Daemon) -> Admin {
        let conn = RawConn::connect(&d.admin_socket_path()).expect("admin socket");
        let mut a = Admin { conn, serial: 0 };
        a.call(&Call::ConnectOpen { flags: 0 }).expect("open");
        a
    }

    /// Sends `call`; the decoded reply, or the error's message.
    fn call(&mut self, call: &Call) -> Result<Ret, String> {
        let p = call.procedure();
        let h = Header {
            prog: PROGRAM,
            vers: VERSION,
            proc_: p.to_i32(),
            mtype: MessageType::Call,
            serial: self.serial,
            status: Status::Ok,
        };
        self.serial += 1;
        let mut e = Encoder::new();
        call.encode(&mut e);
        let reply = self
            .conn
            .call(&encode_frame(&h, e.as_slice()))
            .expect("admin reply");
        reply_of(p, &reply)
    }
}

/// A reply frame's payload decoded as `p`'s result, or its error's message.
fn reply_of(p: Procedure, reply: &[u8]) -> Result<Ret, String> {
    let msg = parse_body(&reply[4..]).expect("reply frame");
    if msg.header.status == Status::Error {
        let e = WireError::from_xdr(&msg.payload).expect("error payload");
        return Err(e.to_string());
    }
    Ok(Ret::decode(p, &msg.payload).expect("reply payload"))
}

impl Admin {
    fn raw(&mut self, frame: &[u8]) -> Vec<u8> {
        self.conn.call(frame).expect("reply")
    }
}

fn server(name: &str) -> ServerRef {
    ServerRef { name: name.into() }
}

fn ok(reply: &[u8]) -> bool {
    decode_reply(reply).1.is_none()
}

#[test]
fn client_close_of_a_holder_releases_its_leases_and_kills_it() {
    let d = ours("holder_kill_grace_ms = 300\nlog_level = 2\n");
    let path = d.dir().join("vm.img");
    std::fs::write(&path, b"").expect("disk");
    let path = path.to_string_lossy().into_owned();
    let mut holder = Command::new(tool_binary("vmlock-hold"))
        .arg("--register")
        .arg(d.socket_path())
        .arg("")
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("holder");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("holder line");
    assert_eq!(line.trim(), "ok", "holder registered and acquired");

    let mut a = Admin::open(&d);
    let Ok(Ret::Clients { clients, .. }) = a.call(&Call::ServerListClients {
        srv: server("virtlockd"),
        need_results: 1,
        flags: 0,
    }) else {
        panic!("client list");
    };
    assert_eq!(clients.len(), 1, "{clients:?}");
    let Ok(Ret::Params(info)) = a.call(&Call::ClientGetInfo {
        clnt: clients[0].clone(),
        flags: 0,
    }) else {
        panic!("client info");
    };
    let pid = info
        .iter()
        .find(|p| p.field == "unix_process_id")
        .map(|p| p.value.clone());
    assert_eq!(
        pid,
        Some(vmlock_proto::admin::TypedValue::Int(holder.id() as i32)),
        "{info:?}"
    );

    a.call(&Call::ClientClose {
        clnt: clients[0].clone(),
        flags: 0,
    })
    .expect("client close");
    // Keep the holder's stdin open while waiting: at EOF it would exit by itself.
    let stdin = holder.stdin.take().expect("stdin");
    let st = holder.wait().expect("holder reaped");
    drop(stdin);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        st.signal(),
        Some(libc::SIGTERM),
        "the holder was terminated: {st}"
    );
    let mut c = d.connect();
    assert!(ok(&c
        .call(&frames::register(0, [9; 16], "vm2", 2, 5555, 0))
        .expect("reg")));
    assert!(
        ok(&c.call(&frames::acquire(1, "", &path, 0)).expect("acq")),
        "the disk is free again"
    );
    let log = d.log_text();
    assert!(log.contains("closing client on admin request"), "{log}");
    assert!(log.contains("released 1 resources"), "{log}");
}

#[test]
fn log_filters_change_what_the_running_daemon_logs() {
    let d = ours("log_level = 3\n");
    let mut a = Admin::open(&d);
    let bad = Call::ServerLookupClient {
        srv: server("nope"),
        id: 1,
        flags: 0,
    };
    assert!(a.call(&bad).is_err());
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !d.log_text().contains("admin call failed"),
        "debug lines are off at level 3"
    );
    a.call(&Call::ConnectSetLoggingFilters {
        filters: Some("1:conn".into()),
        flags: 0,
    })
    .expect("set filters");
    assert_eq!(
        a.call(&Call::ConnectGetLoggingFilters { flags: 0 }),
        Ok(Ret::LoggingFilters {
            filters: Some("1:*conn* ".into()),
            nfilters: 1
        })
    );
    let e = a.call(&bad).expect_err("still no such server");
    assert_eq!(e, "Server not found: No server named 'nope'");
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !d.log_text().contains("admin call failed"),
        "the default output is at the configured level 3 and gates debug lines (as libvirt's)"
    );
    a.call(&Call::ConnectSetLoggingOutputs {
        outputs: Some("1:stderr".into()),
        flags: 0,
    })
    .expect("set outputs");
    assert_eq!(
        a.call(&Call::ConnectGetLoggingOutputs { flags: 0 }),
        Ok(Ret::LoggingOutputs {
            outputs: "1:stderr".into(),
            noutputs: 1
        })
    );
    a.call(&bad).expect_err("no such server");
    assert!(
        wait_until(Duration::from_secs(2), || d
            .log_text()
            .contains("admin call failed")),
        "the debug line appears once the filter is set:\n{}",
        d.log_text()
    );
    let e = a
        .call(&Call::ConnectSetLoggingFilters {
            filters: Some("7:x".into()),
            flags: 0,
        })
        .expect_err("bad priority");
    assert_eq!(e, "invalid argument: Invalid priority '7' for filter '7:x'");
    assert!(a.conn.barrier_is_pong(), "the connection stays usable");
}

#[test]
fn daemon_timeout_set_by_admin_stops_an_idle_daemon() {
    let mut d = ours("");
    {
        let mut a = Admin::open(&d);
        a.call(&Call::ConnectSetDaemonTimeout {
            timeout: 1,
            flags: 0,
        })
        .expect("set timeout");
        // Connected (an admin client counts): not idle yet.
        assert!(d.wait_exit(Duration::from_millis(1500)).is_none());
    }
    let st = d
        .wait_exit(Duration::from_secs(5))
        .expect("exits once idle for 1 s");
    assert!(st.success(), "{st}");
}

#[test]
fn connect_close_replies_then_closes_and_bad_calls_keep_the_connection() {
    let d = ours("");
    let mut a = Admin::open(&d);
    let e = a.call(&Call::ConnectOpen { flags: 1 }).expect_err("flags");
    assert_eq!(
        e,
        "unsupported flags (0x1) in function adminDispatchConnectOpen"
    );
    // An undecodable payload: an error reply, the connection stays.
    let h = Header {
        prog: PROGRAM,
        vers: VERSION,
        proc_: Procedure::ConnectLookupServer.to_i32(),
        mtype: MessageType::Call,
        serial: 77,
        status: Status::Ok,
    };
    let reply = a.raw(&encode_frame(&h, &[0, 0, 1]));
    assert_eq!(
        reply_of(Procedure::ConnectLookupServer, &reply),
        Err("Unable to decode message payload".to_owned())
    );
    assert_eq!(
        a.call(&Call::ConnectGetLibVersion),
        Ok(Ret::LibVersion(9_000_000))
    );
    let unknown_client = Call::ClientClose {
        clnt: ClientRef {
            srv: server("virtlockd"),
            id: 4242,
            timestamp: 0,
            transport: 0,
        },
        flags: 0,
    };
    assert_eq!(
        a.call(&unknown_client),
        Err("Client not found: No client with matching ID '4242'".into())
    );
    assert_eq!(a.call(&Call::ConnectClose), Ok(Ret::Void));
    assert!(
        a.conn.expect_closed(Duration::from_secs(2)),
        "closed after the reply"
    );
}

#[test]
fn a_client_limit_set_with_virt_admin_survives_a_re_exec() {
    let d = ours("log_level = 2\n");
    let mut a = Admin::open(&d);
    let limit = |n| vmlock_proto::admin::TypedParam {
        field: "nclients_max".into(),
        value: vmlock_proto::admin::TypedValue::UInt(n),
    };
    let unauth = vmlock_proto::admin::TypedParam {
        field: "nclients_unauth_max".into(),
        value: vmlock_proto::admin::TypedValue::UInt(7),
    };
    a.call(&Call::ServerSetClientLimits {
        srv: server("virtlockd"),
        params: vec![limit(7), unauth],
        flags: 0,
    })
    .expect("set limits");
    d.signal(libc::SIGUSR1).expect("re-exec");
    assert!(
        wait_until(Duration::from_secs(10), || d
            .log_text()
            .contains("restored after re-exec")),
        "{}",
        d.log_text()
    );
    // The admin connection itself was handed over to the new image.
    assert!(a.conn.barrier_is_pong(), "the admin connection survives");
    let Ok(Ret::Params(p)) = a.call(&Call::ServerGetClientLimits {
        srv: server("virtlockd"),
        flags: 0,
    }) else {
        panic!("limits");
    };
    let max = p.iter().find(|p| p.field == "nclients_max");
    assert_eq!(
        max.map(|p| p.value.clone()),
        Some(vmlock_proto::admin::TypedValue::UInt(7)),
        "{p:?}"
    );
}

/// Sends PINGs on a non-blocking socket until the kernel pushes back and
/// never reads a PONG: the daemon is left with a reply it cannot write.
fn stop_reading(c: &RawConn) {
    use std::io::Write;
    let mut s = c.stream();
    s.set_nonblocking(true).expect("non-blocking");
    let chunk = frames::ping().repeat(512);
    let mut stalls = 0;
    while stalls < 20 {
        match s.write(&chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                stalls += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("write: {e}"),
        }
    }
}

/// Reads (and drops) what the daemon had queued: true if the connection
/// then ends within `timeout`.
fn reads_to_eof(c: &RawConn, timeout: Duration) -> bool {
    use std::io::Read;
    let mut s = c.stream();
    let deadline = std::time::Instant::now() + timeout;
    if s.set_nonblocking(false).is_err() {
        return false;
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn a_client_that_stops_reading_delays_no_re_exec_and_can_be_disconnected() {
    let mut d = ours("log_level = 2\n");
    let stuck = d.connect();
    stop_reading(&stuck);
    // Before: the re-exec waited 30 s for this connection, then dropped it.
    let t0 = std::time::Instant::now();
    d.signal(libc::SIGUSR1).expect("re-exec");
    assert!(
        wait_until(Duration::from_secs(5), || d
            .log_text()
            .contains("restored after re-exec")),
        "{}",
        d.log_text()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "re-exec took {:?}",
        t0.elapsed()
    );
    let log = d.log_text();
    assert!(
        log.contains("1 clients"),
        "the stuck client was handed over: {log}"
    );
    assert!(d.connect().barrier_is_pong(), "others are served");

    // An admin can close it although the daemon cannot finish its reply.
    let mut a = Admin::open(&d);
    let Ok(Ret::Clients { clients, .. }) = a.call(&Call::ServerListClients {
        srv: server("virtlockd"),
        need_results: 1,
        flags: 0,
    }) else {
        panic!("client list");
    };
    let [stuck_ref] = clients.as_slice() else {
        panic!("one lock client expected: {clients:?}");
    };
    a.call(&Call::ClientClose {
        clnt: stuck_ref.clone(),
        flags: 0,
    })
    .expect("client close");
    assert!(
        reads_to_eof(&stuck, Duration::from_secs(5)),
        "closed by the admin request"
    );

    // And a shutdown does not wait for such a client either.
    let again = d.connect();
    stop_reading(&again);
    let t0 = std::time::Instant::now();
    d.signal(libc::SIGTERM).expect("term");
    let st = d.wait_exit(Duration::from_secs(5)).expect("exits");
    assert!(st.success(), "{st}");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        t0.elapsed()
    );
}
