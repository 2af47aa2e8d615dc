//! Unsupported flag bits on every procedure that has a flags field: the
//! error names the C function (docs/quirks.md #30).

#[allow(dead_code)]
mod common;

use common::{PID_A, UUID_A, differential};
use vmlock_testkit::frames;

#[test]
fn bad_flags_on_each_procedure() {
    differential(|ctx| {
        let disk = ctx.p("disk");
        common::touch(std::path::Path::new(&disk));
        let mut c = ctx.conn();
        // Unregistered: the flag check comes first.
        let checks: Vec<(Vec<u8>, &str, u32)> = vec![
            (
                frames::register(1, UUID_A, "vm", 1, PID_A, 2),
                "Register",
                2,
            ),
            (frames::restrict(2, 1), "Restrict", 1),
            (frames::new_lockspace(3, &ctx.p("ls"), 4), "New", 4),
            (
                frames::create_resource(4, "", &disk, 1),
                "CreateResource",
                1,
            ),
            (
                frames::delete_resource(5, "", &disk, 8),
                "DeleteResource",
                8,
            ),
            (frames::acquire(6, "", &disk, 4), "AcquireResource", 4),
            (
                frames::acquire(7, "", &disk, 0xffff_fff8),
                "AcquireResource",
                0xffff_fff8,
            ),
            (frames::release(8, "", &disk, 1), "ReleaseResource", 1),
            (frames::release(9, "", &disk, 2), "ReleaseResource", 2),
        ];
        for (f, func, bits) in &checks {
            let r = ctx.call(&mut c, f);
            assert_eq!((r.code(), r.domain()), (8, 7), "{}", r.text());
            let want = format!(
                "unsupported flags (0x{bits:x}) in function virLockSpaceProtocolDispatch{func}"
            );
            assert_eq!(r.text(), want);
        }
        // Registered: the same answers.
        let mut c = ctx.owner(PID_A);
        let r = ctx.call(&mut c, &frames::acquire(10, "", &disk, 7));
        assert_eq!(r.code(), 8);
        // Valid flags pass the check (and SHARED|AUTOCREATE is accepted).
        let r = ctx.call(&mut c, &frames::acquire(11, "", &disk, frames::FLAG_SHARED));
        assert_eq!(r.code(), 0);
        let r = ctx.call(&mut c, &frames::release(12, "", &disk, 0));
        assert_eq!(r.code(), 0);
    });
}
