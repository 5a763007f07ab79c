//! Parity with the official PyTorch EzAudio, on the fixture folder named by `EZAUDIO_FIXTURES`
//! (default: `../shared/fixtures/ezaudio-ref` beside the repository). Every config and shape
//! comes from the files; a missing folder or file is a failure, not a skip.

#[path = "parity/common.rs"]
mod common;
mod support;

#[path = "parity/controlnet.rs"]
mod controlnet;
#[path = "parity/dit.rs"]
mod dit;
#[path = "parity/pipeline.rs"]
mod pipeline;
#[path = "parity/reduced.rs"]
mod reduced;
#[path = "parity/sampler_convergence.rs"]
mod sampler_convergence;
#[path = "parity/sampler_fast.rs"]
mod sampler_fast;
#[path = "parity/sampler_jobs.rs"]
mod sampler_jobs;
#[path = "parity/scheduler.rs"]
mod scheduler;
#[path = "parity/t5.rs"]
mod t5;
#[path = "parity/vae.rs"]
mod vae;
