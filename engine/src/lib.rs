//! EzAudio text-to-audio on candle.
//!
//! Data flows one way: prompt -> [`worker::Engine`] (the engine thread) -> [`pipeline::Pipeline`]
//! (T5 -> DiT + DDIM -> VAE) -> [`clip::Clip`] -> [`published::ClipSlot`] for realtime playback.
//! The model code knows no threads; the engine knows no plugin.

pub mod alloc;
pub mod bench;
pub mod cli;
pub mod clip;
pub mod control;
pub mod device;
pub mod edit;
pub mod energy;
pub mod error;
pub mod kernels;
pub mod model;
pub mod models;
pub mod pipeline;
pub mod published;
pub mod sampler;
pub mod wav;
pub mod weights;
pub mod worker;

pub use error::{Error, Result};
