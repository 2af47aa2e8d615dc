//! User and group names by id (`getpwuid_r`, `getgrgid_r`), for virt-admin's
//! `client-info` (`unix_user_name`, `unix_group_name`). Goes through NSS, so
//! LDAP or systemd-userdb users resolve as they do for libvirt.

use std::ffi::CStr;

/// The name of user `uid`, `None` if there is no such user (or NSS fails).
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 1024];
    loop {
        let mut pw = std::mem::MaybeUninit::<libc::passwd>::uninit();
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is to a live local of the right type; `buf` is
        // writable for `buf.len()` bytes; on success `out` points at `pw`, whose
        // strings point into `buf`, both alive while `pw_name` is read below.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                pw.as_mut_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut out,
            )
        };
        if rc == libc::ERANGE && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 || out.is_null() {
            return None;
        }
        // SAFETY: rc == 0 and `out` is non-null, so `pw` was filled in and
        // `pw_name` is a NUL-terminated string inside `buf`.
        let name = unsafe { CStr::from_ptr((*out).pw_name) };
        return Some(name.to_string_lossy().into_owned());
    }
}

/// The name of group `gid`, `None` if there is no such group (or NSS fails).
pub fn group_name(gid: u32) -> Option<String> {
    let mut buf = vec![0u8; 1024];
    loop {
        let mut gr = std::mem::MaybeUninit::<libc::group>::uninit();
        let mut out: *mut libc::group = std::ptr::null_mut();
        // SAFETY: as in `user_name`, for `struct group`.
        let rc = unsafe {
            libc::getgrgid_r(
                gid,
                gr.as_mut_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut out,
            )
        };
        if rc == libc::ERANGE && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 || out.is_null() {
            return None;
        }
        // SAFETY: rc == 0 and `out` is non-null, so `gr_name` is a
        // NUL-terminated string inside `buf`.
        let name = unsafe { CStr::from_ptr((*out).gr_name) };
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
