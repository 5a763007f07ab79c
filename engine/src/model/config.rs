//! The official EzAudio config schema (`ckpts/ezaudio-l.yml`, `ckpts/ezaudio-xl.yml`):
//! sections `model` (the DiT), `autoencoder`, `text_encoder` and `diff` (the DDIM scheduler).

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::ddim::DdimConfig;
use crate::model::dit::DitConfig;

/// Unknown keys are refused by name in every section (`deny_unknown_fields`; `diff:` is checked
/// against [`DDIM_KEYS`], since [`DdimConfig`] also reads diffusers' JSON with its metadata keys).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EzAudioConfig {
    #[serde(default)]
    pub model_name: Option<String>,
    pub model: DitConfig,
    pub autoencoder: AutoencoderConfig,
    pub text_encoder: TextEncoderConfig,
    pub diff: DdimConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoencoderConfig {
    pub name: String,
    /// Latent channels (the DiT's `out_chans`).
    pub dim: usize,
    /// Audio sample rate of the VAE.
    pub sr: u32,
    /// Latent frames per second.
    pub latent_sr: u32,
    /// EzAudio's wrapper returns the sampled latent when encoding.
    #[serde(default = "yes")]
    pub q_first: bool,
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default)]
    pub shift: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextEncoderConfig {
    /// A Hugging Face model id (`google/flan-t5-xl`) or a folder relative to the config file.
    pub model: String,
    pub max_length: usize,
    /// Training-time condition dropout; unused at inference.
    #[serde(default)]
    pub cfg: Option<f64>,
}

/// The keys of [`DdimConfig`] a `diff:` section may set.
pub const DDIM_KEYS: [&str; 15] = [
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "clip_sample",
    "clip_sample_range",
    "set_alpha_to_one",
    "steps_offset",
    "prediction_type",
    "thresholding",
    "dynamic_thresholding_ratio",
    "sample_max_value",
    "timestep_spacing",
    "rescale_betas_zero_snr",
];

/// Longest prompt in tokens: T5's relative position buckets were trained up to 512 tokens, and
/// the position bias grows with its square. EzAudio uses 100.
pub const MAX_TEXT_TOKENS: usize = 512;

fn yes() -> bool {
    true
}
fn one() -> f64 {
    1.0
}

impl EzAudioConfig {
    pub fn from_yaml_str(text: &str, origin: &Path) -> Result<Self> {
        let cfg: Self =
            serde_yaml_ng::from_str(text).map_err(|e| Error::config(origin, e.to_string()))?;
        // The `diff:` keys, which serde lets through (see DDIM_KEYS).
        let value: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(text).map_err(|e| Error::config(origin, e.to_string()))?;
        if let Some(diff) = value.get("diff").and_then(|d| d.as_mapping()) {
            let keys = diff.keys().map(|k| k.as_str().unwrap_or("<not a string>"));
            if let Some(e) = crate::model::bounds::unknown_keys("diff", keys, &DDIM_KEYS) {
                return Err(Error::config(origin, e));
            }
        }
        cfg.validate().map_err(|e| match e {
            Error::Unsupported(m) | Error::InvalidInput(m) => Error::config(origin, m),
            other => other,
        })?;
        Ok(cfg)
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_yaml_str(&text, path)
    }

    pub fn validate(&self) -> Result<()> {
        use crate::audio::{MAX_RATE, MIN_RATE};
        use crate::model::bounds::{check, check_f64};
        check(
            "autoencoder",
            "sr",
            self.autoencoder.sr as usize,
            MIN_RATE as usize,
            MAX_RATE as usize,
            "EzAudio 24000",
        )?;
        check(
            "autoencoder",
            "latent_sr",
            self.autoencoder.latent_sr as usize,
            1,
            self.autoencoder.sr as usize,
            "EzAudio 50; at most sr",
        )?;
        check_f64(
            "autoencoder",
            "scale",
            self.autoencoder.scale.abs(),
            1e-6,
            1e6,
            "EzAudio 1.0",
        )?;
        check_f64(
            "autoencoder",
            "shift",
            self.autoencoder.shift,
            -1e6,
            1e6,
            "EzAudio 0.0",
        )?;
        check(
            "text_encoder",
            "max_length",
            self.text_encoder.max_length,
            1,
            MAX_TEXT_TOKENS,
            "EzAudio 100",
        )?;
        self.model.validate()?;
        self.diff.validate()?;
        if self.autoencoder.name != "stable_vae" {
            return Err(Error::Unsupported(format!(
                "autoencoder.name '{}' (only 'stable_vae' is implemented)",
                self.autoencoder.name
            )));
        }
        if self.autoencoder.dim != self.model.latent_channels() {
            return Err(Error::InvalidInput(format!(
                "autoencoder.dim {} differs from model.out_chans {}",
                self.autoencoder.dim,
                self.model.latent_channels()
            )));
        }
        Ok(())
    }

    /// Latent frames for `seconds` of audio, as `api/ezaudio.py` computes it (`length * latent_sr`).
    pub fn frames_for_seconds(&self, seconds: f64) -> usize {
        (seconds * self.autoencoder.latent_sr as f64)
            .round()
            .max(0.0) as usize
    }

    /// The official EzAudio-L (`ckpts/ezaudio-l.yml`), paired with `google/flan-t5-large`.
    pub fn ezaudio_l() -> Self {
        Self::official("EzAudio-L", DitConfig::ezaudio_l(), "google/flan-t5-large")
    }

    /// The official EzAudio-XL (`ckpts/ezaudio-xl.yml`), paired with `google/flan-t5-xl`.
    pub fn ezaudio_xl() -> Self {
        Self::official("EzAudio-XL", DitConfig::ezaudio_xl(), "google/flan-t5-xl")
    }

    fn official(name: &str, model: DitConfig, text_encoder: &str) -> Self {
        Self {
            model_name: Some(name.to_string()),
            model,
            autoencoder: AutoencoderConfig {
                name: "stable_vae".into(),
                dim: 128,
                sr: 24_000,
                latent_sr: 50,
                q_first: true,
                scale: 1.0,
                shift: 0.0,
            },
            text_encoder: TextEncoderConfig {
                model: text_encoder.into(),
                max_length: 100,
                cfg: Some(0.1),
            },
            diff: DdimConfig::ezaudio(),
        }
    }
}
