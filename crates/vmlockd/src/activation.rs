//! systemd socket activation (docs/protocol.md §8.5) and readiness notification.
//!
//! Activation is used only when `LISTEN_PID` is our pid and `LISTEN_FDS > 0`;
//! `LISTEN_FDNAMES` must then name every descriptor. The main server claims
//! `virtlockd.socket` (or our own unit name `vmlockd.socket`), the admin
//! server `virtlockd-admin.socket` (`vmlockd-admin.socket`). Any other name is
//! fatal (exit 6), as in virtlockd. Without `LISTEN_FDNAMES` virtlockd logs an
//! error and binds its own sockets; vmlockd does the same.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;

/// Descriptors handed over by systemd, sorted by role.
#[derive(Debug, Default)]
pub struct Activation {
    /// Listening sockets of the main server.
    pub main: Vec<OwnedFd>,
    /// Listening sockets of the admin server.
    pub admin: Vec<OwnedFd>,
}

/// Activation errors.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// A descriptor carries a name no server claims.
    #[error("Unknown socket activation name '{0}'")]
    UnknownName(String),
    /// The variables are malformed.
    #[error("Malformed socket activation environment: {0}")]
    Malformed(String),
    /// A named descriptor is not open.
    #[error("Socket activation descriptor {fd} is unusable")]
    BadFd {
        /// The number.
        fd: i32,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The raw variables, so the logic can be tested without touching the environment.
#[derive(Debug, Clone, Default)]
pub struct ActivationEnv {
    /// `LISTEN_PID`.
    pub listen_pid: Option<String>,
    /// `LISTEN_FDS`.
    pub listen_fds: Option<String>,
    /// `LISTEN_FDNAMES`.
    pub listen_fdnames: Option<String>,
    /// Why a variable could not be removed from the environment.
    pub unset_errors: Vec<String>,
}

impl ActivationEnv {
    /// Reads and consumes `LISTEN_PID`/`LISTEN_FDS` (not `LISTEN_FDNAMES`,
    /// like virtlockd). Must run before any thread is started.
    pub fn take_from_process() -> ActivationEnv {
        let get = |k: &str| std::env::var(k).ok();
        let mut env = ActivationEnv {
            listen_pid: get("LISTEN_PID"),
            listen_fds: get("LISTEN_FDS"),
            listen_fdnames: get("LISTEN_FDNAMES"),
            unset_errors: Vec::new(),
        };
        if env.listen_pid.is_some() {
            for k in ["LISTEN_PID", "LISTEN_FDS"] {
                if let Err(e) = vmlock_sys::unset_env_single_threaded(k) {
                    // Reported once logging is up; LISTEN_PID names this
                    // process, so a later image ignores the stale value.
                    env.unset_errors.push(e.to_string());
                }
            }
        }
        env
    }
}

/// What systemd passed: `(fd number, name)` pairs, or `None` without activation.
pub fn parse(
    env: &ActivationEnv,
    our_pid: u32,
) -> Result<Option<Vec<(i32, String)>>, ActivationError> {
    let (Some(pid), Some(n)) = (&env.listen_pid, &env.listen_fds) else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(our_pid) {
        return Ok(None);
    }
    let n: i32 = n
        .trim()
        .parse()
        .map_err(|_| ActivationError::Malformed(format!("LISTEN_FDS={n}")))?;
    if n <= 0 {
        return Ok(None);
    }
    let Some(names) = &env.listen_fdnames else {
        tracing::error!("LISTEN_FDNAMES is missing: ignoring socket activation");
        return Ok(None);
    };
    let names: Vec<&str> = names.split(':').collect();
    if names.len() != n as usize {
        return Err(ActivationError::Malformed(format!(
            "LISTEN_FDS={n} but LISTEN_FDNAMES has {} names",
            names.len()
        )));
    }
    Ok(Some(
        (0..n)
            .map(|i| (3 + i, names[i as usize].to_owned()))
            .collect(),
    ))
}

/// Sorts named descriptors into the two servers, adopting each one.
pub fn claim(fds: Vec<(i32, String)>) -> Result<Activation, ActivationError> {
    let mut act = Activation::default();
    for (fd, name) in fds {
        let slot = match name.as_str() {
            "virtlockd.socket" | "vmlockd.socket" => &mut act.main,
            "virtlockd-admin.socket" | "vmlockd-admin.socket" => &mut act.admin,
            _ => return Err(ActivationError::UnknownName(name)),
        };
        let owned =
            vmlock_sys::fd::adopt(fd).map_err(|source| ActivationError::BadFd { fd, source })?;
        slot.push(owned);
    }
    Ok(act)
}

/// Sends `state` (e.g. `READY=1`) to `$NOTIFY_SOCKET` if it is set; a leading
/// `@` names an abstract socket.
pub fn notify(state: &str) -> io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), &path)?;
    }
    Ok(())
}

/// The systemd watchdog: how often to send `WATCHDOG=1` (half of
/// `WATCHDOG_USEC`), if the service manager asked this very process
/// (`WATCHDOG_PID`, when set, must be ours: re-exec keeps the pid).
pub fn watchdog_period(
    usec: Option<&str>,
    pid: Option<&str>,
    me: u32,
) -> Option<std::time::Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(p) = pid
        && p.trim().parse::<u32>().ok() != Some(me)
    {
        return None;
    }
    Some(std::time::Duration::from_micros(usec / 2))
}

/// Pings the service manager from the event loop for as long as the loop
/// runs: a hung loop stops the pings and systemd acts (`WatchdogSec=`).
pub async fn watchdog(period: std::time::Duration) {
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        if let Err(e) = notify("WATCHDOG=1\n") {
            tracing::warn!("cannot ping the systemd watchdog: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_settings() {
        let s = std::time::Duration::from_secs;
        assert_eq!(watchdog_period(Some("4000000"), None, 7), Some(s(2)));
        assert_eq!(watchdog_period(Some("4000000"), Some("7"), 7), Some(s(2)));
        assert_eq!(watchdog_period(Some("4000000"), Some("8"), 7), None);
        assert_eq!(watchdog_period(Some("0"), None, 7), None);
        assert_eq!(watchdog_period(Some("x"), None, 7), None);
        assert_eq!(watchdog_period(None, None, 7), None);
    }

    fn env(pid: &str, n: &str, names: Option<&str>) -> ActivationEnv {
        ActivationEnv {
            listen_pid: Some(pid.into()),
            listen_fds: Some(n.into()),
            listen_fdnames: names.map(Into::into),
            unset_errors: Vec::new(),
        }
    }

    #[test]
    fn activation_is_ours_only_with_our_pid() {
        assert!(parse(&ActivationEnv::default(), 7).expect("none").is_none());
        assert!(
            parse(&env("8", "2", Some("a:b")), 7)
                .expect("other pid")
                .is_none()
        );
        let got = parse(
            &env("7", "2", Some("virtlockd.socket:virtlockd-admin.socket")),
            7,
        );
        let got = got.expect("ok").expect("some");
        assert_eq!(
            got,
            vec![
                (3, "virtlockd.socket".into()),
                (4, "virtlockd-admin.socket".into())
            ]
        );
    }

    #[test]
    fn names_must_match_the_count_and_be_known() {
        assert!(parse(&env("7", "2", Some("virtlockd.socket")), 7).is_err());
        assert!(parse(&env("7", "x", Some("a")), 7).is_err());
        assert!(parse(&env("7", "1", None), 7).expect("no names").is_none());
        let e = claim(vec![(3, "bogus.socket".into())]).expect_err("unknown name");
        assert!(matches!(e, ActivationError::UnknownName(n) if n == "bogus.socket"));
    }
}
