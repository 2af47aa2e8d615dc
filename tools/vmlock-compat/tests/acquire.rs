//! ACQUIRE and RELEASE in the default (direct) lockspace: exclusive,
//! shared, owner counts, "not locked", non-owners, missing files.

#[allow(dead_code)]
mod common;

use std::path::Path;

use common::{PID_A, PID_B, PID_C, differential};
use vmlock_testkit::Flavor;
use vmlock_testkit::frames::{self, FLAG_SHARED};

#[test]
fn exclusive_acquire_is_not_reentrant_and_excludes_others() {
    differential(|ctx| {
        let disk = ctx.p("disk.img");
        common::touch(Path::new(&disk));
        let mut a = ctx.owner(PID_A);
        let mut b = ctx.owner(PID_B);
        assert_eq!(
            ctx.call(&mut a, &frames::acquire(1, "", &disk, 0)).code(),
            0
        );
        // docs/quirks.md #4: the same owner again is busy.
        let r = ctx.call(&mut a, &frames::acquire(2, "", &disk, 0));
        assert_eq!((r.code(), r.domain()), (87, 51));
        assert_eq!(
            r.text(),
            format!("resource busy: Lockspace resource '{disk}' is locked")
        );
        let r = ctx.call(&mut b, &frames::acquire(3, "", &disk, 0));
        assert_eq!(r.code(), 87);
        let r = ctx.call(&mut b, &frames::acquire(4, "", &disk, FLAG_SHARED));
        assert_eq!(r.code(), 87);
        // Release by a non-owner: internal error (docs/quirks.md #6).
        let r = ctx.call(&mut b, &frames::release(5, "", &disk, 0));
        assert_eq!((r.code(), r.domain()), (1, 51));
        assert_eq!(
            r.text(),
            format!("internal error: owner {PID_B} does not hold the resource lock")
        );
        assert_eq!(
            ctx.call(&mut a, &frames::release(6, "", &disk, 0)).code(),
            0
        );
        // docs/quirks.md #6: releasing what nobody holds is "busy ... not locked".
        let r = ctx.call(&mut a, &frames::release(7, "", &disk, 0));
        assert_eq!((r.code(), r.domain()), (87, 51));
        assert_eq!(
            r.text(),
            format!("resource busy: Lockspace resource '{disk}' is not locked")
        );
        assert_eq!(
            ctx.call(&mut b, &frames::acquire(8, "", &disk, 0)).code(),
            0
        );
        ctx.note_file("disk.img");
    });
}

#[test]
fn locks_belong_to_the_owner_pid_not_the_connection() {
    differential(|ctx| {
        let disk = ctx.p("disk.img");
        common::touch(Path::new(&disk));
        let mut a1 = ctx.owner(PID_A);
        assert_eq!(
            ctx.call(&mut a1, &frames::acquire(1, "", &disk, 0)).code(),
            0
        );
        drop(a1);
        // Another connection for the same pid releases it (docs/quirks.md #1).
        let mut a2 = ctx.owner(PID_A);
        assert_eq!(
            ctx.call(&mut a2, &frames::release(1, "", &disk, 0)).code(),
            0
        );
        assert_eq!(
            ctx.call(&mut a2, &frames::acquire(2, "", &disk, 0)).code(),
            0
        );
        // Re-registering the same connection as another pid changes the owner.
        let r = ctx.call(
            &mut a2,
            &frames::register(3, common::UUID_B, "b", 2, PID_B, 0),
        );
        assert_eq!(r.code(), 0);
        let r = ctx.call(&mut a2, &frames::release(4, "", &disk, 0));
        assert_eq!(r.code(), 1);
    });
}

#[test]
fn shared_acquires_count_owners_including_duplicates() {
    differential(|ctx| {
        let disk = ctx.p("shared.img");
        common::touch(Path::new(&disk));
        let mut a = ctx.owner(PID_A);
        let mut b = ctx.owner(PID_B);
        let mut c = ctx.owner(PID_C);
        assert_eq!(
            ctx.call(&mut a, &frames::acquire(1, "", &disk, FLAG_SHARED))
                .code(),
            0
        );
        assert_eq!(
            ctx.call(&mut b, &frames::acquire(1, "", &disk, FLAG_SHARED))
                .code(),
            0
        );
        // docs/quirks.md #4: a shared re-acquire by the same pid adds it again.
        assert_eq!(
            ctx.call(&mut a, &frames::acquire(2, "", &disk, FLAG_SHARED))
                .code(),
            0
        );
        assert_eq!(
            ctx.call(&mut c, &frames::acquire(1, "", &disk, 0)).code(),
            87
        );
        assert_eq!(
            ctx.call(&mut b, &frames::release(2, "", &disk, 0)).code(),
            0
        );
        assert_eq!(
            ctx.call(&mut a, &frames::release(3, "", &disk, 0)).code(),
            0
        );
        // A still holds it once.
        assert_eq!(
            ctx.call(&mut c, &frames::acquire(2, "", &disk, 0)).code(),
            87
        );
        assert_eq!(
            ctx.call(&mut b, &frames::release(3, "", &disk, 0)).code(),
            1
        );
        assert_eq!(
            ctx.call(&mut a, &frames::release(4, "", &disk, 0)).code(),
            0
        );
        assert_eq!(
            ctx.call(&mut c, &frames::acquire(3, "", &disk, 0)).code(),
            0
        );
        // Exclusive held: a shared request is busy.
        let r = ctx.call(&mut a, &frames::acquire(5, "", &disk, FLAG_SHARED));
        assert_eq!(r.code(), 87);
    });
}

#[test]
fn missing_files_lockspaces_and_odd_names() {
    differential(|ctx| {
        let mut a = ctx.owner(PID_A);
        let missing = ctx.p("missing.img");
        let r = ctx.call(&mut a, &frames::acquire(1, "", &missing, 0));
        assert_eq!((r.code(), r.domain()), (38, 51));
        assert_eq!(
            r.text(),
            format!("Unable to open resource {missing}: No such file or directory")
        );
        // Directories cannot be opened O_RDWR (docs/quirks.md #14).
        let dir = ctx.p("");
        let r = ctx.call(
            &mut a,
            &frames::acquire(2, "", dir.trim_end_matches('/'), 0),
        );
        assert_eq!(r.code(), 38);
        // A lockspace nobody created.
        let ls = ctx.p("nols");
        let r = ctx.call(&mut a, &frames::acquire(3, &ls, "x", 0));
        assert_eq!((r.code(), r.domain()), (1, 7));
        assert_eq!(
            r.text(),
            format!("internal error: Lockspace for path {ls} does not exist")
        );
        let r = ctx.call(&mut a, &frames::release(4, &ls, "x", 0));
        assert_eq!(r.code(), 1);
        // Releasing an unknown name in the default lockspace.
        let r = ctx.call(&mut a, &frames::release(5, "", "relative/name", 0));
        assert_eq!(r.code(), 87);
        // docs/quirks.md #13 [decide]: libvirt opens a relative name in the default
        // lockspace as given (relative to its cwd); we refuse it.
        let r = ctx.call_quiet(&mut a, &frames::acquire(6, "", "no-such-relative-file", 0));
        eprintln!(
            "{}: relative name: {} {}",
            ctx.flavor().name(),
            r.code(),
            r.text()
        );
        match ctx.flavor() {
            Flavor::Theirs => assert_eq!(r.code(), 38, "{}", r.text()),
            Flavor::Ours => assert_eq!((r.code(), r.domain()), (8, 51), "{}", r.text()),
        }
        ctx.note("quirk 13 checked per flavor");
    });
}
