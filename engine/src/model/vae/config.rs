//! `ckpts/vae/config.json`: the stable-audio-tools autoencoder schema, as far as EzAudio uses it.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// `ckpts/vae/config.json` as published (stable-audio-tools autoencoder schema). Keys this port
/// does not need (`training`, `sample_size`, ...) are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct VaeConfig {
    #[serde(default)]
    pub model_type: Option<String>,
    /// Audio sample rate; stable-audio-tools requires it, EzAudio's is 24 kHz.
    #[serde(default)]
    pub sample_rate: Option<usize>,
    #[serde(default)]
    pub audio_channels: Option<usize>,
    pub model: AutoencoderConfig,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AutoencoderConfig {
    #[serde(default)]
    pub encoder: Option<Component<OobleckEncoderConfig>>,
    pub decoder: Component<OobleckDecoderConfig>,
    #[serde(default)]
    pub bottleneck: Option<BottleneckConfig>,
    /// Any pretransform is unsupported; kept to reject such configs instead of ignoring them.
    #[serde(default)]
    pub pretransform: Option<serde_json::Value>,
    pub latent_dim: usize,
    pub downsampling_ratio: usize,
    pub io_channels: usize,
}

/// `{"type": "oobleck", "config": {...}}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Component<C> {
    #[serde(rename = "type")]
    pub kind: String,
    pub config: C,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BottleneckConfig {
    #[serde(rename = "type")]
    pub kind: String,
}

fn default_channels() -> usize {
    128
}
fn default_latent_dim() -> usize {
    32
}
fn default_c_mults() -> Vec<usize> {
    vec![1, 2, 4, 8]
}
fn default_strides() -> Vec<usize> {
    vec![2, 4, 8, 8]
}
fn default_io() -> usize {
    2
}
fn default_true() -> bool {
    true
}

/// Defaults are those of the Python constructors (`OobleckEncoder.__init__`).
#[derive(Debug, Clone, Deserialize)]
pub struct OobleckEncoderConfig {
    #[serde(default = "default_io")]
    pub in_channels: usize,
    #[serde(default = "default_channels")]
    pub channels: usize,
    #[serde(default = "default_latent_dim")]
    pub latent_dim: usize,
    #[serde(default = "default_c_mults")]
    pub c_mults: Vec<usize>,
    #[serde(default = "default_strides")]
    pub strides: Vec<usize>,
    #[serde(default)]
    pub use_snake: bool,
    #[serde(default)]
    pub antialias_activation: bool,
}

/// Defaults are those of the Python constructors (`OobleckDecoder.__init__`).
#[derive(Debug, Clone, Deserialize)]
pub struct OobleckDecoderConfig {
    #[serde(default = "default_io")]
    pub out_channels: usize,
    #[serde(default = "default_channels")]
    pub channels: usize,
    #[serde(default = "default_latent_dim")]
    pub latent_dim: usize,
    #[serde(default = "default_c_mults")]
    pub c_mults: Vec<usize>,
    #[serde(default = "default_strides")]
    pub strides: Vec<usize>,
    #[serde(default)]
    pub use_snake: bool,
    #[serde(default)]
    pub antialias_activation: bool,
    #[serde(default)]
    pub use_nearest_upsample: bool,
    #[serde(default = "default_true")]
    pub final_tanh: bool,
}

impl VaeConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let cfg: Self = serde_json::from_str(&text).map_err(|e| {
            Error::config(path, format!("not a stable-audio autoencoder config: {e}"))
        })?;
        cfg.validate().map_err(|e| match e {
            Error::Unsupported(m) => Error::config(path, format!("unsupported: {m}")),
            Error::InvalidInput(m) => Error::config(path, m),
            other => other,
        })?;
        Ok(cfg)
    }

    /// The published `ckpts/vae/config.json` of EzAudio (24 kHz mono, hop 480, 128 latent channels).
    pub fn oobleck_24k() -> Self {
        let (channels, c_mults, strides) = (128, vec![1, 2, 4, 8], vec![2, 4, 6, 10]);
        Self {
            model_type: Some("autoencoder".into()),
            sample_rate: Some(24000),
            audio_channels: Some(1),
            model: AutoencoderConfig {
                encoder: Some(Component {
                    kind: "oobleck".into(),
                    config: OobleckEncoderConfig {
                        in_channels: 1,
                        channels,
                        latent_dim: 256,
                        c_mults: c_mults.clone(),
                        strides: strides.clone(),
                        use_snake: true,
                        antialias_activation: false,
                    },
                }),
                decoder: Component {
                    kind: "oobleck".into(),
                    config: OobleckDecoderConfig {
                        out_channels: 1,
                        channels,
                        latent_dim: 128,
                        c_mults,
                        strides,
                        use_snake: true,
                        antialias_activation: false,
                        use_nearest_upsample: false,
                        final_tanh: false,
                    },
                },
                bottleneck: Some(BottleneckConfig { kind: "vae".into() }),
                pretransform: None,
                latent_dim: 128,
                downsampling_ratio: 480,
                io_channels: 1,
            },
        }
    }

    pub fn validate(&self) -> Result<()> {
        let m = &self.model;
        let unsupported = |msg: String| Err(Error::Unsupported(format!("VAE config: {msg}")));
        if m.pretransform.as_ref().is_some_and(|p| !p.is_null()) {
            return unsupported("autoencoders with a pretransform".into());
        }
        if m.decoder.kind != "oobleck" {
            return unsupported(format!(
                "decoder type '{}' (only 'oobleck')",
                m.decoder.kind
            ));
        }
        let d = &m.decoder.config;
        if d.antialias_activation || d.use_nearest_upsample {
            return unsupported("decoder antialias_activation / use_nearest_upsample".into());
        }
        check_levels("decoder", d.channels, &d.c_mults, &d.strides)?;
        if d.latent_dim == 0 || d.out_channels == 0 {
            return unsupported("decoder latent_dim / out_channels of 0".into());
        }
        {
            use crate::audio::{MAX_RATE, MIN_RATE};
            use crate::model::bounds::check;
            check(
                "VAE config: decoder",
                "latent_dim",
                d.latent_dim,
                1,
                4096,
                "EzAudio 128",
            )?;
            check(
                "VAE config: decoder",
                "out_channels",
                d.out_channels,
                1,
                64,
                "EzAudio 1",
            )?;
            if let Some(r) = self.sample_rate {
                check(
                    "VAE config",
                    "sample_rate",
                    r,
                    MIN_RATE as usize,
                    MAX_RATE as usize,
                    "EzAudio 24000",
                )?;
            }
        }
        if let Some(enc) = &m.encoder {
            if enc.kind != "oobleck" {
                return unsupported(format!("encoder type '{}' (only 'oobleck')", enc.kind));
            }
            let e = &enc.config;
            if e.antialias_activation {
                return unsupported("encoder antialias_activation".into());
            }
            check_levels("encoder", e.channels, &e.c_mults, &e.strides)?;
            use crate::model::bounds::check;
            check(
                "VAE config: encoder",
                "latent_dim",
                e.latent_dim,
                1,
                8192,
                "EzAudio 256",
            )?;
            check(
                "VAE config: encoder",
                "in_channels",
                e.in_channels,
                1,
                64,
                "EzAudio 1",
            )?;
            match m.bottleneck.as_ref().map(|b| b.kind.as_str()) {
                Some("vae") if e.latent_dim == 2 * d.latent_dim => {}
                Some("vae") => {
                    return unsupported(format!(
                        "vae bottleneck needs encoder latent_dim = 2 x decoder latent_dim, found {} and {}",
                        e.latent_dim, d.latent_dim
                    ))
                }
                other => return unsupported(format!("bottleneck {other:?} (only 'vae')")),
            }
        }
        Ok(())
    }

    /// Audio samples per latent frame: the product of the decoder strides (480 for EzAudio).
    pub fn samples_per_latent(&self) -> usize {
        self.model.decoder.config.strides.iter().product()
    }

    /// Channels of the latent the decoder takes (128 for EzAudio).
    pub fn latent_channels(&self) -> usize {
        self.model.decoder.config.latent_dim
    }

    /// Sample rate of the audio, 24000 when the config does not say.
    pub fn sample_rate(&self) -> usize {
        self.sample_rate.unwrap_or(24000)
    }
}

fn check_levels(which: &str, channels: usize, c_mults: &[usize], strides: &[usize]) -> Result<()> {
    if channels == 0 || c_mults.is_empty() || c_mults.contains(&0) || strides.contains(&0) {
        return Err(Error::Unsupported(format!(
            "VAE config: {which} needs channels > 0 and non-empty, non-zero c_mults/strides"
        )));
    }
    // Bounds around the published VAE (channels 128, c_mults [1, 2, 4, 8], strides
    // [2, 4, 6, 10]): widths and the hop (the strides' product) stay runnable.
    use crate::model::bounds::check;
    let section = format!("VAE config: {which}");
    check(&section, "channels", channels, 1, 4096, "EzAudio 128")?;
    check(
        &section,
        "number of c_mults",
        c_mults.len(),
        1,
        16,
        "EzAudio 4",
    )?;
    for &m in c_mults {
        check(&section, "c_mults entry", m, 1, 64, "EzAudio at most 8")?;
        check(
            &section,
            "channels x c_mults",
            channels * m,
            1,
            16_384,
            "EzAudio at most 1024",
        )?;
    }
    check(
        &section,
        "number of strides",
        strides.len(),
        1,
        16,
        "EzAudio 4",
    )?;
    for &st in strides {
        check(&section, "strides entry", st, 1, 64, "EzAudio at most 10")?;
    }
    let hop = strides
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .unwrap_or(usize::MAX);
    check(
        &section,
        "product of strides",
        hop,
        1,
        1 << 16,
        "EzAudio 480",
    )?;
    if strides.len() < c_mults.len() {
        return Err(Error::Unsupported(format!(
            "VAE config: {which} has {} c_mults but only {} strides",
            c_mults.len(),
            strides.len()
        )));
    }
    Ok(())
}
