//! The engine thread on the fixtures' tiny model folder: cancelling, sharing, failed loads.
//!
//! `Engine::pipeline_loads()` counts process-wide, so every test here holds `SERIAL` while it
//! runs: no other test of this binary loads a pipeline meanwhile.

mod support;
use support::model_tiny;

use std::path::Path;
use std::time::{Duration, Instant};

use ezaudio_engine::engine::{
    load_pipeline, Engine, Job, JobError, JobStatus, Loader, ModelChoice, ModelStatus,
};
use ezaudio_engine::install::ModelSource;
use ezaudio_engine::Recipe;
use parking_lot::Mutex;

static SERIAL: Mutex<()> = Mutex::new(());

fn choice(dir: &Path) -> ModelChoice {
    let mut c = ModelChoice::new(ModelSource::Folder(dir.to_path_buf()));
    c.device = ezaudio_engine::runtime::DeviceChoice::Cpu;
    c
}

fn params(steps: u32, seed: u64) -> Recipe {
    // A quarter of a second: one frame at any latent rate, and quick.
    Recipe {
        seconds: 0.25,
        steps,
        seed,
        ..Recipe::new("a dog barking")
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
    assert_eq!(job.status(), JobStatus::Failed(JobError::Cancelled));
    assert!(job.status().is_cancelled());
    assert!(
        last_seen <= at_cancel + 1,
        "kept going after cancel: step {last_seen}, cancelled at {at_cancel} (first {first})"
    );
    assert!(last_seen < n, "ran to the end");
    assert_eq!(job.wait(Duration::ZERO), Some(Err(JobError::Cancelled)));

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
    let JobError::Failed(err) = err else {
        panic!("a missing folder is a plain failure, got {err:?}");
    };
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

#[test]
fn a_panic_while_loading_is_reported_and_the_next_job_loads_again() {
    let _serial = SERIAL.lock();
    let mut first = true;
    let loader: Loader = Box::new(move |choice: &ModelChoice| {
        if std::mem::take(&mut first) {
            panic!("checkpoint reader tripped over tensor 42");
        }
        load_pipeline(choice)
    });
    let engine = Engine::start_with_loader(choice(&model_tiny()), None, Some(loader));
    let job = engine.submit(Job::Generate(params(2, 1)));
    let err = job
        .wait(WAIT)
        .expect("timed out")
        .expect_err("the panicking load produced a clip");
    assert_eq!(
        err,
        JobError::Internal("checkpoint reader tripped over tensor 42".into()),
        "the panic's own words reach the caller"
    );
    match engine.model_status() {
        ModelStatus::Failed(why) => assert!(
            why.contains("tensor 42") && why.contains("retry"),
            "model status: {why}"
        ),
        other => panic!("the model status stayed {other:?} after a panic while loading"),
    }

    let again = engine.submit(Job::Generate(params(2, 1)));
    let clip = again.wait(WAIT).expect("timed out");
    assert!(clip.is_ok(), "no retry after the panic: {clip:?}");
    // The status line people read names the device and the precision that run.
    match engine.model_status() {
        ModelStatus::Ready { device } => assert_eq!(device, "CPU, f32"),
        other => panic!("not ready after the retry: {other:?}"),
    }
}
