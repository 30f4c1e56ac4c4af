//! The threads that share the large loops of a compiled step: the caller plus a few workers
//! that wait for work by spinning, so that handing out a loop of a few microseconds costs
//! well under a microsecond.
//!
//! **How a loop is shared.** [`for_each`] cuts the work into `chunks` numbered `0..chunks`
//! and publishes one word, `claim`, that holds the job's generation, its chunk count and the
//! next unclaimed chunk. The caller and every awake worker take chunks by compare-and-swap on
//! that word until none are left; the caller then waits until all chunks are *finished*.
//! A worker that is asleep, or descheduled by the operating system, simply takes no chunk:
//! the caller does the work itself, so a busy machine costs nothing but the hand-off.
//!
//! Worked example, 2 threads, 5 chunks: the caller publishes `gen 7, 5 chunks, next 0`; it
//! takes 0 (`next 1`), the worker takes 1 (`next 2`), the caller finishes 0 and takes 2, the
//! worker 3, the caller 4; `next` is 5 = chunks, both stop taking; the caller returns when
//! the done counter reaches 5.
//!
//! **Invariant.** A job's closure is read only by a thread that holds one of its unfinished
//! chunks, and the caller does not return (so the closure stays alive) before every chunk is
//! finished. The generation in `claim` makes a stale worker's compare-and-swap fail instead
//! of taking a chunk of the next job.
//!
//! A worker can lose its processor in the middle of a chunk when the machine is busy, and the
//! caller then waits for it; a wait longer than [`STALL`] makes loops run on the caller alone
//! for [`BACK_OFF`] before the team is tried again.
//!
//! Workers spin for [`SPIN`] after their last chunk, then park until the next job; a
//! training loop hands out work every few tens of microseconds, so they stay awake while it
//! runs and cost nothing once it stops. The team never allocates after it starts, and it
//! never runs anything but the closures handed to [`for_each`].

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks.
const SPIN: Duration = Duration::from_micros(500);

/// A wait this long for the chunks other threads hold means one of them lost its processor
/// (a chunk takes a few microseconds; the operating system's time slices are milliseconds)...
const STALL: Duration = Duration::from_micros(100);

/// ...and then loops run on the caller alone for this long before trying the team again, so
/// that a machine whose other processors are busy costs at most one stall per period.
const BACK_OFF: Duration = Duration::from_millis(50);

/// The most threads a team has (the caller included).
const MAX_THREADS: usize = 8;

/// Bits of `claim` for the next chunk and for the chunk count (the generation has the rest).
const CHUNK_BITS: u32 = 20;
const CHUNK_MASK: u64 = (1 << CHUNK_BITS) - 1;

/// The most chunks one job can have.
pub const MAX_CHUNKS: usize = CHUNK_MASK as usize;

/// One published job: the closure every chunk runs.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
}

struct Shared {
    /// `generation << 40 | chunks << 20 | next`.
    claim: AtomicU64,
    /// Chunks of the current job finished.
    done: AtomicUsize,
    /// The current job, valid while it has unfinished chunks.
    job: AtomicPtr<Job<'static>>,
    /// A chunk panicked (the caller panics in turn once the job is over).
    panicked: AtomicBool,
    /// Workers that are parked (or about to), and their handles for waking them.
    sleeping: AtomicUsize,
    workers: Mutex<Vec<Thread>>,
}

struct Team {
    shared: &'static Shared,
    /// Threads in the team, the caller included.
    threads: usize,
    /// One caller at a time publishes jobs (others run their loops alone).
    busy: AtomicBool,
    /// The generation of the last job (only touched by the caller holding `busy`).
    generation: UnsafeCell<u64>,
}

// SAFETY: `generation` is only touched by the thread that holds `busy`.
unsafe impl Sync for Team {}

static TEAM: OnceLock<Team> = OnceLock::new();

/// The most threads a loop may use right now ([`set_threads`]); 0: all of the team.
static LIMIT: AtomicUsize = AtomicUsize::new(0);

/// Until when (nanoseconds after [`epoch`]) loops run on the caller alone (see [`STALL`]).
static SERIAL_UNTIL: AtomicU64 = AtomicU64::new(0);

/// The instant the team's clock counts from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Lets the loops of compiled training steps use at most `n` threads from now on (1: the
/// caller alone; 0 or more than there are: all), for comparing both in one run; returns the
/// previous limit. The number of threads there are is the processors available, at most 8,
/// and at most `SYMDIFF_THREADS` if set.
pub fn set_threads(n: usize) -> usize {
    LIMIT.swap(n, Ordering::Relaxed)
}

/// The number of threads: the processors available to this process, at most
/// [`MAX_THREADS`], and at most `SYMDIFF_THREADS` if that is set (1 runs everything on the
/// caller). More threads than processors would only take turns spinning (measured: 8 threads
/// on 2 processors train slower than 1).
fn wanted_threads() -> usize {
    let available = super::cores();
    let from_env = std::env::var("SYMDIFF_THREADS").ok().and_then(|s| s.trim().parse::<usize>().ok());
    from_env.unwrap_or(available).min(available).clamp(1, MAX_THREADS)
}

fn team() -> &'static Team {
    TEAM.get_or_init(|| {
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            claim: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            panicked: AtomicBool::new(false),
            sleeping: AtomicUsize::new(0),
            workers: Mutex::new(Vec::new()),
        }));
        let mut threads = 1;
        for k in 1..wanted_threads() {
            let spawned =
                std::thread::Builder::new().name(format!("symdiff-team-{k}")).spawn(move || worker(shared));
            match spawned {
                Ok(handle) => {
                    if let Ok(mut w) = shared.workers.lock() {
                        w.push(handle.thread().clone());
                    }
                    threads += 1;
                }
                // Fewer threads is only slower.
                Err(_) => break,
            }
        }
        Team { shared, threads, busy: AtomicBool::new(false), generation: UnsafeCell::new(0) }
    })
}

/// Threads that share the loops of compiled training steps (the caller included), within
/// the [`set_threads`] limit; starts them on first use.
pub fn threads() -> usize {
    let t = team().threads;
    match LIMIT.load(Ordering::Relaxed) {
        0 => t,
        n => n.min(t),
    }
}

/// Takes one chunk of the job published in `claim` with generation `generation`, if any is
/// left: its index, or `None` when the job is exhausted or replaced.
fn take(shared: &Shared, generation: u64) -> Option<usize> {
    let mut v = shared.claim.load(Ordering::Acquire);
    loop {
        let (g, chunks, next) = (v >> 40, (v >> CHUNK_BITS) & CHUNK_MASK, v & CHUNK_MASK);
        if g != generation || next >= chunks {
            return None;
        }
        match shared.claim.compare_exchange_weak(v, v + 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Some(next as usize),
            Err(now) => v = now,
        }
    }
}

/// Runs chunk `c` of the current job and counts it finished.
fn run_chunk(shared: &Shared, c: usize) {
    let job = shared.job.load(Ordering::Acquire);
    // SAFETY: this thread holds an unfinished chunk of the job, so the caller is still
    // inside `for_each` and the job (on its stack) is alive (module invariant).
    let f = unsafe { (*job).f };
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(c))).is_err() {
        shared.panicked.store(true, Ordering::Relaxed);
    }
    shared.done.fetch_add(1, Ordering::AcqRel);
}

fn worker(shared: &'static Shared) {
    let mut seen = shared.claim.load(Ordering::Acquire) >> 40;
    loop {
        // Wait for a new generation: spin a while, then park.
        let mut since = Instant::now();
        let generation = loop {
            let g = shared.claim.load(Ordering::Acquire) >> 40;
            if g != seen {
                break g;
            }
            if since.elapsed() < SPIN {
                for _ in 0..64 {
                    std::hint::spin_loop();
                }
                continue;
            }
            shared.sleeping.fetch_add(1, Ordering::SeqCst);
            // Re-check after announcing: a caller that published before seeing us asleep
            // will not wake us.
            if shared.claim.load(Ordering::SeqCst) >> 40 == seen {
                std::thread::park_timeout(Duration::from_millis(100));
            }
            shared.sleeping.fetch_sub(1, Ordering::SeqCst);
            since = Instant::now();
        };
        seen = generation;
        while let Some(c) = take(shared, generation) {
            run_chunk(shared, c);
        }
    }
}

/// Runs `f(c)` for every `c` in `0..chunks`, shared between the caller and the team's
/// workers, and returns when all have run. Chunks must be independent of each other.
/// With one thread, a single chunk, or another loop already being shared, it runs them on
/// the caller in order.
///
/// # Panics
/// If a chunk panics (after all chunks have run).
pub fn for_each(chunks: usize, f: &(dyn Fn(usize) + Sync)) {
    let t = team();
    if threads() == 1
        || chunks <= 1
        || (epoch().elapsed().as_nanos() as u64) < SERIAL_UNTIL.load(Ordering::Relaxed)
        || chunks > MAX_CHUNKS
        || t.busy.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err()
    {
        (0..chunks).for_each(f);
        return;
    }
    let shared = t.shared;
    let job = Job { f };
    // SAFETY: only the holder of `busy` touches the generation.
    let generation = unsafe {
        let g = &mut *t.generation.get();
        *g = (*g + 1) & ((1 << 24) - 1);
        *g
    };
    shared.done.store(0, Ordering::Relaxed);
    shared.job.store(&job as *const Job<'_> as *mut Job<'static>, Ordering::Relaxed);
    shared.claim.store(generation << 40 | (chunks as u64) << CHUNK_BITS, Ordering::SeqCst);
    if shared.sleeping.load(Ordering::SeqCst) > 0
        && let Ok(w) = shared.workers.lock()
    {
        w.iter().for_each(Thread::unpark);
    }
    while let Some(c) = take(shared, generation) {
        run_chunk(shared, c);
    }
    // Wait for the chunks other threads hold; yield now and then in case one of them was
    // descheduled and needs this processor.
    let mut spins = 0u32;
    let waiting = Instant::now();
    while shared.done.load(Ordering::Acquire) < chunks {
        spins += 1;
        if spins.is_multiple_of(1 << 12) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    if waiting.elapsed() > STALL {
        let until = epoch().elapsed() + BACK_OFF;
        SERIAL_UNTIL.store(until.as_nanos() as u64, Ordering::Relaxed);
    }
    let panicked = shared.panicked.swap(false, Ordering::Relaxed);
    t.busy.store(false, Ordering::Release);
    if panicked {
        panic!("a parallel chunk of a compiled step panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::for_each;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn check(chunks: usize) {
        let hits: Vec<AtomicUsize> = (0..chunks).map(|_| AtomicUsize::new(0)).collect();
        for_each(chunks, &|c| {
            hits[c].fetch_add(1, Ordering::Relaxed);
        });
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "{chunks} chunks");
    }

    #[test]
    fn every_chunk_runs_exactly_once() {
        for chunks in [0, 1, 2, 3, 7, 64, 1000] {
            check(chunks);
        }
        // Many jobs in a row (generations advance; stale workers must not run old closures).
        for round in 0..2000 {
            check(1 + round % 9);
        }
    }

    #[test]
    fn concurrent_callers_each_finish() {
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for round in 0..500 {
                        check(1 + round % 5);
                    }
                });
            }
        });
    }
}
