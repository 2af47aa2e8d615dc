//! REGISTER and RESTRICT: owner id 0, re-registering, the unregistered
//! checks, and a restricted connection trying every procedure.

#[allow(dead_code)]
mod common;

use common::{PID_A, PID_B, UUID_A, UUID_B, differential};
use vmlock_testkit::frames;

#[test]
fn register_accepts_any_pid_and_refuses_id_zero() {
    differential(|ctx| {
        let mut c = ctx.conn();
        // docs/quirks.md #6: id 0 is "not registered", with a misleading text.
        let r = ctx.call(&mut c, &frames::register(0, UUID_A, "vm", 0, PID_A, 0));
        assert_eq!((r.code(), r.domain()), (55, 7));
        assert_eq!(
            r.text(),
            "Requested operation is not valid: lock owner details have not been registered"
        );
        // pid 0 and a pid that is not the peer are accepted (docs/quirks.md #7).
        let r = ctx.call(&mut c, &frames::register(1, UUID_A, "vm", 1, 0, 0));
        assert_eq!(r.code(), 0);
        // Re-registering silently overwrites (no "already registered").
        let r = ctx.call(&mut c, &frames::register(2, UUID_B, "other", 7, PID_B, 0));
        assert_eq!(r.code(), 0);
        // An empty name and a long one.
        let r = ctx.call(&mut c, &frames::register(3, UUID_A, "", 1, PID_A, 0));
        assert_eq!(r.code(), 0);
        let long = "n".repeat(65536);
        let r = ctx.call(&mut c, &frames::register(4, UUID_A, &long, 1, PID_A, 0));
        assert_eq!(r.code(), 0);
    });
}

#[test]
fn unregistered_connections_are_refused_except_create_lockspace() {
    differential(|ctx| {
        let mut c = ctx.conn();
        let disk = ctx.p("disk");
        common::touch(std::path::Path::new(&disk));
        let calls = [
            frames::restrict(1, 0),
            frames::new_lockspace(2, &ctx.p("ls"), 0),
            frames::create_resource(3, "", &disk, 0),
            frames::delete_resource(4, "", &disk, 0),
            frames::acquire(5, "", &disk, 0),
            frames::release(6, "", &disk, 0),
        ];
        for f in &calls {
            let r = ctx.call(&mut c, f);
            assert_eq!((r.code(), r.domain()), (55, 7), "{}", r.text());
        }
        let r = ctx.call(&mut c, &frames::create_lockspace(7, &ctx.p("ls")));
        assert_eq!(r.code(), 0);
        // A failed REGISTER (id 0) leaves the connection unregistered.
        ctx.call(&mut c, &frames::register(8, UUID_A, "vm", 0, PID_A, 0));
        let r = ctx.call(&mut c, &frames::restrict(9, 0));
        assert_eq!(r.code(), 55);
    });
}

#[test]
fn a_restricted_connection_refuses_every_procedure() {
    differential(|ctx| {
        let disk = ctx.p("disk");
        common::touch(std::path::Path::new(&disk));
        let mut c = ctx.owner(PID_A);
        let r = ctx.call(&mut c, &frames::restrict(1, 0));
        assert_eq!(r.code(), 0);
        let calls = [
            frames::register(2, UUID_A, "vm", 1, PID_A, 0),
            frames::restrict(3, 0),
            frames::new_lockspace(4, &ctx.p("ls"), 0),
            frames::create_resource(5, "", &disk, 0),
            frames::delete_resource(6, "", &disk, 0),
            frames::acquire(7, "", &disk, 0),
            frames::release(8, "", &disk, 0),
            frames::create_lockspace(9, &ctx.p("ls")),
        ];
        for f in &calls {
            let r = ctx.call(&mut c, f);
            assert_eq!((r.code(), r.domain()), (29, 7));
            assert_eq!(
                r.text(),
                "operation forbidden: lock manager connection has been restricted"
            );
        }
        // Flag errors come before the restriction check.
        let r = ctx.call(&mut c, &frames::restrict(10, 1));
        assert_eq!(r.code(), 8);
        // Unknown procedures are still routed normally.
        let h = frames::Header::call(9, 11);
        let r = ctx.call(&mut c, &frames::frame(h, &[]));
        assert_eq!(r.code(), 39);
        assert!(c.barrier_is_pong(), "keepalive still works when restricted");
    });
}
