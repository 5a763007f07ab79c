//! Energy-controlled generation (EzAudio-ControlNet): `src/inference_controlnet.py` with the
//! reference handling of `api/controlnet.py:generate_audio`.
//!
//! The control is an energy curve at the conditioner's rate (100 frames/s): extracted from a
//! reference clip, drawn as an envelope, or given directly. It is embedded once, and every DDIM
//! step the ControlNet turns the MaskDiT-prepared input into skips for the UDiT, for both halves
//! of the classifier-free-guidance batch.
//!
//! ```text
//! <dir>/energy_l.yml (or config.yml, or the folder's only .yml)   sections model, controlnet,
//!                                                                  conditioner, autoencoder, text_encoder, diff
//! <dir>/s3_l_energy.pt | controlnet.pt | controlnet.safetensors   {'model': DiTControlNet.state_dict()}
//! ```

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::energy::{energy_from_points, prepare_reference, ConditionerConfig, EnergyConditioner};
use crate::error::{Error, Result};
use crate::model::config::{AutoencoderConfig, EzAudioConfig, TextEncoderConfig};
use crate::model::controlnet::{ControlNetConfig, DitControlNet};
use crate::model::dit::DitConfig;
use crate::pipeline::{Noise, Output, Pipeline, Settings, Stage};
use crate::sampler::DdimConfig;
use crate::weights::Checkpoint;

/// The ControlNet yml (`ckpts/controlnet/energy_l.yml`). Only `model`, `controlnet` and
/// `conditioner` are used; the other sections are checked against the paired model.
#[derive(Debug, Clone, Deserialize)]
pub struct ControlNetFileConfig {
    #[serde(default)]
    pub model_name: Option<String>,
    pub model: DitConfig,
    pub controlnet: ControlNetConfig,
    pub conditioner: ConditionerConfig,
    #[serde(default)]
    pub autoencoder: Option<AutoencoderConfig>,
    #[serde(default)]
    pub text_encoder: Option<TextEncoderConfig>,
    #[serde(default)]
    pub diff: Option<DdimConfig>,
}

impl ControlNetFileConfig {
    /// `ckpts/controlnet/energy_l.yml` (EzAudio-L-Energy, paired with EzAudio-L).
    pub fn energy_l() -> Self {
        let l = EzAudioConfig::ezaudio_l();
        Self {
            model_name: Some("EzAudio-L-Energy".into()),
            model: l.model,
            controlnet: ControlNetConfig::energy_l(),
            conditioner: ConditionerConfig::energy_l(),
            autoencoder: Some(l.autoencoder),
            text_encoder: Some(l.text_encoder),
            diff: Some(l.diff),
        }
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let cfg: Self =
            serde_yaml_ng::from_str(&text).map_err(|e| Error::config(path, e.to_string()))?;
        let checked = cfg
            .model
            .validate()
            .and_then(|_| cfg.controlnet.validate())
            .and_then(|_| cfg.conditioner.validate());
        checked.map_err(|e| match e {
            Error::Unsupported(m) | Error::InvalidInput(m) => Error::config(path, m),
            other => other,
        })?;
        Ok(cfg)
    }
}

/// Where a ControlNet's files are.
#[derive(Debug, Clone)]
pub struct ControlNetFolder {
    pub config_path: PathBuf,
    pub checkpoint: PathBuf,
    pub config: ControlNetFileConfig,
}

impl ControlNetFolder {
    /// Explicit files.
    pub fn from_files(config_path: &Path, checkpoint: &Path) -> Result<Self> {
        if !checkpoint.is_file() {
            return Err(Error::weights(
                checkpoint,
                "ControlNet checkpoint not found",
            ));
        }
        Ok(Self {
            config: ControlNetFileConfig::from_file(config_path)?,
            config_path: config_path.to_path_buf(),
            checkpoint: checkpoint.to_path_buf(),
        })
    }

    /// A folder with the yml and the checkpoint (names in the module documentation). Without a
    /// yml, the official `s3_l_energy.pt` alone is taken with the built-in `energy_l.yml`.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::weights(dir, "ControlNet folder not found"));
        }
        let config = ["energy_l.yml", "config.yml", "config.yaml"]
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_file())
            .or_else(|| only_file_with_extension(dir, &["yml", "yaml"]));
        let official = dir.join("s3_l_energy.pt");
        let config = match config {
            Some(c) => c,
            None if official.is_file() => {
                return Ok(Self {
                    config_path: official.clone(),
                    checkpoint: official,
                    config: ControlNetFileConfig::energy_l(),
                })
            }
            None => {
                return Err(Error::weights(
                    dir.join("energy_l.yml"),
                    "missing: the ControlNet's yml config",
                ))
            }
        };
        let checkpoint = ["s3_l_energy.pt", "controlnet.safetensors", "controlnet.pt"]
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_file())
            .or_else(|| only_file_with_extension(dir, &["pt"]))
            .ok_or_else(|| {
                Error::weights(
                    dir.join("s3_l_energy.pt"),
                    "missing: the ControlNet checkpoint (s3_l_energy.pt, controlnet.pt or controlnet.safetensors)",
                )
            })?;
        Self::from_files(&config, &checkpoint)
    }
}

/// Environment variable naming a ControlNet folder (used when no folder is given explicitly).
pub const CONTROLNET_ENV: &str = "EZAUDIO_CONTROLNET";

/// Finds the ControlNet for the model in `model_root`: the explicit folder; else
/// `$EZAUDIO_CONTROLNET`; else `<model>/controlnet/`, `<model>/ckpts/controlnet/` (the Hugging
/// Face snapshot layout); else, for EzAudio-L (`official_l`), the Hugging Face cache's
/// `OpenSound/EzAudio` `ckpts/controlnet/`. The error lists every place searched.
pub fn resolve_controlnet(
    explicit: Option<&Path>,
    model_root: &Path,
    official_l: bool,
) -> Result<ControlNetFolder> {
    if let Some(dir) = explicit {
        return ControlNetFolder::open(dir);
    }
    if let Some(dir) = std::env::var_os(CONTROLNET_ENV).filter(|v| !v.is_empty()) {
        return ControlNetFolder::open(Path::new(&dir)).map_err(|e| {
            Error::InvalidInput(format!(
                "{CONTROLNET_ENV} = {}: {e}",
                Path::new(&dir).display()
            ))
        });
    }
    let mut candidates = vec![
        model_root.join("controlnet"),
        model_root.join("ckpts").join("controlnet"),
    ];
    if official_l {
        let repo = crate::models::repo_cache_name(crate::models::EZAUDIO_REPO);
        if let Some(snap) = crate::models::hf_cache_dir()
            .and_then(|hub| crate::models::latest_snapshot(&hub.join(repo)))
        {
            candidates.push(snap.join("ckpts").join("controlnet"));
        }
    }
    for dir in &candidates {
        if dir.is_dir() {
            return ControlNetFolder::open(dir);
        }
    }
    let places: Vec<String> = candidates
        .iter()
        .map(|p| format!("  {}", p.display()))
        .collect();
    Err(Error::weights(
        &candidates[0],
        format!(
            "no ControlNet found. Controlled generation needs the energy ControlNet next to the model:\n{}\n\
             (a folder with s3_l_energy.pt, from {}: {}, plus optionally energy_l.yml), or a folder \
             given with --controlnet / {CONTROLNET_ENV}. `ezaudio models fetch l --controlnet` downloads it.",
            places.join("\n"),
            crate::models::EZAUDIO_REPO,
            crate::models::CONTROLNET_FILE,
        ),
    ))
}

fn only_file_with_extension(dir: &Path, exts: &[&str]) -> Option<PathBuf> {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| exts.iter().any(|x| e == *x)))
        .collect();
    (found.len() == 1).then(|| found[0].clone())
}

/// A loaded ControlNet with its condition extractor.
pub struct ControlNet {
    net: DitControlNet,
    conditioner: EnergyConditioner,
    model_id: String,
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
            model_id: cfg.model_name.clone().unwrap_or_else(|| {
                folder
                    .checkpoint
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            }),
        })
    }

    pub fn from_parts(
        net: DitControlNet,
        conditioner: EnergyConditioner,
        model_id: String,
    ) -> Self {
        Self {
            net,
            conditioner,
            model_id,
        }
    }

    pub fn net(&self) -> &DitControlNet {
        &self.net
    }

    pub fn conditioner(&self) -> &EnergyConditioner {
        &self.conditioner
    }

    pub fn model_id(&self) -> &str {
        &self.model_id
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
        check_seconds(seconds)?;
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

    /// Text to audio steered by `control`: `seconds` of 24 kHz mono (cut to the reference's
    /// length when a shorter reference clip is given). `conditioning_scale` scales every
    /// ControlNet skip (1 = as trained, 0 = no control).
    #[allow(clippy::too_many_arguments)]
    pub fn generate_controlled(
        &self,
        controlnet: &ControlNet,
        settings: &Settings,
        seconds: f64,
        control: &ControlInput,
        conditioning_scale: f64,
        noise: Noise,
        progress: &mut dyn FnMut(Stage) -> bool,
    ) -> Result<Output> {
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
        let embedded = controlnet.net.embed_condition(&condition)?;
        // The text context is the job's too: the ControlNet's own context embedding and
        // cross-attention keys/values are prepared at the first step and reused after.
        let prepared = std::cell::OnceCell::new();
        let provider = |input: &Tensor, t: &Tensor, ctx: &Tensor, mask: &Tensor| {
            if prepared.get().is_none() {
                let _ = prepared.set(controlnet.net.prepare_context(ctx, mask)?);
            }
            let prepared = prepared
                .get()
                .ok_or_else(|| Error::InvalidInput("ControlNet context not prepared".into()))?;
            let (b, l, d) = embedded.dims3()?;
            let cond = embedded.broadcast_as((input.dim(0)?.max(b), l, d))?;
            controlnet
                .net
                .forward_prepared(input, t, prepared, &cond, conditioning_scale)
        };
        let mut out = self.run_with(settings, frames, None, noise, progress, Some(&provider))?;
        let mut wanted = (seconds * self.sample_rate() as f64).round() as usize;
        if let Some(len) = keep {
            wanted = wanted.min(len);
        }
        out.samples.truncate(wanted.max(1));
        Ok(out)
    }
}

fn check_seconds(seconds: f64) -> Result<()> {
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(Error::InvalidInput(format!(
            "seconds must be positive, got {seconds}"
        )));
    }
    Ok(())
}

/// Trims a curve to `n` values or extends it by holding its last value.
fn fit_length(mut curve: Vec<f32>, n: usize) -> Vec<f32> {
    let last = curve.last().copied().unwrap_or(0.0);
    curve.resize(n, last);
    curve
}
