//! The front end the UDiT and its ControlNet share (same keys in both checkpoints): the per-frame
//! patch embedding of the MaskDiT input, the timestep embedding with the shared adaLN
//! projection `time_ada`, the text-context embedding with its per-job preparation, and the RoPE
//! tables.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use super::attention::{CrossKv, KeyBias, Rope, RopeCache};
use super::block::{DitBlock, Mlp2, TimestepFeatures, TIME_FREQ_DIM};
use super::{batch_timesteps, DitConfig, Recorder};
use crate::error::{Error, Result};
use crate::model::linear::{self, compute_dtype, param, Linear};

/// The text side of a job, from [`DitStem::prepare_context`]: reused by every sampling step
/// (the cross-attention keys/values are a constant of the job).
#[derive(Debug, Clone)]
pub struct PreparedContext {
    /// `context_embed(context)`, `(B, L, D)`.
    pub context: Tensor,
    /// Additive key-padding bias `(B, 1, 1, L)` (with its host rows on the CPU).
    pub bias: KeyBias,
    /// Cross-attention keys/values of the blocks, in the order they were prepared for.
    pub kv: Vec<CrossKv>,
}

impl PreparedContext {
    pub fn batch(&self) -> usize {
        self.context.dims().first().copied().unwrap_or(0)
    }
}

/// The timestep side of one forward: `SiLU(t_emb)` and its shared `time_ada` projection.
pub struct TimeConditioning {
    /// SiLU(t_emb), `(B, D)`.
    pub time_token: Tensor,
    /// `time_ada(time_token)`, `(B, 6D)`.
    pub time_ada: Tensor,
}

pub struct DitStem {
    /// `patch_embed.proj`: a kernel-1 Conv1d, applied as a Linear over channels so the tokens
    /// come out as `(B, T, D)` directly.
    patch_embed: Linear,
    timestep_features: TimestepFeatures,
    time_embed: Mlp2,
    time_ada: Linear,
    context_embed: Mlp2,
    rope: RopeCache,
    in_chans: usize,
    context_dim: usize,
    dtype: DType,
    device: Device,
}

impl DitStem {
    pub fn new(cfg: &DitConfig, vb: &VarBuilder) -> Result<Self> {
        let d = cfg.embed_dim;
        let context_dim = cfg.context_dim.unwrap_or(d);
        let pw = param(vb, (d, cfg.in_chans, 1), "patch_embed.proj.weight")?;
        let pb = param(vb, d, "patch_embed.proj.bias")?;
        Ok(Self {
            patch_embed: Linear::from_tensors(pw.squeeze(2)?, Some(pb)),
            timestep_features: TimestepFeatures::new(vb.device())?,
            time_embed: Mlp2::new(TIME_FREQ_DIM, d, vb.pp("time_embed.mlp"))?,
            time_ada: linear::linear(d, 6 * d, vb.pp("time_ada"))?,
            context_embed: Mlp2::new(context_dim, d, vb.pp("context_embed"))?,
            rope: RopeCache::new(cfg.head_dim(), compute_dtype(vb), vb.device()),
            in_chans: cfg.in_chans,
            context_dim,
            dtype: compute_dtype(vb),
            device: vb.device().clone(),
        })
    }

    /// The dtype activations use (`model::linear::compute_dtype`).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `(B, in_chans, T)` MaskDiT input -> tokens `(B, T, D)`. `who` names the model in errors.
    pub fn tokens(&self, input: &Tensor, who: &str, rec: &mut Recorder) -> Result<Tensor> {
        let (_, c, _) = input.dims3()?;
        if c != self.in_chans {
            return Err(Error::InvalidInput(format!(
                "{who}: input has {c} channels, expected {} (the MaskDiT-prepared input)",
                self.in_chans
            )));
        }
        let input = input.to_device(&self.device)?.to_dtype(self.dtype)?;
        let x = self.patch_embed.forward(&input.transpose(1, 2)?)?;
        rec.record(|| "patch_embed".into(), &x);
        Ok(x)
    }

    /// The timestep embedding for batch `b` (`timesteps`: 0-d, `(1,)` or `(B,)`).
    pub fn time(
        &self,
        timesteps: &Tensor,
        b: usize,
        rec: &mut Recorder,
    ) -> Result<TimeConditioning> {
        let t = batch_timesteps(&timesteps.to_device(&self.device)?, b)?;
        let t_freq = self.timestep_features.forward(&t)?;
        rec.record(|| "t_freq".into(), &t_freq);
        let t_emb = self.time_embed.forward(&t_freq.to_dtype(self.dtype)?)?;
        rec.record(|| "time_embed".into(), &t_emb);
        let time_token = t_emb.silu()?;
        rec.record(|| "time_token".into(), &time_token);
        let time_ada = self.time_ada.forward(&time_token)?;
        rec.record(|| "time_ada".into(), &time_ada);
        Ok(TimeConditioning {
            time_token,
            time_ada,
        })
    }

    /// RoPE tables for `len` tokens (cached per length).
    pub fn rope(&self, len: usize) -> Result<Rope> {
        self.rope.get(len)
    }

    /// Embeds the text context once per job: `context_embed`, the key-padding bias and the
    /// cross-attention keys/values of `blocks`, none of which depend on the latent or the
    /// timestep. `context`: `(B, L, context_dim)`; `context_mask`: `(B, L)`, non-zero = attend.
    pub fn prepare_context<'a>(
        &self,
        context: &Tensor,
        context_mask: &Tensor,
        blocks: impl Iterator<Item = &'a DitBlock>,
        who: &str,
        rec: &mut Recorder,
    ) -> Result<PreparedContext> {
        let (b, lc) = match context.dims() {
            [b, lc, cd] if *cd == self.context_dim => (*b, *lc),
            dims => {
                return Err(Error::InvalidInput(format!(
                    "{who}: context must be (B, L, {}), got {dims:?}",
                    self.context_dim
                )))
            }
        };
        if context_mask.dims() != [b, lc] {
            return Err(Error::InvalidInput(format!(
                "{who}: context_mask must be ({b}, {lc}), got {:?}",
                context_mask.dims()
            )));
        }
        let context = context.to_device(&self.device)?.to_dtype(self.dtype)?;
        let context = self.context_embed.forward(&context)?;
        rec.record(|| "context_embed".into(), &context);
        let bias = KeyBias::from_mask(&context_mask.to_device(&self.device)?, self.dtype)?;
        let kv = blocks
            .map(|blk| blk.cross_kv(&context))
            .collect::<Result<Vec<_>>>()?;
        Ok(PreparedContext { context, bias, kv })
    }
}
