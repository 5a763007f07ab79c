//! Parity with the official PyTorch EzAudio, on the fixture folder named by `EZAUDIO_FIXTURES`
//! (default: `../shared/fixtures/ezaudio-ref` beside the repository). Every config and shape
//! comes from the files; a missing folder or file is a failure, not a skip.

mod common;

mod dit;
mod scheduler;
mod t5;
mod vae;
