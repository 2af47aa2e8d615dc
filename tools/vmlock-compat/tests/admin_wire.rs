//! The admin program on the wire: raw calls to each daemon's admin socket,
//! replies compared byte for byte (error code, domain, message, `str1`..,
//! `int1`.. included), where virt-admin (`admin.rs`) shows only the message.
//!
//! Covered: every procedure's success shape that does not depend on the
//! moment or the order of a hash table; unknown servers and clients (and
//! which of libvirt's two texts each procedure reports); unsupported flags
//! (and whether they are checked before or after the server look-up);
//! typed parameters of the wrong type, unknown, repeated; the client-limit
//! and thread-pool rules; logging settings read back; an unknown procedure
//! and an undecodable payload (the connection stays); CONNECT_CLOSE.

#[allow(dead_code)]
mod common;

use common::{Ctx, differential};
use vmlock_proto::admin::{Call, ClientRef, PROGRAM, Procedure, ServerRef, TypedParam, TypedValue};
use vmlock_proto::error::WireError;
use vmlock_proto::frame::{encode_frame, parse_body};
use vmlock_proto::header::{Header, MessageType, Status};
use vmlock_proto::xdr::{Encoder, XdrDecode};
use vmlock_testkit::RawConn;
use vmlock_testkit::frames::hex;

fn srv(name: &str) -> ServerRef {
    ServerRef { name: name.into() }
}

fn clnt(server: &str, id: u64) -> ClientRef {
    ClientRef {
        srv: srv(server),
        id,
        timestamp: 0,
        transport: 0,
    }
}

fn uint(field: &str, v: u32) -> TypedParam {
    TypedParam {
        field: field.into(),
        value: TypedValue::UInt(v),
    }
}

fn param(field: &str, value: TypedValue) -> TypedParam {
    TypedParam {
        field: field.into(),
        value,
    }
}

/// An admin connection whose replies go into the transcript.
struct Admin {
    conn: RawConn,
    serial: u32,
}

impl Admin {
    fn open(ctx: &Ctx) -> Admin {
        let conn = RawConn::connect(&ctx.d.admin_socket_path()).expect("admin socket");
        Admin { conn, serial: 0 }
    }

    /// Sends `call` and records the reply: its bytes, and for an error the
    /// code, domain and message.
    fn call(&mut self, ctx: &mut Ctx, call: &Call) {
        let mut e = Encoder::new();
        call.encode(&mut e);
        self.raw(ctx, call.procedure().to_i32(), e.as_slice());
    }

    fn raw(&mut self, ctx: &mut Ctx, proc_: i32, payload: &[u8]) {
        let h = Header {
            prog: PROGRAM,
            vers: 1,
            proc_,
            mtype: MessageType::Call,
            serial: self.serial,
            status: Status::Ok,
        };
        self.serial += 1;
        let reply = match self.conn.call(&encode_frame(&h, payload)) {
            Ok(r) => r,
            Err(e) => panic!(
                "{}: no reply to admin proc {proc_}: {e}",
                ctx.flavor().name()
            ),
        };
        let what = match parse_body(&reply[4..]) {
            Ok(m) if m.header.status == Status::Error => match WireError::from_xdr(&m.payload) {
                Ok(e) => format!("ERR {}/{} {:?}", e.code, e.domain, e.to_string()),
                Err(e) => format!("ERR (undecodable: {e})"),
            },
            Ok(_) => "OK".to_string(),
            Err(e) => format!("unparsable reply: {e}"),
        };
        ctx.note(format!("proc {proc_}: {what} | {}", hex(&reply)));
    }
}

#[test]
fn admin_replies_and_errors_are_byte_identical() {
    differential(|ctx| {
        let mut a = Admin::open(ctx);
        let calls = [
            Call::ConnectOpen { flags: 0 },
            Call::ConnectOpen { flags: 3 },
            Call::ConnectGetLibVersion,
            Call::ConnectListServers {
                need_results: 0,
                flags: 0,
            },
            Call::ConnectListServers {
                need_results: 0,
                flags: 1,
            },
            Call::ConnectLookupServer {
                name: "virtlockd".into(),
                flags: 0,
            },
            Call::ConnectLookupServer {
                name: "admin".into(),
                flags: 7,
            },
            Call::ConnectLookupServer {
                name: "nope".into(),
                flags: 0,
            },
            Call::ServerGetThreadpoolParameters {
                srv: srv("admin"),
                flags: 0,
            },
            Call::ServerGetThreadpoolParameters {
                srv: srv("nope"),
                flags: 1,
            },
            Call::ServerGetThreadpoolParameters {
                srv: srv("virtlockd"),
                flags: 1,
            },
            Call::ServerSetThreadpoolParameters {
                srv: srv("nope"),
                params: vec![],
                flags: 1,
            },
            Call::ServerSetThreadpoolParameters {
                srv: srv("virtlockd"),
                params: vec![],
                flags: 1,
            },
            Call::ServerSetThreadpoolParameters {
                srv: srv("virtlockd"),
                params: vec![uint("bogus", 1)],
                flags: 0,
            },
            Call::ServerSetThreadpoolParameters {
                srv: srv("virtlockd"),
                params: vec![param("prioWorkers", TypedValue::Int(1))],
                flags: 0,
            },
            Call::ServerSetThreadpoolParameters {
                srv: srv("virtlockd"),
                params: vec![uint("prioWorkers", 0), uint("prioWorkers", 0)],
                flags: 0,
            },
            Call::ServerSetThreadpoolParameters {
                srv: srv("virtlockd"),
                params: vec![uint("minWorkers", 0), uint("maxWorkers", 0)],
                flags: 0,
            },
            Call::ServerSetThreadpoolParameters {
                srv: srv("virtlockd"),
                params: vec![uint("maxWorkers", 4), uint("minWorkers", 9)],
                flags: 0,
            },
            Call::ServerListClients {
                srv: srv("virtlockd"),
                need_results: 0,
                flags: 0,
            },
            Call::ServerListClients {
                srv: srv("nope"),
                need_results: 1,
                flags: 1,
            },
            Call::ServerListClients {
                srv: srv("admin"),
                need_results: 0,
                flags: 1,
            },
            Call::ServerLookupClient {
                srv: srv("virtlockd"),
                id: 99,
                flags: 0,
            },
            Call::ServerLookupClient {
                srv: srv("virtlockd"),
                id: 99,
                flags: 1,
            },
            Call::ClientGetInfo {
                clnt: clnt("nope", 1),
                flags: 0,
            },
            Call::ClientGetInfo {
                clnt: clnt("virtlockd", 99),
                flags: 0,
            },
            Call::ClientClose {
                clnt: clnt("virtlockd", 99),
                flags: 0,
            },
            Call::ClientClose {
                clnt: clnt("nope", 99),
                flags: 1,
            },
            Call::ServerGetClientLimits {
                srv: srv("virtlockd"),
                flags: 0,
            },
            Call::ServerGetClientLimits {
                srv: srv("admin"),
                flags: 2,
            },
            Call::ServerSetClientLimits {
                srv: srv("nope"),
                params: vec![],
                flags: 0,
            },
            Call::ServerSetClientLimits {
                srv: srv("virtlockd"),
                params: vec![param("nclients_max", TypedValue::ULLong(5))],
                flags: 0,
            },
            Call::ServerSetClientLimits {
                srv: srv("virtlockd"),
                params: vec![uint("nclients_max", 10)],
                flags: 0,
            },
            Call::ServerSetClientLimits {
                srv: srv("virtlockd"),
                params: vec![uint("nclients_max", 10), uint("nclients_unauth_max", 5)],
                flags: 0,
            },
            Call::ServerGetClientLimits {
                srv: srv("virtlockd"),
                flags: 0,
            },
            Call::ConnectGetLoggingOutputs { flags: 0 },
            Call::ConnectGetLoggingFilters { flags: 0 },
            Call::ConnectGetLoggingFilters { flags: 1 },
            Call::ConnectSetLoggingFilters {
                filters: Some("1:locking 4:rpc:extra".into()),
                flags: 0,
            },
            Call::ConnectGetLoggingFilters { flags: 0 },
            Call::ConnectSetLoggingFilters {
                filters: Some("locking".into()),
                flags: 0,
            },
            Call::ConnectSetLoggingFilters {
                filters: None,
                flags: 0,
            },
            Call::ConnectGetLoggingFilters { flags: 0 },
            Call::ConnectSetLoggingOutputs {
                outputs: Some("4:stderr".into()),
                flags: 0,
            },
            Call::ConnectGetLoggingOutputs { flags: 0 },
            Call::ConnectSetLoggingOutputs {
                outputs: Some("1:elsewhere".into()),
                flags: 0,
            },
            Call::ConnectSetLoggingOutputs {
                outputs: None,
                flags: 0,
            },
            Call::ConnectGetLoggingOutputs { flags: 0 },
            Call::ServerUpdateTlsFiles {
                srv: srv("virtlockd"),
                flags: 0,
            },
            Call::ServerUpdateTlsFiles {
                srv: srv("nope"),
                flags: 1,
            },
            Call::ConnectSetDaemonTimeout {
                timeout: 0,
                flags: 0,
            },
            Call::ConnectSetDaemonTimeout {
                timeout: 0,
                flags: 2,
            },
        ];
        for call in &calls {
            a.call(ctx, call);
        }
        // An unknown procedure and an undecodable payload: error replies,
        // and the connection still answers.
        a.raw(ctx, 99, &[]);
        a.raw(
            ctx,
            Procedure::ConnectLookupServer.to_i32(),
            &[0, 0, 0, 9, b'x'],
        );
        a.call(ctx, &Call::ConnectGetLibVersion);
        a.call(ctx, &Call::ConnectClose);
        let closed = a.conn.expect_closed(std::time::Duration::from_secs(5));
        ctx.note(format!("closed after CONNECT_CLOSE: {closed}"));
    });
}
