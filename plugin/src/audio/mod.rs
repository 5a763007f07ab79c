//! The realtime path: everything `process()` runs, in one room so that its rules can be seen
//! and checked. Code here runs on the audio thread: fixed-size arrays and preallocated
//! atomics only, no allocation, no lock, no syscall.
//!
//! The wall: this room knows only [`crate::layout`] (the fixed shape) and the engine's
//! published reader (`ezaudio_engine::audio::published`), never the editor, the generation thread,
//! the store or the state (`plugin/tests/layering.rs` checks it). Clips reach it only as
//! published, already resampled buffers; what it records leaves it only through the capture
//! buffer's atomics.
//!
//! * [`voices`]: the voice pool (note-on/off, chokes, stealing, mixing to main and stems).
//! * [`voice`]: one playing note (interpolation, fades, release).
//! * [`recorder`]: the sidechain capture.
//! * [`locked`]: pads that follow the sidechain, played from the host transport.

pub mod locked;
pub mod recorder;
pub mod voice;
pub mod voices;
