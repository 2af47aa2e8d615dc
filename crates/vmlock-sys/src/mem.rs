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
//! glibc's defaults back and returns what was not used to the system.

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

    /// Stops the warming thread, restores glibc's defaults and gives the
    /// unused top of the heap back.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        HeapWarmer::reset();
    }

    /// Puts glibc's default values back (after [`HeapWarmer::prepare`]
    /// without a [`HeapWarmer::spawn_after`]) and returns the unused top of
    /// the heap. (Setting the mmap threshold once turns glibc's dynamic
    /// adjustment of it off: blocks over 128 KiB stay mapped on their own.)
    pub fn reset() {
        mallopt(libc::M_TOP_PAD, DEFAULT_TOP_PAD);
        mallopt(libc::M_MMAP_THRESHOLD, DEFAULT_MMAP_THRESHOLD);
        // SAFETY: malloc_trim only returns free memory at the heap's top
        // (and free whole pages inside it) to the system.
        unsafe { libc::malloc_trim(0) };
    }
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
}
