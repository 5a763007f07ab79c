//! The engine thread: one long-lived worker owns the loaded pipeline and runs jobs in order.
//! It loads the model on the first job, keeps a ControlNet once one was asked for, and
//! contains panics so that one bad job never takes the engine (or the host) down.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;
use parking_lot::Mutex;

use super::compute::ComputePool;
use super::handle::{JobState, ModelChoice, Queued, DECODING, ENCODING, LOADING, PIPELINE_LOADS};
use super::job::{panic_message, ControlParams, ControlSource, Job, JobError, ModelStatus};
use crate::audio::{resample, Clip, ClipKind, ClipMeta};
use crate::error::Error;
use crate::install::{resolve_controlnet, resolve_model, ModelSource, Official};
use crate::pipeline::{ControlInput, ControlNet, Pipeline, RunOptions, Span, Stage};
use crate::runtime::{describe, dtype_name};

/// How the worker loads its pipeline (and the folder a ControlNet is looked for next to).
pub type Loader = Box<dyn FnMut(&ModelChoice) -> Result<(Pipeline, PathBuf), Error> + Send>;

pub(super) struct Worker {
    choice: ModelChoice,
    load: Loader,
    status: Arc<Mutex<ModelStatus>>,
    pipeline: Option<Pipeline>,
    /// The loaded model's folder (where its ControlNet is looked for).
    model_root: Option<PathBuf>,
    /// The last ControlNet used, by checkpoint path: loaded on the first controlled job.
    controlnet: Option<(PathBuf, ControlNet)>,
    idle: Option<Duration>,
    compute: ComputePool,
}

impl Worker {
    pub(super) fn new(
        choice: ModelChoice,
        load: Option<Loader>,
        status: Arc<Mutex<ModelStatus>>,
        idle: Option<Duration>,
    ) -> Self {
        Self {
            choice,
            load: load.unwrap_or_else(|| Box::new(load_pipeline)),
            status,
            pipeline: None,
            model_root: None,
            controlnet: None,
            idle,
            compute: ComputePool::default(),
        }
    }

    pub(super) fn run(mut self, jobs: Receiver<Queued>) {
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
        let outcome = if state.is_cancelled() {
            Err(JobError::Cancelled)
        } else {
            // The job's parallel work runs on the compute pool (below normal priority).
            let mut compute = std::mem::take(&mut self.compute);
            let outcome = compute.run(|| {
                // A bug in one job must not take the engine down with it.
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.execute(&job, &state)
                })) {
                    Ok(result) => result.map_err(JobError::from),
                    Err(payload) => Err(self.contained_panic(&*payload)),
                }
            });
            self.compute = compute;
            outcome
        };
        state.finish(outcome);
        let _ = done.try_send(());
    }

    /// After a panic in a job: the error the caller sees, and a model status that does not
    /// claim a load is still under way (the next job loads again).
    fn contained_panic(&mut self, payload: &(dyn std::any::Any + Send)) -> JobError {
        let why = panic_message(payload);
        let mut status = self.status.lock();
        if *status == ModelStatus::Loading {
            self.pipeline = None;
            self.controlnet = None;
            *status = ModelStatus::Failed(format!(
                "internal error while loading the model: {why} (generate again to retry)"
            ));
        }
        JobError::Internal(why)
    }

    fn ensure_loaded(&mut self, state: &JobState) -> Result<&Pipeline, Error> {
        if self.pipeline.is_none() {
            state.set_stage(LOADING);
            *self.status.lock() = ModelStatus::Loading;
            let loaded = (self.load)(&self.choice);
            match loaded {
                Ok((p, root)) => {
                    self.model_root = Some(root);
                    PIPELINE_LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // The editor and the CLI show this line: which device and precision run.
                    *self.status.lock() = ModelStatus::Ready {
                        device: format!("{}, {}", describe(p.device()), precision(&p)),
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
            state.set_stage(LOADING);
            self.ensure_controlnet(c.controlnet.as_deref())?;
        }
        let pipeline = self
            .pipeline
            .as_ref()
            .ok_or_else(|| Error::InvalidInput("model not loaded".into()))?;
        let mut progress = |stage: Stage| {
            match stage {
                Stage::EncodingText | Stage::EncodingAudio => state.set_stage(ENCODING),
                Stage::Step { k, n } => state.set_step(k as u32, n as u32),
                Stage::Decoding => state.set_stage(DECODING),
            }
            !state.is_cancelled()
        };
        let model_id = pipeline.model_id().to_string();
        match job {
            Job::Generate(recipe) => {
                let out = pipeline.generate(recipe, &RunOptions::default(), &mut progress)?;
                let meta = ClipMeta::new(recipe.clone(), model_id, ClipKind::Generate);
                Ok(Clip::new(out.samples, out.sample_rate, meta))
            }
            Job::Edit(e) => {
                let source = if e.source.sample_rate == pipeline.sample_rate() {
                    e.source.samples.clone()
                } else {
                    resample(
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
                let out = pipeline.edit(&source, span, &e.recipe, &mut progress)?;
                let kind = ClipKind::Edit {
                    start_s: e.start_s,
                    length_s: e.length_s,
                    source: Some(e.source.meta.recipe.prompt.clone()),
                };
                let mut meta = ClipMeta::new(e.recipe.clone(), model_id, kind);
                meta.recipe.seconds = out.samples.len() as f32 / out.sample_rate as f32;
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
                resample(&clip.samples, clip.sample_rate, rate)?
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
    let seconds = c.recipe.seconds as f64;
    let (condition, _) = pipeline.control_condition(net, seconds, &input)?;
    let condition: Vec<f32> = condition.flatten_all()?.to_vec1()?;
    let out = pipeline.generate_controlled(
        net,
        &c.recipe,
        &input,
        c.conditioning_scale as f64,
        &RunOptions::default(),
        progress,
    )?;
    let kind = ClipKind::Controlled {
        control: what.into(),
        scale: c.conditioning_scale,
        condition,
        frame_rate: net.conditioner().frame_rate(rate),
    };
    let mut meta = ClipMeta::new(c.recipe.clone(), model_id, kind);
    meta.recipe.seconds = out.samples.len() as f32 / out.sample_rate as f32;
    Ok(Clip::new(out.samples, out.sample_rate, meta))
}

/// The model's precision as shown to people: "bf16", or "bf16 (VAE f32)" where they differ.
fn precision(p: &Pipeline) -> String {
    let (model, vae) = (dtype_name(p.dtype()), dtype_name(p.vae_dtype()));
    if model == vae {
        model.to_string()
    } else {
        format!("{model} (VAE {vae})")
    }
}

/// The default [`Loader`]: the model folder `choice` names, on its device and dtype.
pub fn load_pipeline(choice: &ModelChoice) -> Result<(Pipeline, PathBuf), Error> {
    let folder = resolve_model(&choice.source)?;
    let device = choice.device.open()?;
    Ok((Pipeline::load(&folder, &device, choice.dtype)?, folder.root))
}
