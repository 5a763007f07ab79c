//! EzAudio text-to-audio on candle.
//!
//! Data flows one way: prompt -> [`pipeline`] (T5 -> DiT + DDIM -> VAE) -> clip.
//! The model code knows no threads; the engine thread and the CLI sit on top.

pub mod clip;
pub mod error;
pub mod model;
pub mod published;
pub mod sampler;
pub mod weights;

pub use error::{Error, Result};
