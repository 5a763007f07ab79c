//! TEMPORARY stand-in for `ezaudio_engine::worker` (the engine thread, being written
//! elsewhere). Same names and signatures as the agreed interface; every job fails with
//! "engine not available". When the real module lands, delete this file and change the one
//! `use` in `generation.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ezaudio_engine::clip::Clip;

pub const UNAVAILABLE: &str = "engine not available";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ModelChoice {
    #[default]
    Default,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ModelStatus {
    Unavailable(String),
}

impl std::fmt::Display for ModelStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelStatus::Unavailable(why) => f.write_str(why),
        }
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

#[derive(Debug, Clone)]
pub struct EditParams {
    pub source: Arc<Clip>,
    pub start_s: f32,
    pub length_s: f32,
    pub boundary_s: f32,
    pub gen: GenerateParams,
}

#[derive(Debug, Clone)]
pub enum Job {
    Generate(GenerateParams),
    Edit(EditParams),
}

#[derive(Debug, Clone, PartialEq)]
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

#[derive(Debug, Clone)]
pub struct Engine;

impl Engine {
    pub fn shared(_model: ModelChoice) -> Engine {
        Engine
    }
    pub fn submit(&self, _job: Job) -> JobHandle {
        JobHandle { taken: Arc::new(AtomicBool::new(false)) }
    }
    pub fn model_status(&self) -> ModelStatus {
        ModelStatus::Unavailable(UNAVAILABLE.into())
    }
}

#[derive(Debug, Clone)]
pub struct JobHandle {
    taken: Arc<AtomicBool>,
}

impl JobHandle {
    pub fn status(&self) -> JobStatus {
        JobStatus::Failed(UNAVAILABLE.into())
    }
    pub fn cancel(&self) {}
    pub fn try_take(&self) -> Option<Result<Clip, String>> {
        (!self.taken.swap(true, Ordering::SeqCst)).then(|| Err(UNAVAILABLE.to_string()))
    }
}
