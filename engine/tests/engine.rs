//! The engine thread on the fixtures' tiny model folder: cancelling, sharing, failed loads.
//!
//! `Engine::pipeline_loads()` counts process-wide, so every test here holds `SERIAL` while it
//! runs: no other test of this binary loads a pipeline meanwhile.

mod support;
use support::model_tiny;

use std::path::Path;
use std::time::{Duration, Instant};

use ezaudio_engine::models::ModelSource;
use ezaudio_engine::worker::{Engine, GenerateParams, Job, JobStatus, ModelChoice};
use parking_lot::Mutex;

static SERIAL: Mutex<()> = Mutex::new(());

fn choice(dir: &Path) -> ModelChoice {
    let mut c = ModelChoice::new(ModelSource::Folder(dir.to_path_buf()));
    c.device = ezaudio_engine::device::DeviceChoice::Cpu;
    c
}

fn params(steps: u32, seed: u64) -> GenerateParams {
    // A quarter of a second: one frame at any latent rate, and quick.
    GenerateParams {
        prompt: "a dog barking".into(),
        seconds: 0.25,
        steps,
        seed,
        ..GenerateParams::default()
    }
}

const WAIT: Duration = Duration::from_secs(120);

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dst = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dst);
        } else {
            std::fs::copy(&p, &dst).unwrap();
        }
    }
}

#[test]
fn cancel_stops_within_one_step() {
    let _serial = SERIAL.lock();
    let engine = Engine::start(choice(&model_tiny()), None);
    let job = engine.submit(Job::Generate(params(1000, 1)));
    let deadline = Instant::now() + WAIT;
    let (first, n) = loop {
        if let JobStatus::Step { k, n } = job.status() {
            break (k, n);
        }
        assert!(
            !job.status().is_finished(),
            "the job ended early: {:?}",
            job.status()
        );
        assert!(Instant::now() < deadline, "no step within {WAIT:?}");
        std::thread::yield_now();
    };
    job.cancel();
    // What the worker has reported by the time cancel() returned.
    let at_cancel = match job.status() {
        JobStatus::Step { k, .. } => k,
        _ => first,
    };
    let mut last_seen = at_cancel;
    let cancelled_at = Instant::now();
    while !job.status().is_finished() {
        if let JobStatus::Step { k, .. } = job.status() {
            last_seen = last_seen.max(k);
        }
        assert!(cancelled_at.elapsed() < WAIT, "cancel was ignored");
        std::thread::yield_now();
    }
    assert_eq!(job.status(), JobStatus::Cancelled);
    assert!(
        last_seen <= at_cancel + 1,
        "kept going after cancel: step {last_seen}, cancelled at {at_cancel} (first {first})"
    );
    assert!(last_seen < n, "ran to the end");
    assert_eq!(job.wait(Duration::ZERO), Some(Err("cancelled".to_string())));

    // The engine keeps serving after a cancelled job.
    let next = engine.submit(Job::Generate(params(2, 2)));
    assert!(
        matches!(next.wait(WAIT), Some(Ok(_))),
        "{:?}",
        next.status()
    );
}

#[test]
fn shared_engines_load_the_model_once() {
    let _serial = SERIAL.lock();
    let a = Engine::shared(choice(&model_tiny()));
    let b = Engine::shared(choice(&model_tiny()));
    assert!(
        Engine::same_engine(&a, &b),
        "two engines for one model choice"
    );
    let before = Engine::pipeline_loads();
    let one = a.submit(Job::Generate(params(2, 1)));
    let two = b.submit(Job::Generate(params(2, 2)));
    let clip_one = one
        .wait(WAIT)
        .expect("job one timed out")
        .expect("job one failed");
    let clip_two = two
        .wait(WAIT)
        .expect("job two timed out")
        .expect("job two failed");
    assert_ne!(clip_one.samples, clip_two.samples);
    assert_eq!(
        Engine::pipeline_loads(),
        before + 1,
        "the model was loaded more than once"
    );

    // Another device or dtype is another engine.
    let mut other = choice(&model_tiny());
    other.dtype = candle_core::DType::F16;
    assert!(!Engine::same_engine(&a, &Engine::shared(other)));
}

#[test]
fn failed_load_is_reported_and_recoverable() {
    let _serial = SERIAL.lock();
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("model");

    let broken = Engine::start(choice(&missing), None);
    let job = broken.submit(Job::Generate(params(2, 1)));
    let err = job
        .wait(WAIT)
        .expect("timed out")
        .expect_err("a missing folder loaded");
    assert!(
        err.contains("model folder not found") && err.contains("model"),
        "unclear message: {err}"
    );
    assert!(matches!(job.status(), JobStatus::Failed(_)));

    // A separate engine with a good folder is unaffected.
    let good = Engine::start(choice(&model_tiny()), None);
    assert!(matches!(
        good.submit(Job::Generate(params(2, 1))).wait(WAIT),
        Some(Ok(_))
    ));

    // Once the folder is fixed, the same engine loads it on the next job.
    copy_dir(&model_tiny(), &missing);
    let retry = broken.submit(Job::Generate(params(2, 1)));
    let clip = retry.wait(WAIT).expect("timed out");
    assert!(
        clip.is_ok(),
        "no recovery after fixing the folder: {clip:?}"
    );
}
