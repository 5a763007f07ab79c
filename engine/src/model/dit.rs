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
pub mod stem;

use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;

use super::linear::{self, param, Linear};

pub use self::attention::{rope_inv_freq, CrossKv, KeyBias, Rope, RopeCache};
pub use self::block::TimestepFeatures;
pub use self::block::{BlockDims, Conditioning, DitBlock, FinalBlock, Mlp2};
pub use self::config::{DitConfig, ImgSize};
pub use self::stem::{DitStem, PreparedContext};
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

    /// Runs `f` with the caller's recorder, or with one that records nothing.
    pub fn or_off<R>(rec: Option<&mut Recorder<'_>>, f: impl FnOnce(&mut Recorder<'_>) -> R) -> R {
        match rec {
            Some(rec) => f(rec),
            None => f(&mut Recorder::off()),
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
        self.model.stem.dtype()
    }

    /// Embeds the text context once per job: `context_embed`, the key-padding bias and every
    /// block's cross-attention keys/values, none of which depend on the latent or the timestep.
    /// `context`: `(B, L, context_dim)`; `context_mask`: `(B, L)`, non-zero = attend.
    pub fn prepare_context(
        &self,
        context: &Tensor,
        context_mask: &Tensor,
        rec: Option<&mut Recorder>,
    ) -> Result<PreparedContext> {
        Recorder::or_off(rec, |rec| {
            self.model.prepare_context(context, context_mask, rec)
        })
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
        let dtype = self.model.stem.dtype();
        let dev = self.model.stem.device();
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

    /// Predicted v `(B, out_chans, T)`, in the model dtype, for an input from
    /// [`Self::prepare_input`] and a context from [`Self::prepare_context`].
    ///
    /// `timesteps`: `(B,)`, `(1,)` or 0-d, any numeric dtype. `controlnet_skips`: one per out
    /// block, added to the long skips (consumed LIFO like the in-block skips). `rec` receives
    /// the named intermediates of `dit/debug.safetensors` (parity checks only).
    pub fn forward(
        &self,
        input: &Tensor,
        timesteps: &Tensor,
        context: &PreparedContext,
        controlnet_skips: Option<&[Tensor]>,
        rec: Option<&mut Recorder>,
    ) -> Result<Tensor> {
        Recorder::or_off(rec, |rec| {
            self.model
                .forward(input, timesteps, context, controlnet_skips, rec)
        })
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

/// `UDiT` with the EzAudio feature set (see [`DitConfig::validate`]).
struct Udit {
    stem: DitStem,
    time_ada_final: Linear,
    in_blocks: Vec<DitBlock>,
    mid_block: DitBlock,
    out_blocks: Vec<DitBlock>,
    final_block: FinalBlock,
}

impl Udit {
    fn new(cfg: &DitConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.embed_dim;
        let dims = BlockDims::from_config(cfg);
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
            stem: DitStem::new(cfg, &vb)?,
            time_ada_final: linear::linear(d, 2 * d, vb.pp("time_ada_final"))?,
            in_blocks,
            mid_block,
            out_blocks,
            final_block: FinalBlock::new(d, cfg.latent_channels(), vb.pp("final_block"))?,
        })
    }

    fn prepare_context(
        &self,
        context: &Tensor,
        context_mask: &Tensor,
        rec: &mut Recorder,
    ) -> Result<PreparedContext> {
        let blocks = self
            .in_blocks
            .iter()
            .chain(std::iter::once(&self.mid_block))
            .chain(&self.out_blocks);
        self.stem
            .prepare_context(context, context_mask, blocks, "DiT", rec)
    }

    fn forward(
        &self,
        input: &Tensor,
        timesteps: &Tensor,
        ctx: &PreparedContext,
        controlnet_skips: Option<&[Tensor]>,
        rec: &mut Recorder,
    ) -> Result<Tensor> {
        let (b, _, t) = input.dims3()?;
        if ctx.batch() != b || ctx.kv.len() != 2 * self.in_blocks.len() + 1 {
            return Err(Error::InvalidInput(format!(
                "DiT: the prepared context has batch {}, the latent batch is {b}",
                ctx.batch()
            )));
        }
        let x = self.stem.tokens(input, "DiT", rec)?;
        let time = self.stem.time(timesteps, b, rec)?;
        let time_ada_final = self.time_ada_final.forward(&time.time_token)?;
        rec.record(|| "time_ada_final".into(), &time_ada_final);

        let rope = self.stem.rope(t)?;
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
            time_token: time.time_token,
            time_ada: time.time_ada,
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
                (Some(s), Some(c)) => Some((s + c.to_dtype(self.stem.dtype())?)?),
                (s, _) => s,
            };
            x = blk.forward_cached(&x, skip.as_ref(), &cond, kv.next(), rec)?;
        }
        self.final_block.forward(&x, &time_ada_final, rec)
    }
}
