//! Multi-head attention of the DiT blocks: per-head LayerNorm on q and k, NeoX-style RoPE on
//! self-attention, key-padding mask on cross-attention.

use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::VarBuilder;

use crate::error::Result;
use crate::kernels::fused;
use crate::model::linear::{self, param, Linear};

/// `nn.LayerNorm` with affine weight and bias over the last dim.
///
/// The input is centred before candle's fused kernel: that kernel takes the variance as
/// E[x²] - E[x]², which loses precision when a row's mean is large against its spread;
/// after centring it is exact up to rounding, like PyTorch's two-pass moments.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
    /// `weight`/`bias` as host f32 for the fused CPU kernel (f32 CPU models only).
    host: Option<Arc<(Vec<f32>, Vec<f32>)>>,
}

impl LayerNorm {
    pub const EPS: f32 = 1e-5;

    pub fn new(size: usize, vb: VarBuilder) -> Result<Self> {
        let weight = param(&vb, size, "weight")?;
        let bias = param(&vb, size, "bias")?;
        let host = if fused::applies(&weight) {
            Some(Arc::new((
                fused::host_rows(&weight)?,
                fused::host_rows(&bias)?,
            )))
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            eps: Self::EPS,
            host,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(host) = self.fused_for(x) {
            return Ok(fused::layer_norm(x, &host.0, &host.1, self.eps, None)?);
        }
        self.forward_unfused(x)
    }

    /// `norm(x) * (1 + scale) + shift` with `(B, 1, D)` modulation rows (adaLN).
    pub fn forward_film(&self, x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
        if let Some(host) = self.fused_for(x) {
            let (shift, scale) = (fused::host_rows(shift)?, fused::host_rows(scale)?);
            let film = fused::Film {
                shift: &shift,
                scale: &scale,
            };
            return Ok(fused::layer_norm(
                x,
                &host.0,
                &host.1,
                self.eps,
                Some(film),
            )?);
        }
        let y = self.forward_unfused(x)?;
        Ok(y.broadcast_mul(&(scale + 1.0)?)?.broadcast_add(shift)?)
    }

    fn fused_for(&self, x: &Tensor) -> Option<&(Vec<f32>, Vec<f32>)> {
        self.host.as_deref().filter(|_| fused::applies(x))
    }

    fn forward_unfused(&self, x: &Tensor) -> Result<Tensor> {
        let x = if x.dtype() == DType::F32 || x.dtype() == DType::F64 {
            x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?
        } else {
            // Half precision: the fused kernel accumulates in f32 already; centring in half would
            // round more than it saves.
            x.contiguous()?
        };
        Ok(candle_nn::ops::layer_norm(
            &x,
            &self.weight,
            &self.bias,
            self.eps,
        )?)
    }
}

/// RoPE tables for one sequence length: `cos`/`sin` of `pos * inv_freq`, shape `(T, head_dim/2)`.
#[derive(Debug, Clone)]
pub struct Rope {
    pub cos: Tensor,
    pub sin: Tensor,
}

/// `1 / 10000^(arange(0, d, 2) / d)` rounded step by step to f32 like the reference's float32
/// formula (the checkpoint's `rotary.inv_freq` buffers hold these values).
pub fn rope_inv_freq(head_dim: usize) -> Vec<f32> {
    (0..head_dim)
        .step_by(2)
        .map(|i| {
            let e = i as f32 / head_dim as f32;
            let p = 10000f64.powf(e as f64) as f32;
            1.0 / p
        })
        .collect()
}

impl Rope {
    /// Tables for positions `0..len`. Angles are formed in f32 exactly as the reference does
    /// (`pos * inv_freq`, one rounding); cos/sin are evaluated in f64 and rounded once.
    pub fn new(len: usize, head_dim: usize, dtype: DType, device: &Device) -> Result<Self> {
        let inv_freq = rope_inv_freq(head_dim);
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for pos in 0..len {
            for &f in &inv_freq {
                let angle = (pos as f32 * f) as f64;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        let cos = Tensor::from_vec(cos, (len, half), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (len, half), device)?.to_dtype(dtype)?;
        Ok(Self { cos, sin })
    }

    /// Rotates `(B, T, H, head_dim)` (contiguous) by position along T.
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::rotary_emb::rope_thd(
            &x.contiguous()?,
            &self.cos,
            &self.sin,
        )?)
    }
}

/// RoPE tables built once per model and sequence length: every step of a job (and every job of
/// the same length) reuses them instead of evaluating `T x head_dim/2` cos/sin pairs per forward.
#[derive(Debug)]
pub struct RopeCache {
    head_dim: usize,
    dtype: DType,
    device: Device,
    tables: parking_lot::Mutex<Vec<(usize, Rope)>>,
}

impl RopeCache {
    /// Lengths kept (a session uses a handful of clip lengths).
    const KEEP: usize = 4;

    pub fn new(head_dim: usize, dtype: DType, device: &Device) -> Self {
        Self {
            head_dim,
            dtype,
            device: device.clone(),
            tables: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// The tables for positions `0..len`.
    pub fn get(&self, len: usize) -> Result<Rope> {
        let mut tables = self.tables.lock();
        if let Some((_, rope)) = tables.iter().find(|(l, _)| *l == len) {
            return Ok(rope.clone());
        }
        let rope = Rope::new(len, self.head_dim, self.dtype, &self.device)?;
        if tables.len() == Self::KEEP {
            tables.remove(0);
        }
        tables.push((len, rope.clone()));
        Ok(rope)
    }
}

/// Additive key-padding bias `(B, 1, 1, L)` from a `(B, L)` mask (non-zero = attend): 0 where
/// attended, the dtype's most negative finite value elsewhere (so a row with no valid key stays
/// finite instead of NaN).
pub fn key_padding_bias(mask: &Tensor, dtype: DType) -> Result<Tensor> {
    let (b, l) = mask.dims2()?;
    let min = match dtype {
        DType::F16 => -65504.0,
        DType::BF16 => -3.3895313892515355e38,
        DType::F64 => f64::MIN,
        _ => f32::MIN as f64,
    };
    let keep = mask.ne(0f64)?.to_dtype(dtype)?;
    // keep * (-min) + min: 0 for keep = 1, min for keep = 0.
    Ok(keep.affine(-min, min)?.reshape((b, 1, 1, l))?)
}

/// The additive key-padding bias `(B, 1, 1, L)` of a job's text, with the same values as host
/// rows when the fused CPU softmax will read them. Built once per job (it lives in the prepared
/// context), so no sampling step copies the bias out of its tensor again; on a GPU only the
/// tensor exists and stays on the device.
#[derive(Debug, Clone)]
pub struct KeyBias {
    pub tensor: Tensor,
    host: Option<Arc<[f32]>>,
}

impl KeyBias {
    pub fn new(tensor: Tensor) -> Result<Self> {
        let host = if fused::applies(&tensor) {
            Some(fused::host_rows(&tensor)?.into())
        } else {
            None
        };
        Ok(Self { tensor, host })
    }

    /// From a `(B, L)` mask (non-zero = attend), see [`key_padding_bias`].
    pub fn from_mask(mask: &Tensor, dtype: DType) -> Result<Self> {
        Self::new(key_padding_bias(mask, dtype)?)
    }

    /// The host rows, when prepared (an f32 bias on the CPU).
    pub fn host(&self) -> Option<&[f32]> {
        self.host.as_deref()
    }
}

/// `Attention` of `src/models/utils/attention.py`: keys `to_q`, `to_k`, `to_v`, `norm_q`,
/// `norm_k`, `proj` (and `rotary.inv_freq` for self-attention with RoPE).
#[derive(Debug, Clone)]
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    norm_q: LayerNorm,
    norm_k: LayerNorm,
    proj: Linear,
    num_heads: usize,
    head_dim: usize,
    scale: f64,
}

impl Attention {
    /// `rotary`: whether this attention owns a RoPE buffer (self-attention with
    /// `rope_mode: shared`). Its `inv_freq` values are the fixed formula values, so the tables
    /// come from [`Rope::new`]; the buffer is still requested so strict loading accounts for it.
    pub fn new(
        dim: usize,
        kv_dim: usize,
        num_heads: usize,
        qkv_bias: bool,
        rotary: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let head_dim = dim / num_heads;
        let to_q = linear::linear_b(dim, dim, qkv_bias, vb.pp("to_q"))?;
        let to_k = linear::linear_b(kv_dim, dim, qkv_bias, vb.pp("to_k"))?;
        let to_v = linear::linear_b(kv_dim, dim, qkv_bias, vb.pp("to_v"))?;
        let norm_q = LayerNorm::new(head_dim, vb.pp("norm_q"))?;
        let norm_k = LayerNorm::new(head_dim, vb.pp("norm_k"))?;
        let proj = linear::linear(dim, dim, vb.pp("proj"))?;
        if rotary {
            vb.get(head_dim / 2, "rotary.inv_freq")?;
        }
        Ok(Self {
            to_q,
            to_k,
            to_v,
            norm_q,
            norm_k,
            proj,
            num_heads,
            head_dim,
            scale: 1.0 / (head_dim as f64).sqrt(),
        })
    }

    /// Splits `(B, L, H*hd)` into heads `(B, L, H, hd)`.
    fn heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, l, _) = x.dims3()?;
        Ok(x.reshape((b, l, self.num_heads, self.head_dim))?)
    }

    /// `x`: `(B, T, D)` queries. `context`: keys/values `(B, L, kv_dim)`, or `None` for
    /// self-attention. `bias`: additive `(B, 1, 1, L)` mask. `rope`: rotate q and k.
    pub fn forward(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        bias: Option<&KeyBias>,
        rope: Option<&Rope>,
    ) -> Result<Tensor> {
        match context {
            Some(context) => self.forward_kv(x, &self.cross_kv(context)?, bias),
            None => {
                let q = self.norm_q.forward(&self.heads(&self.to_q.forward(x)?)?)?;
                let k = self.norm_k.forward(&self.heads(&self.to_k.forward(x)?)?)?;
                let v = self.heads(&self.to_v.forward(x)?)?;
                let (q, k) = match rope {
                    Some(rope) => (rope.apply(&q)?, rope.apply(&k)?),
                    None => (q, k),
                };
                let kv = CrossKv {
                    k: k.transpose(1, 2)?.contiguous()?,
                    v: v.transpose(1, 2)?.contiguous()?,
                };
                self.attend(&q, &kv, bias)
            }
        }
    }

    /// Keys and values of `context` `(B, L, kv_dim)`, ready for [`Self::forward_kv`]. They depend
    /// only on the context, so a sampler computes them once per job, not once per step.
    pub fn cross_kv(&self, context: &Tensor) -> Result<CrossKv> {
        let k = self
            .norm_k
            .forward(&self.heads(&self.to_k.forward(context)?)?)?;
        let v = self.heads(&self.to_v.forward(context)?)?;
        Ok(CrossKv {
            k: k.transpose(1, 2)?.contiguous()?,
            v: v.transpose(1, 2)?.contiguous()?,
        })
    }

    /// Attention of the queries of `x` `(B, T, D)` over precomputed keys/values (no RoPE).
    pub fn forward_kv(&self, x: &Tensor, kv: &CrossKv, bias: Option<&KeyBias>) -> Result<Tensor> {
        let q = self.norm_q.forward(&self.heads(&self.to_q.forward(x)?)?)?;
        self.attend(&q, kv, bias)
    }

    /// `q`: `(B, T, H, hd)`; `kv`: `(B, H, L, hd)` each. Returns the projected `(B, T, D)`.
    fn attend(&self, q: &Tensor, kv: &CrossKv, bias: Option<&KeyBias>) -> Result<Tensor> {
        let (b, t, _, _) = q.dims4()?;
        // (B, T, H, hd) -> (B, H, T, hd): batched matmuls need the head dims outermost. The
        // 1/sqrt(hd) scale rides on that copy (one pass over q instead of one over the T x L scores).
        let q = q.transpose(1, 2)?.affine(self.scale, 0.0)?;
        let scores = q.matmul(&kv.k.t()?)?;
        let probs = if fused::applies(&scores) && scores.is_contiguous() {
            // `scores` is this function's own fresh tensor: safe to overwrite in place. The bias
            // rows were made host values once per job; only a bias built elsewhere (another
            // dtype than the scores) is converted here.
            let converted;
            let rows = match bias {
                None => None,
                Some(b) => match b.host() {
                    Some(rows) => Some(rows),
                    None => {
                        converted = fused::host_rows(&b.tensor)?;
                        Some(converted.as_slice())
                    }
                },
            };
            fused::softmax_last_dim_in_place(&scores, rows)?;
            scores
        } else {
            let scores = match bias {
                Some(bias) => scores.broadcast_add(&bias.tensor)?,
                None => scores,
            };
            candle_nn::ops::softmax_last_dim(&scores)?
        };
        let out = probs.matmul(&kv.v)?.transpose(1, 2)?.reshape((
            b,
            t,
            self.num_heads * self.head_dim,
        ))?;
        Ok(self.proj.forward(&out)?)
    }
}

/// Keys and values of one attention, `(B, H, L, head_dim)` contiguous each.
#[derive(Debug, Clone)]
pub struct CrossKv {
    pub k: Tensor,
    pub v: Tensor,
}
