//! The Stable-Audio "Oobleck" waveform autoencoder that EzAudio uses as its latent space
//! (stable-audio-tools `OobleckEncoder` / `OobleckDecoder` with the `vae` bottleneck).
//!
//! Checkpoint keys mirror PyTorch's `nn.Sequential` indices (`decoder.layers.1.layers.2.layers.1`),
//! so the module tree below keeps those indices. Convolutions are stored with the legacy
//! `weight_norm` (`weight_g`, `weight_v`); they are folded into plain weights once at load time.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use crate::error::{Error, Result};

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

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
        if let Some(enc) = &m.encoder {
            if enc.kind != "oobleck" {
                return unsupported(format!("encoder type '{}' (only 'oobleck')", enc.kind));
            }
            let e = &enc.config;
            if e.antialias_activation {
                return unsupported("encoder antialias_activation".into());
            }
            check_levels("encoder", e.channels, &e.c_mults, &e.strides)?;
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
    if strides.len() < c_mults.len() {
        return Err(Error::Unsupported(format!(
            "VAE config: {which} has {} c_mults but only {} strides",
            c_mults.len(),
            strides.len()
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Layers
// ---------------------------------------------------------------------------------------------

/// Legacy `weight_norm(dim=0)`: `w = g * v / ||v||`, the norm over every dim but 0. Computed once,
/// in f32, then cast. Checkpoints that already hold a plain `weight` are used as they are.
fn weight_norm_weight(vb: &VarBuilder, shape: (usize, usize, usize)) -> Result<Tensor> {
    if !vb.contains_tensor("weight_v") && vb.contains_tensor("weight") {
        return Ok(vb.get(shape, "weight")?);
    }
    let vb32 = vb.to_dtype(DType::F32);
    let v = vb32.get(shape, "weight_v")?;
    let g = vb32.get((shape.0, 1, 1), "weight_g")?;
    let norm = v.sqr()?.sum_keepdim(2)?.sum_keepdim(1)?.sqrt()?;
    let w = v.broadcast_mul(&g.div(&norm)?)?;
    Ok(w.to_dtype(vb.dtype())?)
}

/// Per-channel vector `(C,)` as `(1, C, 1)` so it broadcasts over `(B, C, T)`.
fn channel_vec(t: Tensor) -> Result<Tensor> {
    let c = t.dim(0)?;
    Ok(t.reshape((1, c, 1))?)
}

/// SnakeBeta with log-scale parameters: `y = x + 1/(exp(beta) + 1e-9) * sin(exp(alpha) x)^2`.
#[derive(Debug, Clone)]
struct SnakeBeta {
    /// `exp(alpha)`, `(1, C, 1)`.
    alpha: Tensor,
    /// `1 / (exp(beta) + 1e-9)`, `(1, C, 1)`.
    inv_beta: Tensor,
}

impl SnakeBeta {
    fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        let dtype = vb.dtype();
        let vb32 = vb.to_dtype(DType::F32);
        let alpha = vb32.get(channels, "alpha")?.exp()?;
        let inv_beta = (vb32.get(channels, "beta")?.exp()? + 1e-9)?.recip()?;
        Ok(Self {
            alpha: channel_vec(alpha.to_dtype(dtype)?)?,
            inv_beta: channel_vec(inv_beta.to_dtype(dtype)?)?,
        })
    }
}

impl Module for SnakeBeta {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let s = x.broadcast_mul(&self.alpha)?.sin()?.sqr()?;
        x + s.broadcast_mul(&self.inv_beta)?
    }
}

/// `get_activation("snake" | "elu")`.
#[derive(Debug, Clone)]
enum Activation {
    Snake(SnakeBeta),
    Elu,
}

impl Activation {
    fn new(use_snake: bool, channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(if use_snake {
            Self::Snake(SnakeBeta::new(channels, vb)?)
        } else {
            Self::Elu
        })
    }
}

impl Module for Activation {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Snake(s) => s.forward(x),
            Self::Elu => x.elu(1.0),
        }
    }
}

/// `WNConv1d` with its weight norm folded.
#[derive(Debug, Clone)]
struct Conv1d {
    weight: Tensor,
    bias: Option<Tensor>,
    padding: usize,
    stride: usize,
    dilation: usize,
    name: String,
}

struct ConvSpec {
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    bias: bool,
}

impl ConvSpec {
    fn new(c_in: usize, c_out: usize, kernel: usize) -> Self {
        Self {
            c_in,
            c_out,
            kernel,
            stride: 1,
            padding: 0,
            dilation: 1,
            bias: true,
        }
    }
}

impl Conv1d {
    fn new(s: ConvSpec, vb: VarBuilder) -> Result<Self> {
        let weight = weight_norm_weight(&vb, (s.c_out, s.c_in, s.kernel))?;
        let bias = if s.bias {
            Some(channel_vec(vb.get(s.c_out, "bias")?)?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            padding: s.padding,
            stride: s.stride,
            dilation: s.dilation,
            name: vb.prefix(),
        })
    }
}

impl Module for Conv1d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = x.conv1d(&self.weight, self.padding, self.stride, self.dilation, 1)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// `WNConvTranspose1d(k = 2s, stride s, padding ceil(s/2))`. Its weight is `(in, out, k)` and the
/// weight norm's dim 0 is the input channel.
#[derive(Debug, Clone)]
struct ConvTranspose1d {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
    name: String,
}

impl ConvTranspose1d {
    fn new(c_in: usize, c_out: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let weight = weight_norm_weight(&vb, (c_in, c_out, 2 * stride))?;
        let bias = channel_vec(vb.get(c_out, "bias")?)?;
        Ok(Self {
            weight,
            bias,
            stride,
            padding: stride.div_ceil(2),
            name: vb.prefix(),
        })
    }
}

impl Module for ConvTranspose1d {
    /// Written as one matmul plus overlap-add rather than `Tensor::conv_transpose1d`: candle
    /// 0.11's fast path (padding 0) folds the batch wrongly on CPU for batch > 1 (its matmul
    /// mishandles a transposed lhs against a broadcast rhs), and its padded path is a scalar loop.
    /// With k = 2s, input frame i writes output block i (kernel taps 0..s) and block i+1
    /// (taps s..2s); PyTorch's `padding` then crops p = ceil(s/2) samples from each end, giving
    /// (T-1)s - 2p + 2s samples (s*T for even s, s*T - 1 for odd s).
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, c_in, t) = x.dims3()?;
        let (_, c_out, k) = self.weight.dims3()?;
        let s = self.stride;
        let cols = x
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * t, c_in))?
            .matmul(&self.weight.reshape((c_in, c_out * k))?)?
            .reshape((b, t, c_out, k))?;
        let first = cols.narrow(3, 0, s)?.pad_with_zeros(1, 0, 1)?;
        let second = cols.narrow(3, s, s)?.pad_with_zeros(1, 1, 0)?;
        let full = (first + second)?
            .permute((0, 2, 1, 3))?
            .reshape((b, c_out, (t + 1) * s))?;
        let len = (t + 1) * s - 2 * self.padding;
        full.narrow(2, self.padding, len)?.broadcast_add(&self.bias)
    }
}

/// `x + Conv1x1(act(Conv_k7_dil_d(act(x))))`.
#[derive(Debug, Clone)]
struct ResidualUnit {
    act1: Activation,
    conv1: Conv1d,
    act2: Activation,
    conv2: Conv1d,
}

impl ResidualUnit {
    fn new(channels: usize, dilation: usize, use_snake: bool, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("layers");
        let k7 = ConvSpec {
            dilation,
            padding: 3 * dilation,
            ..ConvSpec::new(channels, channels, 7)
        };
        Ok(Self {
            act1: Activation::new(use_snake, channels, vb.pp(0))?,
            conv1: Conv1d::new(k7, vb.pp(1))?,
            act2: Activation::new(use_snake, channels, vb.pp(2))?,
            conv2: Conv1d::new(ConvSpec::new(channels, channels, 1), vb.pp(3))?,
        })
    }
}

impl Module for ResidualUnit {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.conv1.forward(&self.act1.forward(x)?)?;
        let y = self.conv2.forward(&self.act2.forward(&y)?)?;
        y + x
    }
}

const DILATIONS: [usize; 3] = [1, 3, 9];

fn residual_units(
    channels: usize,
    use_snake: bool,
    vb: &VarBuilder,
    first: usize,
) -> Result<Vec<ResidualUnit>> {
    DILATIONS
        .iter()
        .enumerate()
        .map(|(i, &d)| ResidualUnit::new(channels, d, use_snake, vb.pp(first + i)))
        .collect()
}

/// Residual units at the input width, then `act` and a strided `Conv1d(k = 2s, pad ceil(s/2))`.
#[derive(Debug, Clone)]
struct EncoderBlock {
    units: Vec<ResidualUnit>,
    act: Activation,
    down: Conv1d,
}

impl EncoderBlock {
    fn new(
        c_in: usize,
        c_out: usize,
        stride: usize,
        use_snake: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let vb = vb.pp("layers");
        let spec = ConvSpec {
            stride,
            padding: stride.div_ceil(2),
            ..ConvSpec::new(c_in, c_out, 2 * stride)
        };
        Ok(Self {
            units: residual_units(c_in, use_snake, &vb, 0)?,
            act: Activation::new(use_snake, c_in, vb.pp(3))?,
            down: Conv1d::new(spec, vb.pp(4))?,
        })
    }
}

impl Module for EncoderBlock {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for u in &self.units {
            x = u.forward(&x)?;
        }
        self.down.forward(&self.act.forward(&x)?)
    }
}

/// `act`, a transposed-conv upsampler, then residual units at the output width.
#[derive(Debug, Clone)]
struct DecoderBlock {
    act: Activation,
    up: ConvTranspose1d,
    units: Vec<ResidualUnit>,
}

impl DecoderBlock {
    fn new(
        c_in: usize,
        c_out: usize,
        stride: usize,
        use_snake: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let vb = vb.pp("layers");
        Ok(Self {
            act: Activation::new(use_snake, c_in, vb.pp(0))?,
            up: ConvTranspose1d::new(c_in, c_out, stride, vb.pp(1))?,
            units: residual_units(c_out, use_snake, &vb, 2)?,
        })
    }
}

impl Module for DecoderBlock {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = self.up.forward(&self.act.forward(x)?)?;
        for u in &self.units {
            x = u.forward(&x)?;
        }
        Ok(x)
    }
}

/// One entry of an `nn.Sequential` (`encoder.layers` / `decoder.layers`).
#[derive(Debug, Clone)]
enum Layer {
    Conv(Conv1d),
    Encoder(EncoderBlock),
    Decoder(DecoderBlock),
    Act(Activation),
    Tanh,
    Identity,
}

impl Module for Layer {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Conv(c) => c.forward(x),
            Self::Encoder(b) => b.forward(x),
            Self::Decoder(b) => b.forward(x),
            Self::Act(a) => a.forward(x),
            Self::Tanh => x.tanh(),
            Self::Identity => Ok(x.clone()),
        }
    }
}

/// Runs `layers` in order; with `trace`, keeps every layer's output (the fixtures' debug tensors).
fn run_layers(layers: &[Layer], x: &Tensor, mut trace: Option<&mut Vec<Tensor>>) -> Result<Tensor> {
    let mut x = x.clone();
    for layer in layers {
        x = layer.forward(&x)?;
        if let Some(t) = trace.as_deref_mut() {
            t.push(x.clone());
        }
    }
    Ok(x)
}

fn oobleck_encoder(c: &OobleckEncoderConfig, vb: VarBuilder) -> Result<Vec<Layer>> {
    let vb = vb.pp("layers");
    let mults: Vec<usize> = std::iter::once(1)
        .chain(c.c_mults.iter().copied())
        .collect();
    let width = |i: usize| mults[i] * c.channels;
    let mut layers = vec![Layer::Conv(Conv1d::new(
        ConvSpec {
            padding: 3,
            ..ConvSpec::new(c.in_channels, width(0), 7)
        },
        vb.pp(0),
    )?)];
    for i in 0..mults.len() - 1 {
        let block = EncoderBlock::new(
            width(i),
            width(i + 1),
            c.strides[i],
            c.use_snake,
            vb.pp(i + 1),
        )?;
        layers.push(Layer::Encoder(block));
    }
    let (last, n) = (width(mults.len() - 1), layers.len());
    layers.push(Layer::Act(Activation::new(c.use_snake, last, vb.pp(n))?));
    let out = ConvSpec {
        padding: 1,
        ..ConvSpec::new(last, c.latent_dim, 3)
    };
    layers.push(Layer::Conv(Conv1d::new(out, vb.pp(n + 1))?));
    Ok(layers)
}

fn oobleck_decoder(c: &OobleckDecoderConfig, vb: VarBuilder) -> Result<Vec<Layer>> {
    let vb = vb.pp("layers");
    let mults: Vec<usize> = std::iter::once(1)
        .chain(c.c_mults.iter().copied())
        .collect();
    let width = |i: usize| mults[i] * c.channels;
    let depth = mults.len();
    let conv_in = ConvSpec {
        padding: 3,
        ..ConvSpec::new(c.latent_dim, width(depth - 1), 7)
    };
    let mut layers = vec![Layer::Conv(Conv1d::new(conv_in, vb.pp(0))?)];
    // Blocks run from the widest level down, in reversed stride order.
    for i in (1..depth).rev() {
        let vb_i = vb.pp(layers.len());
        let block = DecoderBlock::new(width(i), width(i - 1), c.strides[i - 1], c.use_snake, vb_i)?;
        layers.push(Layer::Decoder(block));
    }
    let n = layers.len();
    layers.push(Layer::Act(Activation::new(
        c.use_snake,
        width(0),
        vb.pp(n),
    )?));
    let out = ConvSpec {
        padding: 3,
        bias: false,
        ..ConvSpec::new(width(0), c.out_channels, 7)
    };
    layers.push(Layer::Conv(Conv1d::new(out, vb.pp(n + 1))?));
    layers.push(if c.final_tanh {
        Layer::Tanh
    } else {
        Layer::Identity
    });
    Ok(layers)
}

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------

/// The Oobleck VAE: decoder for generation, optional encoder (+ `vae` bottleneck) for audio input.
#[derive(Debug, Clone)]
pub struct Oobleck {
    encoder: Option<Vec<Layer>>,
    decoder: Vec<Layer>,
    latent_channels: usize,
    in_channels: Option<usize>,
    device: Device,
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
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `(B, latent, T)` -> `(B, out_channels, N)`, `N = T * samples_per_latent` for even strides.
    pub fn decode(&self, latent: &Tensor) -> Result<Tensor> {
        self.check_latent(latent)?;
        run_layers(&self.decoder, latent, None)
    }

    /// [`Self::decode`] that also returns the output of every top-level `decoder.layers[i]`.
    pub fn decode_traced(&self, latent: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        self.check_latent(latent)?;
        let mut trace = Vec::with_capacity(self.decoder.len());
        let y = run_layers(&self.decoder, latent, Some(&mut trace))?;
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
        Ok((mean + stdev * noise.to_dtype(scale.dtype())?)?)
    }

    /// Weight-norm-resolved convolution weights by checkpoint module path
    /// (e.g. `decoder.layers.1.layers.1`), as used in the forward.
    pub fn effective_weights(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        let conv = |c: &Conv1d, out: &mut Vec<(String, Tensor)>| {
            out.push((c.name.clone(), c.weight.clone()))
        };
        let units = |us: &[ResidualUnit], out: &mut Vec<(String, Tensor)>| {
            for u in us {
                conv(&u.conv1, out);
                conv(&u.conv2, out);
            }
        };
        for layer in self.encoder.iter().flatten().chain(&self.decoder) {
            match layer {
                Layer::Conv(c) => conv(c, &mut out),
                Layer::Encoder(b) => {
                    units(&b.units, &mut out);
                    conv(&b.down, &mut out);
                }
                Layer::Decoder(b) => {
                    out.push((b.up.name.clone(), b.up.weight.clone()));
                    units(&b.units, &mut out);
                }
                Layer::Act(_) | Layer::Tanh | Layer::Identity => {}
            }
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
        run_layers(encoder, audio, trace)
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
