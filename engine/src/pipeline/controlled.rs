//! Energy-controlled generation (EzAudio-ControlNet): `src/inference_controlnet.py` with the
//! reference handling of `api/controlnet.py:generate_audio`.
//!
//! The control is an energy curve at the conditioner's rate (100 frames/s): extracted from a
//! reference clip, drawn as an envelope, or given directly. It is embedded once, and every DDIM
//! step the ControlNet turns the MaskDiT-prepared input into skips for the UDiT, for both halves
//! of the classifier-free-guidance batch.
//!
//! Where a ControlNet's files are found is [`crate::install`]'s business.

use candle_core::{Device, Tensor};

use super::{checked_seconds, Output, Pipeline, RunOptions, Stage};
use crate::error::{Error, Result};
use crate::install::ControlNetFolder;
use crate::model::controlnet::DitControlNet;
use crate::model::energy::{energy_from_points, prepare_reference, EnergyConditioner};
use crate::recipe::Recipe;
use crate::weights::Checkpoint;

/// A loaded ControlNet with its condition extractor.
pub struct ControlNet {
    net: DitControlNet,
    conditioner: EnergyConditioner,
}

impl ControlNet {
    /// Loads the checkpoint strictly, on the pipeline's device and dtype, after checking that
    /// the yml's `model:` section describes the pipeline's DiT.
    pub fn load(folder: &ControlNetFolder, pipeline: &Pipeline) -> Result<Self> {
        let cfg = &folder.config;
        check_pairing(folder, pipeline)?;
        let ckpt = Checkpoint::load(&folder.checkpoint, Some("model"), None)?;
        let net = DitControlNet::new(
            &cfg.controlnet,
            &cfg.model,
            ckpt.var_builder(pipeline.dtype(), pipeline.device()),
        )
        .map_err(|e| match e {
            Error::Candle(c) => Error::weights(&folder.checkpoint, c.to_string()),
            other => other,
        })?;
        ckpt.ensure_all_used(|_| false)?;
        Ok(Self {
            net,
            conditioner: EnergyConditioner::new(&cfg.conditioner)
                .map_err(|e| Error::config(&folder.config_path, e.to_string()))?,
        })
    }

    pub fn net(&self) -> &DitControlNet {
        &self.net
    }

    pub fn conditioner(&self) -> &EnergyConditioner {
        &self.conditioner
    }
}

fn check_pairing(folder: &ControlNetFolder, pipeline: &Pipeline) -> Result<()> {
    let (a, b) = (&folder.config.model, &pipeline.config().model);
    let pairs = [
        ("in_chans", a.in_chans, b.in_chans),
        ("out_chans", a.latent_channels(), b.latent_channels()),
        ("embed_dim", a.embed_dim, b.embed_dim),
        ("depth", a.depth, b.depth),
        ("num_heads", a.num_heads, b.num_heads),
        (
            "context_dim",
            a.context_dim.unwrap_or(0),
            b.context_dim.unwrap_or(0),
        ),
    ];
    for (key, cn, dit) in pairs {
        if cn != dit {
            return Err(Error::config(
                &folder.config_path,
                format!("model.{key} = {cn}, but the loaded DiT has {dit}: this ControlNet belongs to another model"),
            ));
        }
    }
    if let Some(ae) = &folder.config.autoencoder {
        let ours = &pipeline.config().autoencoder;
        if ae.sr != ours.sr || ae.latent_sr != ours.latent_sr {
            return Err(Error::config(
                &folder.config_path,
                format!(
                    "autoencoder sr {} / latent_sr {} differ from the model's {} / {}",
                    ae.sr, ae.latent_sr, ours.sr, ours.latent_sr
                ),
            ));
        }
    }
    Ok(())
}

/// What steers the loudness of a controlled generation.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlInput {
    /// A reference clip, mono at the model's sample rate (24 kHz): peak-normalised, gated at
    /// `surpass_noise` (0 = off), padded or trimmed to the generated length, then its energy is
    /// extracted. The output is cut back to the clip's length when the clip is shorter.
    Reference { audio: Vec<f32>, surpass_noise: f32 },
    /// A hand-drawn envelope: `(seconds, level 0..1)` points, see [`energy_from_points`].
    Envelope(Vec<(f32, f32)>),
    /// A ready curve of normalised energy at the conditioner's frame rate.
    Curve(Vec<f32>),
}

/// The length `api/controlnet.py`'s Hugging Face Space gives a reference clip: rounded up to a
/// multiple of 0.5 s, at most 10 s (the API itself always uses 10 s).
pub fn reference_seconds(samples: usize, sample_rate: u32) -> f64 {
    let secs = samples as f64 / sample_rate.max(1) as f64;
    ((secs * 2.0).ceil() / 2.0).clamp(0.5, 10.0)
}

impl Pipeline {
    /// The condition `(1, cond_in, n)` for `seconds` of audio (n = the frames that give the
    /// latent length), and the length the output is cut to for a reference clip.
    pub fn control_condition(
        &self,
        controlnet: &ControlNet,
        seconds: f64,
        control: &ControlInput,
    ) -> Result<(Tensor, Option<usize>)> {
        if !seconds.is_finite() || seconds <= 0.0 {
            return Err(Error::InvalidInput(format!(
                "seconds must be positive, got {seconds}"
            )));
        }
        let frames = self.config().frames_for_seconds(seconds).max(1);
        let n = controlnet.net.condition_frames(frames);
        let sr = self.sample_rate();
        let (curve, keep) = match control {
            ControlInput::Reference {
                audio,
                surpass_noise,
            } => {
                // `int(seconds * sr)` samples, as the API pads/trims to.
                let num_samples = (seconds * sr as f64) as usize;
                let r = prepare_reference(audio, *surpass_noise, num_samples)?;
                (
                    controlnet.conditioner.energy(&r.samples)?,
                    Some(r.original_length),
                )
            }
            ControlInput::Envelope(points) => (
                energy_from_points(points, n, controlnet.conditioner.frame_rate(sr)),
                None,
            ),
            ControlInput::Curve(values) => {
                if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
                    return Err(Error::InvalidInput(
                        "the control curve is empty or holds NaN/infinite values".into(),
                    ));
                }
                (values.clone(), None)
            }
        };
        let curve = fit_length(curve, n);
        let cond_in = controlnet.net.config().cond_in;
        let condition = Tensor::from_vec(curve, (1, 1, n), &Device::Cpu)?;
        // A multi-channel control (not the energy one) would need its own extractor.
        if cond_in != 1 {
            return Err(Error::Unsupported(format!(
                "ControlNet with cond_in = {cond_in}: only the one-channel energy control is implemented"
            )));
        }
        Ok((condition.to_device(self.device())?, keep))
    }

    /// Text to audio steered by `control`: `recipe.seconds` of 24 kHz mono (cut to the
    /// reference's length when a shorter reference clip is given). `conditioning_scale` scales
    /// every ControlNet skip (1 = as trained, 0 = no control).
    pub fn generate_controlled(
        &self,
        controlnet: &ControlNet,
        recipe: &Recipe,
        control: &ControlInput,
        conditioning_scale: f64,
        options: &RunOptions,
        progress: &mut dyn FnMut(Stage) -> bool,
    ) -> Result<Output> {
        let seconds = checked_seconds(recipe.seconds)?;
        if !conditioning_scale.is_finite() {
            return Err(Error::InvalidInput(format!(
                "conditioning_scale must be finite, got {conditioning_scale}"
            )));
        }
        if controlnet.net.num_skips() != self.config().model.depth / 2 {
            return Err(Error::InvalidInput(format!(
                "the ControlNet gives {} skips, the DiT has {} out blocks",
                controlnet.net.num_skips(),
                self.config().model.depth / 2
            )));
        }
        if !progress(Stage::EncodingAudio) {
            return Err(Error::Cancelled);
        }
        let (condition, keep) = self.control_condition(controlnet, seconds, control)?;
        let frames = self.config().frames_for_seconds(seconds).max(1);
        // The condition does not change between steps: embed it once, batch 1, and broadcast it
        // over the CFG batch (the reference duplicates it, so both halves are controlled).
        let embedded = controlnet.net.embed_condition(&condition, None)?;
        // The text context is the job's too: the ControlNet's own context embedding and
        // cross-attention keys/values are prepared at the first step and reused after.
        let prepared = std::cell::OnceCell::new();
        let provider = |input: &Tensor, t: &Tensor, ctx: &Tensor, mask: &Tensor| {
            if prepared.get().is_none() {
                let _ = prepared.set(controlnet.net.prepare_context(ctx, mask, None)?);
            }
            let prepared = prepared
                .get()
                .ok_or_else(|| Error::InvalidInput("ControlNet context not prepared".into()))?;
            let (b, l, d) = embedded.dims3()?;
            let cond = embedded.broadcast_as((input.dim(0)?.max(b), l, d))?;
            controlnet
                .net
                .forward(input, t, prepared, &cond, conditioning_scale, None)
        };
        let mut out = self.run(recipe, frames, None, options, progress, Some(&provider))?;
        let mut wanted = (seconds * self.sample_rate() as f64).round() as usize;
        if let Some(len) = keep {
            wanted = wanted.min(len);
        }
        out.samples.truncate(wanted.max(1));
        Ok(out)
    }
}

/// Trims a curve to `n` values or extends it by holding its last value.
fn fit_length(mut curve: Vec<f32>, n: usize) -> Vec<f32> {
    let last = curve.last().copied().unwrap_or(0.0);
    curve.resize(n, last);
    curve
}
