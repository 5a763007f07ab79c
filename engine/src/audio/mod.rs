//! The audio hand-off: what leaves the model and how it reaches a listener.
//!
//! [`Clip`] is the model's output with its recipe; [`resample`] moves it to a host rate off the
//! audio thread; [`published`] hands the result to the audio thread without locks or frees
//! there; [`wav`] reads and writes files. Nothing here knows tensors or threads of the engine.

pub mod clip;
pub mod published;
pub mod resample;
pub mod wav;

pub use clip::{Clip, ClipKind, ClipMeta};
pub use resample::{resample, MAX_RATE, MIN_RATE};
