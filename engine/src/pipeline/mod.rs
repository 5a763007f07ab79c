//! Text-to-audio and audio editing, mirroring the official `src/inference.py:inference()` and
//! `api/ezaudio.py` (`generate_audio`, `editing_audio`).
//!
//! T5 encodes the prompt and the negative prompt once per job; the DiT then runs once per sampler
//! step on the batch `[prompt; negative]` (classifier-free guidance in one forward), and the VAE
//! decodes the final latent to 24 kHz mono.
//!
//! The whole Pipeline API lives in this folder: loading, text encoding and decoding here, the
//! denoising loop in [`denoise`], editing in [`edit`], energy-controlled generation in
//! [`controlled`]. The pipeline knows no threads: it
//! reports progress through a callback that can also cancel.

mod controlled;
mod denoise;
mod edit;

pub use controlled::{reference_seconds, ControlInput, ControlNet};
pub use denoise::Denoiser;
pub use edit::Span;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::install::ModelFolder;
use crate::model::config::EzAudioConfig;
use crate::model::ddim::Ddim;
use crate::model::dit::MaskDit;
use crate::model::sampler::Schedule;
use crate::model::t5::{load_t5_folder, T5Encoder};
use crate::model::text::TextTokenizer;
use crate::model::vae::{Oobleck, VaeConfig};
use crate::recipe::Recipe;
use crate::weights::Checkpoint;

/// Where the pipeline is in a job; the callback returns `false` to cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    EncodingText,
    EncodingAudio,
    Step { k: usize, n: usize },
    Decoding,
}

/// Noise for the sampler: drawn from the recipe's seed, or injected (to compare with the
/// reference).
#[derive(Default)]
pub enum Noise<'a> {
    #[default]
    Seeded,
    /// `init`: x_T of shape (1, C, T); `steps[i]`: the variance noise of step i (eta > 0 only).
    Recorded {
        init: &'a Tensor,
        steps: &'a [Tensor],
    },
}

/// How a run is driven beyond its recipe. Jobs use the default: seeded noise and nothing kept
/// per step. Parity checks inject the reference's noise and keep a trace.
#[derive(Default)]
pub struct RunOptions<'a> {
    pub noise: Noise<'a>,
    /// Keep every step's intermediates in [`Output::trace`] (five latents per step: about
    /// 1.3 MB per step for 10 s, on the pipeline's device).
    pub trace: bool,
}

impl<'a> RunOptions<'a> {
    /// Injected noise, with the per-step trace kept: how parity checks run.
    pub fn traced(noise: Noise<'a>) -> Self {
        Self { noise, trace: true }
    }
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
    /// One entry per step when [`RunOptions::trace`] asked for it, empty otherwise.
    pub trace: Vec<StepTrace>,
}

/// Per-step ControlNet hook for [`Pipeline::run`]: `(MaskDiT-prepared input (B, 2C+1, T),
/// timesteps (B,), context, context_mask) -> skips`, one per UDiT out block.
pub type SkipsProvider<'a> = dyn Fn(&Tensor, &Tensor, &Tensor, &Tensor) -> Result<Vec<Tensor>> + 'a;

pub struct Pipeline {
    config: EzAudioConfig,
    model_id: String,
    tokenizer: TextTokenizer,
    text_encoder: T5Encoder,
    dit: MaskDit,
    vae: Oobleck,
    schedule: Schedule,
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

/// The text encoder's width against the DiT's `context_dim`. One of the checks that tie a model
/// folder's parts together, shared by [`Pipeline::load`] and `ezaudio models verify`, so that
/// verify passes exactly what loads.
pub fn check_text_encoder(folder: &ModelFolder, width: usize) -> Result<()> {
    let want = folder.config.model.context_dim.unwrap_or(0);
    if width != want {
        return Err(Error::config(
            &folder.text_encoder,
            format!("text encoder width {width} does not match the DiT's context_dim {want}"),
        ));
    }
    Ok(())
}

/// The VAE config against config.yml: latent channels and sample rate (see
/// [`check_text_encoder`]).
pub fn check_vae(folder: &ModelFolder, vae_cfg: &VaeConfig) -> Result<()> {
    let config = &folder.config;
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
    if vae_cfg.sample_rate() != config.autoencoder.sr as usize {
        return Err(Error::config(
            &folder.vae_config,
            format!(
                "sample rate {} Hz, config.yml says {} Hz",
                vae_cfg.sample_rate(),
                config.autoencoder.sr
            ),
        ));
    }
    Ok(())
}

impl Pipeline {
    pub fn load(folder: &ModelFolder, device: &Device, dtype: DType) -> Result<Self> {
        let config = folder.config.clone();
        let tokenizer = TextTokenizer::from_file(
            &folder.text_encoder.join("tokenizer.json"),
            config.text_encoder.max_length,
        )?;
        let (text_encoder, _) = load_t5_folder(&folder.text_encoder, dtype, device)?;
        check_text_encoder(folder, text_encoder.hidden_size())?;
        let dit_ckpt = Checkpoint::load(&folder.dit, Some("model"), None)?;
        let dit = MaskDit::new(&config.model, dit_ckpt.var_builder(dtype, device))?;
        dit_ckpt.ensure_all_used(|_| false)?;
        drop(dit_ckpt);

        let vae_cfg = VaeConfig::from_file(&folder.vae_config)?;
        let vae_ckpt = Checkpoint::load(&folder.vae, Some("state_dict"), Some("autoencoder."))?;
        let vae_dtype = vae_dtype(device, dtype);
        let vae = Oobleck::new(&vae_cfg, vae_ckpt.var_builder(vae_dtype, device))?;
        vae_ckpt.ensure_all_used(|_| false)?;
        check_vae(folder, &vae_cfg)?;
        let schedule = Schedule::new(&config.diff)?;
        // Loading converted and packed weights through temporaries; give that memory back.
        crate::runtime::release_free_memory();
        Ok(Self {
            model_id: folder.model_id(),
            config,
            tokenizer,
            text_encoder,
            dit,
            vae,
            schedule,
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
    /// DDIM (part of [`Pipeline::schedule`]).
    pub fn scheduler(&self) -> &Ddim {
        self.schedule.ddim()
    }
    /// The tables of every sampler.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
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

    /// Text to audio: `recipe.seconds` of 24 kHz mono.
    pub fn generate(
        &self,
        recipe: &Recipe,
        options: &RunOptions,
        progress: &mut dyn FnMut(Stage) -> bool,
    ) -> Result<Output> {
        recipe.check(self.max_steps())?;
        let seconds = checked_seconds(recipe.seconds)?;
        let frames = self.config.frames_for_seconds(seconds).max(1);
        let mut out = self.run(recipe, frames, None, options, progress, None)?;
        let wanted = (seconds * self.sample_rate() as f64).round() as usize;
        out.samples.truncate(wanted.max(1));
        Ok(out)
    }

    /// The denoising loop of `inference()`, followed by the latent paste-back and VAE decode.
    /// `inpaint`: the ground-truth latent (1, C, T) and the mask (1, C, T) u8, 1 = regenerate.
    /// `skips`: a ControlNet; each step the DiT input is prepared once, the provider turns it
    /// into skips, and the UDiT runs with them (`inference_controlnet.py`).
    pub fn run(
        &self,
        recipe: &Recipe,
        frames: usize,
        inpaint: Option<(&Tensor, &Tensor)>,
        options: &RunOptions,
        progress: &mut dyn FnMut(Stage) -> bool,
        skips: Option<&SkipsProvider>,
    ) -> Result<Output> {
        recipe.check(self.max_steps())?;
        let cancelled = |go: bool| if go { Ok(()) } else { Err(Error::Cancelled) };
        cancelled(progress(Stage::EncodingText))?;

        // `inference()` drops guidance for an empty prompt (and for guidance 0).
        let use_cfg = !recipe.prompt.is_empty() && recipe.guidance != 0.0;
        let (context, context_mask) = if use_cfg {
            self.encode_text(&[recipe.prompt.as_str(), recipe.negative.as_str()])?
        } else {
            self.encode_text(&[recipe.prompt.as_str()])?
        };
        let denoiser = Denoiser {
            dit: &self.dit,
            schedule: &self.schedule,
        };
        let (latents, trace) = denoiser.run(
            recipe,
            (&context, &context_mask),
            frames,
            inpaint,
            options,
            progress,
            skips,
        )?;

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

/// `seconds` as the length of a generation: finite and positive.
pub(crate) fn checked_seconds(seconds: f32) -> Result<f64> {
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(Error::InvalidInput(format!(
            "seconds must be positive, got {seconds}"
        )));
    }
    Ok(seconds as f64)
}
