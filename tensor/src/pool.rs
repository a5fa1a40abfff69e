//! The kernels' own worker pool: the calling thread works too, and the workers spin for a
//! moment between kernels instead of sleeping.
//!
//! Decoding one token calls a few hundred small kernels (a 576 × 576 product is about
//! 10 µs of work). A fork-join pool entered from outside (rayon's `install` from a plugin's
//! thread) parks the caller, wakes a sleeping worker through the kernel, and wakes the
//! caller again at the end: two wake-ups per kernel, which on a virtual machine cost about
//! as much as the kernel itself. llama.cpp avoids this the same way: its threads spin
//! between the operations of a graph and the main thread takes its share of each one.
//!
//! Here a job is a number of chunks and a function of the chunk index. The caller
//! publishes it, claims chunks from an atomic counter like any worker, and returns once
//! every chunk is done; a worker that was asleep and wakes late finds nothing left, so a
//! job never waits on a wake-up. Workers spin for [`SPIN`] after their last job, then
//! park (an idle node burns no CPU). One job runs at a time: a second caller (another
//! plugin's thread in the same round) runs its job alone on its own thread rather than
//! queue behind the first.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a worker keeps looking for work after its last job before it parks.
const SPIN: Duration = Duration::from_micros(200);

/// A published job: the function and how many chunks it has. The pointer is to the
/// caller's closure, alive until [`run`] returns, which it does only once no worker can
/// still reach it (see `Pool::finish`).
#[derive(Clone, Copy)]
struct Job {
    f: *const (dyn Fn(usize) + Sync),
    chunks: usize,
}

// SAFETY: the closure behind `f` is `Sync`, and `run` keeps it alive while any worker
// can call it.
unsafe impl Send for Job {}

struct Pool {
    /// Odd while a job is open, even when none is.
    epoch: AtomicU64,
    job: Mutex<Option<Job>>,
    next: AtomicUsize,
    done: AtomicUsize,
    /// Workers between taking the job and finishing their chunks.
    inside: AtomicUsize,
    busy: AtomicBool,
    panicked: AtomicBool,
    sleepers: AtomicUsize,
    wake: (Mutex<()>, Condvar),
    workers: usize,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            epoch: AtomicU64::new(0),
            job: Mutex::new(None),
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            inside: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            wake: (Mutex::new(()), Condvar::new()),
            workers: threads.saturating_sub(1),
        }));
        for i in 0..pool.workers {
            // A pool that cannot start threads still works: the caller does everything.
            let _ = std::thread::Builder::new()
                .name(format!("apiary-kernel-{i}"))
                .spawn(move || pool.work(i));
        }
        pool
    })
}

thread_local! {
    /// Set on pool workers and while a caller runs a job: a kernel inside a kernel runs
    /// serially instead of trying to publish a second job.
    static IN_POOL: Cell<bool> = const { Cell::new(false) };
}

/// At most this many threads (the caller included) per job; 0 for all of them.
static MAX_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Threads a job can use now: the caller and the workers allowed.
pub fn threads() -> usize {
    let all = pool().workers + 1;
    match MAX_THREADS.load(SeqCst) {
        0 => all,
        n => n.min(all),
    }
}

/// Let jobs use at most `n` threads, the caller included (0: all). A throttled node
/// keeps its kernels to one core so the owner's work has the others; jobs already
/// running finish as they started.
pub fn set_max_threads(n: usize) {
    MAX_THREADS.store(n, SeqCst);
}

/// Run `f(0)`, …, `f(chunks − 1)`, spread over the pool and the calling thread, and
/// return when all have run. A panic in `f` is re-raised here.
pub fn run(chunks: usize, f: impl Fn(usize) + Sync) {
    let pool = pool();
    if chunks <= 1 || threads() <= 1 || IN_POOL.get() || pool.busy.swap(true, SeqCst) {
        (0..chunks).for_each(f);
        return;
    }
    let f: &(dyn Fn(usize) + Sync) = &f;
    // SAFETY: only the lifetime is erased; `finish` returns after the last use.
    let f: &'static (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
    pool.publish(Job { f, chunks });
    IN_POOL.set(true);
    pool.take_chunks(Job { f, chunks });
    IN_POOL.set(false);
    pool.finish(chunks);
}

impl Pool {
    fn publish(&self, job: Job) {
        *self.job.lock().unwrap_or_else(|p| p.into_inner()) = Some(job);
        self.next.store(0, SeqCst);
        self.done.store(0, SeqCst);
        self.epoch.fetch_add(1, SeqCst); // odd: open
        if self.sleepers.load(SeqCst) > 0 {
            let _guard = self.wake.0.lock().unwrap_or_else(|p| p.into_inner());
            self.wake.1.notify_all();
        }
    }

    fn take_chunks(&self, job: Job) {
        loop {
            let i = self.next.fetch_add(1, SeqCst);
            if i >= job.chunks {
                return;
            }
            // SAFETY: the job is open, so its closure is alive (see `finish`).
            let f = unsafe { &*job.f };
            if catch_unwind(AssertUnwindSafe(|| f(i))).is_err() {
                self.panicked.store(true, SeqCst);
            }
            self.done.fetch_add(1, SeqCst);
        }
    }

    /// Wait for the chunks others took, close the job, and wait until no worker can
    /// still reach its closure.
    fn finish(&self, chunks: usize) {
        while self.done.load(SeqCst) < chunks {
            std::hint::spin_loop();
        }
        self.epoch.fetch_add(1, SeqCst); // even: closed
        // A worker that saw the job open before this point is counted in `inside`;
        // one that looks after it sees the job closed and leaves it alone.
        while self.inside.load(SeqCst) > 0 {
            std::hint::spin_loop();
        }
        *self.job.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let panicked = self.panicked.swap(false, SeqCst);
        self.busy.store(false, SeqCst);
        if panicked {
            panic!("a tensor kernel panicked on a pool thread");
        }
    }

    /// Worker `index` (0-based) takes part in jobs while `index + 2 <= threads()`.
    fn work(&self, index: usize) {
        IN_POOL.set(true);
        let mut seen = self.epoch.load(SeqCst);
        loop {
            let e = self.wait_for_change(seen);
            seen = e;
            if e.is_multiple_of(2) || index + 2 > threads() {
                continue;
            }
            self.inside.fetch_add(1, SeqCst);
            if self.epoch.load(SeqCst) == e {
                let job = *self.job.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(job) = job {
                    self.take_chunks(job);
                }
            }
            self.inside.fetch_sub(1, SeqCst);
        }
    }

    /// The epoch once it differs from `seen`: spinning for [`SPIN`], then parked.
    fn wait_for_change(&self, seen: u64) -> u64 {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let e = self.epoch.load(SeqCst);
            if e != seen {
                return e;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) && start.elapsed() > SPIN {
                break;
            }
            std::hint::spin_loop();
        }
        let mut guard = self.wake.0.lock().unwrap_or_else(|p| p.into_inner());
        self.sleepers.fetch_add(1, SeqCst);
        loop {
            let e = self.epoch.load(SeqCst);
            if e != seen {
                self.sleepers.fetch_sub(1, SeqCst);
                return e;
            }
            guard = self.wake.1.wait(guard).unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_chunk_runs_exactly_once() {
        for chunks in [0, 1, 2, 3, 17, 1000] {
            let hits: Vec<AtomicU32> = (0..chunks).map(|_| AtomicU32::new(0)).collect();
            run(chunks, |i| {
                hits[i].fetch_add(1, SeqCst);
            });
            assert!(hits.iter().all(|h| h.load(SeqCst) == 1), "{chunks} chunks");
        }
    }

    #[test]
    fn jobs_after_the_workers_parked_still_complete() {
        let sum = AtomicUsize::new(0);
        run(8, |i| {
            sum.fetch_add(i, SeqCst);
        });
        std::thread::sleep(SPIN * 5);
        run(8, |i| {
            sum.fetch_add(i, SeqCst);
        });
        assert_eq!(sum.load(SeqCst), 2 * 28);
    }

    #[test]
    fn concurrent_callers_and_nested_jobs_do_not_deadlock() {
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        run(4, |_| {
                            run(3, |_| {
                                total.fetch_add(1, SeqCst);
                            });
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(SeqCst), 4 * 200 * 4 * 3);
    }

    #[test]
    fn one_thread_means_the_caller_alone() {
        set_max_threads(1);
        let me = std::thread::current().id();
        let elsewhere = AtomicUsize::new(0);
        run(64, |_| {
            if std::thread::current().id() != me {
                elsewhere.fetch_add(1, SeqCst);
            }
        });
        set_max_threads(0);
        assert_eq!(elsewhere.load(SeqCst), 0);
        assert_eq!(threads(), pool().workers + 1);
    }

    #[test]
    fn a_panicking_chunk_is_reraised_and_the_pool_still_works() {
        let r = catch_unwind(|| {
            run(16, |i| {
                if i == 7 {
                    panic!("chunk 7");
                }
            })
        });
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        run(16, |_| {
            n.fetch_add(1, SeqCst);
        });
        assert_eq!(n.load(SeqCst), 16);
    }
}
