//! Soak: one engine runs many generations back to back on the tiny model, a seeded share of
//! them cancelled at a random step. Resident memory must stay flat (within a generous bound:
//! the allocator keeps some pages), and no thread or file descriptor may be left behind, neither
//! per job nor once the engine is dropped. Counts come from /proc/self (Linux).

mod support;
use support::model_tiny;

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use ezaudio_engine::engine::{Engine, Job, JobStatus, ModelChoice};
use ezaudio_engine::install::ModelSource;
use ezaudio_engine::Recipe;

const JOBS: usize = 100;
const WARM_UP: usize = 5;
/// Growth of resident memory allowed over the soak: the tiny model is ~1 MB and a job's
/// buffers are a few hundred kB, so a leak of even a few kB per job over 100 jobs shows up
/// against heap noise only past this.
const RSS_SLACK_KB: u64 = 32 * 1024;

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn threads() -> usize {
    count("/proc/self/task")
}

fn fds() -> usize {
    count("/proc/self/fd")
}

/// Runs one job; cancels it once it reports step `cancel_at` (if given). Returns whether it
/// ended cancelled.
fn run_job(engine: &Engine, seed: u64, steps: u32, cancel_at: Option<u32>) -> bool {
    let recipe = Recipe {
        seconds: 0.25,
        steps,
        seed,
        ..Recipe::new("a dog barking")
    };
    let job = engine.submit(Job::Generate(recipe));
    if let Some(at) = cancel_at {
        loop {
            match job.status() {
                JobStatus::Step { k, .. } if k >= at => break,
                s if s.is_finished() => break,
                _ => std::thread::yield_now(),
            }
        }
        job.cancel();
    }
    let outcome = job
        .wait(Duration::from_secs(600))
        .expect("the job never finished");
    match outcome {
        Ok(clip) => {
            assert_eq!(clip.samples.len(), 6000, "seed {seed}");
            false
        }
        Err(e) => {
            assert!(job.status().is_cancelled(), "seed {seed}: failed: {e}");
            true
        }
    }
}

#[test]
fn hundred_generations_with_random_cancels_stay_flat() {
    let mut choice = ModelChoice::new(ModelSource::Folder(model_tiny()));
    choice.device = ezaudio_engine::runtime::DeviceChoice::Cpu;
    let engine = Engine::start(choice, None);
    for i in 0..WARM_UP {
        run_job(&engine, i as u64, 4, None);
    }
    let (rss0, threads0, fds0) = (rss_kb(), threads(), fds());

    let mut rng = ChaCha8Rng::seed_from_u64(0x50a6);
    let mut cancelled = 0;
    let mut peak_threads = threads0;
    for i in 0..JOBS {
        let steps = rng.random_range(2..=6u32);
        let cancel_at = rng.random_bool(0.4).then(|| rng.random_range(1..=steps));
        if run_job(&engine, 1000 + i as u64, steps, cancel_at) {
            cancelled += 1;
        }
        peak_threads = peak_threads.max(threads());
    }
    let (rss1, threads1, fds1) = (rss_kb(), threads(), fds());
    let growth = rss1 as i64 - rss0 as i64;
    eprintln!(
        "soak: {JOBS} jobs ({cancelled} cancelled); RSS {rss0} -> {rss1} kB ({growth:+} kB); \
         threads {threads0} -> {threads1} (peak {peak_threads}); fds {fds0} -> {fds1}"
    );
    assert!(
        cancelled > 0 && cancelled < JOBS,
        "the seeded cancels did not vary"
    );
    assert!(
        rss1 <= rss0 + RSS_SLACK_KB,
        "resident memory grew by {growth} kB over {JOBS} jobs"
    );
    assert!(threads1 <= threads0, "threads {threads0} -> {threads1}");
    assert!(
        peak_threads <= threads0 + 1,
        "a job started threads: peak {peak_threads}"
    );
    assert!(fds1 <= fds0, "file descriptors {fds0} -> {fds1}");

    // Dropped, the engine's thread ends (it is not joined: wait for it, a bounded number of
    // polls, not a timed assertion).
    drop(engine);
    let mut polls = 0;
    while threads() >= threads0 && polls < 6000 {
        std::thread::sleep(Duration::from_millis(10));
        polls += 1;
    }
    assert!(
        threads() < threads0,
        "the engine thread outlived its engine ({} threads)",
        threads()
    );
}
