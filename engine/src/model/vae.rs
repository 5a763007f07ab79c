//! The Stable-Audio "Oobleck" waveform autoencoder that EzAudio uses as its latent space
//! (stable-audio-tools `OobleckEncoder` / `OobleckDecoder` with the `vae` bottleneck).
//!
//! Checkpoint keys mirror PyTorch's `nn.Sequential` indices (`decoder.layers.1.layers.2.layers.1`),
//! so the module tree below keeps those indices. Convolutions are stored with the legacy
//! `weight_norm` (`weight_g`, `weight_v`); they are folded into plain weights once at load time.

mod config;
mod layers;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

pub use config::{
    AutoencoderConfig, BottleneckConfig, Component, OobleckDecoderConfig, OobleckEncoderConfig,
    VaeConfig,
};
use layers::{oobleck_decoder, oobleck_encoder, run_layers, Layer};

use crate::error::{Error, Result};

/// The Oobleck VAE: decoder for generation, optional encoder (+ `vae` bottleneck) for audio input.
#[derive(Debug, Clone)]
pub struct Oobleck {
    encoder: Option<Vec<Layer>>,
    decoder: Vec<Layer>,
    latent_channels: usize,
    in_channels: Option<usize>,
    device: Device,
    dtype: DType,
}

impl Oobleck {
    /// `vb` is keyed as the checkpoint after stripping `autoencoder.` (`decoder.layers.0.weight_g`).
    pub fn new(cfg: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        Self::build(cfg, vb, true)
    }

    /// Decoder only: the encoder's tensors are never requested; `encode_*` then fail.
    pub fn new_decoder_only(cfg: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        Self::build(cfg, vb, false)
    }

    fn build(cfg: &VaeConfig, vb: VarBuilder, with_encoder: bool) -> Result<Self> {
        cfg.validate()?;
        let enc_cfg = if with_encoder {
            let enc = cfg.model.encoder.as_ref().ok_or_else(|| {
                Error::Unsupported(
                    "the VAE config has no encoder; use Oobleck::new_decoder_only".into(),
                )
            })?;
            Some(&enc.config)
        } else {
            None
        };
        let encoder = enc_cfg
            .map(|c| oobleck_encoder(c, vb.pp("encoder")))
            .transpose()?;
        let decoder = oobleck_decoder(&cfg.model.decoder.config, vb.pp("decoder"))?;
        Ok(Self {
            encoder,
            decoder,
            latent_channels: cfg.latent_channels(),
            in_channels: enc_cfg.map(|c| c.in_channels),
            device: vb.device().clone(),
            dtype: vb.dtype(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `(B, latent, T)` -> `(B, out_channels, N)`, `N = T * samples_per_latent` for even strides.
    pub fn decode(&self, latent: &Tensor) -> Result<Tensor> {
        self.check_latent(latent)?;
        run_layers(&self.decoder, &self.input(latent)?, None)
    }

    /// [`Self::decode`] that also returns the output of every top-level `decoder.layers[i]`.
    pub fn decode_traced(&self, latent: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        self.check_latent(latent)?;
        let mut trace = Vec::with_capacity(self.decoder.len());
        let y = run_layers(&self.decoder, &self.input(latent)?, Some(&mut trace))?;
        Ok((y, trace))
    }

    /// Raw encoder output `(B, 2*latent, T)` (mean then pre-softplus scale), with the output of
    /// every top-level `encoder.layers[i]`.
    pub fn encode_traced(&self, audio: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        let mut trace = Vec::new();
        let y = self.encoder_out(audio, Some(&mut trace))?;
        Ok((y, trace))
    }

    /// `(B, 1, N)` -> the bottleneck mean `(B, latent, T)`.
    pub fn encode_mean(&self, audio: &Tensor) -> Result<Tensor> {
        let (mean, _) = self.mean_and_scale(audio)?;
        Ok(mean)
    }

    /// What EzAudio's wrapper returns when encoding: `mean + (softplus(scale) + 1e-4) * noise`,
    /// with `noise` (same shape as the mean) supplied by the caller.
    pub fn encode_sample(&self, audio: &Tensor, noise: &Tensor) -> Result<Tensor> {
        let (mean, scale) = self.mean_and_scale(audio)?;
        if noise.dims() != mean.dims() {
            return Err(Error::InvalidInput(format!(
                "VAE encode noise has shape {:?}, the latent is {:?}",
                noise.dims(),
                mean.dims()
            )));
        }
        let stdev = (softplus(&scale)? + 1e-4)?;
        let noise = noise.to_device(scale.device())?.to_dtype(scale.dtype())?;
        Ok((mean + stdev * noise)?)
    }

    /// Weight-norm-resolved convolution weights by checkpoint module path
    /// (e.g. `decoder.layers.1.layers.1`), as used in the forward.
    pub fn effective_weights(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for layer in self.encoder.iter().flatten().chain(&self.decoder) {
            layer.collect_weights(&mut out);
        }
        out
    }

    fn mean_and_scale(&self, audio: &Tensor) -> Result<(Tensor, Tensor)> {
        let out = self.encoder_out(audio, None)?;
        let half = out.dim(1)? / 2;
        Ok((out.narrow(1, 0, half)?, out.narrow(1, half, half)?))
    }

    fn encoder_out(&self, audio: &Tensor, trace: Option<&mut Vec<Tensor>>) -> Result<Tensor> {
        let (Some(encoder), Some(c_in)) = (&self.encoder, self.in_channels) else {
            return Err(Error::Unsupported(
                "this VAE was built without its encoder".into(),
            ));
        };
        match audio.dims() {
            &[_, c, n] if c == c_in && n > 0 => {}
            d => {
                return Err(Error::InvalidInput(format!(
                    "VAE encode expects audio (batch, {c_in}, samples), got {d:?}"
                )))
            }
        }
        run_layers(encoder, &self.input(audio)?, trace)
    }

    /// An input on this VAE's device and in its dtype (a no-op when it already is): callers
    /// may hand over host tensors or another precision.
    fn input(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.to_device(&self.device)?.to_dtype(self.dtype)?)
    }

    fn check_latent(&self, latent: &Tensor) -> Result<()> {
        match latent.dims() {
            &[_, c, t] if c == self.latent_channels && t > 0 => Ok(()),
            d => Err(Error::InvalidInput(format!(
                "VAE decode expects a latent (batch, {}, frames), got {d:?}",
                self.latent_channels
            ))),
        }
    }
}

/// `softplus(x) = max(x, 0) + log(1 + exp(-|x|))`: overflow-free and equal to PyTorch's
/// `log1p(exp(x))` (threshold 20) within float32 rounding.
fn softplus(x: &Tensor) -> candle_core::Result<Tensor> {
    let tail = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    x.relu()? + tail
}
