//! EzAudio-ControlNet (`src/models/controlnet.py`: `DiTControlNet`, `DiTControlNetEmbed`).
//!
//! A trainable copy of the UDiT's in blocks reads the same MaskDiT-prepared input as the UDiT,
//! plus an embedded control curve (the energy at 100 frames/s, brought to the latent's 50 Hz by
//! strided convolutions) added to its tokens. Each in block's output goes through a zero-initialised
//! Linear; the results are added to the UDiT's long skips (see `MaskDit::forward`).
//! Checkpoint keys are the bare `DiTControlNet.state_dict()` names (no `model.` prefix).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv1d, Conv1dConfig, VarBuilder};

use super::linear::{self, param, Linear};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::dit::{
    BlockDims, Conditioning, DitBlock, DitConfig, DitStem, PreparedContext, Recorder,
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
    /// Patch, time and context embeddings and RoPE, as in the UDiT (same keys).
    stem: DitStem,
    in_blocks: Vec<DitBlock>,
    controlnet_pre: ControlNetEmbed,
    zero_blocks: Vec<Linear>,
}

impl DitControlNet {
    /// `dit`: the `model:` section (the paired DiT's). Paths mirror the checkpoint keys; nothing
    /// is computed from the weights here.
    pub fn new(cfg: &ControlNetConfig, dit: &DitConfig, vb: VarBuilder) -> Result<Self> {
        dit.validate()?;
        cfg.validate()?;
        let d = dit.embed_dim;
        let dims = BlockDims::from_config(dit);
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
            stem: DitStem::new(dit, &vb)?,
            in_blocks,
            controlnet_pre: ControlNetEmbed::new(cfg, d, vb.pp("controlnet_pre"))?,
            zero_blocks,
        })
    }

    pub fn config(&self) -> &ControlNetConfig {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.stem.dtype()
    }

    pub fn device(&self) -> &Device {
        self.stem.device()
    }

    /// Number of skips (one per in block, = the UDiT's out blocks).
    pub fn num_skips(&self) -> usize {
        self.in_blocks.len()
    }

    /// Condition frames that give exactly `latent_frames` tokens.
    pub fn condition_frames(&self, latent_frames: usize) -> usize {
        latent_frames * self.cfg.downsampling()
    }

    /// The condition tokens `(B, L, D)` (`controlnet_pre`) for `condition` `(B, cond_in, n)`
    /// with `ceil(n / 2^k) = T` (twice the latent rate for energy). They do not depend on the
    /// timestep: a sampler embeds them once per job.
    pub fn embed_condition(
        &self,
        condition: &Tensor,
        rec: Option<&mut Recorder>,
    ) -> Result<Tensor> {
        Recorder::or_off(rec, |rec| self.embed(condition, rec))
    }

    /// The ControlNet's own embedded text context and cross-attention keys/values, once per job
    /// (its blocks have their own weights, so the DiT's prepared context does not serve).
    /// `context` `(B, Lc, context_dim)` and `context_mask` `(B, Lc)` as for the DiT.
    pub fn prepare_context(
        &self,
        context: &Tensor,
        context_mask: &Tensor,
        rec: Option<&mut Recorder>,
    ) -> Result<PreparedContext> {
        Recorder::or_off(rec, |rec| self.prepare(context, context_mask, rec))
    }

    /// The skips `(B, T, D)` for [`crate::model::dit::MaskDit::forward`], each scaled by
    /// `conditioning_scale`. `unet_input`: `MaskDit::prepare_input`'s `(B, 2C+1, T)`;
    /// `timesteps`: 0-d, `(1,)` or `(B,)`; `cond_embed` from [`Self::embed_condition`];
    /// `rec` receives the names of `controlnet/debug.safetensors` (parity checks only).
    pub fn forward(
        &self,
        unet_input: &Tensor,
        timesteps: &Tensor,
        context: &PreparedContext,
        cond_embed: &Tensor,
        conditioning_scale: f64,
        rec: Option<&mut Recorder>,
    ) -> Result<Vec<Tensor>> {
        Recorder::or_off(rec, |rec| {
            self.run(
                unet_input,
                timesteps,
                context,
                cond_embed,
                conditioning_scale,
                rec,
            )
        })
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
        let condition = condition
            .to_device(self.stem.device())?
            .to_dtype(self.stem.dtype())?;
        self.controlnet_pre.forward(&condition, rec)
    }

    fn prepare(
        &self,
        context: &Tensor,
        mask: &Tensor,
        rec: &mut Recorder,
    ) -> Result<PreparedContext> {
        self.stem
            .prepare_context(context, mask, self.in_blocks.iter(), "ControlNet", rec)
    }

    fn run(
        &self,
        unet_input: &Tensor,
        timesteps: &Tensor,
        ctx: &PreparedContext,
        cond_embed: &Tensor,
        conditioning_scale: f64,
        rec: &mut Recorder,
    ) -> Result<Vec<Tensor>> {
        let (b, _, t) = unet_input.dims3()?;
        if ctx.batch() != b || ctx.kv.len() != self.in_blocks.len() {
            return Err(Error::InvalidInput(format!(
                "ControlNet: the prepared context has batch {}, the input batch is {b}",
                ctx.batch()
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
        let x = self.stem.tokens(unet_input, "ControlNet", rec)?;
        let x = (x + cond_embed)?;
        rec.record(|| "tokens_in".into(), &x);
        let time = self.stem.time(timesteps, b, rec)?;
        let cond = Conditioning {
            time_token: time.time_token,
            time_ada: time.time_ada,
            context: ctx.context.clone(),
            context_bias: ctx.bias.clone(),
            rope: self.stem.rope(t)?,
        };
        let mut x = x;
        let mut skips = Vec::with_capacity(self.in_blocks.len());
        for ((blk, zero), kv) in self.in_blocks.iter().zip(&self.zero_blocks).zip(&ctx.kv) {
            x = blk.forward_cached(&x, None, &cond, Some(kv), rec)?;
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
