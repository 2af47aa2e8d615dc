//! Warming the heap before a burst of allocations (the re-exec restore).
//!
//! A fresh program image starts with no memory, and on a VM every page it
//! touches for the first time costs 1.5–2.5 µs (a fault and a zeroed page);
//! restoring 10,000 locks touches ~2,500 pages, so the faults alone are
//! milliseconds on the critical path. [`HeapWarmer`] moves them to another
//! core: glibc is told to grow its heap in one step of the expected size
//! (and to serve large blocks from that heap too), and a second thread
//! (after a first job of its own) faults those pages in
//! (`MADV_POPULATE_WRITE`, which never changes their contents) while the
//! first one allocates. [`HeapWarmer::finish`] puts
//! glibc's defaults back; [`trim`], called once the daemon serves, returns
//! what was not used to the system.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// `MADV_POPULATE_WRITE` (Linux 5.14).
const MADV_POPULATE_WRITE: libc::c_int = 23;
/// glibc's defaults for the two settings changed here.
const DEFAULT_TOP_PAD: libc::c_int = 128 * 1024;
const DEFAULT_MMAP_THRESHOLD: libc::c_int = 128 * 1024;
/// Pages faulted per `madvise` call (the stop flag is checked between).
const STEP: usize = 256 * 1024;

fn mallopt(param: libc::c_int, value: libc::c_int) -> bool {
    // SAFETY: mallopt only changes glibc's allocator settings; any value is
    // accepted or refused (0) without touching allocated memory.
    unsafe { libc::mallopt(param, value) == 1 }
}

fn heap_end() -> usize {
    // SAFETY: sbrk(0) only reports the current program break.
    unsafe { libc::sbrk(0) as usize }
}

/// Faults in `[start, start + len)` (page-aligned) without writing to it.
fn populate(start: usize, len: usize) -> io::Result<()> {
    // SAFETY: MADV_POPULATE_WRITE prefaults pages as a write would, but
    // never changes their contents, so it is sound on memory other code is
    // using; an unmapped range fails with ENOMEM and changes nothing.
    let r = unsafe { libc::madvise(start as *mut libc::c_void, len, MADV_POPULATE_WRITE) };
    crate::cvt(r).map(drop)
}

/// A heap being warmed for about `bytes` of allocations.
#[derive(Debug)]
pub struct HeapWarmer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HeapWarmer {
    /// Makes glibc grow its heap by `bytes` at the next growth and serve
    /// large blocks from it. Call [`HeapWarmer::spawn_after`] after the first
    /// allocation that grows it.
    pub fn prepare(bytes: usize) -> bool {
        let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        mallopt(libc::M_MMAP_THRESHOLD, bytes.min(32 << 20)) && mallopt(libc::M_TOP_PAD, bytes)
    }

    /// Runs `job` on a new thread, hands its result to the returned
    /// receiver, then faults in the top `bytes` of the heap there until
    /// [`HeapWarmer::finish`]. (Two cores: the job and this thread's own
    /// work run side by side first, the warming follows the job.) `None`
    /// if no thread could be started; then nothing ran.
    pub fn spawn_after<T: Send + 'static>(
        bytes: usize,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Option<(HeapWarmer, std::sync::mpsc::Receiver<T>)> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("heap-warmer".into())
            .spawn(move || {
                let _ = tx.send(job());
                let page = 4096;
                let end = heap_end() & !(page - 1);
                let mut at = end.saturating_sub(bytes) & !(page - 1);
                while at < end && !flag.load(Ordering::Relaxed) {
                    let len = STEP.min(end - at);
                    if populate(at, len).is_err() {
                        break;
                    }
                    at += len;
                }
            })
            .ok()?;
        let w = HeapWarmer {
            stop,
            thread: Some(thread),
        };
        Some((w, rx))
    }

    /// Stops the warming thread and restores glibc's defaults. What was
    /// warmed and not used stays until [`trim`] (which takes a few hundred
    /// microseconds at 10,000 locks: call it once the daemon serves).
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        mallopt(libc::M_TOP_PAD, DEFAULT_TOP_PAD);
        mallopt(libc::M_MMAP_THRESHOLD, DEFAULT_MMAP_THRESHOLD);
    }

    /// Puts glibc's default values back (after [`HeapWarmer::prepare`]
    /// without a [`HeapWarmer::spawn_after`]) and returns the unused top of
    /// the heap. (Setting the mmap threshold once turns glibc's dynamic
    /// adjustment of it off: blocks over 128 KiB stay mapped on their own.)
    pub fn reset() {
        mallopt(libc::M_TOP_PAD, DEFAULT_TOP_PAD);
        mallopt(libc::M_MMAP_THRESHOLD, DEFAULT_MMAP_THRESHOLD);
        trim();
    }
}

/// Returns the free top of the heap, and free whole pages inside it, to
/// the system.
pub fn trim() {
    // SAFETY: malloc_trim only returns free memory at the heap's top (and
    // free whole pages inside it) to the system.
    unsafe { libc::malloc_trim(0) };
}

/// Frees this image's memory on another CPU once it has exec'd.
///
/// `execve` tears the old address space down before the new image runs:
/// on this VM about 0.11 ms per MB the daemon had touched (1.1 ms at
/// 10,000 locks, 11 ms at 100,000), on the critical path of a re-exec. An
/// [`ExecReleaser`] is a process that shares this one's memory (`clone`
/// with `CLONE_VM`; it runs no program) and so keeps that memory alive
/// through the exec; when the exec lets go of it, the releaser exits and
/// the kernel frees it on the releaser's CPU while the new image starts on
/// this one. The new image reaps it (it is a child of the same pid): see
/// [`reap_children_in_background`].
///
/// How it learns of the exec: just before `execve`,
/// [`ExecReleaser::exec_with`] points the kernel's "clear child tid" word
/// of the exec'ing thread at a word the releaser waits on (futex); the
/// kernel clears that word and wakes its waiter when the thread drops a
/// shared address space, which `execve` does. If the daemon dies instead,
/// the releaser gets `SIGKILL` (parent-death signal).
///
/// It holds no descriptor. It starts on the daemon's descriptor table
/// (`CLONE_FILES`, so nothing is copied) and its first act is to leave it
/// for an empty one (`close_range(0, ~0, CLOSE_RANGE_UNSHARE)`, which
/// copies nothing and closes nothing). So no lock descriptor is ever
/// duplicated into it: POSIX locks keep their owner (the daemon's table)
/// and an OFD lock is released when the daemon closes its descriptor, as
/// without it. The daemon may exec only once it has left the table
/// ([`ExecReleaser::armed`]); a shared table would be copied by `execve`
/// and POSIX locks would stay with the old one. All signals are blocked in
/// it from its first instruction: it shares the daemon's memory and must
/// never run one of the daemon's handlers.
#[derive(Debug)]
pub struct ExecReleaser {
    pid: libc::pid_t,
    /// The releaser's stack.
    stack: *mut libc::c_void,
}

/// 1 while a releaser waits; the kernel (at `execve`) or `Drop` sets it to 0.
static EXEC_WORD: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
/// 0 starting, 1 armed (off the daemon's descriptor table), 2 failed.
static RELEASER_STATE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

const RELEASER_STACK: usize = 64 * 1024;
/// `CLOSE_RANGE_UNSHARE` (Linux 5.9).
const CLOSE_RANGE_UNSHARE: libc::c_uint = 1 << 1;

/// The releaser's whole life. It runs on its own stack in the daemon's
/// memory, with the daemon's thread pointer: it must use no thread-local
/// state, no allocator and no lock, only system calls. (glibc's
/// `syscall()` writes errno, the creating thread's, only when a call
/// fails: here `close_range` on a kernel older than 5.9, once, while the
/// daemon waits in [`ExecReleaser::armed`], and a futex wait that finds the
/// word already changed, while the daemon waits in `waitpid` for this
/// process to exit.)
extern "C" fn releaser_main(parent: *mut libc::c_void) -> libc::c_int {
    let parent = parent as libc::c_long;
    // SAFETY: raw system calls on this process only: leave the shared
    // descriptor table for an empty one, ask for SIGKILL when the parent
    // dies, then check that it had not already died. No errno is touched
    // (the return values are the kernel's).
    let ok = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            0 as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_UNSHARE,
        ) == 0
            && libc::syscall(libc::SYS_prctl, libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0
            && libc::syscall(libc::SYS_getppid) == parent
    };
    if !ok {
        RELEASER_STATE.store(2, Ordering::Release);
        return 1;
    }
    RELEASER_STATE.store(1, Ordering::Release);
    while EXEC_WORD.load(Ordering::Acquire) == 1 {
        // SAFETY: a (process-shared) futex wait on a static word of the
        // shared memory; it returns at once if the word is no longer 1.
        // Not FUTEX_PRIVATE: the kernel's wake at execve is a shared one.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                EXEC_WORD.as_ptr(),
                libc::FUTEX_WAIT,
                1u32,
                std::ptr::null::<libc::timespec>(),
            )
        };
    }
    0
}

impl ExecReleaser {
    /// Starts a releaser. Call [`ExecReleaser::armed`], then exec through
    /// [`ExecReleaser::exec_with`]. One at a time.
    pub fn start() -> io::Result<ExecReleaser> {
        EXEC_WORD.store(1, Ordering::Release);
        RELEASER_STATE.store(0, Ordering::Release);
        // SAFETY: a fresh private anonymous mapping, used only as the
        // releaser's stack; unmapped in Drop after the releaser is reaped.
        let stack = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                RELEASER_STACK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if stack == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut me = ExecReleaser { pid: 0, stack };
        // Block every signal around the clone: the releaser starts with
        // this mask and keeps it; this thread gets its own back.
        // SAFETY: sigset_t is plain data, initialised by sigfillset.
        let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to two sigset_t values.
        unsafe {
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        }
        let parent = crate::getpid() as libc::c_long;
        // SAFETY: the child runs releaser_main on the top of the mapping
        // (page-aligned, so 16-byte aligned), sharing memory and, until
        // its first system call, the descriptor table; releaser_main uses
        // nothing but two static atomics and raw system calls.
        let pid = unsafe {
            let top = stack
                .cast::<u8>()
                .add(RELEASER_STACK)
                .cast::<libc::c_void>();
            libc::clone(
                releaser_main,
                top,
                libc::CLONE_VM | libc::CLONE_FILES | libc::SIGCHLD,
                parent as *mut libc::c_void,
            )
        };
        let err = io::Error::last_os_error();
        // SAFETY: restores the mask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        if pid < 0 {
            return Err(err);
        }
        me.pid = pid;
        Ok(me)
    }

    /// The releaser's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits up to `timeout` until the releaser has left the descriptor
    /// table; false if it has not or could not (then drop it, which waits
    /// for it to be gone, before exec'ing).
    pub fn armed(&self, timeout: std::time::Duration) -> bool {
        let start = std::time::Instant::now();
        loop {
            match RELEASER_STATE.load(Ordering::Acquire) {
                1 => return true,
                2 => return false,
                _ if start.elapsed() > timeout => return false,
                _ => std::thread::yield_now(),
            }
        }
    }

    /// Runs `exec` (an `execve` wrapper, which returns only on failure)
    /// with this thread's exit word pointed at the releaser's, so that the
    /// kernel wakes the releaser when the exec drops this image's memory.
    ///
    /// Only on the main thread (elsewhere the releaser is let go before
    /// `exec` runs): after a failed exec the thread keeps that word, and
    /// only a thread no one joins may (a join waits on the word the C
    /// library set).
    pub fn exec_with<T>(self, exec: impl FnOnce() -> T) -> T {
        // SAFETY: gettid has no preconditions.
        let main_thread = unsafe { libc::gettid() } == crate::getpid();
        if !main_thread || RELEASER_STATE.load(Ordering::Acquire) != 1 {
            // Nothing would wake the releaser: let it go first.
            drop(self);
            return exec();
        }
        // SAFETY: points this thread's clear-child-tid at a static word
        // (it lives as long as the process); the kernel writes 0 there and
        // wakes it when the thread exits or execs while sharing memory.
        unsafe { libc::syscall(libc::SYS_set_tid_address, EXEC_WORD.as_ptr()) };
        let r = exec();
        drop(self);
        r
    }
}

impl Drop for ExecReleaser {
    /// Lets the releaser go (no exec happened), reaps it, frees its stack.
    fn drop(&mut self) {
        EXEC_WORD.store(0, Ordering::Release);
        // SAFETY: wakes whoever waits on the static word (the releaser).
        unsafe {
            libc::syscall(libc::SYS_futex, EXEC_WORD.as_ptr(), libc::FUTEX_WAKE, 1u32);
        }
        if self.pid > 0 {
            let mut status = 0;
            // SAFETY: waits for our own child. Any failure but ECHILD (it
            // is gone) is retried: the stack below must outlive it, and an
            // EINTR may read as the releaser's last errno (see above).
            while unsafe { libc::waitpid(self.pid, &mut status, 0) } < 0
                && io::Error::last_os_error().raw_os_error() != Some(libc::ECHILD)
            {}
        }
        // SAFETY: the releaser has exited (or never started), so nothing
        // uses the mapping any more.
        unsafe { libc::munmap(self.stack, RELEASER_STACK) };
    }
}

/// Reaps child processes on a thread of its own until there are none: a
/// freshly exec'd image reaps the [`ExecReleaser`] its previous image left.
/// Only for a process that has no children of its own to wait for.
pub fn reap_children_in_background() -> io::Result<()> {
    std::thread::Builder::new()
        .name("reaper".into())
        .spawn(|| {
            loop {
                let mut status = 0;
                // SAFETY: waits for any child; only fails with ECHILD
                // (none left) or EINTR.
                let r = unsafe { libc::waitpid(-1, &mut status, 0) };
                if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    return;
                }
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warming_keeps_contents_and_finishes() {
        assert!(HeapWarmer::prepare(8 << 20));
        let v: Vec<u64> = (0..100_000).collect();
        let (w, rx) = HeapWarmer::spawn_after(8 << 20, || 41 + 1).unwrap();
        assert_eq!(rx.recv().unwrap(), 42);
        let more: Vec<u64> = (0..200_000).map(|x| x * 3).collect();
        w.finish();
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
        assert!(more.iter().enumerate().all(|(i, &x)| x == 3 * i as u64));
    }

    fn fds_of(pid: i32) -> usize {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    }

    #[test]
    fn a_releaser_holds_no_descriptor_and_is_reaped() {
        let files: Vec<std::fs::File> = (0..50)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let r = ExecReleaser::start().unwrap();
        let pid = r.pid();
        assert!(pid > 0 && pid != crate::getpid());
        assert!(r.armed(std::time::Duration::from_secs(5)));
        // Off our table, onto an empty one; ours is intact.
        assert_eq!(fds_of(pid), 0);
        assert!(fds_of(crate::getpid()) >= 50);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap()
                .trim()
                .to_owned()
        };
        // Every signal blocked; it shares our memory (same VmSize).
        assert!(field("SigBlk:").starts_with("fffffffe7"), "{status}");
        assert_eq!(field("PPid:"), crate::getpid().to_string());
        // A failed exec (not on the main thread: the releaser is let go
        // first, then the exec runs) leaves nothing behind.
        let e = r.exec_with(|| io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        let gone = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(&format!(" {} ", crate::getpid())))
            .unwrap_or(true);
        assert!(gone, "pid {pid} still our child");
        assert_eq!(EXEC_WORD.load(Ordering::Acquire), 0);
        drop(files);
    }
}
