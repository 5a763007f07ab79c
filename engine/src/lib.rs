//! EzAudio text-to-audio on candle.
//!
//! Data flows one way: a [`Recipe`] in a [`Job`] -> the engine thread ([`engine`]) -> the
//! [`pipeline::Pipeline`] (T5 -> DiT + DDIM -> VAE, all in [`model`]) -> a [`audio::Clip`] ->
//! an [`audio::published::ClipSlot`] for realtime playback. The rooms, lowest first:
//!
//! * [`kernels`], [`weights`], [`runtime`]: CPU kernels, checkpoint reading, device and heap;
//! * [`model`]: the networks and the DDIM schedule — pure functions of tensors, no threads;
//! * [`install`]: model folders, where they are looked for, downloading;
//! * [`pipeline`]: generate, edit and controlled generate — the whole Pipeline API;
//! * [`audio`]: clips, resampling, WAV files and the lock-free hand-off to the audio thread;
//! * [`engine`]: the thread that owns a pipeline, its jobs and their status;
//! * [`files`]: outputs written to a temporary file and renamed into place, never half-written.
//!
//! The model knows no threads; the engine knows no plugin; nothing here knows a command line.

pub mod audio;
pub mod engine;
pub mod error;
pub mod files;
pub mod install;
pub mod kernels;
pub mod model;
pub mod pipeline;
pub mod recipe;
pub mod runtime;
pub mod weights;

pub use engine::{Engine, Job, JobError, JobHandle, JobStatus, ModelChoice, ModelStatus};
pub use error::{Error, Result};
pub use model::sampler::Sampler;
pub use recipe::Recipe;
