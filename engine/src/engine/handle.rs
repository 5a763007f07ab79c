//! The caller's side of the engine thread: [`Engine`] (a cheap handle, shared per process by
//! model, device and precision) and [`JobHandle`] (one job's status, readable from any thread
//! without locks, its cancel flag and its clip).
//!
//! Several plugin instances in one host share one engine and so one loaded model. The model
//! loads lazily on the first job, on the worker, and is released when the last handle goes
//! (or after an idle timeout).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use candle_core::DType;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use super::job::{Job, JobError, JobStatus, ModelStatus};
use super::worker::{Loader, Worker};
use crate::audio::Clip;
use crate::install::{ModelSource, Official};
use crate::runtime::{parse_dtype, DeviceChoice};

/// Which model an engine serves, on which device, in which precision.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelChoice {
    pub source: ModelSource,
    pub device: DeviceChoice,
    pub dtype: DType,
}

impl ModelChoice {
    pub fn new(source: ModelSource) -> Self {
        Self {
            source,
            device: DeviceChoice::Auto,
            dtype: DType::F32,
        }
    }

    /// EzAudio-L on the best device in f32, unless the environment says otherwise:
    /// `EZAUDIO_MODEL` (a model folder, `l` or `xl`), `EZAUDIO_DEVICE`, `EZAUDIO_DTYPE`.
    /// Unreadable values fall back to the defaults (the plugin must start whatever is set).
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let source = var("EZAUDIO_MODEL")
            .and_then(|v| v.parse().ok())
            .unwrap_or(ModelSource::Official(Official::L));
        let device = var("EZAUDIO_DEVICE")
            .and_then(|v| v.parse().ok())
            .unwrap_or_default();
        let dtype = var("EZAUDIO_DTYPE")
            .and_then(|v| parse_dtype(&v).ok())
            .unwrap_or(DType::F32);
        Self {
            source,
            device,
            dtype,
        }
    }
}

impl Default for ModelChoice {
    fn default() -> Self {
        Self::from_env()
    }
}

// A job's stage as one atomic byte, so a GUI or the CLI reads it without a lock.
const QUEUED: u8 = 0;
pub(super) const LOADING: u8 = 1;
pub(super) const ENCODING: u8 = 2;
const STEP: u8 = 3;
pub(super) const DECODING: u8 = 4;
const DONE: u8 = 5;
const FAILED: u8 = 6;

/// One job's shared state: written by the worker, read by any number of [`JobHandle`]s.
#[derive(Default)]
pub(super) struct JobState {
    stage: AtomicU8,
    step: AtomicU32,
    steps: AtomicU32,
    cancel: AtomicBool,
    error: OnceLock<JobError>,
    result: Mutex<Option<Clip>>,
}

impl JobState {
    pub(super) fn finish(&self, outcome: Result<Clip, JobError>) {
        match outcome {
            Ok(clip) => {
                *self.result.lock() = Some(clip);
                self.stage.store(DONE, Ordering::Release);
            }
            Err(e) => {
                let _ = self.error.set(e);
                self.stage.store(FAILED, Ordering::Release);
            }
        }
    }

    pub(super) fn set_stage(&self, stage: u8) {
        self.stage.store(stage, Ordering::Release);
    }

    pub(super) fn set_step(&self, k: u32, n: u32) {
        self.steps.store(n, Ordering::Relaxed);
        self.step.store(k, Ordering::Relaxed);
        self.stage.store(STEP, Ordering::Release);
    }

    pub(super) fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Acquire)
    }
}

/// A submitted job: poll its status, cancel it, take its clip.
#[derive(Clone)]
pub struct JobHandle {
    state: Arc<JobState>,
    done: Receiver<()>,
}

impl JobHandle {
    pub fn status(&self) -> JobStatus {
        match self.state.stage.load(Ordering::Acquire) {
            QUEUED => JobStatus::Queued,
            LOADING => JobStatus::LoadingModel,
            ENCODING => JobStatus::EncodingText,
            STEP => JobStatus::Step {
                k: self.state.step.load(Ordering::Relaxed),
                n: self.state.steps.load(Ordering::Relaxed),
            },
            DECODING => JobStatus::Decoding,
            DONE => JobStatus::Done,
            _ => {
                JobStatus::Failed(
                    self.state.error.get().cloned().unwrap_or_else(|| {
                        JobError::Internal("job ended without its reason".into())
                    }),
                )
            }
        }
    }

    /// Asks the worker to stop; it does so before the next step.
    pub fn cancel(&self) {
        self.state.cancel.store(true, Ordering::Release);
    }

    /// The outcome once finished (the clip can be taken once), `None` while running.
    pub fn try_take(&self) -> Option<Result<Clip, JobError>> {
        match self.status() {
            JobStatus::Done => self.state.result.lock().take().map(Ok),
            JobStatus::Failed(e) => Some(Err(e)),
            _ => None,
        }
    }

    /// Blocks until the job finishes (or `timeout` passes: `None`).
    pub fn wait(&self, timeout: Duration) -> Option<Result<Clip, JobError>> {
        let _ = self.done.recv_timeout(timeout);
        self.try_take()
    }
}

/// A job on its way to the worker, with where its outcome goes.
pub(super) struct Queued {
    pub job: Job,
    pub state: Arc<JobState>,
    pub done: Sender<()>,
}

struct EngineInner {
    choice: ModelChoice,
    jobs: Sender<Queued>,
    status: Arc<Mutex<ModelStatus>>,
}
// Dropping the last `EngineInner` closes the job channel: the worker notices, releases the
// model and exits. It is never joined, so dropping a handle never blocks a GUI or host thread.

/// Handle to an engine thread. Cheap to clone; the thread ends when the last clone is dropped.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

static REGISTRY: Mutex<Vec<(ModelChoice, Weak<EngineInner>)>> = Mutex::new(Vec::new());
pub(super) static PIPELINE_LOADS: AtomicUsize = AtomicUsize::new(0);

impl Engine {
    /// The process-wide engine for `choice`, started if none is running.
    pub fn shared(choice: ModelChoice) -> Engine {
        let mut registry = REGISTRY.lock();
        registry.retain(|(_, weak)| weak.strong_count() > 0);
        if let Some(inner) = registry
            .iter()
            .find(|(c, _)| *c == choice)
            .and_then(|(_, w)| w.upgrade())
        {
            return Engine { inner };
        }
        let engine = Self::start(choice.clone(), None);
        registry.push((choice, Arc::downgrade(&engine.inner)));
        engine
    }

    /// An engine of its own (not shared), optionally unloading its model after `idle`.
    pub fn start(choice: ModelChoice, idle: Option<Duration>) -> Engine {
        Self::start_with_loader(choice, idle, None)
    }

    /// [`Self::start`] with another way of loading the pipeline (`None`: from the model
    /// folder `choice` names). For tools and tests that build or break a pipeline themselves.
    pub fn start_with_loader(
        choice: ModelChoice,
        idle: Option<Duration>,
        load: Option<Loader>,
    ) -> Engine {
        let (tx, rx) = crossbeam_channel::unbounded::<Queued>();
        let status = Arc::new(Mutex::new(ModelStatus::NotLoaded));
        let worker = Worker::new(choice.clone(), load, status.clone(), idle);
        let spawned = std::thread::Builder::new()
            .name("ezaudio-engine".into())
            .spawn(move || {
                // It runs a job's serial parts while the compute threads wait; keep it as
                // polite as they are (see `compute`).
                super::compute::lower_this_thread();
                worker.run(rx)
            });
        if let Err(e) = spawned {
            *status.lock() = ModelStatus::Failed(format!("cannot start the engine thread: {e}"));
        }
        Engine {
            inner: Arc::new(EngineInner {
                choice,
                jobs: tx,
                status,
            }),
        }
    }

    pub fn choice(&self) -> &ModelChoice {
        &self.inner.choice
    }

    pub fn submit(&self, job: Job) -> JobHandle {
        let state = Arc::new(JobState::default());
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let handle = JobHandle {
            state: state.clone(),
            done: done_rx,
        };
        let queued = Queued {
            job,
            state: state.clone(),
            done: done_tx,
        };
        if self.inner.jobs.send(queued).is_err() {
            state.finish(Err(JobError::Failed(
                "the engine thread is not running".into(),
            )));
        }
        handle
    }

    pub fn model_status(&self) -> ModelStatus {
        self.inner.status.lock().clone()
    }

    /// Whether two handles lead to the same engine thread (and so the same loaded model).
    pub fn same_engine(a: &Engine, b: &Engine) -> bool {
        Arc::ptr_eq(&a.inner, &b.inner)
    }

    /// How many pipelines this process has loaded so far (for tests and diagnostics).
    pub fn pipeline_loads() -> usize {
        PIPELINE_LOADS.load(Ordering::Relaxed)
    }
}
