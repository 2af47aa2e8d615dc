//! User and group names by id (`getpwuid_r`, `getgrgid_r`), for virt-admin's
//! `client-info` (`unix_user_name`, `unix_group_name`). Goes through NSS, so
//! LDAP or systemd-userdb users resolve as they do for libvirt.

use std::ffi::CStr;

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

/// Runs a reentrant NSS look-up (`get*_r`) with a buffer that grows on
/// `ERANGE` (up to 1 MiB) and returns the entry's name field.
fn lookup<T>(
    mut call: impl FnMut(*mut T, *mut libc::c_char, usize, *mut *mut T) -> libc::c_int,
    name: impl Fn(&T) -> *const libc::c_char,
) -> Option<String> {
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
        // `entry` (`out` points at it), and its name field is a
        // NUL-terminated string inside `buf`, which is still alive.
        let name = unsafe { CStr::from_ptr(name(&*out)) };
        return Some(name.to_string_lossy().into_owned());
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
    }
}
