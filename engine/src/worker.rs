//! The engine thread: one long-lived worker owns the loaded pipeline and runs jobs in order.
//!
//! Callers (a plugin instance, the CLI) hold an [`Engine`] handle, submit [`Job`]s and get a
//! [`JobHandle`] whose status is readable from any thread without locks. Engines are shared per
//! process by (model, device, dtype): several plugin instances in one host use one model. The
//! model loads lazily on the first job, on the worker, and is released when the last handle goes
//! (or after an idle timeout).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use candle_core::DType;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::clip::{Clip, ClipKind, ClipMeta};
use crate::control::{resolve_controlnet, ControlInput, ControlNet};
use crate::device::{describe, parse_dtype, DeviceChoice};
use crate::edit::Span;
use crate::error::Error;
use crate::models::{resolve_model, ModelSource, Official};
use crate::pipeline::{Noise, Pipeline, Settings, Stage};

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

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateParams {
    pub prompt: String,
    pub negative: String,
    pub seconds: f32,
    pub steps: u32,
    pub guidance: f32,
    pub rescale: f32,
    pub eta: f32,
    pub seed: u64,
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative: String::new(),
            seconds: 10.0,
            steps: 100,
            guidance: 5.0,
            rescale: 0.75,
            eta: 1.0,
            seed: 0,
        }
    }
}

impl GenerateParams {
    fn settings(&self) -> Settings {
        Settings {
            prompt: self.prompt.clone(),
            negative: self.negative.clone(),
            steps: self.steps as usize,
            guidance: self.guidance as f64,
            rescale: self.rescale as f64,
            eta: self.eta as f64,
            seed: self.seed,
        }
    }

    fn meta(&self, model_id: &str, kind: ClipKind) -> ClipMeta {
        ClipMeta {
            prompt: self.prompt.clone(),
            negative: self.negative.clone(),
            seconds: self.seconds,
            steps: self.steps,
            guidance: self.guidance,
            rescale: self.rescale,
            eta: self.eta,
            seed: self.seed,
            model_id: model_id.to_string(),
            kind,
            created: ClipMeta::unix_now(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct EditParams {
    /// The clip to edit, at the model's rate (24 kHz).
    pub source: Arc<Clip>,
    pub start_s: f32,
    pub length_s: f32,
    pub boundary_s: f32,
    pub gen: GenerateParams,
}

/// What a controlled generation follows.
#[derive(Debug, Clone)]
pub enum ControlSource {
    /// A recording (mono, any rate; resampled to the model's): the result follows its loudness
    /// and is cut to its length.
    Reference(Arc<Clip>),
    /// A drawn envelope: `(seconds, level 0..1)` points.
    Envelope(Vec<(f32, f32)>),
}

/// Text to audio steered by a loudness control (EzAudio-ControlNet, energy).
#[derive(Debug, Clone)]
pub struct ControlParams {
    pub gen: GenerateParams,
    pub control: ControlSource,
    /// Scales the ControlNet's effect (1 = as trained, 0 = none).
    pub conditioning_scale: f32,
    /// Noise gate for a reference after peak normalisation (0 = off; the official demo's 0.01).
    pub surpass_noise: f32,
    /// A ControlNet folder; `None` finds it next to the model (see [`resolve_controlnet`]).
    pub controlnet: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub enum Job {
    Generate(GenerateParams),
    Edit(EditParams),
    GenerateControlled(ControlParams),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    Queued,
    LoadingModel,
    EncodingText,
    Step { k: u32, n: u32 },
    Decoding,
    Done,
    Failed(String),
    Cancelled,
}

impl JobStatus {
    pub fn is_finished(&self) -> bool {
        matches!(self, Self::Done | Self::Failed(_) | Self::Cancelled)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelStatus {
    NotLoaded,
    Loading,
    Ready { device: String },
    Failed(String),
}

impl std::fmt::Display for ModelStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotLoaded => write!(f, "not loaded (loads with the first generation)"),
            Self::Loading => write!(f, "loading..."),
            Self::Ready { device } => write!(f, "ready on {device}"),
            Self::Failed(why) => write!(f, "error: {why}"),
        }
    }
}

const QUEUED: u8 = 0;
const LOADING: u8 = 1;
const ENCODING: u8 = 2;
const STEP: u8 = 3;
const DECODING: u8 = 4;
const DONE: u8 = 5;
const FAILED: u8 = 6;
const CANCELLED: u8 = 7;

#[derive(Default)]
struct JobState {
    stage: AtomicU8,
    step: AtomicU32,
    steps: AtomicU32,
    cancel: AtomicBool,
    error: OnceLock<String>,
    result: Mutex<Option<Clip>>,
}

impl JobState {
    fn finish(&self, outcome: Result<Clip, Error>) {
        match outcome {
            Ok(clip) => {
                *self.result.lock() = Some(clip);
                self.stage.store(DONE, Ordering::Release);
            }
            Err(Error::Cancelled) => self.stage.store(CANCELLED, Ordering::Release),
            Err(e) => {
                let _ = self.error.set(e.to_string());
                self.stage.store(FAILED, Ordering::Release);
            }
        }
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
            FAILED => JobStatus::Failed(self.state.error.get().cloned().unwrap_or_default()),
            _ => JobStatus::Cancelled,
        }
    }

    /// Asks the worker to stop; it does so before the next step.
    pub fn cancel(&self) {
        self.state.cancel.store(true, Ordering::Release);
    }

    /// The outcome once finished (the clip can be taken once), `None` while running.
    pub fn try_take(&self) -> Option<Result<Clip, String>> {
        match self.status() {
            JobStatus::Done => self.state.result.lock().take().map(Ok),
            JobStatus::Failed(msg) => Some(Err(msg)),
            JobStatus::Cancelled => Some(Err("cancelled".into())),
            _ => None,
        }
    }

    /// Blocks until the job finishes (or `timeout` passes: `None`).
    pub fn wait(&self, timeout: Duration) -> Option<Result<Clip, String>> {
        let _ = self.done.recv_timeout(timeout);
        self.try_take()
    }
}

struct Queued {
    job: Job,
    state: Arc<JobState>,
    done: Sender<()>,
}

struct EngineInner {
    choice: ModelChoice,
    jobs: Sender<Queued>,
    status: Arc<Mutex<ModelStatus>>,
    shutdown: Arc<AtomicBool>,
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        // The worker notices the closed channel and exits, releasing the model; never joined
        // here, so dropping the last handle never blocks a GUI or host thread.
        self.shutdown.store(true, Ordering::Release);
    }
}

/// Handle to an engine thread. Cheap to clone; the thread ends when the last clone is dropped.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

static REGISTRY: Mutex<Vec<(ModelChoice, Weak<EngineInner>)>> = Mutex::new(Vec::new());
static PIPELINE_LOADS: AtomicUsize = AtomicUsize::new(0);

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
        let (tx, rx) = crossbeam_channel::unbounded::<Queued>();
        let status = Arc::new(Mutex::new(ModelStatus::NotLoaded));
        let shutdown = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            choice: choice.clone(),
            status: status.clone(),
            pipeline: None,
            model_root: None,
            controlnet: None,
            idle,
        };
        let spawned = std::thread::Builder::new()
            .name("ezaudio-engine".into())
            .spawn(move || worker.run(rx));
        if let Err(e) = spawned {
            *status.lock() = ModelStatus::Failed(format!("cannot start the engine thread: {e}"));
        }
        Engine {
            inner: Arc::new(EngineInner {
                choice,
                jobs: tx,
                status,
                shutdown,
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
            state.finish(Err(Error::InvalidInput(
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

struct Worker {
    choice: ModelChoice,
    status: Arc<Mutex<ModelStatus>>,
    pipeline: Option<Pipeline>,
    /// The loaded model's folder (where its ControlNet is looked for).
    model_root: Option<PathBuf>,
    /// The last ControlNet used, by checkpoint path: loaded on the first controlled job.
    controlnet: Option<(PathBuf, ControlNet)>,
    idle: Option<Duration>,
}

impl Worker {
    fn run(mut self, jobs: Receiver<Queued>) {
        loop {
            let next = match self.idle {
                Some(idle) => match jobs.recv_timeout(idle) {
                    Ok(q) => q,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                        self.unload();
                        continue;
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                },
                None => match jobs.recv() {
                    Ok(q) => q,
                    Err(_) => break,
                },
            };
            self.serve(next);
        }
        self.unload();
    }

    fn unload(&mut self) {
        self.controlnet = None;
        if self.pipeline.take().is_some() {
            *self.status.lock() = ModelStatus::NotLoaded;
        }
    }

    fn serve(&mut self, queued: Queued) {
        let Queued { job, state, done } = queued;
        let outcome = if state.cancel.load(Ordering::Acquire) {
            Err(Error::Cancelled)
        } else {
            // A bug in one job must not take the engine down with it.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.execute(&job, &state)))
                .unwrap_or_else(|_| {
                    Err(Error::InvalidInput(
                        "internal error while generating (see log)".into(),
                    ))
                })
        };
        state.finish(outcome);
        let _ = done.try_send(());
    }

    fn ensure_loaded(&mut self, state: &JobState) -> Result<&Pipeline, Error> {
        if self.pipeline.is_none() {
            state.stage.store(LOADING, Ordering::Release);
            *self.status.lock() = ModelStatus::Loading;
            let loaded = load_pipeline(&self.choice);
            match loaded {
                Ok((p, root)) => {
                    self.model_root = Some(root);
                    PIPELINE_LOADS.fetch_add(1, Ordering::Relaxed);
                    *self.status.lock() = ModelStatus::Ready {
                        device: describe(p.device()),
                    };
                    self.pipeline = Some(p);
                }
                Err(e) => {
                    *self.status.lock() = ModelStatus::Failed(e.to_string());
                    return Err(e);
                }
            }
        }
        self.pipeline
            .as_ref()
            .ok_or_else(|| Error::InvalidInput("model not loaded".into()))
    }

    /// The ControlNet for `explicit` (or the one next to the model), loaded once and kept.
    fn ensure_controlnet(&mut self, explicit: Option<&std::path::Path>) -> Result<(), Error> {
        let root = self.model_root.clone().unwrap_or_default();
        let official_l = self.choice.source == ModelSource::Official(Official::L);
        let folder = resolve_controlnet(explicit, &root, official_l)?;
        if self
            .controlnet
            .as_ref()
            .is_some_and(|(p, _)| *p == folder.checkpoint)
        {
            return Ok(());
        }
        self.controlnet = None;
        let pipeline = self
            .pipeline
            .as_ref()
            .ok_or_else(|| Error::InvalidInput("model not loaded".into()))?;
        let net = ControlNet::load(&folder, pipeline)?;
        self.controlnet = Some((folder.checkpoint, net));
        Ok(())
    }

    fn execute(&mut self, job: &Job, state: &JobState) -> Result<Clip, Error> {
        self.ensure_loaded(state)?;
        if let Job::GenerateControlled(c) = job {
            state.stage.store(LOADING, Ordering::Release);
            self.ensure_controlnet(c.controlnet.as_deref())?;
        }
        let pipeline = self
            .pipeline
            .as_ref()
            .ok_or_else(|| Error::InvalidInput("model not loaded".into()))?;
        let mut progress = |stage: Stage| {
            match stage {
                Stage::EncodingText | Stage::EncodingAudio => {
                    state.stage.store(ENCODING, Ordering::Release)
                }
                Stage::Step { k, n } => {
                    state.steps.store(n as u32, Ordering::Relaxed);
                    state.step.store(k as u32, Ordering::Relaxed);
                    state.stage.store(STEP, Ordering::Release);
                }
                Stage::Decoding => state.stage.store(DECODING, Ordering::Release),
            }
            !state.cancel.load(Ordering::Acquire)
        };
        let model_id = pipeline.model_id().to_string();
        match job {
            Job::Generate(p) => {
                let out = pipeline.generate(
                    &p.settings(),
                    p.seconds as f64,
                    Noise::Seeded,
                    &mut progress,
                )?;
                Ok(Clip::new(
                    out.samples,
                    out.sample_rate,
                    p.meta(&model_id, ClipKind::Generate),
                ))
            }
            Job::Edit(e) => {
                let source = if e.source.sample_rate == pipeline.sample_rate() {
                    e.source.samples.clone()
                } else {
                    crate::clip::resample(
                        &e.source.samples,
                        e.source.sample_rate,
                        pipeline.sample_rate(),
                    )?
                };
                let span = Span {
                    start: e.start_s as f64,
                    length: e.length_s as f64,
                    boundary: e.boundary_s as f64,
                };
                let out = pipeline.edit(&source, span, &e.gen.settings(), &mut progress)?;
                let kind = ClipKind::Edit {
                    start_s: e.start_s,
                    length_s: e.length_s,
                    source: Some(e.source.meta.prompt.clone()),
                };
                let mut meta = e.gen.meta(&model_id, kind);
                meta.seconds = out.samples.len() as f32 / out.sample_rate as f32;
                Ok(Clip::new(out.samples, out.sample_rate, meta))
            }
            Job::GenerateControlled(c) => {
                let net = &self
                    .controlnet
                    .as_ref()
                    .ok_or_else(|| Error::InvalidInput("ControlNet not loaded".into()))?
                    .1;
                controlled(pipeline, net, c, &model_id, &mut progress)
            }
        }
    }
}

/// Runs a controlled job; the clip's metadata records the condition the model received.
fn controlled(
    pipeline: &Pipeline,
    net: &ControlNet,
    c: &ControlParams,
    model_id: &str,
    progress: &mut dyn FnMut(Stage) -> bool,
) -> Result<Clip, Error> {
    if !c.conditioning_scale.is_finite() || !(0.0..=1.0).contains(&c.surpass_noise) {
        return Err(Error::InvalidInput(format!(
            "control scale must be finite and the noise gate within 0..1 (got {} and {})",
            c.conditioning_scale, c.surpass_noise
        )));
    }
    let rate = pipeline.sample_rate();
    let (input, what) = match &c.control {
        ControlSource::Reference(clip) => {
            if clip.samples.is_empty() {
                return Err(Error::InvalidInput("the control recording is empty".into()));
            }
            let audio = if clip.sample_rate == rate {
                clip.samples.clone()
            } else {
                crate::clip::resample(&clip.samples, clip.sample_rate, rate)?
            };
            (
                ControlInput::Reference {
                    audio,
                    surpass_noise: c.surpass_noise,
                },
                "reference",
            )
        }
        ControlSource::Envelope(points) => {
            if points.is_empty() || points.iter().any(|(t, v)| !t.is_finite() || !v.is_finite()) {
                return Err(Error::InvalidInput(
                    "the control envelope has no points or non-finite ones".into(),
                ));
            }
            (ControlInput::Envelope(points.clone()), "envelope")
        }
    };
    let seconds = c.gen.seconds as f64;
    let (condition, _) = pipeline.control_condition(net, seconds, &input)?;
    let condition: Vec<f32> = condition.flatten_all()?.to_vec1()?;
    let out = pipeline.generate_controlled(
        net,
        &c.gen.settings(),
        seconds,
        &input,
        c.conditioning_scale as f64,
        Noise::Seeded,
        progress,
    )?;
    let kind = ClipKind::Controlled {
        control: what.into(),
        scale: c.conditioning_scale,
        condition,
        frame_rate: net.conditioner().frame_rate(rate),
    };
    let mut meta = c.gen.meta(model_id, kind);
    meta.seconds = out.samples.len() as f32 / out.sample_rate as f32;
    Ok(Clip::new(out.samples, out.sample_rate, meta))
}

fn load_pipeline(choice: &ModelChoice) -> Result<(Pipeline, PathBuf), Error> {
    let folder = resolve_model(&choice.source)?;
    let device = choice.device.open()?;
    Ok((Pipeline::load(&folder, &device, choice.dtype)?, folder.root))
}
