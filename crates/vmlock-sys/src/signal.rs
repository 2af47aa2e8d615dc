//! The calling thread's signal mask.
//!
//! The daemon blocks its handled signals first thing in `main` and unblocks
//! them once its handlers are installed: a SIGTERM or SIGUSR1 that arrives
//! while a freshly re-exec'd image starts up (handlers are reset by
//! `exec`) then waits, pending, instead of killing the daemon with every
//! lock it holds. Threads inherit the mask of the thread that creates them.

use std::io;

fn change(how: libc::c_int, sigs: &[i32]) -> io::Result<()> {
    // SAFETY: `set` is a plain C struct that sigemptyset initialises before
    // any other use; sigaddset only writes into it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is valid, writable memory of the right type.
    unsafe { libc::sigemptyset(&mut set) };
    for &s in sigs {
        // SAFETY: as above; an invalid signal number only makes it fail.
        if unsafe { libc::sigaddset(&mut set, s) } != 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
    }
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(how, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Blocks `sigs` in the calling thread (they stay pending until unblocked).
pub fn block(sigs: &[i32]) -> io::Result<()> {
    change(libc::SIG_BLOCK, sigs)
}

/// Unblocks `sigs` in the calling thread; pending ones are delivered now.
pub fn unblock(sigs: &[i32]) -> io::Result<()> {
    change(libc::SIG_UNBLOCK, sigs)
}

/// Signal dispositions saved by [`ignore`], to put back with
/// [`SavedActions::restore`].
#[derive(Debug)]
pub struct SavedActions(Vec<(i32, libc::sigaction)>);

/// Sets `sigs` to "ignore" and returns what they were. An ignored signal
/// stays ignored across `execve` (a caught one reverts to its default,
/// which for SIGTERM and SIGUSR1 is to terminate), and every daemon that
/// handles the signal installs its own handler over it at start.
pub fn ignore(sigs: &[i32]) -> io::Result<SavedActions> {
    let mut saved = Vec::with_capacity(sigs.len());
    for &s in sigs {
        // SAFETY: a zeroed sigaction is a valid value; sa_sigaction =
        // SIG_IGN with an empty mask and no flags is a complete action.
        let mut ign: libc::sigaction = unsafe { std::mem::zeroed() };
        ign.sa_sigaction = libc::SIG_IGN;
        // SAFETY: zeroed sigaction is a valid buffer for the old action.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers refer to valid sigaction values.
        if unsafe { libc::sigaction(s, &ign, &mut old) } != 0 {
            let e = io::Error::last_os_error();
            let _ = SavedActions(saved).restore();
            return Err(e);
        }
        saved.push((s, old));
    }
    Ok(SavedActions(saved))
}

impl SavedActions {
    /// Puts the saved dispositions back.
    pub fn restore(self) -> io::Result<()> {
        let mut first_err = None;
        for (s, old) in self.0 {
            // SAFETY: `old` is the action the kernel returned for `s`.
            if unsafe { libc::sigaction(s, &old, std::ptr::null_mut()) } != 0 {
                first_err.get_or_insert_with(io::Error::last_os_error);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// A signal taken by [`wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caught {
    /// The signal number.
    pub signo: i32,
    /// Sent by the kernel itself (e.g. the terminal's Ctrl-C), not by a
    /// process with `kill`.
    pub from_kernel: bool,
}

/// Waits for one of `sigs`, which must be blocked in every thread (so they
/// stay pending for this call), and takes it.
pub fn wait(sigs: &[i32]) -> io::Result<Caught> {
    // SAFETY: zeroed sigset_t is valid; sigemptyset/sigaddset initialise it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is valid, writable memory of the right type.
    unsafe { libc::sigemptyset(&mut set) };
    for &s in sigs {
        // SAFETY: as above; an invalid number only makes it fail.
        if unsafe { libc::sigaddset(&mut set, s) } != 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
    }
    loop {
        // SAFETY: siginfo_t is plain data; sigwaitinfo fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is initialised and `info` is writable.
        let rc = unsafe { libc::sigwaitinfo(&set, &mut info) };
        if rc >= 0 {
            return Ok(Caught {
                signo: rc,
                from_kernel: info.si_code == libc::SI_KERNEL,
            });
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Whether `sig` is blocked in the calling thread.
pub fn is_blocked(sig: i32) -> io::Result<bool> {
    // SAFETY: zeroed sigset_t is a valid buffer for pthread_sigmask to fill.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a null new-set only queries; `old` is writable.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut old) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: `old` was filled in by pthread_sigmask.
    Ok(unsafe { libc::sigismember(&old, sig) } == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignore_and_restore_a_disposition() {
        let current = |s: i32| {
            // SAFETY: a zeroed sigaction is a valid buffer to fill.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: a null new action only queries; `old` is writable.
            unsafe { libc::sigaction(s, std::ptr::null(), &mut old) };
            old.sa_sigaction
        };
        let before = current(libc::SIGWINCH);
        let saved = ignore(&[libc::SIGWINCH]).unwrap();
        assert_eq!(current(libc::SIGWINCH), libc::SIG_IGN);
        saved.restore().unwrap();
        assert_eq!(current(libc::SIGWINCH), before);
    }

    #[test]
    fn block_and_unblock_in_a_thread() {
        std::thread::spawn(|| {
            assert!(!is_blocked(libc::SIGUSR2).unwrap());
            block(&[libc::SIGUSR2]).unwrap();
            assert!(is_blocked(libc::SIGUSR2).unwrap());
            // A new thread inherits the mask.
            let inherited = std::thread::spawn(|| is_blocked(libc::SIGUSR2).unwrap())
                .join()
                .unwrap();
            assert!(inherited);
            unblock(&[libc::SIGUSR2]).unwrap();
            assert!(!is_blocked(libc::SIGUSR2).unwrap());
            assert!(block(&[10_000]).is_err());
        })
        .join()
        .unwrap();
    }
}
