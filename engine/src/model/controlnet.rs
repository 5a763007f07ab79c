//! EzAudio-ControlNet (`src/models/controlnet.py`: `DiTControlNet`, `DiTControlNetEmbed`).
//!
//! A trainable copy of the UDiT's in blocks reads the same MaskDiT-prepared input as the UDiT,
//! plus an embedded control curve (the energy at 100 frames/s, brought to the latent's 50 Hz by
//! strided convolutions) added to its tokens. Each in block's output goes through a zero-initialised
//! Linear; the results are added to the UDiT's long skips (see `MaskDit::forward_model`).
//! Checkpoint keys are the bare `DiTControlNet.state_dict()` names (no `model.` prefix).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv1d, Conv1dConfig, VarBuilder};

use super::linear::{self, compute_dtype, param, Linear};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::dit::attention::key_padding_bias;
use crate::model::dit::block::TIME_FREQ_DIM;
use crate::model::dit::{
    batch_timesteps, BlockDims, Conditioning, DitBlock, DitConfig, Mlp2, Recorder, RopeCache,
    TimestepFeatures,
};

/// The `controlnet:` section of the ControlNet yml; the network is built from
/// `model | controlnet` like `DiTControlNet(**cfg)`. The mask settings only matter in training.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ControlNetConfig {
    /// Channels of the control curve (1 for energy).
    pub cond_in: usize,
    /// Widths of the condition embedder: `conv_in` gives `cond_blocks[0]`, then one strided
    /// block per consecutive pair.
    pub cond_blocks: Vec<usize>,
    /// Adds a mask channel after `conv_in` (and the `mask_embed` parameter).
    #[serde(default)]
    pub cond_mask: bool,
    #[serde(default)]
    pub cond_mask_prob: Option<f64>,
    #[serde(default)]
    pub cond_mask_ratio: Option<Vec<f64>>,
    #[serde(default)]
    pub cond_mask_span: Option<usize>,
}

impl ControlNetConfig {
    /// `ckpts/controlnet/energy_l.yml` (pairs with EzAudio-L).
    pub fn energy_l() -> Self {
        Self {
            cond_in: 1,
            cond_blocks: vec![64, 128],
            cond_mask: true,
            cond_mask_prob: Some(0.25),
            cond_mask_ratio: Some(vec![0.25, 0.5]),
            cond_mask_span: Some(10),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.cond_in == 0 {
            return Err(Error::InvalidInput(
                "controlnet: cond_in must be positive".into(),
            ));
        }
        // With a single width the reference never creates `blocks` and fails in forward.
        if self.cond_blocks.len() < 2 || self.cond_blocks.contains(&0) {
            return Err(Error::Unsupported(format!(
                "controlnet: cond_blocks {:?} (needs at least two positive widths)",
                self.cond_blocks
            )));
        }
        Ok(())
    }

    /// How many condition frames make one latent frame (each block halves the rate).
    pub fn downsampling(&self) -> usize {
        1 << (self.cond_blocks.len() - 1)
    }

    /// Tokens produced from `n` condition frames: `floor((n - 1) / 2) + 1` per strided block.
    pub fn tokens_for(&self, n: usize) -> usize {
        (1..self.cond_blocks.len()).fold(n, |l, _| if l == 0 { 0 } else { (l - 1) / 2 + 1 })
    }
}

/// One condition block: `Conv1d(k3, pad 1) -> SiLU -> Conv1d(k3, pad 1, stride 2) -> SiLU`.
#[derive(Debug, Clone)]
struct CondBlock {
    conv1: Conv1d,
    conv2: Conv1d,
}

/// `DiTControlNetEmbed` (keys `controlnet_pre.*`): control curve `(B, cond_in, n)` ->
/// tokens `(B, L, D)`.
#[derive(Debug, Clone)]
struct ControlNetEmbed {
    conv_in: Conv1d,
    mask_channel: bool,
    blocks: Vec<CondBlock>,
    conv_out: Conv1d,
    cond_in: usize,
}

fn conv1d(
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    vb: VarBuilder,
) -> Result<Conv1d> {
    let w = param(&vb, (c_out, c_in, kernel), "weight")?;
    let b = param(&vb, c_out, "bias")?;
    let cfg = Conv1dConfig {
        padding: kernel / 2,
        stride,
        ..Default::default()
    };
    Ok(Conv1d::new(w, Some(b), cfg))
}

impl ControlNetEmbed {
    fn new(cfg: &ControlNetConfig, dim: usize, vb: VarBuilder) -> Result<Self> {
        let mut widths = cfg.cond_blocks.clone();
        let conv_in = conv1d(cfg.cond_in, widths[0], 1, 1, vb.pp("conv_in"))?;
        if cfg.cond_mask {
            // Loaded for strict bookkeeping; at inference nothing is masked, so it is never read.
            vb.get(widths[0], "mask_embed")?;
            // The reference widens the first block by the mask channel (`blocks[0] += 1`).
            widths[0] += 1;
        }
        let blocks = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let vb = vb.pp(format!("blocks.{i}"));
                Ok(CondBlock {
                    conv1: conv1d(w[0], w[0], 3, 1, vb.pp("0"))?,
                    conv2: conv1d(w[0], w[1], 3, 2, vb.pp("2"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let last = *widths.last().unwrap_or(&widths[0]);
        Ok(Self {
            conv_in,
            mask_channel: cfg.cond_mask,
            blocks,
            conv_out: conv1d(last, dim, 1, 1, vb.pp("conv_out"))?,
            cond_in: cfg.cond_in,
        })
    }

    fn forward(&self, condition: &Tensor, rec: &mut Recorder) -> Result<Tensor> {
        let mut h = self.conv_in.forward(condition)?;
        rec.record(|| "cond.conv_in".into(), &h);
        if self.mask_channel {
            // Eval path: no position masked, the mask channel is all zeros.
            let (b, _, n) = h.dims3()?;
            let zeros = Tensor::zeros((b, 1, n), h.dtype(), h.device())?;
            h = Tensor::cat(&[&h, &zeros], 1)?;
            rec.record(|| "cond.masked_cat".into(), &h);
        }
        for (i, blk) in self.blocks.iter().enumerate() {
            let a = blk.conv1.forward(&h)?;
            rec.record(|| format!("cond.blocks.{i}.conv1"), &a);
            h = blk.conv2.forward(&a.silu()?)?.silu()?;
            rec.record(|| format!("cond.blocks.{i}"), &h);
        }
        let h = self.conv_out.forward(&h)?;
        rec.record(|| "cond.conv_out".into(), &h);
        let h = h.transpose(1, 2)?.contiguous()?;
        rec.record(|| "cond_embed".into(), &h);
        Ok(h)
    }
}

/// `DiTControlNet` with the EzAudio feature set (the DiT config's, see [`DitConfig::validate`]).
pub struct DitControlNet {
    cfg: ControlNetConfig,
    /// Kernel-1 Conv1d over the MaskDiT input, applied as a Linear (tokens `(B, T, D)`).
    patch_embed: Linear,
    time_embed: Mlp2,
    time_ada: Linear,
    context_embed: Mlp2,
    in_blocks: Vec<DitBlock>,
    controlnet_pre: ControlNetEmbed,
    zero_blocks: Vec<Linear>,
    in_chans: usize,
    context_dim: usize,
    dtype: DType,
    device: Device,
    rope: RopeCache,
    timestep_features: TimestepFeatures,
}

impl DitControlNet {
    /// `dit`: the `model:` section (the paired DiT's). Paths mirror the checkpoint keys; nothing
    /// is computed from the weights here.
    pub fn new(cfg: &ControlNetConfig, dit: &DitConfig, vb: VarBuilder) -> Result<Self> {
        dit.validate()?;
        cfg.validate()?;
        let d = dit.embed_dim;
        let context_dim = dit.context_dim.unwrap_or(d);
        let dims = BlockDims::from_config(dit);
        let pw = param(&vb, (d, dit.in_chans, 1), "patch_embed.proj.weight")?;
        let pb = param(&vb, d, "patch_embed.proj.bias")?;
        let half = dit.depth / 2;
        let in_blocks = (0..half)
            .map(|i| {
                let name = format!("in_blocks.{i}");
                DitBlock::new(&dims, false, &name, vb.pp(&name))
            })
            .collect::<Result<Vec<_>>>()?;
        let zero_blocks = (0..half)
            .map(|i| linear::linear(d, d, vb.pp(format!("controlnet_zero_blocks.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            patch_embed: Linear::from_tensors(pw.squeeze(2)?, Some(pb)),
            time_embed: Mlp2::new(TIME_FREQ_DIM, d, vb.pp("time_embed.mlp"))?,
            time_ada: linear::linear(d, 6 * d, vb.pp("time_ada"))?,
            context_embed: Mlp2::new(context_dim, d, vb.pp("context_embed"))?,
            in_blocks,
            controlnet_pre: ControlNetEmbed::new(cfg, d, vb.pp("controlnet_pre"))?,
            zero_blocks,
            in_chans: dit.in_chans,
            context_dim,
            dtype: compute_dtype(&vb),
            device: vb.device().clone(),
            rope: RopeCache::new(dit.head_dim(), compute_dtype(&vb), vb.device()),
            timestep_features: TimestepFeatures::new(vb.device())?,
        })
    }

    pub fn config(&self) -> &ControlNetConfig {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Number of skips (one per in block, = the UDiT's out blocks).
    pub fn num_skips(&self) -> usize {
        self.in_blocks.len()
    }

    /// Condition frames that give exactly `latent_frames` tokens.
    pub fn condition_frames(&self, latent_frames: usize) -> usize {
        latent_frames * self.cfg.downsampling()
    }

    /// The skips `(B, T, D)` for `MaskDit::forward_model`, each scaled by `conditioning_scale`.
    ///
    /// `unet_input`: `MaskDit::prepare_input`'s `(B, 2C+1, T)`; `timesteps`: 0-d, `(1,)` or `(B,)`;
    /// `context` `(B, Lc, context_dim)` and `context_mask` `(B, Lc)` as for the DiT;
    /// `condition`: `(B, cond_in, n)` with `ceil(n / 2^k) = T` (twice the latent rate for energy).
    pub fn forward(
        &self,
        unet_input: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        context_mask: &Tensor,
        condition: &Tensor,
        conditioning_scale: f64,
    ) -> Result<Vec<Tensor>> {
        let cond = self.embed_condition(condition)?;
        self.forward_embedded(
            unet_input,
            timesteps,
            context,
            context_mask,
            &cond,
            conditioning_scale,
        )
    }

    /// [`Self::forward`] that also appends the named intermediates (the names of
    /// `controlnet/debug.safetensors`) to `record`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_debug(
        &self,
        unet_input: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        context_mask: &Tensor,
        condition: &Tensor,
        conditioning_scale: f64,
        record: &mut Vec<(String, Tensor)>,
    ) -> Result<Vec<Tensor>> {
        let mut rec = Recorder::new(record);
        let cond = self.embed(condition, &mut rec)?;
        self.run(
            unet_input,
            timesteps,
            context,
            context_mask,
            &cond,
            conditioning_scale,
            &mut rec,
        )
    }

    /// The condition tokens `(B, L, D)` (`controlnet_pre`); they do not depend on the timestep,
    /// so a sampler computes them once and calls [`Self::forward_embedded`] per step.
    pub fn embed_condition(&self, condition: &Tensor) -> Result<Tensor> {
        self.embed(condition, &mut Recorder::off())
    }

    /// [`Self::forward`] with the condition already embedded by [`Self::embed_condition`].
    pub fn forward_embedded(
        &self,
        unet_input: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        context_mask: &Tensor,
        cond_embed: &Tensor,
        conditioning_scale: f64,
    ) -> Result<Vec<Tensor>> {
        self.run(
            unet_input,
            timesteps,
            context,
            context_mask,
            cond_embed,
            conditioning_scale,
            &mut Recorder::off(),
        )
    }

    fn embed(&self, condition: &Tensor, rec: &mut Recorder) -> Result<Tensor> {
        match condition.dims() {
            [_, c, n] if *c == self.controlnet_pre.cond_in && *n > 0 => {}
            dims => {
                return Err(Error::InvalidInput(format!(
                    "ControlNet: condition must be (B, {}, frames), got {dims:?}",
                    self.controlnet_pre.cond_in
                )))
            }
        }
        let condition = condition.to_device(&self.device)?.to_dtype(self.dtype)?;
        self.controlnet_pre.forward(&condition, rec)
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        unet_input: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        context_mask: &Tensor,
        cond_embed: &Tensor,
        conditioning_scale: f64,
        rec: &mut Recorder,
    ) -> Result<Vec<Tensor>> {
        let (b, c, t) = unet_input.dims3()?;
        if c != self.in_chans {
            return Err(Error::InvalidInput(format!(
                "ControlNet: input has {c} channels, expected {} (the MaskDiT-prepared input)",
                self.in_chans
            )));
        }
        match context.dims() {
            [cb, _, cd] if *cb == b && *cd == self.context_dim => {}
            dims => {
                return Err(Error::InvalidInput(format!(
                    "ControlNet: context must be ({b}, L, {}), got {dims:?}",
                    self.context_dim
                )))
            }
        }
        let lc = context.dim(1)?;
        if context_mask.dims() != [b, lc] {
            return Err(Error::InvalidInput(format!(
                "ControlNet: context_mask must be ({b}, {lc}), got {:?}",
                context_mask.dims()
            )));
        }
        let (cb, cl, _) = cond_embed.dims3()?;
        if cb != b || cl != t {
            return Err(Error::InvalidInput(format!(
                "ControlNet: the condition gives {cl} tokens for batch {cb}, the latent has {t} \
                 frames for batch {b} (the condition needs {} frames)",
                self.condition_frames(t)
            )));
        }

        // Contiguous Linear inputs: candle 0.11's CPU matmul is wrong for a transposed lhs
        // against a broadcast weight.
        let x = self.patch_embed.forward(
            &unet_input
                .to_device(&self.device)?
                .to_dtype(self.dtype)?
                .transpose(1, 2)?
                .contiguous()?,
        )?;
        rec.record(|| "patch_embed".into(), &x);
        let x = (x + cond_embed)?;
        rec.record(|| "tokens_in".into(), &x);

        let context = self.context_embed.forward(
            &context
                .to_device(&self.device)?
                .to_dtype(self.dtype)?
                .contiguous()?,
        )?;
        rec.record(|| "context_embed".into(), &context);
        let t_freq = self
            .timestep_features
            .forward(&batch_timesteps(&timesteps.to_device(&self.device)?, b)?)?;
        let t_emb = self.time_embed.forward(&t_freq.to_dtype(self.dtype)?)?;
        rec.record(|| "time_embed".into(), &t_emb);
        let time_token = t_emb.silu()?;
        let time_ada = self.time_ada.forward(&time_token)?;
        rec.record(|| "time_ada".into(), &time_ada);

        let cond = Conditioning {
            time_token,
            time_ada,
            context,
            context_bias: key_padding_bias(&context_mask.to_device(&self.device)?, self.dtype)?,
            rope: self.rope.get(t)?,
        };
        let mut x = x;
        let mut skips = Vec::with_capacity(self.in_blocks.len());
        for (blk, zero) in self.in_blocks.iter().zip(&self.zero_blocks) {
            x = blk.forward(&x, None, &cond, rec)?;
            let s = zero.forward(&x)?;
            skips.push(if conditioning_scale == 1.0 {
                s
            } else {
                (s * conditioning_scale)?
            });
        }
        Ok(skips)
    }
}
