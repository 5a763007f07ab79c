//! The networks of EzAudio, one file (or folder) per part, plus the shared config schema, the
//! samplers (DDIM and the multistep solvers) and the energy conditioner of the ControlNet.
//! Pure functions of tensors: no threads, no files beyond the weights handed in.

pub mod bounds;
pub mod config;
pub mod controlnet;
pub mod ddim;
pub mod dit;
pub mod energy;
pub mod linear;
pub mod sampler;
pub mod t5;
pub mod text;
pub mod vae;
