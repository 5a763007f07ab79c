//! Editing (inpainting / out-painting): regenerate a span of an existing clip, following
//! `editing_audio` in the official `api/ezaudio.py`.
//!
//! Differences from the reference, all deliberate:
//! - The reference normalises the clip to peak 1 and returns it normalised. We run the model on
//!   the normalised clip too, but give back the user's level: samples outside the edited chunk
//!   are the input's, bit for bit, and the regenerated chunk is scaled back by the input's peak.
//! - The chunk sent to the VAE is zero-padded to whole latent frames; the reference would fail
//!   to paste a shorter decode back (a numpy shape error) when its length is not a multiple.
//! - Python's `round` rounds halves to even; so do we (`round_ties_even`).

use candle_core::{DType, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::{Output, Pipeline, RunOptions, Stage};
use crate::error::{Error, Result};
use crate::recipe::Recipe;

/// Which part of a clip to regenerate, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    pub start: f64,
    pub length: f64,
    /// Context kept on each side of the span (the official UI's default is 2 s).
    pub boundary: f64,
}

fn py_round(x: f64) -> usize {
    x.round_ties_even().max(0.0) as usize
}

impl Pipeline {
    /// Regenerates `span` of `audio` (mono at the pipeline's rate) from `recipe` (its `seconds`
    /// is not used: the result keeps the input's length, or reaches the span's end).
    /// A span that reaches past the end extends the clip (out-painting).
    pub fn edit(
        &self,
        audio: &[f32],
        span: Span,
        recipe: &Recipe,
        progress: &mut dyn FnMut(Stage) -> bool,
    ) -> Result<Output> {
        let sr = self.sample_rate() as f64;
        if audio.is_empty() {
            return Err(Error::InvalidInput("the clip to edit is empty".into()));
        }
        for (name, v) in [
            ("start", span.start),
            ("length", span.length),
            ("boundary", span.boundary),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(Error::InvalidInput(format!(
                    "edit {name} must be a finite number >= 0, got {v}"
                )));
            }
        }
        if span.length <= 0.0 {
            return Err(Error::InvalidInput("edit length must be positive".into()));
        }
        if !progress(Stage::EncodingAudio) {
            return Err(Error::Cancelled);
        }
        let peak = audio.iter().fold(0f32, |m, v| m.max(v.abs()));
        let norm = peak + 1e-9;
        let mut gt: Vec<f32> = audio.iter().map(|v| v / norm).collect();

        let mut audio_length = gt.len() as f64 / sr;
        let mask_start = span.start.min(audio_length);
        let mask_end = span.start + span.length;
        if mask_end > audio_length {
            let padding = py_round((mask_end - audio_length) * sr);
            gt.resize(gt.len() + padding, 0.0);
            audio_length = gt.len() as f64 / sr;
        }
        let boundary = ((mask_end - mask_start) / 2.0).min(span.boundary);
        let start_idx = (mask_start - boundary).max(0.0);
        let end_idx = (mask_end + boundary).min(audio_length);
        let (rel_start, rel_end) = (mask_start - start_idx, mask_end - start_idx);
        let (a, b) = (
            py_round(start_idx * sr),
            py_round(end_idx * sr).min(gt.len()),
        );
        if b <= a {
            return Err(Error::InvalidInput("the span selects no audio".into()));
        }

        let hop = self.vae_hop();
        let mut chunk = gt[a..b].to_vec();
        chunk.resize(chunk.len().div_ceil(hop) * hop, 0.0);
        let chunk_len = chunk.len();
        let chunk = Tensor::from_vec(chunk, (1, 1, chunk_len), self.device())?
            .to_dtype(self.vae_dtype())?;

        // q_first: EzAudio's wrapper hands the DiT a *sampled* latent, not the mean.
        let mut rng = ChaCha8Rng::seed_from_u64(recipe.seed ^ 0x9E37_79B9_7F4A_7C15);
        let gt_latent = self.encode_audio(&chunk, &mut rng)?;
        let (_, channels, frames) = gt_latent.dims3()?;
        let latent_sr = self.config().autoencoder.latent_sr as f64;
        let (m0, m1) = (
            py_round(rel_start * latent_sr).min(frames),
            py_round(rel_end * latent_sr).min(frames),
        );
        let mut mask = vec![0u8; channels * frames];
        for c in 0..channels {
            mask[c * frames + m0..c * frames + m1].fill(1);
        }
        let mask = Tensor::from_vec(mask, (1, channels, frames), self.device())?;

        let mut out = self.run(
            recipe,
            frames,
            Some((&gt_latent, &mask)),
            &RunOptions::default(),
            progress,
            None,
        )?;
        let pred_len = py_round((end_idx - start_idx) * sr)
            .min(out.samples.len())
            .min(b - a);

        // Back to the user's level; untouched samples stay exactly the input's.
        let mut result: Vec<f32> = audio.to_vec();
        result.resize(gt.len(), 0.0);
        for (dst, src) in result[a..a + pred_len]
            .iter_mut()
            .zip(&out.samples[..pred_len])
        {
            *dst = src * norm;
        }
        out.samples = result;
        Ok(out)
    }

    fn vae_hop(&self) -> usize {
        (self.sample_rate() / self.config().autoencoder.latent_sr).max(1) as usize
    }

    fn encode_audio(&self, audio: &Tensor, rng: &mut ChaCha8Rng) -> Result<Tensor> {
        let mean = self.vae().encode_mean(audio)?;
        if !self.config().autoencoder.q_first {
            return Ok(mean.to_dtype(DType::F32)?);
        }
        let n = mean.elem_count();
        let values: Vec<f32> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
        let noise =
            Tensor::from_vec(values, mean.shape(), self.device())?.to_dtype(mean.dtype())?;
        Ok(self
            .vae()
            .encode_sample(audio, &noise)?
            .to_dtype(DType::F32)?)
    }
}
