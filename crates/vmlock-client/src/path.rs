//! Where libvirt's `lockd.so` looks for the daemon socket (docs/protocol.md §7.3).
//!
//! ```text
//! euid 0:  /run/libvirt/virtlockd-sock
//! else:    $XDG_RUNTIME_DIR/libvirt/virtlockd-sock
//!          (unset: $HOME/.cache/libvirt/virtlockd-sock, GLib's user cache dir)
//! ```

use std::path::PathBuf;

/// The socket name inside the libvirt runtime dir.
pub const SOCKET_NAME: &str = "virtlockd-sock";

/// The privileged socket path (`RUNSTATEDIR/libvirt/virtlockd-sock`).
pub const PRIVILEGED_SOCKET: &str = "/run/libvirt/virtlockd-sock";

/// The socket path `lockd.so` would use in this process.
pub fn default_socket_path() -> PathBuf {
    socket_path_for(
        euid_is_root(),
        std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

/// The rule of [`default_socket_path`], without reading the process state.
pub fn socket_path_for(
    privileged: bool,
    xdg_runtime_dir: Option<PathBuf>,
    home: Option<PathBuf>,
) -> PathBuf {
    if privileged {
        return PathBuf::from(PRIVILEGED_SOCKET);
    }
    let base = match (xdg_runtime_dir, home) {
        (Some(run), _) if !run.as_os_str().is_empty() => run,
        (_, Some(home)) => home.join(".cache"),
        (_, None) => PathBuf::from(".cache"),
    };
    base.join("libvirt").join(SOCKET_NAME)
}

/// Whether the effective uid is 0, read from `/proc/self/status` so this crate stays
/// free of `unsafe` and of the sys crate.
fn euid_is_root() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .is_some_and(|euid| euid == "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileged_path_ignores_the_environment() {
        let p = socket_path_for(true, Some("/x".into()), Some("/h".into()));
        assert_eq!(p, PathBuf::from("/run/libvirt/virtlockd-sock"));
    }

    #[test]
    fn unprivileged_paths() {
        let p = socket_path_for(false, Some("/run/user/1000".into()), Some("/h".into()));
        assert_eq!(p, PathBuf::from("/run/user/1000/libvirt/virtlockd-sock"));
        let p = socket_path_for(false, None, Some("/home/u".into()));
        assert_eq!(p, PathBuf::from("/home/u/.cache/libvirt/virtlockd-sock"));
        let p = socket_path_for(false, Some("".into()), Some("/home/u".into()));
        assert_eq!(p, PathBuf::from("/home/u/.cache/libvirt/virtlockd-sock"));
    }

    #[test]
    fn euid_matches_the_process() {
        // The test runs as root on the CI machine and in this workspace's sandbox;
        // either way the answer must agree with the default path.
        let root = euid_is_root();
        assert_eq!(
            default_socket_path() == std::path::Path::new(PRIVILEGED_SOCKET),
            root
        );
    }
}
