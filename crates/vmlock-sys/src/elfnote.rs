//! A mark in the vmlockd binary saying which re-exec handover it reads,
//! and the reader that looks for it in a program file before a re-exec.
//!
//! ```text
//! section .note.vmlock.handover (SHT_NOTE):
//!   namesz=7 descsz=12 type=1 "vmlock\0\0" "statebin-v2\0"
//! ```
//!
//! Before it execs, vmlockd opens the program it is about to run and looks
//! for this note. A program that carries it reads vmlockd's binary state,
//! so the virtlockd-format JSON (only libvirt's daemon needs it) is not
//! written; anything else (libvirt's virtlockd, an older vmlockd, a script)
//! gets the JSON. The file checked is the file exec'd: the daemon execs the
//! descriptor it read ([`crate::process::exec_file`]), so swapping the
//! binary in between cannot give the wrong program the wrong format.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The section name.
pub const SECTION: &str = ".note.vmlock.handover";
/// The note's owner name.
const OWNER: &[u8] = b"vmlock\0";
/// What the note says: the binary state format version the program reads
/// (v2 added each owner's acquire time and the daemon's record; a vmlockd
/// that reads only v1 is handed the JSON).
pub const HANDOVER: &[u8] = b"statebin-v2\0";

#[repr(C, align(4))]
struct Note {
    namesz: u32,
    descsz: u32,
    kind: u32,
    name: [u8; 8],
    desc: [u8; 12],
}

// SAFETY: `link_section` only places this plain, immutable, fully
// initialised static in a section of its own; nothing in the program
// reads that section at a fixed address or relies on its layout.
#[unsafe(link_section = ".note.vmlock.handover")]
#[used]
static NOTE: Note = Note {
    namesz: 7,
    descsz: 12,
    kind: 1,
    name: *b"vmlock\0\0",
    desc: *b"statebin-v2\0",
};

/// This program's own note (and a reference that keeps it linked in).
pub fn own_note() -> (&'static [u8], &'static [u8]) {
    let n = std::hint::black_box(&NOTE);
    (&n.name[..OWNER.len()], &n.desc[..])
}

fn read_at(f: &File, off: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, off)?;
    Ok(buf)
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], i: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?))
}

/// Whether the 64-bit little-endian ELF file `f` carries our note with
/// exactly [`HANDOVER`]. Anything unreadable or odd is `false` (the caller
/// then writes the format every daemon reads).
pub fn declares_handover(f: &File) -> bool {
    note_desc(f).is_some_and(|d| d == HANDOVER)
}

fn note_desc(f: &File) -> Option<Vec<u8>> {
    let eh = read_at(f, 0, 64).ok()?;
    // ELF magic, 64-bit, little-endian.
    if eh.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let shoff = u64_at(&eh, 0x28)?;
    let shentsize = usize::from(u16_at(&eh, 0x3a)?);
    let shnum = usize::from(u16_at(&eh, 0x3c)?);
    let shstrndx = usize::from(u16_at(&eh, 0x3e)?);
    if shentsize < 64 || shnum == 0 || shnum > 4096 || shstrndx >= shnum {
        return None;
    }
    let sh = read_at(f, shoff, shentsize * shnum).ok()?;
    let section = |i: usize| {
        let base = i * shentsize;
        Some((
            u32_at(&sh, base)?,
            u32_at(&sh, base + 4)?,
            u64_at(&sh, base + 0x18)?,
            u64_at(&sh, base + 0x20)?,
        ))
    };
    let (_, _, str_off, str_size) = section(shstrndx)?;
    if str_size > 1 << 20 {
        return None;
    }
    let names = read_at(f, str_off, usize::try_from(str_size).ok()?).ok()?;
    (0..shnum).find_map(|i| {
        let (name, kind, off, size) = section(i)?;
        let name = names.get(usize::try_from(name).ok()?..)?;
        let wanted = SECTION.as_bytes();
        let is_ours = name.starts_with(wanted) && name.get(wanted.len()) == Some(&0);
        // SHT_NOTE = 7
        if !is_ours || kind != 7 || size > 256 {
            return None;
        }
        let note = read_at(f, off, usize::try_from(size).ok()?).ok()?;
        parse_note(&note)
    })
}

/// The description of an ELF note owned by "vmlock".
fn parse_note(n: &[u8]) -> Option<Vec<u8>> {
    let namesz = usize::try_from(u32_at(n, 0)?).ok()?;
    let descsz = usize::try_from(u32_at(n, 4)?).ok()?;
    let name_end = 12 + namesz;
    let desc_start = 12 + namesz.div_ceil(4) * 4;
    if n.get(12..name_end)? != OWNER {
        return None;
    }
    n.get(desc_start..desc_start + descsz).map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_carries_the_note() {
        assert_eq!(own_note(), (OWNER, HANDOVER));
        let exe = File::open("/proc/self/exe").unwrap();
        assert!(
            declares_handover(&exe),
            "the section was dropped by the linker"
        );
    }

    #[test]
    fn other_programs_do_not() {
        for p in ["/bin/sh", "/proc/self/status", "/dev/null"] {
            let f = File::open(p).unwrap();
            assert!(!declares_handover(&f), "{p}");
        }
    }

    #[test]
    fn a_note_of_another_owner_or_version_is_not_ours() {
        let mut n = Vec::new();
        n.extend_from_slice(&7u32.to_le_bytes());
        n.extend_from_slice(&12u32.to_le_bytes());
        n.extend_from_slice(&1u32.to_le_bytes());
        n.extend_from_slice(b"vmlock\0\0statebin-v2\0");
        assert_eq!(parse_note(&n).as_deref(), Some(HANDOVER));
        let mut other = n.clone();
        other[12] = b'x';
        assert_eq!(parse_note(&other), None);
        assert_eq!(parse_note(&n[..20]), None);
    }
}
