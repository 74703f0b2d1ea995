//! Persistent fork-join workers for one trainer: spawned once, waiting briefly (spinning, then
//! yielding) after each job and parked when idle longer; each job is split into a fixed number of
//! blocks so results depend only on the thread count.

use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use super::kernels;

/// How long a worker (or the caller waiting for workers) keeps checking for new work before it parks:
/// longer than the serial work between two jobs of one batch, so workers stay awake through an
/// epoch, while an idle trainer costs nothing. Waking a parked thread costs tens of microseconds on
/// a VM, about a third of a batch-32 step: measured side by side on 2 cores, parking after 5 us made
/// the 2-thread book model 0.37 s/epoch at batch 32, waiting 300 us 0.27 (1 thread: 0.34).
const SPIN_FOR: Duration = Duration::from_micros(300);

/// Busy-waits this long before yielding the core on each further check, so a waiting thread gives
/// its core to whoever needs it when the machine is oversubscribed.
const PURE_SPIN: Duration = Duration::from_micros(20);

/// Waits until `ready()` or the spin time has passed; returns whether it became ready.
fn spin_until(ready: impl Fn() -> bool) -> bool {
    let limit = SPIN_FOR;
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        let waited = start.elapsed();
        if waited >= limit {
            return ready();
        }
        if waited >= PURE_SPIN {
            thread::yield_now();
        }
    }
}

type Job = *const (dyn Fn(usize) + Sync + 'static);

struct Shared {
    /// Bumped once per job; a worker runs a job when it sees a generation it has not run.
    generation: AtomicU64,
    job: UnsafeCell<Option<Job>>,
    /// Workers still running the current job.
    pending: AtomicUsize,
    /// The thread waiting in [`Pool::run`], woken by the last worker to finish.
    caller: Mutex<Option<Thread>>,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    /// Held for the whole of [`Pool::run`]: one job at a time even if the pool is shared.
    running: Mutex<()>,
}

// SAFETY: `job` is written only by the thread in `Pool::run` while no worker reads it (before the
// generation is bumped with Release, and after every worker of the previous job has finished), and
// read by workers only after they observed the bumped generation with Acquire.
unsafe impl Sync for Shared {}
// SAFETY: the raw job pointer is only dereferenced under the protocol above.
unsafe impl Send for Shared {}

/// `threads - 1` parked workers plus the calling thread; [`Pool::run`] calls `f(0..threads)`.
pub(crate) struct Pool {
    threads: usize,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("threads", &self.threads).finish()
    }
}

/// `threads` as configured: 0 means every core the process may use.
pub(crate) fn resolve_threads(threads: usize) -> usize {
    if threads == 0 {
        thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    }
}

impl Pool {
    /// A pool that runs everything on the calling thread.
    pub(crate) fn serial() -> Pool {
        Pool::new(1)
    }

    /// Spawns `threads - 1` workers (none for 1), with flush-to-zero on.
    pub(crate) fn new(threads: usize) -> Pool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            job: UnsafeCell::new(None),
            pending: AtomicUsize::new(0),
            caller: Mutex::new(None),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            running: Mutex::new(()),
        });
        let mut workers = Vec::with_capacity(threads - 1);
        for k in 1..threads {
            let shared = Arc::clone(&shared);
            let spawned = thread::Builder::new()
                .name(format!("fitd-nn-{k}"))
                .spawn(move || worker(k, &shared));
            match spawned {
                Ok(h) => workers.push(h),
                // Fewer workers than asked still gives correct results for that many blocks.
                Err(_) => break,
            }
        }
        Pool {
            threads: workers.len() + 1,
            shared,
            workers,
        }
    }

    /// Number of blocks every job is split into.
    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(k)` for every `k` in `0..threads`, `f(0)` on the calling thread, and returns once all
    /// have finished. A panic in any block is re-raised here.
    pub(crate) fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        if self.threads == 1 {
            f(0);
            return;
        }
        let sh = &*self.shared;
        let _one_job = sh.running.lock().unwrap_or_else(|e| e.into_inner());
        *sh.caller.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread::current());
        // SAFETY: only the lifetime is erased; `run` does not return before every worker has
        // finished with the job (pending reaches 0), so the borrow outlives every use.
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f) };
        // SAFETY: no worker reads `job` now: the previous job's workers have all finished.
        unsafe { *sh.job.get() = Some(job) };
        sh.pending.store(self.threads - 1, Ordering::Release);
        sh.generation.fetch_add(1, Ordering::AcqRel);
        for w in &self.workers {
            w.thread().unpark();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| f(0)));
        let done = || sh.pending.load(Ordering::Acquire) == 0;
        if !spin_until(done) {
            while !done() {
                thread::park();
            }
        }
        if let Err(p) = mine {
            resume_unwind(p);
        }
        if sh.panicked.swap(false, Ordering::AcqRel) {
            panic!("an engine worker thread panicked");
        }
    }
}

fn worker(k: usize, sh: &Shared) {
    kernels::enable_flush_to_zero();
    let mut seen = 0;
    loop {
        let woken = || sh.shutdown.load(Ordering::Acquire) || sh.generation.load(Ordering::Acquire) != seen;
        if !spin_until(woken) {
            while !woken() {
                thread::park();
            }
        }
        if sh.shutdown.load(Ordering::Acquire) {
            return;
        }
        seen = sh.generation.load(Ordering::Acquire);
        // SAFETY: the generation was bumped after the job was stored, and the job outlives this use
        // (see `Pool::run`).
        let job = unsafe { (*sh.job.get()).expect("a job is stored before the generation moves") };
        // SAFETY: as above.
        if catch_unwind(AssertUnwindSafe(|| unsafe { (*job)(k) })).is_err() {
            sh.panicked.store(true, Ordering::Release);
        }
        if sh.pending.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(t) = sh.caller.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
        {
            t.unpark();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        for w in &self.workers {
            w.thread().unpark();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// The half-open range of block `k` when `len` items are split into `parts` nearly equal blocks.
pub(crate) fn block(len: usize, parts: usize, k: usize) -> (usize, usize) {
    (len * k / parts, len * (k + 1) / parts)
}

/// A raw pointer that may cross into pool workers; each worker touches a disjoint part.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);
// SAFETY: used only to hand disjoint column blocks of buffers to workers inside `Pool::run`.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer `off` floats further; taking `self` makes closures capture the whole wrapper.
    pub(crate) fn at(self, off: usize) -> *mut f32 {
        self.0.wrapping_add(off)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_block_runs_once_per_job_and_panics_propagate() {
        let pool = Pool::new(3);
        let hits: Vec<AtomicUsize> = (0..pool.threads()).map(|_| AtomicUsize::new(0)).collect();
        for _ in 0..500 {
            pool.run(&|k| {
                hits[k].fetch_add(1, Ordering::Relaxed);
            });
        }
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 500));
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(&|k| {
                if k == pool.threads() - 1 {
                    panic!("boom");
                }
            })
        }));
        assert!(r.is_err());
        // Still usable afterwards.
        let count = AtomicUsize::new(0);
        pool.run(&|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), pool.threads());
        assert_eq!(block(100, 3, 0), (0, 33));
        assert_eq!(block(100, 3, 2), (66, 100));
    }
}
