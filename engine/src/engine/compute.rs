//! The threads a job computes on. In a DAW the same cores run the host's audio callback, so a
//! generation must not take all of them, nor compete with the audio at the same priority: jobs
//! run inside a rayon pool of a chosen size (every parallel kernel — candle's matmuls, ours —
//! splits its work over the pool it is called from) whose threads run below normal priority.
//! The engine thread itself, which waits on the pool and runs the serial parts, is lowered too.

use std::sync::atomic::{AtomicUsize, Ordering};

/// How many threads jobs may use; 0 = [`auto_threads`]. Process-wide: every engine thread (one
/// per model) reads it when a job starts, so a change applies from the next job on.
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Asks jobs started from now on to use `n` threads (0: the default, see [`auto_threads`]).
pub fn set_compute_threads(n: usize) {
    THREADS.store(n, Ordering::Relaxed);
}

/// The thread count jobs use now (the setting resolved, at most the machine's cores).
pub fn compute_threads() -> usize {
    let cores = available_cores();
    match THREADS.load(Ordering::Relaxed) {
        0 => auto_threads(cores),
        n => n.min(cores),
    }
}

/// The default: all cores but one, which is left to the host's audio (one on a one-core box).
pub fn auto_threads(cores: usize) -> usize {
    cores.saturating_sub(1).max(1)
}

fn available_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// A pool of `threads` below-normal-priority threads, rebuilt when the setting changes.
#[derive(Default)]
pub(super) struct ComputePool {
    pool: Option<(usize, rayon::ThreadPool)>,
}

impl ComputePool {
    /// Runs `work` on the pool for the current setting. If no pool can be built (the system
    /// refuses threads), the work runs on the caller's thread and the global pool instead of
    /// failing: slower, but the job still finishes.
    pub(super) fn run<R: Send>(&mut self, work: impl FnOnce() -> R + Send) -> R {
        let threads = compute_threads();
        if self.pool.as_ref().is_none_or(|(n, _)| *n != threads) {
            self.pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("ezaudio-compute-{i}"))
                .start_handler(|_| lower_this_thread())
                .build()
                .ok()
                .map(|p| (threads, p));
        }
        match &self.pool {
            Some((_, pool)) => pool.install(work),
            None => work(),
        }
    }
}

/// Puts the calling thread below normal priority, as far as the system lets an unprivileged
/// process (lowering is always allowed). Best effort: a refusal leaves the thread as it was.
pub fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread; on Linux niceness is per thread, and
    // `who` is this thread's id.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, BACKGROUND_NICE);
    }
    #[cfg(target_os = "macos")]
    // SAFETY: sets the calling thread's own QoS class; no pointers involved.
    unsafe {
        libc::pthread_set_qos_class_self_np(libc::qos_class_t::QOS_CLASS_UTILITY, 0);
    }
    #[cfg(windows)]
    // SAFETY: GetCurrentThread returns a pseudo-handle that needs no closing.
    unsafe {
        windows_priority::SetThreadPriority(
            windows_priority::GetCurrentThread(),
            windows_priority::THREAD_PRIORITY_BELOW_NORMAL,
        );
    }
}

/// Niceness of the compute threads on Linux: clearly below the host's normal threads (0) and
/// far below its realtime audio thread, but not idle priority, so a generation still
/// progresses on a loaded machine.
#[cfg(target_os = "linux")]
pub const BACKGROUND_NICE: i32 = 10;

#[cfg(windows)]
mod windows_priority {
    pub const THREAD_PRIORITY_BELOW_NORMAL: i32 = -1;
    #[link(name = "kernel32")]
    extern "system" {
        pub fn GetCurrentThread() -> isize;
        pub fn SetThreadPriority(thread: isize, priority: i32) -> i32;
    }
}

/// The calling thread's niceness (Linux), for tests and diagnostics.
#[cfg(target_os = "linux")]
pub fn this_thread_nice() -> i32 {
    // SAFETY: plain system calls on the calling thread.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::getpriority(libc::PRIO_PROCESS, tid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_leaves_one_core_to_the_host() {
        assert_eq!(auto_threads(1), 1);
        assert_eq!(auto_threads(2), 1);
        assert_eq!(auto_threads(16), 15);
    }

    #[test]
    fn jobs_run_on_the_chosen_number_of_lowered_threads() {
        let mut pool = ComputePool::default();
        // One test changes the process-wide setting; restore it whatever happens.
        struct Restore;
        impl Drop for Restore {
            fn drop(&mut self) {
                set_compute_threads(0);
            }
        }
        let _restore = Restore;
        set_compute_threads(1);
        let (n, name) = pool.run(|| {
            (
                rayon::current_num_threads(),
                std::thread::current().name().map(str::to_string),
            )
        });
        assert_eq!(n, 1);
        assert_eq!(name.as_deref(), Some("ezaudio-compute-0"));
        #[cfg(target_os = "linux")]
        {
            let nice = pool.run(this_thread_nice);
            assert_eq!(
                nice, BACKGROUND_NICE,
                "compute threads run below normal priority"
            );
            // Work the kernels split with rayon lands on the pool's threads too.
            let nices: Vec<i32> = pool.run(|| {
                use rayon::prelude::*;
                (0..64)
                    .into_par_iter()
                    .map(|_| this_thread_nice())
                    .collect()
            });
            assert!(nices.iter().all(|n| *n == BACKGROUND_NICE), "{nices:?}");
        }
        // More threads than cores are not handed out; a new setting rebuilds the pool.
        set_compute_threads(10_000);
        assert_eq!(pool.run(rayon::current_num_threads), available_cores());
    }
}
