//! AUTOCREATE lease files: created on acquire, unlinked when the last owner
//! releases (docs/quirks.md #11), never for non-AUTOCREATE resources; the file system
//! state is part of the compared transcript.

#[allow(dead_code)]
mod common;

use std::path::Path;

use common::{PID_A, PID_B, differential};
use vmlock_testkit::Flavor;
use vmlock_testkit::frames::{self, FLAG_AUTOCREATE, FLAG_SHARED};

const SHA: &str = "f2f4417b8fe812d19e40421ca4d46765c702e950c54a3a74e967e48dc9812492";

#[test]
fn exclusive_lease_files_are_created_and_unlinked() {
    differential(|ctx| {
        let ls = ctx.p("files");
        let mut a = ctx.owner(PID_A);
        let mut b = ctx.owner(PID_B);
        assert_eq!(
            ctx.call(&mut a, &frames::create_lockspace(1, &ls)).code(),
            0
        );
        ctx.note_file("files");
        assert_eq!(
            ctx.call(&mut a, &frames::acquire(2, &ls, SHA, FLAG_AUTOCREATE))
                .code(),
            0
        );
        ctx.note_file(&format!("files/{SHA}"));
        let r = ctx.call(&mut b, &frames::acquire(2, &ls, SHA, FLAG_AUTOCREATE));
        assert_eq!(
            r.text(),
            format!("resource busy: Lockspace resource '{SHA}' is locked")
        );
        assert_eq!(ctx.call(&mut a, &frames::release(3, &ls, SHA, 0)).code(), 0);
        ctx.note_file(&format!("files/{SHA}"));
        assert!(
            !ctx.dir().join("files").join(SHA).exists(),
            "lease file unlinked"
        );
        // Without AUTOCREATE the lease file must exist.
        let r = ctx.call(&mut b, &frames::acquire(3, &ls, SHA, 0));
        assert_eq!(r.code(), 38);
        common::touch(&ctx.dir().join("files/pre"));
        assert_eq!(
            ctx.call(&mut b, &frames::acquire(4, &ls, "pre", 0)).code(),
            0
        );
        assert_eq!(
            ctx.call(&mut b, &frames::release(5, &ls, "pre", 0)).code(),
            0
        );
        ctx.note_file("files/pre");
        assert!(
            ctx.dir().join("files/pre").exists(),
            "non-AUTOCREATE files stay"
        );
    });
}

#[test]
fn shared_lease_files_are_unlinked_by_the_last_owner() {
    differential(|ctx| {
        let ls = ctx.p("files");
        let mut a = ctx.owner(PID_A);
        let mut b = ctx.owner(PID_B);
        ctx.call(&mut a, &frames::create_lockspace(1, &ls));
        let fl = FLAG_AUTOCREATE | FLAG_SHARED;
        assert_eq!(
            ctx.call(&mut a, &frames::acquire(2, &ls, "s", fl)).code(),
            0
        );
        assert_eq!(
            ctx.call(&mut b, &frames::acquire(2, &ls, "s", fl)).code(),
            0
        );
        // The engine flags of the first acquire stick: a plain SHARED
        // request joins too.
        assert_eq!(
            ctx.call(&mut b, &frames::acquire(3, &ls, "s", FLAG_SHARED))
                .code(),
            0
        );
        assert_eq!(ctx.call(&mut a, &frames::release(4, &ls, "s", 0)).code(), 0);
        ctx.note_file("files/s");
        assert_eq!(ctx.call(&mut b, &frames::release(4, &ls, "s", 0)).code(), 0);
        ctx.note_file("files/s");
        assert_eq!(ctx.call(&mut b, &frames::release(5, &ls, "s", 0)).code(), 0);
        ctx.note_file("files/s");
        assert!(!ctx.dir().join("files/s").exists());
    });
}

#[test]
fn autocreate_in_the_default_lockspace_quirk_12() {
    differential(|ctx| {
        let disk = ctx.p("image.raw");
        std::fs::write(&disk, b"precious").expect("write disk");
        let mut a = ctx.owner(PID_A);
        let r = ctx.call_quiet(&mut a, &frames::acquire(1, "", &disk, FLAG_AUTOCREATE));
        if r.code() == 0 {
            ctx.call_quiet(&mut a, &frames::release(2, "", &disk, 0));
        }
        let exists = Path::new(&disk).exists();
        match ctx.flavor() {
            // libvirt unlinks the disk image itself.
            Flavor::Theirs => assert!(r.code() == 0 && !exists, "theirs unlinks the image"),
            // [fix] docs/quirks.md #12: never unlink outside a named lockspace.
            Flavor::Ours => assert!(exists, "ours must not unlink a disk image"),
        }
        ctx.note("quirk 12 checked per flavor");
    });
}
