//! The denoising loop of `inference()`: classifier-free guidance on the batch
//! `[prompt; negative]`, guidance rescale, DDIM steps, optional inpainting reference and
//! ControlNet skips. Latents in, latents out: text encoding and decoding belong to the
//! [`super::Pipeline`]; the bench runs this same loop on random weights.

use candle_core::{DType, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::{Noise, RunOptions, SkipsProvider, Stage, StepTrace};
use crate::error::{Error, Result};
use crate::model::ddim::{guide, rescale_noise_cfg};
use crate::model::dit::MaskDit;
use crate::model::sampler::Schedule;
use crate::recipe::Recipe;

/// The DiT and its schedule, borrowed for one run.
pub struct Denoiser<'a> {
    pub dit: &'a MaskDit,
    pub schedule: &'a Schedule,
}

impl Denoiser<'_> {
    /// From noise to the final latent `(1, C, frames)` (in the DiT's scaled space), with the
    /// per-step trace when `options.trace` asks for it. `context`: the encoded prompt (batch 1)
    /// or prompt and negative prompt (batch 2, guided) with its mask. `inpaint`: the
    /// ground-truth latent (1, C, T) and the mask (1, C, T) u8, 1 = regenerate.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        recipe: &Recipe,
        context: (&Tensor, &Tensor),
        frames: usize,
        inpaint: Option<(&Tensor, &Tensor)>,
        options: &RunOptions,
        progress: &mut dyn FnMut(Stage) -> bool,
        skips: Option<&SkipsProvider>,
    ) -> Result<(Tensor, Vec<StepTrace>)> {
        let (context, context_mask) = context;
        let batch = context.dim(0)?;
        let device = context.device();

        let channels = self.dit.config().latent_channels();
        let mut rng = ChaCha8Rng::seed_from_u64(recipe.seed);
        let noise = &options.noise;
        let mut draw = |shape: (usize, usize, usize)| -> Result<Tensor> {
            let n = shape.0 * shape.1 * shape.2;
            let values: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
            Ok(Tensor::from_vec(values, shape, device)?)
        };
        let mut latents = match noise {
            Noise::Seeded => draw((1, channels, frames))?,
            Noise::Recorded { init, .. } => init.to_device(device)?.to_dtype(DType::F32)?,
        };
        if latents.dims() != [1, channels, frames] {
            return Err(Error::InvalidInput(format!(
                "initial noise has shape {:?}, expected {:?}",
                latents.dims(),
                [1, channels, frames]
            )));
        }

        let (gt_batch, mask_batch) = match inpaint {
            Some((gt, mask)) => {
                let gt = gt.to_dtype(self.dit.dtype())?;
                let mask = mask.to_dtype(DType::U8)?;
                (
                    Some(Tensor::cat(&vec![&gt; batch], 0)?),
                    Some(Tensor::cat(&vec![&mask; batch], 0)?),
                )
            }
            None => (None, None),
        };

        // The text side of the DiT (context embedding, cross-attention keys/values) is the same
        // for every step: computed once here.
        let prepared = self.dit.prepare_context(context, context_mask, None)?;
        let mut solver =
            self.schedule
                .solver(recipe.sampler, recipe.steps as usize, recipe.eta as f64)?;
        let timesteps = solver.timesteps().to_vec();
        let n = timesteps.len();
        // Everything the loop feeds the model that does not depend on its output is put on the
        // device here, once: the timesteps (one upload, a view per step) and, for the samplers
        // that draw noise, every step's draw (same generator, same order as drawing per step).
        // The loop itself then moves nothing between host and device.
        let t_all = Tensor::new(timesteps.as_slice(), device)?;
        let seeded_noise = match noise {
            Noise::Seeded if solver.needs_noise() && n > 0 => {
                Some(draw((n, channels, frames))?.unsqueeze(1)?)
            }
            _ => None,
        };
        let mut trace = Vec::with_capacity(if options.trace { n } else { 0 });
        for k in 0..n {
            if !progress(Stage::Step { k, n }) {
                return Err(Error::Cancelled);
            }
            let x = latents.to_dtype(self.dit.dtype())?;
            let x_batch = if batch == 2 {
                Tensor::cat(&[&x, &x], 0)?
            } else {
                x
            };
            let t_batch = t_all.narrow(0, k, 1)?.broadcast_as(batch)?.contiguous()?;
            let input = self
                .dit
                .prepare_input(&x_batch, gt_batch.as_ref(), mask_batch.as_ref())?;
            let control = match skips {
                None => None,
                Some(provider) => Some(provider(&input, &t_batch, context, context_mask)?),
            };
            let out = self
                .dit
                .forward(&input, &t_batch, &prepared, control.as_deref(), None)?
                .to_dtype(DType::F32)?;
            let (out_text, out_uncond, pred) = if batch == 2 {
                let text = out.narrow(0, 0, 1)?;
                let uncond = out.narrow(0, 1, 1)?;
                let guided = guide(&text, &uncond, recipe.guidance as f64)?;
                let pred = rescale_noise_cfg(&guided, &text, recipe.rescale as f64)?;
                (text, Some(uncond), pred)
            } else {
                (out.clone(), None, out)
            };
            // DDIM at eta > 0 and the SDE solver: one draw per step after x_T, from the same
            // generator (the reference's order), or the recorded tensors.
            let step_noise = if solver.needs_noise() {
                Some(match (noise, &seeded_noise) {
                    (Noise::Seeded, Some(all)) => all.get(k)?,
                    (Noise::Seeded, None) => {
                        return Err(Error::InvalidInput(format!(
                            "step {k} needs noise that was not drawn"
                        )))
                    }
                    (Noise::Recorded { steps, .. }, _) => steps
                        .get(k)
                        .ok_or_else(|| {
                            Error::InvalidInput(format!("no recorded variance noise for step {k}"))
                        })?
                        .to_device(device)?
                        .to_dtype(DType::F32)?,
                })
            } else {
                None
            };
            let next = solver.step(&pred, &latents, step_noise.as_ref())?;
            if options.trace {
                trace.push(StepTrace {
                    latents_in: latents,
                    out_text,
                    out_uncond,
                    out_pred: pred,
                    latents_out: next.clone(),
                });
            }
            latents = next;
        }
        Ok((latents, trace))
    }
}
