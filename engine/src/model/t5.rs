//! The FLAN-T5 text encoder (Hugging Face `T5EncoderModel`), written for EzAudio's use:
//! `T5EncoderModel(input_ids, attention_mask).last_hidden_state`.
//!
//! T5 specifics that differ from a textbook transformer: RMS layer norm without bias, pre-norm
//! residual blocks, no embedding scaling, attention *without* the `1/sqrt(d_kv)` factor (T5 folds
//! it into its initialisation), and a learned relative position bias that block 0 computes once
//! and every block adds to its attention scores. Padded keys get `f32::MIN` added, as in HF eager
//! attention. The tokenizer lives in [`super::text`] and is re-exported here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, VarBuilder};

use super::linear::{compute_dtype, linear_no_bias, param, Linear};
use crate::kernels::fused;

use crate::error::{Error, Result};
use crate::weights::Checkpoint;

pub use super::text::TextTokenizer;

mod config;
pub use config::{Activation, T5Config};

/// Names under which published T5 files store the token embedding (tied, so often both).
const EMBED_NAMES: [&str; 2] = ["shared.weight", "encoder.embed_tokens.weight"];

/// HF `_relative_position_bucket` with `bidirectional=True`, including its float32 `log`, whose
/// truncation decides the bucket at exact powers (e.g. distance 16 with 32 buckets).
pub fn relative_position_bucket(
    relative_position: i64,
    num_buckets: usize,
    max_distance: usize,
) -> u32 {
    let half = (num_buckets / 2) as i64;
    let mut bucket = if relative_position > 0 { half } else { 0 };
    let distance = relative_position.abs();
    let max_exact = half / 2;
    if distance < max_exact {
        bucket += distance;
    } else {
        let ratio = distance as f32 / max_exact as f32;
        let scale = (max_distance as f64 / max_exact as f64).ln() as f32;
        let large = max_exact + (ratio.ln() / scale * (half - max_exact) as f32) as i64;
        bucket += large.min(half - 1);
    }
    bucket as u32
}

/// T5's layer norm: `x / sqrt(mean(x^2) + eps) * w` (no mean, no bias; f32 inside the kernel).
struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: param(&vb, size, "weight")?,
            eps: eps as f32,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(x, &self.weight, self.eps)?)
    }
}

struct SelfAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    num_heads: usize,
    d_kv: usize,
}

impl SelfAttention {
    fn new(cfg: &T5Config, vb: VarBuilder) -> Result<Self> {
        let inner = cfg.num_heads * cfg.d_kv;
        Ok(Self {
            q: linear_no_bias(cfg.d_model, inner, vb.pp("q"))?,
            k: linear_no_bias(cfg.d_model, inner, vb.pp("k"))?,
            v: linear_no_bias(cfg.d_model, inner, vb.pp("v"))?,
            o: linear_no_bias(inner, cfg.d_model, vb.pp("o"))?,
            num_heads: cfg.num_heads,
            d_kv: cfg.d_kv,
        })
    }

    /// `bias`: (B or 1, H, L, L) f32, position bias with the key-padding mask already added.
    fn forward(&self, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let (b, l, _) = x.dims3()?;
        let heads = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((b, l, self.num_heads, self.d_kv))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = heads(self.q.forward(x)?)?;
        let k = heads(self.k.forward(x)?)?;
        let v = heads(self.v.forward(x)?)?;
        // No 1/sqrt(d_kv): T5 is trained without it.
        let scores = q
            .matmul(&k.t()?)?
            .to_dtype(DType::F32)?
            .broadcast_add(bias)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(x.dtype())?;
        let out =
            weights
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((b, l, self.num_heads * self.d_kv))?;
        Ok(self.o.forward(&out)?)
    }
}

/// `DenseReluDense`: `wo(act(wi x))`, or gated `wo(act(wi_0 x) * wi_1 x)`.
struct FeedForward {
    wi: Linear,
    /// The linear (ungated) half of a gated feed-forward.
    wi_1: Option<Linear>,
    wo: Linear,
    act: Activation,
}

impl FeedForward {
    fn new(cfg: &T5Config, vb: VarBuilder) -> Result<Self> {
        let (act, gated) = cfg.activation().map_err(Error::InvalidInput)?;
        let (wi, wi_1) = if gated {
            (
                linear_no_bias(cfg.d_model, cfg.d_ff, vb.pp("wi_0"))?,
                Some(linear_no_bias(cfg.d_model, cfg.d_ff, vb.pp("wi_1"))?),
            )
        } else {
            (linear_no_bias(cfg.d_model, cfg.d_ff, vb.pp("wi"))?, None)
        };
        Ok(Self {
            wi,
            wi_1,
            wo: linear_no_bias(cfg.d_ff, cfg.d_model, vb.pp("wo"))?,
            act,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let a = self.wi.forward(x)?;
        let h = match &self.wi_1 {
            Some(wi_1) => {
                let b = wi_1.forward(x)?;
                match self.act.fused() {
                    Some(act) if fused::applies(&a) && fused::applies(&b) => {
                        fused::gated(&a, &b, act)?
                    }
                    _ => (self.act.apply(&a)? * b)?,
                }
            }
            None => self.act.apply(&a)?,
        };
        Ok(self.wo.forward(&h)?)
    }
}

struct Block {
    attn_norm: RmsNorm,
    attn: SelfAttention,
    ff_norm: RmsNorm,
    ff: FeedForward,
}

impl Block {
    fn new(cfg: &T5Config, vb: VarBuilder) -> Result<Self> {
        let (l0, l1) = (vb.pp("layer.0"), vb.pp("layer.1"));
        Ok(Self {
            attn_norm: RmsNorm::new(cfg.d_model, cfg.layer_norm_epsilon, l0.pp("layer_norm"))?,
            attn: SelfAttention::new(cfg, l0.pp("SelfAttention"))?,
            ff_norm: RmsNorm::new(cfg.d_model, cfg.layer_norm_epsilon, l1.pp("layer_norm"))?,
            ff: FeedForward::new(cfg, l1.pp("DenseReluDense"))?,
        })
    }

    fn forward(&self, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let x = clamp_f16((x + self.attn.forward(&self.attn_norm.forward(x)?, bias)?)?)?;
        clamp_f16((&x + self.ff.forward(&self.ff_norm.forward(&x)?)?)?)
    }
}

/// HF keeps float16 T5 activations finite by clamping after each residual; other dtypes pass.
fn clamp_f16(x: Tensor) -> Result<Tensor> {
    if x.dtype() != DType::F16 {
        return Ok(x);
    }
    let limit = 65504.0 - 1000.0;
    Ok(x.clamp(-limit, limit)?)
}

pub struct T5Encoder {
    embed: Embedding,
    /// Block 0's `relative_attention_bias`: (num_buckets, num_heads).
    relative_bias: Embedding,
    blocks: Vec<Block>,
    final_norm: RmsNorm,
    num_buckets: usize,
    max_distance: usize,
    d_model: usize,
    vocab_rows: usize,
    /// Activations' dtype (`model::linear::compute_dtype`).
    dtype: DType,
}

impl T5Encoder {
    /// Tensor names as in HF checkpoints; the embedding is read from `shared.weight` or, when a
    /// file lacks it, from its tied alias `encoder.embed_tokens.weight`.
    pub fn new(cfg: &T5Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let embed_name = EMBED_NAMES
            .iter()
            .find(|n| vb.contains_tensor(n))
            .copied()
            .unwrap_or(EMBED_NAMES[0]);
        // Kept in the storage dtype (bf16 halves the 32k-row table); only looked-up rows are
        // converted to the compute dtype.
        let embed = Embedding::new(
            vb.get((cfg.vocab_size, cfg.d_model), embed_name)?,
            cfg.d_model,
        );
        let enc = vb.pp("encoder");
        let relative_bias = Embedding::new(
            param(
                &enc.pp("block.0.layer.0.SelfAttention.relative_attention_bias"),
                (cfg.relative_attention_num_buckets, cfg.num_heads),
                "weight",
            )?,
            cfg.num_heads,
        );
        let blocks = (0..cfg.num_layers)
            .map(|i| Block::new(cfg, enc.pp(format!("block.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed,
            relative_bias,
            blocks,
            final_norm: RmsNorm::new(
                cfg.d_model,
                cfg.layer_norm_epsilon,
                enc.pp("final_layer_norm"),
            )?,
            num_buckets: cfg.relative_attention_num_buckets,
            max_distance: cfg.relative_attention_max_distance,
            d_model: cfg.d_model,
            vocab_rows: cfg.vocab_size,
            dtype: compute_dtype(&vb),
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.d_model
    }

    /// `input_ids`: (B, L) u32/i64/u8; `attention_mask`: (B, L), any numeric dtype, nonzero = real
    /// token. Returns `last_hidden_state` (B, L, d_model) in the model's dtype.
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let mut states = self.run(input_ids, attention_mask, false)?;
        states
            .pop()
            .ok_or_else(|| Error::InvalidInput("empty encoder".into()))
    }

    /// Like HF `output_hidden_states=True`: index 0 the token embeddings, index i the output of
    /// block i-1, except the last entry, which is after `final_layer_norm` (= `last_hidden_state`).
    pub fn forward_hidden_states(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Vec<Tensor>> {
        self.run(input_ids, attention_mask, true)
    }

    /// The relative position bias (num_heads, L, L) of block 0, without any mask.
    pub fn position_bias(&self, len: usize) -> Result<Tensor> {
        let mut buckets = Vec::with_capacity(len * len);
        for query in 0..len as i64 {
            for key in 0..len as i64 {
                buckets.push(relative_position_bucket(
                    key - query,
                    self.num_buckets,
                    self.max_distance,
                ));
            }
        }
        let device = self.embed.embeddings().device();
        let buckets = Tensor::from_vec(buckets, (len, len), device)?;
        Ok(self.relative_bias.forward(&buckets)?.permute((2, 0, 1))?)
    }

    fn run(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        keep_all: bool,
    ) -> Result<Vec<Tensor>> {
        let (b, l) = input_ids.dims2().map_err(|_| {
            Error::InvalidInput(format!(
                "T5 input_ids must be (batch, length), got {:?}",
                input_ids.dims()
            ))
        })?;
        if attention_mask.dims() != [b, l] {
            return Err(Error::InvalidInput(format!(
                "T5 attention_mask {:?} does not match input_ids {:?}",
                attention_mask.dims(),
                input_ids.dims()
            )));
        }
        if b == 0 || l == 0 {
            return Err(Error::InvalidInput("T5 input is empty".into()));
        }
        let ids = self.checked_ids(input_ids)?;
        let device = self.embed.embeddings().device();
        // Additive key mask (B, 1, 1, L): 0 where attended, f32::MIN where padded; added to the
        // bias once, like HF. A fully padded row then scores every key MIN alike (uniform weights).
        let keep = attention_mask.to_device(device)?.ne(0f64)?;
        let zeros = Tensor::zeros((b, l), DType::F32, device)?;
        let min = Tensor::full(f32::MIN, (b, l), device)?;
        let mask = keep.where_cond(&zeros, &min)?.reshape((b, 1, 1, l))?;
        let bias = self
            .position_bias(l)?
            .to_dtype(DType::F32)?
            .unsqueeze(0)?
            .broadcast_add(&mask)?;

        let mut x = self.embed.forward(&ids)?.to_dtype(self.dtype)?;
        let mut states = Vec::new();
        for block in &self.blocks {
            if keep_all {
                states.push(x.clone());
            }
            x = block.forward(&x, &bias)?;
        }
        states.push(self.final_norm.forward(&x)?);
        Ok(states)
    }

    /// Ids as u32, rejecting negative or out-of-vocabulary values with a clear message.
    fn checked_ids(&self, input_ids: &Tensor) -> Result<Tensor> {
        let ids = match input_ids.dtype() {
            DType::U32 => input_ids.clone(),
            DType::I64 => {
                let min = input_ids.min_all()?.to_scalar::<i64>()?;
                if min < 0 {
                    return Err(Error::InvalidInput(format!(
                        "T5 input_ids contain negative id {min}"
                    )));
                }
                input_ids.to_dtype(DType::U32)?
            }
            DType::U8 => input_ids.to_dtype(DType::U32)?,
            other => {
                return Err(Error::InvalidInput(format!(
                    "T5 input_ids must be integers, got {other:?}"
                )))
            }
        };
        let max = ids.max_all()?.to_scalar::<u32>()? as usize;
        if max >= self.vocab_rows {
            return Err(Error::InvalidInput(format!(
                "T5 token id {max} is outside the embedding table ({} rows)",
                self.vocab_rows
            )));
        }
        Ok(ids.to_device(self.embed.embeddings().device())?)
    }
}

/// Loads a Hugging Face T5 folder: `config.json` plus `model.safetensors`, sharded
/// `model.safetensors.index.json`, `pytorch_model.bin` or `pytorch_model.bin.index.json`.
/// Decoder tensors may be present; every encoder tensor of the file must be used.
pub fn load_t5_folder(dir: &Path, dtype: DType, device: &Device) -> Result<(T5Encoder, T5Config)> {
    let cfg = T5Config::from_file(&dir.join("config.json"))?;
    let wanted = |n: &str| !(n.starts_with("decoder.") || n.starts_with("lm_head."));
    let single = dir.join("model.safetensors");
    let st_index = dir.join("model.safetensors.index.json");
    let bin = dir.join("pytorch_model.bin");
    let bin_index = dir.join("pytorch_model.bin.index.json");
    let ckpt = if single.exists() {
        Checkpoint::load_safetensors_filtered(std::slice::from_ref(&single), &single, wanted)?
    } else if st_index.exists() {
        Checkpoint::load_safetensors_filtered(&shard_files(&st_index)?, &st_index, wanted)?
    } else if bin.exists() {
        Checkpoint::load(&bin, None, None)?
    } else if bin_index.exists() {
        let parts = shard_files(&bin_index)?
            .iter()
            .map(|p| Checkpoint::load(p, None, None))
            .collect::<Result<Vec<_>>>()?;
        Checkpoint::merge(&bin_index, parts)?
    } else {
        return Err(Error::weights(
            dir,
            "no T5 weights found (expected model.safetensors, model.safetensors.index.json, \
             pytorch_model.bin or pytorch_model.bin.index.json)",
        ));
    };
    let encoder = T5Encoder::new(&cfg, ckpt.var_builder(dtype, device))?;
    // The decoder half is never asked for. `T5Encoder::new` succeeded, so it took one of the
    // two (tied, identical) embedding names; the other one, if present, is the duplicate.
    ckpt.ensure_all_used(|n| {
        n.starts_with("decoder.") || n.starts_with("lm_head.") || EMBED_NAMES.contains(&n)
    })?;
    Ok((encoder, cfg))
}

/// The distinct shard files named by a Hugging Face `*.index.json` (`weight_map`), in order.
fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::weights(index, format!("not a JSON shard index: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::weights(index, "has no 'weight_map' object"))?;
    let mut files = BTreeSet::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| {
            Error::weights(
                index,
                format!("weight_map entry '{name}' is not a file name"),
            )
        })?;
        files.insert(file.to_string());
    }
    let dir = index.parent().unwrap_or(Path::new("."));
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}
