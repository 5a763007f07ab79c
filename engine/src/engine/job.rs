//! What a caller asks of the engine and what it hears back: jobs, their status, their errors
//! and the model's status. Plain data, no threads.

use std::path::PathBuf;
use std::sync::Arc;

use crate::audio::Clip;
use crate::error::Error;
use crate::recipe::Recipe;

/// Regenerate a span of an existing clip (EzAudio inpainting / out-painting).
#[derive(Debug, Clone)]
pub struct EditParams {
    /// The clip to edit, at any rate (resampled to the model's).
    pub source: Arc<Clip>,
    pub start_s: f32,
    pub length_s: f32,
    pub boundary_s: f32,
    /// The span's prompt and sampler settings; `seconds` is ignored (the source's length is kept).
    pub recipe: Recipe,
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
    pub recipe: Recipe,
    pub control: ControlSource,
    /// Scales the ControlNet's effect (1 = as trained, 0 = none).
    pub conditioning_scale: f32,
    /// Noise gate for a reference after peak normalisation (0 = off; the official demo's 0.01).
    pub surpass_noise: f32,
    /// A ControlNet folder; `None` finds it next to the model (see
    /// [`crate::install::resolve_controlnet`]).
    pub controlnet: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub enum Job {
    Generate(Recipe),
    Edit(EditParams),
    GenerateControlled(ControlParams),
}

/// Why a job ended without a clip.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Someone asked it to stop.
    #[error("cancelled")]
    Cancelled,
    /// It could not run: bad input, missing or broken model files, a device error. The message
    /// says what to do.
    #[error("{0}")]
    Failed(String),
    /// A bug in the engine, contained; the message carries the panic's own words.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<Error> for JobError {
    fn from(e: Error) -> Self {
        match e {
            Error::Cancelled => Self::Cancelled,
            Error::Internal(why) => Self::Internal(why),
            e => Self::Failed(e.to_string()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    Queued,
    LoadingModel,
    EncodingText,
    Step {
        k: u32,
        n: u32,
    },
    Decoding,
    Done,
    /// Ended without a clip (cancelled included: see [`JobError::Cancelled`]).
    Failed(JobError),
}

impl JobStatus {
    pub fn is_finished(&self) -> bool {
        matches!(self, Self::Done | Self::Failed(_))
    }

    pub fn is_cancelled(&self) -> bool {
        matches!(self, Self::Failed(JobError::Cancelled))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelStatus {
    NotLoaded,
    Loading,
    Ready {
        device: String,
    },
    /// Loading failed; the next job tries again.
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

/// The words of a caught panic (`panic!` payloads are a `&str` or a `String`).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
