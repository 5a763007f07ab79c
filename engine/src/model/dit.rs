//! EzAudio's diffusion transformer: `MaskDiT` wrapping a `UDiT` (`src/models/conditioners.py`,
//! `src/models/udit.py`, `src/models/blocks.py`).
//!
//! The latent `(B, 128, T)` at 50 Hz is joined with the (masked) reference latent and a mask
//! channel, embedded per frame, and run through a U-shaped stack of DiT blocks (long skips from
//! the in blocks to the out blocks, LIFO). Time enters by adaLN-SOLA-bias, text by
//! cross-attention, positions only through RoPE in self-attention. Output: predicted v.

pub mod attention;
pub mod block;
pub mod config;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use super::linear::{self, compute_dtype, param, Linear};

pub use self::attention::{rope_inv_freq, CrossKv, Rope, RopeCache};
pub use self::block::TimestepFeatures;
pub use self::block::{BlockDims, Conditioning, DitBlock, FinalBlock, Mlp2};
pub use self::config::{DitConfig, ImgSize};
use crate::error::{Error, Result};

/// Optional sink for named intermediates (the names of `dit/debug.safetensors` without the
/// case prefix). Off in the normal forward; recording only clones tensor handles.
pub struct Recorder<'a> {
    out: Option<&'a mut Vec<(String, Tensor)>>,
}

impl<'a> Recorder<'a> {
    pub fn off() -> Self {
        Self { out: None }
    }

    pub fn new(out: &'a mut Vec<(String, Tensor)>) -> Self {
        Self { out: Some(out) }
    }

    pub fn is_on(&self) -> bool {
        self.out.is_some()
    }

    #[inline]
    pub fn record(&mut self, name: impl FnOnce() -> String, t: &Tensor) {
        if let Some(out) = self.out.as_mut() {
            out.push((name(), t.clone()));
        }
    }
}

/// `MaskDiT`: keys `mask_embed` and `model.*` (the UDiT).
pub struct MaskDit {
    cfg: DitConfig,
    mask_embed: Tensor,
    model: Udit,
}

impl MaskDit {
    /// Builds the model from a `VarBuilder` whose paths are the checkpoint keys. Nothing is
    /// computed from the weights here (layout probes hand out placeholder tensors).
    pub fn new(cfg: &DitConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let mask_embed = param(&vb, cfg.latent_channels(), "mask_embed")?;
        let model = Udit::new(cfg, vb.pp("model"))?;
        Ok(Self {
            cfg: cfg.clone(),
            mask_embed,
            model,
        })
    }

    pub fn config(&self) -> &DitConfig {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.model.dtype
    }

    /// Predicted v `(B, out_chans, T)` for the noisy latent `x` `(B, out_chans, T)`.
    ///
    /// `timesteps`: `(B,)`, `(1,)` or 0-d, any numeric dtype. `context`: `(B, L, context_dim)`;
    /// `context_mask`: `(B, L)`, non-zero = attend. For inpainting pass both `gt` (the clean
    /// latent) and `mae_mask` (non-zero = frame to generate; `(B, C, T)` or broadcastable, e.g.
    /// `(B, 1, T)`); without them the whole clip is generated. The result has `x`'s dtype.
    pub fn forward(
        &self,
        x: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        context_mask: &Tensor,
        gt: Option<&Tensor>,
        mae_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.run(
            x,
            timesteps,
            context,
            context_mask,
            gt,
            mae_mask,
            &mut Recorder::off(),
        )
    }

    /// [`Self::forward`] that also appends the named intermediates to `record`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_debug(
        &self,
        x: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        context_mask: &Tensor,
        gt: Option<&Tensor>,
        mae_mask: Option<&Tensor>,
        record: &mut Vec<(String, Tensor)>,
    ) -> Result<Tensor> {
        self.run(
            x,
            timesteps,
            context,
            context_mask,
            gt,
            mae_mask,
            &mut Recorder::new(record),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        x: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        context_mask: &Tensor,
        gt: Option<&Tensor>,
        mae_mask: Option<&Tensor>,
        rec: &mut Recorder,
    ) -> Result<Tensor> {
        let input = self.prepare_input(x, gt, mae_mask)?;
        rec.record(|| "model_input".into(), &input);
        let prepared = self.model.prepare_context(context, context_mask, rec)?;
        let out = self
            .model
            .forward(&input, timesteps, &prepared, None, rec)?;
        Ok(out.to_dtype(x.dtype())?)
    }

    /// Embeds the text context once per job: `context_embed`, the key-padding bias and every
    /// block's cross-attention keys/values, none of which depend on the latent or the timestep.
    /// `context`: `(B, L, context_dim)`; `context_mask`: `(B, L)`, non-zero = attend.
    pub fn prepare_context(
        &self,
        context: &Tensor,
        context_mask: &Tensor,
    ) -> Result<PreparedContext> {
        self.model
            .prepare_context(context, context_mask, &mut Recorder::off())
    }

    /// [`Self::forward`] with the context from [`Self::prepare_context`] (the sampler's step).
    pub fn forward_prepared(
        &self,
        x: &Tensor,
        timesteps: &Tensor,
        context: &PreparedContext,
        gt: Option<&Tensor>,
        mae_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let input = self.prepare_input(x, gt, mae_mask)?;
        let out = self
            .model
            .forward(&input, timesteps, context, None, &mut Recorder::off())?;
        Ok(out.to_dtype(x.dtype())?)
    }

    /// The UDiT input `cat([x, gt_masked, mask[:, :1]], dim=1)` `(B, 2C+1, T)` in the model dtype:
    /// without `gt`, `gt_masked` is `mask_embed` everywhere and the mask channel is all ones;
    /// with `gt`, frames where `mae_mask` is set are replaced by `mask_embed[c]`.
    /// (The ControlNet reads this same tensor.)
    pub fn prepare_input(
        &self,
        x: &Tensor,
        gt: Option<&Tensor>,
        mae_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let c = self.cfg.latent_channels();
        let (b, xc, t) = x.dims3().map_err(|_| {
            Error::InvalidInput(format!(
                "DiT: latent must be (B, {c}, T), got {:?}",
                x.dims()
            ))
        })?;
        if xc != c {
            return Err(Error::InvalidInput(format!(
                "DiT: latent has {xc} channels, the model expects {c}"
            )));
        }
        let dtype = self.model.dtype;
        let dev = &self.model.device;
        let x = x.to_device(dev)?.to_dtype(dtype)?;
        let embed = self
            .mask_embed
            .reshape((1, c, 1))?
            .broadcast_as((b, c, t))?;
        let (gt_masked, mask_channel) = match (gt, mae_mask) {
            (None, None) => (
                embed.contiguous()?,
                Tensor::ones((b, 1, t), dtype, x.device())?,
            ),
            (Some(gt), Some(mask)) => {
                if gt.dims() != [b, c, t] {
                    return Err(Error::InvalidInput(format!(
                        "DiT: gt has shape {:?}, expected {:?} like the latent",
                        gt.dims(),
                        [b, c, t]
                    )));
                }
                let mask = mask
                    .to_device(dev)?
                    .ne(0f64)?
                    .broadcast_as((b, c, t))
                    .map_err(|_| {
                        Error::InvalidInput(format!(
                            "DiT: mae_mask of shape {:?} does not broadcast to {:?}",
                            mask.dims(),
                            [b, c, t]
                        ))
                    })?;
                let gt_masked = mask.where_cond(&embed, &gt.to_device(dev)?.to_dtype(dtype)?)?;
                (gt_masked, mask.narrow(1, 0, 1)?.to_dtype(dtype)?)
            }
            (Some(_), None) => {
                return Err(Error::InvalidInput(
                    "DiT: gt given without mae_mask (the reference would mask at random)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(Error::InvalidInput("DiT: mae_mask given without gt".into()))
            }
        };
        Ok(Tensor::cat(&[&x, &gt_masked, &mask_channel], 1)?)
    }

    /// Runs the UDiT on an input from [`Self::prepare_input`], optionally adding ControlNet
    /// skips (one per out block, consumed LIFO like the in-block skips). Returns the model dtype.
    pub fn forward_model(
        &self,
        input: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        context_mask: &Tensor,
        controlnet_skips: Option<&[Tensor]>,
    ) -> Result<Tensor> {
        let prepared = self.prepare_context(context, context_mask)?;
        self.forward_model_prepared(input, timesteps, &prepared, controlnet_skips)
    }

    /// [`Self::forward_model`] with the context from [`Self::prepare_context`].
    pub fn forward_model_prepared(
        &self,
        input: &Tensor,
        timesteps: &Tensor,
        context: &PreparedContext,
        controlnet_skips: Option<&[Tensor]>,
    ) -> Result<Tensor> {
        self.model.forward(
            input,
            timesteps,
            context,
            controlnet_skips,
            &mut Recorder::off(),
        )
    }

    /// [`Self::forward_model`] that also appends the named intermediates to `record`.
    pub fn forward_model_debug(
        &self,
        input: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        context_mask: &Tensor,
        controlnet_skips: Option<&[Tensor]>,
        record: &mut Vec<(String, Tensor)>,
    ) -> Result<Tensor> {
        let mut rec = Recorder::new(record);
        let prepared = self
            .model
            .prepare_context(context, context_mask, &mut rec)?;
        self.model
            .forward(input, timesteps, &prepared, controlnet_skips, &mut rec)
    }
}

/// Timesteps as `(B,)` f32. A 0-d tensor is cast to an integer first, as the reference
/// does (`expand(B).to(long)`); `(1,)` broadcasts unchanged. (Shared with the ControlNet.)
pub fn batch_timesteps(timesteps: &Tensor, b: usize) -> Result<Tensor> {
    let t = match timesteps.dims() {
        [] => {
            let t = if timesteps.dtype().is_float() {
                timesteps.to_dtype(DType::I64)?
            } else {
                timesteps.clone()
            };
            t.reshape(1)?
        }
        [1] => timesteps.clone(),
        [n] if *n == b => timesteps.clone(),
        dims => {
            return Err(Error::InvalidInput(format!(
                "DiT: timesteps must be 0-d, (1,) or ({b},), got {dims:?}"
            )))
        }
    };
    Ok(t.to_dtype(DType::F32)?.broadcast_as(b)?.contiguous()?)
}

/// The text side of a job for the DiT, from [`MaskDit::prepare_context`]: reused by every
/// sampling step (the cross-attention keys/values are a constant of the job).
#[derive(Debug, Clone)]
pub struct PreparedContext {
    /// `context_embed(context)`, `(B, L, D)`.
    pub context: Tensor,
    /// Additive key-padding bias `(B, 1, 1, L)`.
    pub bias: Tensor,
    /// Cross-attention keys/values of the in blocks, the mid block, then the out blocks.
    pub kv: Vec<CrossKv>,
}

impl PreparedContext {
    pub fn batch(&self) -> usize {
        self.context.dims().first().copied().unwrap_or(0)
    }
}

/// `UDiT` with the EzAudio feature set (see [`DitConfig::validate`]).
struct Udit {
    /// `patch_embed.proj`: a kernel-1 Conv1d, applied as a Linear over channels so the tokens
    /// come out as `(B, T, D)` directly.
    patch_embed: Linear,
    time_embed: Mlp2,
    time_ada: Linear,
    time_ada_final: Linear,
    context_embed: Mlp2,
    in_blocks: Vec<DitBlock>,
    mid_block: DitBlock,
    out_blocks: Vec<DitBlock>,
    final_block: FinalBlock,
    in_chans: usize,
    context_dim: usize,
    dtype: DType,
    device: Device,
    rope: RopeCache,
    timestep_features: TimestepFeatures,
}

impl Udit {
    fn new(cfg: &DitConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.embed_dim;
        let context_dim = cfg.context_dim.unwrap_or(d);
        let dims = BlockDims::from_config(cfg);
        let pw = param(&vb, (d, cfg.in_chans, 1), "patch_embed.proj.weight")?;
        let pb = param(&vb, d, "patch_embed.proj.bias")?;
        let patch_embed = Linear::from_tensors(pw.squeeze(2)?, Some(pb));
        let half = cfg.depth / 2;
        let in_blocks = (0..half)
            .map(|i| {
                let name = format!("in_blocks.{i}");
                DitBlock::new(&dims, false, &name, vb.pp(&name))
            })
            .collect::<Result<Vec<_>>>()?;
        let mid_block = DitBlock::new(&dims, false, "mid_block", vb.pp("mid_block"))?;
        let out_blocks = (0..half)
            .map(|i| {
                let name = format!("out_blocks.{i}");
                DitBlock::new(&dims, cfg.skip, &name, vb.pp(&name))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            patch_embed,
            time_embed: Mlp2::new(block::TIME_FREQ_DIM, d, vb.pp("time_embed.mlp"))?,
            time_ada: linear::linear(d, 6 * d, vb.pp("time_ada"))?,
            time_ada_final: linear::linear(d, 2 * d, vb.pp("time_ada_final"))?,
            context_embed: Mlp2::new(context_dim, d, vb.pp("context_embed"))?,
            in_blocks,
            mid_block,
            out_blocks,
            final_block: FinalBlock::new(d, cfg.latent_channels(), vb.pp("final_block"))?,
            in_chans: cfg.in_chans,
            context_dim,
            dtype: compute_dtype(&vb),
            device: vb.device().clone(),
            rope: RopeCache::new(cfg.head_dim(), compute_dtype(&vb), vb.device()),
            timestep_features: TimestepFeatures::new(vb.device())?,
        })
    }

    fn prepare_context(
        &self,
        context: &Tensor,
        context_mask: &Tensor,
        rec: &mut Recorder,
    ) -> Result<PreparedContext> {
        let (b, lc) = match context.dims() {
            [b, lc, cd] if *cd == self.context_dim => (*b, *lc),
            dims => {
                return Err(Error::InvalidInput(format!(
                    "DiT: context must be (B, L, {}), got {dims:?}",
                    self.context_dim
                )))
            }
        };
        if context_mask.dims() != [b, lc] {
            return Err(Error::InvalidInput(format!(
                "DiT: context_mask must be ({b}, {lc}), got {:?}",
                context_mask.dims()
            )));
        }
        let context = self.context_embed.forward(
            &context
                .to_device(&self.device)?
                .to_dtype(self.dtype)?
                .contiguous()?,
        )?;
        rec.record(|| "context_embed".into(), &context);
        let bias = attention::key_padding_bias(&context_mask.to_device(&self.device)?, self.dtype)?;
        let kv = self
            .in_blocks
            .iter()
            .chain(std::iter::once(&self.mid_block))
            .chain(&self.out_blocks)
            .map(|blk| blk.cross_kv(&context))
            .collect::<Result<Vec<_>>>()?;
        Ok(PreparedContext { context, bias, kv })
    }

    fn forward(
        &self,
        input: &Tensor,
        timesteps: &Tensor,
        ctx: &PreparedContext,
        controlnet_skips: Option<&[Tensor]>,
        rec: &mut Recorder,
    ) -> Result<Tensor> {
        let (b, c, t) = input.dims3()?;
        if c != self.in_chans {
            return Err(Error::InvalidInput(format!(
                "DiT: model input has {c} channels, expected {}",
                self.in_chans
            )));
        }
        if ctx.batch() != b || ctx.kv.len() != 2 * self.in_blocks.len() + 1 {
            return Err(Error::InvalidInput(format!(
                "DiT: the prepared context has batch {}, the latent batch is {b}",
                ctx.batch()
            )));
        }

        // Linear inputs are made contiguous: candle 0.11's CPU matmul gives wrong results for a
        // transposed lhs against the broadcast weight that `Linear` uses for non-contiguous 3-D input.
        let x = self.patch_embed.forward(
            &input
                .to_device(&self.device)?
                .to_dtype(self.dtype)?
                .transpose(1, 2)?
                .contiguous()?,
        )?;
        rec.record(|| "patch_embed".into(), &x);

        let t_freq = self
            .timestep_features
            .forward(&batch_timesteps(&timesteps.to_device(&self.device)?, b)?)?;
        rec.record(|| "t_freq".into(), &t_freq);
        let t_emb = self.time_embed.forward(&t_freq.to_dtype(self.dtype)?)?;
        rec.record(|| "time_embed".into(), &t_emb);
        let time_token = t_emb.silu()?;
        rec.record(|| "time_token".into(), &time_token);
        let time_ada_final = self.time_ada_final.forward(&time_token)?;
        rec.record(|| "time_ada_final".into(), &time_ada_final);
        let time_ada = self.time_ada.forward(&time_token)?;
        rec.record(|| "time_ada".into(), &time_ada);

        let rope = self.rope.get(t)?;
        if rec.is_on() {
            rec.record(
                || "rope_cos".into(),
                &Tensor::cat(&[&rope.cos, &rope.cos], 1)?,
            );
            rec.record(
                || "rope_sin".into(),
                &Tensor::cat(&[&rope.sin, &rope.sin], 1)?,
            );
        }
        let cond = Conditioning {
            time_token,
            time_ada,
            context: ctx.context.clone(),
            context_bias: ctx.bias.clone(),
            rope,
        };

        let mut control: Vec<Tensor> = match controlnet_skips {
            Some(s) if s.len() != self.out_blocks.len() => {
                return Err(Error::InvalidInput(format!(
                    "DiT: {} ControlNet skips given, the model has {} out blocks",
                    s.len(),
                    self.out_blocks.len()
                )))
            }
            Some(s) => s.to_vec(),
            None => Vec::new(),
        };

        let mut x = x;
        let mut kv = ctx.kv.iter();
        let mut skips = Vec::with_capacity(self.in_blocks.len());
        for blk in &self.in_blocks {
            x = blk.forward_cached(&x, None, &cond, kv.next(), rec)?;
            skips.push(x.clone());
        }
        x = self
            .mid_block
            .forward_cached(&x, None, &cond, kv.next(), rec)?;
        for blk in &self.out_blocks {
            let skip = match (skips.pop(), control.pop()) {
                (Some(s), Some(c)) => Some((s + c.to_dtype(self.dtype)?)?),
                (s, _) => s,
            };
            x = blk.forward_cached(&x, skip.as_ref(), &cond, kv.next(), rec)?;
        }
        self.final_block.forward(&x, &time_ada_final, rec)
    }
}
