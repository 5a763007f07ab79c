//! Text-to-audio and audio editing, mirroring the official `src/inference.py:inference()` and
//! `api/ezaudio.py` (`generate_audio`, `editing_audio`).
//!
//! T5 encodes the prompt and the negative prompt once per job; the DiT then runs once per DDIM
//! step on the batch `[prompt; negative]` (classifier-free guidance in one forward), and the VAE
//! decodes the final latent to 24 kHz mono.

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{Error, Result};
use crate::model::config::EzAudioConfig;
use crate::model::dit::MaskDit;
use crate::model::t5::{load_t5_folder, T5Encoder};
use crate::model::text::TextTokenizer;
use crate::model::vae::{Oobleck, VaeConfig};
use crate::models::ModelFolder;
use crate::sampler::{guide, rescale_noise_cfg, Ddim};
use crate::weights::Checkpoint;

/// Where the pipeline is in a job; the callback returns `false` to cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    EncodingText,
    EncodingAudio,
    Step { k: usize, n: usize },
    Decoding,
}

/// Settings of one generation (the names of `api/ezaudio.py`).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub prompt: String,
    pub negative: String,
    pub steps: usize,
    pub guidance: f64,
    pub rescale: f64,
    pub eta: f64,
    pub seed: u64,
}

impl Settings {
    /// The official API's defaults: 100 steps, guidance 5, rescale 0.75, eta 1.
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            negative: String::new(),
            steps: 100,
            guidance: 5.0,
            rescale: 0.75,
            eta: 1.0,
            seed: 0,
        }
    }

    fn check(&self, max_steps: usize) -> Result<()> {
        if self.steps == 0 || self.steps > max_steps {
            return Err(Error::InvalidInput(format!(
                "steps must be between 1 and {max_steps}, got {}",
                self.steps
            )));
        }
        for (name, v) in [
            ("guidance", self.guidance),
            ("rescale", self.rescale),
            ("eta", self.eta),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(Error::InvalidInput(format!(
                    "{name} must be a finite number >= 0, got {v}"
                )));
            }
        }
        Ok(())
    }
}

/// Noise for the sampler: drawn from a seed, or injected (to compare with the reference).
pub enum Noise<'a> {
    Seeded,
    /// `init`: x_T of shape (1, C, T); `steps[i]`: the variance noise of step i (eta > 0 only).
    Recorded {
        init: &'a Tensor,
        steps: &'a [Tensor],
    },
}

/// Intermediates of one denoising step, for parity checks.
#[derive(Debug, Clone)]
pub struct StepTrace {
    pub latents_in: Tensor,
    pub out_text: Tensor,
    pub out_uncond: Option<Tensor>,
    pub out_pred: Tensor,
    pub latents_out: Tensor,
}

#[derive(Debug, Clone)]
pub struct Output {
    /// 24 kHz mono (the VAE's rate).
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    pub final_latent: Tensor,
    pub trace: Vec<StepTrace>,
}

/// Per-step ControlNet hook for [`Pipeline::run_with`]: `(MaskDiT-prepared input (B, 2C+1, T),
/// timesteps (B,), context, context_mask) -> skips`, one per UDiT out block.
pub type SkipsProvider<'a> = dyn Fn(&Tensor, &Tensor, &Tensor, &Tensor) -> Result<Vec<Tensor>> + 'a;

pub struct Pipeline {
    config: EzAudioConfig,
    model_id: String,
    tokenizer: TextTokenizer,
    text_encoder: T5Encoder,
    dit: MaskDit,
    vae: Oobleck,
    scheduler: Ddim,
    device: Device,
    /// The dtype asked for at load (what the DiT and T5 store; see `model::linear`).
    dtype: DType,
    /// The VAE's dtype: f32 on a CPU, where candle has no half-precision convolution kernels.
    vae_dtype: DType,
}

/// The VAE's dtype for a pipeline loaded in `dtype`: f32 on a CPU, where candle has no
/// half-precision convolution kernels (a bf16 VAE would only be slower and less accurate).
pub fn vae_dtype(device: &Device, dtype: DType) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        dtype
    }
}

impl Pipeline {
    pub fn load(folder: &ModelFolder, device: &Device, dtype: DType) -> Result<Self> {
        let config = folder.config.clone();
        let tokenizer = TextTokenizer::from_file(
            &folder.text_encoder.join("tokenizer.json"),
            config.text_encoder.max_length,
        )?;
        let (text_encoder, _) = load_t5_folder(&folder.text_encoder, dtype, device)?;
        if text_encoder.hidden_size() != config.model.context_dim.unwrap_or(0) {
            return Err(Error::config(
                &folder.text_encoder,
                format!(
                    "text encoder width {} does not match the DiT's context_dim {}",
                    text_encoder.hidden_size(),
                    config.model.context_dim.unwrap_or(0)
                ),
            ));
        }
        let dit_ckpt = Checkpoint::load(&folder.dit, Some("model"), None)?;
        let dit = MaskDit::new(&config.model, dit_ckpt.var_builder(dtype, device))?;
        dit_ckpt.ensure_all_used(|_| false)?;
        drop(dit_ckpt);

        let vae_cfg = VaeConfig::from_file(&folder.vae_config)?;
        let vae_ckpt = Checkpoint::load(&folder.vae, Some("state_dict"), Some("autoencoder."))?;
        let vae_dtype = vae_dtype(device, dtype);
        let vae = Oobleck::new(&vae_cfg, vae_ckpt.var_builder(vae_dtype, device))?;
        vae_ckpt.ensure_all_used(|_| false)?;
        if vae_cfg.latent_channels() != config.model.latent_channels() {
            return Err(Error::config(
                &folder.vae_config,
                format!(
                    "VAE latent channels {} do not match the DiT's out_chans {}",
                    vae_cfg.latent_channels(),
                    config.model.latent_channels()
                ),
            ));
        }
        let scheduler = Ddim::new(&config.diff)?;
        // Loading converted and packed weights through temporaries; give that memory back.
        crate::alloc::release_free_memory();
        Ok(Self {
            model_id: folder.model_id(),
            config,
            tokenizer,
            text_encoder,
            dit,
            vae,
            scheduler,
            device: device.clone(),
            dtype,
            vae_dtype,
        })
    }

    pub fn config(&self) -> &EzAudioConfig {
        &self.config
    }
    pub fn model_id(&self) -> &str {
        &self.model_id
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// The dtype the VAE encodes and decodes in.
    pub fn vae_dtype(&self) -> DType {
        self.vae_dtype
    }
    pub fn sample_rate(&self) -> u32 {
        self.config.autoencoder.sr
    }
    pub fn scheduler(&self) -> &Ddim {
        &self.scheduler
    }
    pub fn dit(&self) -> &MaskDit {
        &self.dit
    }
    pub fn vae(&self) -> &Oobleck {
        &self.vae
    }
    pub fn max_steps(&self) -> usize {
        self.config.diff.num_train_timesteps
    }

    /// Token ids and mask as the reference tokenizer gives them, then T5's last hidden state.
    pub fn encode_text(&self, prompts: &[&str]) -> Result<(Tensor, Tensor)> {
        let (ids, mask) = self.tokenizer.encode_batch(prompts, &self.device)?;
        let hidden = self.text_encoder.forward(&ids, &mask)?;
        Ok((hidden, mask))
    }

    /// Text to audio: `seconds` of 24 kHz mono.
    pub fn generate(
        &self,
        settings: &Settings,
        seconds: f64,
        noise: Noise,
        progress: &mut dyn FnMut(Stage) -> bool,
    ) -> Result<Output> {
        settings.check(self.max_steps())?;
        if !seconds.is_finite() || seconds <= 0.0 {
            return Err(Error::InvalidInput(format!(
                "seconds must be positive, got {seconds}"
            )));
        }
        let frames = self.config.frames_for_seconds(seconds).max(1);
        let mut out = self.run(settings, frames, None, noise, progress)?;
        let wanted = (seconds * self.sample_rate() as f64).round() as usize;
        out.samples.truncate(wanted.max(1));
        Ok(out)
    }

    /// The denoising loop of `inference()`, followed by the latent paste-back and VAE decode.
    /// `inpaint`: the ground-truth latent (1, C, T) and the mask (1, C, T) u8, 1 = regenerate.
    pub fn run(
        &self,
        settings: &Settings,
        frames: usize,
        inpaint: Option<(&Tensor, &Tensor)>,
        noise: Noise,
        progress: &mut dyn FnMut(Stage) -> bool,
    ) -> Result<Output> {
        self.run_with(settings, frames, inpaint, noise, progress, None)
    }

    /// [`Self::run`] with an optional ControlNet: each step the DiT input is prepared once, the
    /// provider turns it into skips, and the UDiT runs with them (`inference_controlnet.py`).
    pub fn run_with(
        &self,
        settings: &Settings,
        frames: usize,
        inpaint: Option<(&Tensor, &Tensor)>,
        noise: Noise,
        progress: &mut dyn FnMut(Stage) -> bool,
        skips: Option<&SkipsProvider>,
    ) -> Result<Output> {
        settings.check(self.max_steps())?;
        let cancelled = |go: bool| if go { Ok(()) } else { Err(Error::Cancelled) };
        cancelled(progress(Stage::EncodingText))?;

        // `inference()` drops guidance for an empty prompt (and for guidance 0).
        let use_cfg = !settings.prompt.is_empty() && settings.guidance != 0.0;
        let (context, context_mask) = if use_cfg {
            self.encode_text(&[settings.prompt.as_str(), settings.negative.as_str()])?
        } else {
            self.encode_text(&[settings.prompt.as_str()])?
        };
        let batch = context.dim(0)?;

        let channels = self.config.model.latent_channels();
        let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
        let mut draw = |shape: (usize, usize, usize)| -> Result<Tensor> {
            let n = shape.0 * shape.1 * shape.2;
            let values: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
            Ok(Tensor::from_vec(values, shape, &self.device)?)
        };
        let mut latents = match &noise {
            Noise::Seeded => draw((1, channels, frames))?,
            Noise::Recorded { init, .. } => init.to_device(&self.device)?.to_dtype(DType::F32)?,
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
        let prepared = self.dit.prepare_context(&context, &context_mask)?;
        let timesteps = self.scheduler.timesteps(settings.steps)?;
        let n = timesteps.len();
        let mut trace = Vec::with_capacity(n);
        for (k, &t) in timesteps.iter().enumerate() {
            cancelled(progress(Stage::Step { k, n }))?;
            let x = latents.to_dtype(self.dit.dtype())?;
            let x_batch = if batch == 2 {
                Tensor::cat(&[&x, &x], 0)?
            } else {
                x
            };
            let t_batch = Tensor::full(t, batch, &self.device)?;
            let (gt_b, mask_b) = (gt_batch.as_ref(), mask_batch.as_ref());
            let out = match skips {
                None => self
                    .dit
                    .forward_prepared(&x_batch, &t_batch, &prepared, gt_b, mask_b)?,
                Some(provider) => {
                    let input = self.dit.prepare_input(&x_batch, gt_b, mask_b)?;
                    let s = provider(&input, &t_batch, &context, &context_mask)?;
                    self.dit
                        .forward_model_prepared(&input, &t_batch, &prepared, Some(&s))?
                }
            }
            .to_dtype(DType::F32)?;
            let (out_text, out_uncond, pred) = if batch == 2 {
                let text = out.narrow(0, 0, 1)?;
                let uncond = out.narrow(0, 1, 1)?;
                let guided = guide(&text, &uncond, settings.guidance)?;
                let pred = rescale_noise_cfg(&guided, &text, settings.rescale)?;
                (text, Some(uncond), pred)
            } else {
                (out.clone(), None, out)
            };
            let step_noise = if settings.eta > 0.0 {
                Some(match &noise {
                    Noise::Seeded => draw((1, channels, frames))?,
                    Noise::Recorded { steps, .. } => steps
                        .get(k)
                        .ok_or_else(|| {
                            Error::InvalidInput(format!("no recorded variance noise for step {k}"))
                        })?
                        .to_device(&self.device)?
                        .to_dtype(DType::F32)?,
                })
            } else {
                None
            };
            let next = self.scheduler.step(
                &pred,
                t,
                settings.steps,
                &latents,
                settings.eta,
                step_noise.as_ref(),
            )?;
            trace.push(StepTrace {
                latents_in: latents,
                out_text,
                out_uncond,
                out_pred: pred,
                latents_out: next.clone(),
            });
            latents = next;
        }

        cancelled(progress(Stage::Decoding))?;
        let ae = &self.config.autoencoder;
        let mut final_latent = ((latents / ae.scale)? - ae.shift)?;
        if let Some((gt, mask)) = inpaint {
            let gt = gt.to_dtype(DType::F32)?;
            final_latent = mask.to_dtype(DType::U8)?.where_cond(&final_latent, &gt)?;
        }
        let wave = self.vae.decode(&final_latent.to_dtype(self.vae_dtype)?)?;
        let samples = wave.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Output {
            samples,
            sample_rate: self.sample_rate(),
            final_latent,
            trace,
        })
    }
}
