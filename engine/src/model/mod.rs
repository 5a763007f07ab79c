//! The three networks of EzAudio, one file each, plus the shared config schema.

pub mod config;
pub mod controlnet;
pub mod dit;
pub mod linear;
pub mod t5;
pub mod text;
pub mod vae;
