//! Embedders and blocks of the UDiT: time/context embedding, adaLN-SOLA-bias, the DiT block
//! (self-attention, cross-attention, GEGLU) with its optional U-Net skip input, and the final block.

use candle_core::{DType, Module, Tensor, D};
use candle_nn::{Conv1d, Conv1dConfig, VarBuilder};

use super::attention::{Attention, CrossKv, KeyBias, LayerNorm, Rope};
use super::Recorder;
use crate::error::{Error, Result};
use crate::kernels::fused;
use crate::model::linear::{self, param, Linear};

/// Width of the sinusoidal timestep features (`frequency_embedding_size`).
pub const TIME_FREQ_DIM: usize = 256;

/// `timestep_embedding(t, 256)`: `cat([cos(t f), sin(t f)])` with `f_k = exp(-ln(1e4) k / 128)`.
/// The frequency table is built once per model.
#[derive(Debug, Clone)]
pub struct TimestepFeatures {
    /// `(1, 128)` f32.
    freqs: Tensor,
}

impl TimestepFeatures {
    pub fn new(device: &candle_core::Device) -> Result<Self> {
        let half = TIME_FREQ_DIM / 2;
        // The reference rounds each step to f32: (-ln(1e4) as f32) * k, then / half, then exp.
        let c = -(10000f64.ln()) as f32;
        let freqs: Vec<f32> = (0..half)
            .map(|k| ((c * k as f32) / half as f32) as f64)
            .map(|e| e.exp() as f32)
            .collect();
        Ok(Self {
            freqs: Tensor::from_vec(freqs, (1, half), device)?,
        })
    }

    /// `t`: `(B,)`. Returns `(B, 256)` f32 (the reference builds it in float32 whatever the
    /// model dtype).
    pub fn forward(&self, t: &Tensor) -> Result<Tensor> {
        let args = t
            .to_dtype(DType::F32)?
            .unsqueeze(1)?
            .broadcast_mul(&self.freqs)?;
        Ok(Tensor::cat(&[args.cos()?, args.sin()?], D::Minus1)?)
    }
}

/// `Linear -> SiLU -> Linear`, the shape of `TimestepEmbedder.mlp` (keys `0`, `2`) and of
/// `context_embed` (keys `0`, `2`).
#[derive(Debug, Clone)]
pub struct Mlp2 {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp2 {
    pub fn new(in_dim: usize, dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: linear::linear(in_dim, dim, vb.pp("0"))?,
            fc2: linear::linear(dim, dim, vb.pp("2"))?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.fc2.forward(&self.fc1.forward(x)?.silu()?)?)
    }
}

/// adaLN-SOLA-bias: `(time_ada + lora_b(lora_a(time_token)) * alpha/r).reshape(B, 6, D) + table`.
/// Rows: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp.
#[derive(Debug, Clone)]
pub struct AdaLn {
    lora_a: Linear,
    lora_b: Linear,
    scale_shift_table: Tensor,
    scaling: f64,
}

impl AdaLn {
    pub fn new(dim: usize, rank: usize, scaling: f64, vb: VarBuilder) -> Result<Self> {
        // The LoRA inner width is 6r: one rank-r factor per modulation row.
        Ok(Self {
            lora_a: linear::linear_no_bias(dim, 6 * rank, vb.pp("lora_a"))?,
            lora_b: linear::linear_no_bias(6 * rank, 6 * dim, vb.pp("lora_b"))?,
            scale_shift_table: param(&vb, (6, dim), "scale_shift_table")?,
            scaling,
        })
    }

    /// `time_token`: SiLU(t_emb) `(B, D)`; `time_ada`: the shared `(B, 6D)` projection.
    pub fn forward(&self, time_token: &Tensor, time_ada: &Tensor) -> Result<Tensor> {
        let (b, six_d) = time_ada.dims2()?;
        let lora = (self.lora_b.forward(&self.lora_a.forward(time_token)?)? * self.scaling)?;
        let ada = (time_ada + lora)?.reshape((b, 6, six_d / 6))?;
        Ok(ada.broadcast_add(&self.scale_shift_table.unsqueeze(0)?)?)
    }
}

/// `FeedForward` with GEGLU: `net.0.proj` (D -> 2 inner), `h * gelu_erf(gate)`, `net.2` (inner -> D).
#[derive(Debug, Clone)]
pub struct FeedForward {
    proj_in: Linear,
    proj_out: Linear,
    inner: usize,
}

impl FeedForward {
    pub fn new(dim: usize, inner: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            proj_in: linear::linear(dim, 2 * inner, vb.pp("net.0.proj"))?,
            proj_out: linear::linear(inner, dim, vb.pp("net.2"))?,
            inner,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.proj_in.forward(x)?;
        if fused::applies(&h) {
            return Ok(self.proj_out.forward(&fused::geglu(&h)?)?);
        }
        // First half is the value, second half the gate (torch `chunk(2, -1)`).
        let value = h.narrow(D::Minus1, 0, self.inner)?;
        let gate = h.narrow(D::Minus1, self.inner, self.inner)?.gelu_erf()?;
        Ok(self.proj_out.forward(&(value * gate)?)?)
    }
}

/// Everything a block needs besides its input, computed once per forward.
#[derive(Debug, Clone)]
pub struct Conditioning {
    /// SiLU(t_emb), `(B, D)`.
    pub time_token: Tensor,
    /// Shared `time_ada(time_token)`, `(B, 6D)`.
    pub time_ada: Tensor,
    /// Embedded text context (before each block's `norm_context`), `(B, L, D)`.
    pub context: Tensor,
    /// Additive key-padding bias for cross-attention, `(B, 1, 1, L)`.
    pub context_bias: KeyBias,
    /// RoPE tables for the latent length.
    pub rope: Rope,
}

/// EzAudio's gated residual `x + y * (1 - gate)` with a `(B, 1, D)` gate (not adaLN-Zero's `gate`).
fn gated_residual(x: &Tensor, y: &Tensor, gate: &Tensor) -> Result<Tensor> {
    if fused::applies(x) && fused::applies(y) {
        return Ok(fused::gated_residual(x, y, &fused::host_rows(gate)?)?);
    }
    Ok((x + y.broadcast_mul(&gate.affine(-1.0, 1.0)?)?)?)
}

/// Long-skip input of an out block: `skip_linear(skip_norm(cat([x, skip], -1)))`.
#[derive(Debug, Clone)]
struct SkipMerge {
    norm: LayerNorm,
    linear: Linear,
}

/// `DiTBlock` (time fusion `ada_sola_bias`, context fusion `cross`).
#[derive(Debug, Clone)]
pub struct DitBlock {
    name: String,
    skip: Option<SkipMerge>,
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    cross_attn: Attention,
    norm_context: LayerNorm,
    norm3: LayerNorm,
    mlp: FeedForward,
    adaln: AdaLn,
}

/// Sizes of one DiT block.
#[derive(Debug, Clone, Copy)]
pub struct BlockDims {
    pub dim: usize,
    pub num_heads: usize,
    pub mlp_inner: usize,
    pub ada_rank: usize,
    pub ada_scaling: f64,
    pub qkv_bias: bool,
}

impl BlockDims {
    /// The block sizes a `model:` config implies (shared by the UDiT and the ControlNet).
    pub fn from_config(cfg: &super::DitConfig) -> Self {
        Self {
            dim: cfg.embed_dim,
            num_heads: cfg.num_heads,
            mlp_inner: cfg.mlp_inner_dim(),
            ada_rank: cfg.ada_sola_rank.unwrap_or(1),
            ada_scaling: cfg.ada_scaling(),
            qkv_bias: cfg.qkv_bias,
        }
    }
}

impl DitBlock {
    /// `name`: the block's path (e.g. `in_blocks.3`), used to label debug recordings.
    /// `with_skip`: out blocks take the long skip through `skip_norm` / `skip_linear`.
    pub fn new(dims: &BlockDims, with_skip: bool, name: &str, vb: VarBuilder) -> Result<Self> {
        let d = dims.dim;
        let skip = if with_skip {
            Some(SkipMerge {
                norm: LayerNorm::new(2 * d, vb.pp("skip_norm"))?,
                linear: linear::linear(2 * d, d, vb.pp("skip_linear"))?,
            })
        } else {
            None
        };
        Ok(Self {
            name: name.to_string(),
            skip,
            norm1: LayerNorm::new(d, vb.pp("norm1"))?,
            attn: Attention::new(d, d, dims.num_heads, dims.qkv_bias, true, vb.pp("attn"))?,
            norm2: LayerNorm::new(d, vb.pp("norm2"))?,
            cross_attn: Attention::new(
                d,
                d,
                dims.num_heads,
                dims.qkv_bias,
                false,
                vb.pp("cross_attn"),
            )?,
            norm_context: LayerNorm::new(d, vb.pp("norm_context"))?,
            norm3: LayerNorm::new(d, vb.pp("norm3"))?,
            mlp: FeedForward::new(d, dims.mlp_inner, vb.pp("mlp"))?,
            adaln: AdaLn::new(d, dims.ada_rank, dims.ada_scaling, vb.pp("adaln"))?,
        })
    }

    pub fn has_skip(&self) -> bool {
        self.skip.is_some()
    }

    /// Cross-attention keys/values of this block for the embedded context `(B, L, D)`
    /// (`norm_context` applied here). Constant over the sampling steps of a job.
    pub fn cross_kv(&self, context: &Tensor) -> Result<CrossKv> {
        self.cross_attn
            .cross_kv(&self.norm_context.forward(context)?)
    }

    /// `x`: `(B, T, D)`; `skip`: the matching in-block output (out blocks only).
    pub fn forward(
        &self,
        x: &Tensor,
        skip: Option<&Tensor>,
        cond: &Conditioning,
        rec: &mut Recorder,
    ) -> Result<Tensor> {
        self.forward_cached(x, skip, cond, None, rec)
    }

    /// [`Self::forward`] with this block's cross-attention keys/values from [`Self::cross_kv`]
    /// (`None`: computed here from `cond.context`).
    pub fn forward_cached(
        &self,
        x: &Tensor,
        skip: Option<&Tensor>,
        cond: &Conditioning,
        kv: Option<&CrossKv>,
        rec: &mut Recorder,
    ) -> Result<Tensor> {
        let mut x = x.clone();
        if let Some(merge) = &self.skip {
            let skip = skip.ok_or_else(|| {
                Error::InvalidInput(format!(
                    "DiT {}: out block called without its skip input",
                    self.name
                ))
            })?;
            let cat = Tensor::cat(&[&x, skip], D::Minus1)?;
            rec.record(|| format!("{}.skip_cat", self.name), &cat);
            let cat = merge.norm.forward(&cat)?;
            rec.record(|| format!("{}.skip_norm", self.name), &cat);
            x = merge.linear.forward(&cat)?;
            rec.record(|| format!("{}.skip_linear", self.name), &x);
        }

        let ada = self.adaln.forward(&cond.time_token, &cond.time_ada)?;
        rec.record(|| format!("{}.adaln", self.name), &ada);
        let row = |i: usize| ada.narrow(1, i, 1);
        let (shift_msa, scale_msa, gate_msa) = (row(0)?, row(1)?, row(2)?);
        let (shift_mlp, scale_mlp, gate_mlp) = (row(3)?, row(4)?, row(5)?);

        // Self-attention, gated by (1 - gate): EzAudio's convention, not adaLN-Zero's `gate`.
        let h = self.norm1.forward_film(&x, &shift_msa, &scale_msa)?;
        let attn = self.attn.forward(&h, None, None, Some(&cond.rope))?;
        rec.record(|| format!("{}.attn", self.name), &attn);
        x = gated_residual(&x, &attn, &gate_msa)?;

        // Cross-attention on the text: no modulation, no gate.
        let computed;
        let kv = match kv {
            Some(kv) => kv,
            None => {
                computed = self.cross_kv(&cond.context)?;
                &computed
            }
        };
        let cross =
            self.cross_attn
                .forward_kv(&self.norm2.forward(&x)?, kv, Some(&cond.context_bias))?;
        rec.record(|| format!("{}.cross_attn", self.name), &cross);
        x = (x + cross)?;

        let h = self.norm3.forward_film(&x, &shift_mlp, &scale_mlp)?;
        let mlp = self.mlp.forward(&h)?;
        rec.record(|| format!("{}.mlp", self.name), &mlp);
        x = gated_residual(&x, &mlp, &gate_mlp)?;
        rec.record(|| self.name.clone(), &x);
        Ok(x)
    }
}

/// `FinalBlock`: adaLN-modulated LayerNorm, `Linear(D, out_chans)`, back to `(B, C, T)`, then a
/// 3-tap `Conv1d(out_chans, out_chans)`.
#[derive(Debug, Clone)]
pub struct FinalBlock {
    norm: LayerNorm,
    linear: Linear,
    final_layer: Conv1d,
}

impl FinalBlock {
    pub fn new(dim: usize, out_chans: usize, vb: VarBuilder) -> Result<Self> {
        let conv_w = param(&vb, (out_chans, out_chans, 3), "final_layer.weight")?;
        let conv_b = param(&vb, out_chans, "final_layer.bias")?;
        let cfg = Conv1dConfig {
            padding: 1,
            ..Default::default()
        };
        Ok(Self {
            norm: LayerNorm::new(dim, vb.pp("norm"))?,
            linear: linear::linear(dim, out_chans, vb.pp("linear"))?,
            final_layer: Conv1d::new(conv_w, Some(conv_b), cfg),
        })
    }

    /// `x`: `(B, T, D)`; `time_ada_final`: `(B, 2D)` = `[shift | scale]`. Returns `(B, C, T)`.
    pub fn forward(
        &self,
        x: &Tensor,
        time_ada_final: &Tensor,
        rec: &mut Recorder,
    ) -> Result<Tensor> {
        let (b, two_d) = time_ada_final.dims2()?;
        let ada = time_ada_final.reshape((b, 2, two_d / 2))?;
        let h = self
            .norm
            .forward_film(x, &ada.narrow(1, 0, 1)?, &ada.narrow(1, 1, 1)?)?;
        let h = self.linear.forward(&h)?;
        rec.record(|| "final_block.linear".into(), &h);
        let h = self
            .final_layer
            .forward(&h.transpose(1, 2)?.contiguous()?)?;
        rec.record(|| "final_block".into(), &h);
        Ok(h)
    }
}
