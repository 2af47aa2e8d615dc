//! Where the daemon's files live (docs/protocol.md §8.3).
//!
//! | item          | privileged (euid 0)                   | unprivileged                       |
//! |---------------|---------------------------------------|------------------------------------|
//! | run dir       | `/run/libvirt`                        | `$XDG_RUNTIME_DIR/libvirt`          |
//! | main socket   | `<run dir>/virtlockd-sock`            | same                               |
//! | admin socket  | `<run dir>/virtlockd-admin-sock`      | same                               |
//! | pid file      | `/run/virtlockd.pid`                  | `<run dir>/virtlockd.pid`           |
//! | re-exec state | `/run/virtlockd-restart-exec.json`    | `<run dir>/virtlockd-restart-exec.json` |
//! | lockspaces    | `<socket dir>/vmlockd-lockspaces`     | same (remembered across restarts)  |
//! | config        | `/etc/libvirt/virtlockd.conf`         | `$XDG_CONFIG_HOME/libvirt/virtlockd.conf` |
//!
//! Without `XDG_RUNTIME_DIR` the unprivileged run dir is `~/.cache/libvirt`
//! (GLib's fallback, as libvirt). The config key `unix_sock_dir` (a vmlock
//! addition) moves both sockets.

use std::path::{Path, PathBuf};

/// Where `/run` is.
pub const RUNSTATEDIR: &str = "/run";
/// Where `/etc` is.
pub const SYSCONFDIR: &str = "/etc";

/// Every path the daemon uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Created at start.
    pub run_dir: PathBuf,
    /// Main socket.
    pub sock: PathBuf,
    /// Admin socket.
    pub admin_sock: PathBuf,
    /// PID file.
    pub pid_file: PathBuf,
    /// Re-exec state file.
    pub state_file: PathBuf,
    /// The named lockspaces remembered across a restart (beside the sockets).
    pub lockspace_list: PathBuf,
}

/// The environment the paths depend on.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `geteuid() == 0`.
    pub privileged: bool,
    /// `$XDG_RUNTIME_DIR`.
    pub xdg_runtime_dir: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME`.
    pub xdg_config_home: Option<PathBuf>,
    /// `$HOME`.
    pub home: Option<PathBuf>,
}

impl Env {
    /// Reads the real process environment.
    pub fn from_process() -> Env {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Env {
            privileged: vmlock_sys::geteuid() == 0,
            xdg_runtime_dir: var("XDG_RUNTIME_DIR"),
            xdg_config_home: var("XDG_CONFIG_HOME"),
            home: var("HOME"),
        }
    }

    fn home(&self) -> PathBuf {
        self.home.clone().unwrap_or_else(|| PathBuf::from("/"))
    }

    /// The default config file (may be missing).
    pub fn default_config(&self) -> PathBuf {
        if self.privileged {
            return Path::new(SYSCONFDIR).join("libvirt/virtlockd.conf");
        }
        let base = self
            .xdg_config_home
            .clone()
            .unwrap_or_else(|| self.home().join(".config"));
        base.join("libvirt/virtlockd.conf")
    }

    /// The run dir.
    pub fn run_dir(&self) -> PathBuf {
        if self.privileged {
            return Path::new(RUNSTATEDIR).join("libvirt");
        }
        match &self.xdg_runtime_dir {
            Some(rt) => rt.join("libvirt"),
            None => self.home().join(".cache/libvirt"),
        }
    }

    /// All paths, given the `-p` option and the `unix_sock_dir` key.
    pub fn paths(&self, pid_file: Option<&Path>, sock_dir: Option<&Path>) -> Paths {
        let run_dir = self.run_dir();
        let top = if self.privileged {
            PathBuf::from(RUNSTATEDIR)
        } else {
            run_dir.clone()
        };
        let sock_dir = sock_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| run_dir.clone());
        Paths {
            sock: sock_dir.join("virtlockd-sock"),
            admin_sock: sock_dir.join("virtlockd-admin-sock"),
            pid_file: pid_file.map_or_else(|| top.join("virtlockd.pid"), Path::to_path_buf),
            state_file: top.join("virtlockd-restart-exec.json"),
            lockspace_list: sock_dir.join(crate::lslist::FILE_NAME),
            run_dir,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileged_paths_match_virtlockd() {
        let env = Env {
            privileged: true,
            ..Env::default()
        };
        let p = env.paths(None, None);
        assert_eq!(p.sock, Path::new("/run/libvirt/virtlockd-sock"));
        assert_eq!(p.admin_sock, Path::new("/run/libvirt/virtlockd-admin-sock"));
        assert_eq!(p.pid_file, Path::new("/run/virtlockd.pid"));
        assert_eq!(p.state_file, Path::new("/run/virtlockd-restart-exec.json"));
        assert_eq!(
            env.default_config(),
            Path::new("/etc/libvirt/virtlockd.conf")
        );
    }

    #[test]
    fn unprivileged_paths_use_xdg_dirs_and_fallbacks() {
        let env = Env {
            privileged: false,
            xdg_runtime_dir: Some("/run/user/1000".into()),
            xdg_config_home: None,
            home: Some("/home/u".into()),
        };
        let p = env.paths(Some(Path::new("/tmp/p.pid")), None);
        assert_eq!(p.sock, Path::new("/run/user/1000/libvirt/virtlockd-sock"));
        assert_eq!(
            p.state_file,
            Path::new("/run/user/1000/libvirt/virtlockd-restart-exec.json")
        );
        assert_eq!(p.pid_file, Path::new("/tmp/p.pid"));
        assert_eq!(
            env.default_config(),
            Path::new("/home/u/.config/libvirt/virtlockd.conf")
        );
        let bare = Env {
            home: Some("/home/u".into()),
            ..Env::default()
        };
        assert_eq!(bare.run_dir(), Path::new("/home/u/.cache/libvirt"));
    }

    #[test]
    fn unix_sock_dir_moves_only_the_sockets() {
        let env = Env {
            privileged: true,
            ..Env::default()
        };
        let p = env.paths(None, Some(Path::new("/tmp/s")));
        assert_eq!(p.sock, Path::new("/tmp/s/virtlockd-sock"));
        assert_eq!(p.admin_sock, Path::new("/tmp/s/virtlockd-admin-sock"));
        assert_eq!(p.pid_file, Path::new("/run/virtlockd.pid"));
    }
}
