//! User and group names by id (`getpwuid_r`, `getgrgid_r`), for virt-admin's
//! `client-info` (`unix_user_name`, `unix_group_name`), and ids by name
//! (`getpwnam_r`, `getgrnam_r`) for the sanlock driver's `user`/`group`.
//! Goes through NSS, so LDAP or systemd-userdb users resolve as they do for
//! libvirt.

use std::ffi::{CStr, CString};

/// The name of user `uid`, `None` if there is no such user (or NSS fails).
pub fn user_name(uid: u32) -> Option<String> {
    lookup(
        |entry: *mut libc::passwd, buf, len, out| {
            // SAFETY: `entry`, `buf` (writable for `len` bytes) and `out` come
            // from `lookup`, which keeps them alive across the call.
            unsafe { libc::getpwuid_r(uid, entry, buf, len, out) }
        },
        |pw| pw.pw_name,
    )
}

/// The name of group `gid`, `None` if there is no such group (or NSS fails).
pub fn group_name(gid: u32) -> Option<String> {
    lookup(
        |entry: *mut libc::group, buf, len, out| {
            // SAFETY: as in `user_name`, for `struct group`.
            unsafe { libc::getgrgid_r(gid, entry, buf, len, out) }
        },
        |gr| gr.gr_name,
    )
}

/// The id of user `name`, `None` if there is no such user (or NSS fails).
pub fn user_id(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    lookup_with(
        |entry: *mut libc::passwd, buf, len, out| {
            // SAFETY: as in `user_name`; `c` is NUL-terminated and outlives the call.
            unsafe { libc::getpwnam_r(c.as_ptr(), entry, buf, len, out) }
        },
        |pw| pw.pw_uid,
    )
}

/// The id of group `name`, `None` if there is no such group (or NSS fails).
pub fn group_id(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    lookup_with(
        |entry: *mut libc::group, buf, len, out| {
            // SAFETY: as in `user_name`; `c` is NUL-terminated and outlives the call.
            unsafe { libc::getgrnam_r(c.as_ptr(), entry, buf, len, out) }
        },
        |gr| gr.gr_gid,
    )
}

/// Runs a reentrant NSS look-up (`get*_r`) and returns the entry's name field.
fn lookup<T>(
    call: impl FnMut(*mut T, *mut libc::c_char, usize, *mut *mut T) -> libc::c_int,
    name: impl Fn(&T) -> *const libc::c_char,
) -> Option<String> {
    lookup_with(call, |entry| {
        // SAFETY: the name field of an entry that `lookup_with` hands over is
        // a NUL-terminated string inside its buffer, alive during this call.
        let name = unsafe { CStr::from_ptr(name(entry)) };
        name.to_string_lossy().into_owned()
    })
}

/// Runs a reentrant NSS look-up (`get*_r`) with a buffer that grows on
/// `ERANGE` (up to 1 MiB) and returns what `field` takes from the entry.
fn lookup_with<T, R>(
    mut call: impl FnMut(*mut T, *mut libc::c_char, usize, *mut *mut T) -> libc::c_int,
    field: impl Fn(&T) -> R,
) -> Option<R> {
    let mut buf = vec![0u8; 1024];
    loop {
        let mut entry = std::mem::MaybeUninit::<T>::uninit();
        let mut out: *mut T = std::ptr::null_mut();
        let rc = call(
            entry.as_mut_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut out,
        );
        if rc == libc::ERANGE && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 || out.is_null() {
            return None;
        }
        // SAFETY: rc == 0 and `out` is non-null, so the call filled in
        // `entry` (`out` points at it); its strings live in `buf`, which is
        // still alive while `field` runs.
        return Some(field(unsafe { &*out }));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn root_is_root_and_unknown_ids_are_none() {
        assert_eq!(super::user_name(0).as_deref(), Some("root"));
        assert_eq!(super::group_name(0).as_deref(), Some("root"));
        assert_eq!(super::user_name(4_000_000_000), None);
        assert_eq!(super::group_name(4_000_000_000), None);
        assert_eq!(super::user_id("root"), Some(0));
        assert_eq!(super::group_id("root"), Some(0));
        assert_eq!(super::user_id("no-such-user-here"), None);
        assert_eq!(super::group_id("a\0b"), None);
    }
}
