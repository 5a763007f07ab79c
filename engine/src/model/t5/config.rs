//! The keys of a Hugging Face T5 `config.json` the encoder reads, their checks and bounds, and
//! the feed-forward activation they name. Kept apart from the network so the network file stays
//! about tensors.

use std::path::Path;

use candle_core::Tensor;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::kernels::fused;

fn default_buckets() -> usize {
    32
}
fn default_max_distance() -> usize {
    128
}
fn default_eps() -> f64 {
    1e-6
}
fn default_ff_proj() -> String {
    "relu".to_string()
}

/// The keys of a Hugging Face T5 `config.json` that the encoder needs; others are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct T5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
    #[serde(default = "default_max_distance")]
    pub relative_attention_max_distance: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// `"relu"`, `"gated-gelu"`, `"gated-silu"`, ... HF derives the activation and the gating
    /// from this string alone (it overwrites `dense_act_fn` / `is_gated_act`), and so do we.
    #[serde(default = "default_ff_proj")]
    pub feed_forward_proj: String,
    /// Informational: as written in the file, not used (see `feed_forward_proj`).
    #[serde(default)]
    pub dense_act_fn: Option<String>,
    /// Informational: as written in the file, not used (see `feed_forward_proj`).
    #[serde(default)]
    pub is_gated_act: Option<bool>,
}

/// The feed-forward activations HF's `ACT2FN` offers that T5 configs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Relu,
    /// Exact erf GELU (`"gelu"`).
    Gelu,
    /// Tanh-approximation GELU (`"gelu_new"`, `"gelu_pytorch_tanh"`; what `gated-gelu` means).
    GeluTanh,
    Silu,
}

impl Activation {
    /// The fused CPU kernel's version of this activation, where there is one.
    pub(super) fn fused(self) -> Option<fused::GateActivation> {
        match self {
            Activation::GeluTanh => Some(fused::GateActivation::GeluTanh),
            Activation::Gelu => Some(fused::GateActivation::GeluErf),
            Activation::Relu | Activation::Silu => None,
        }
    }

    pub(super) fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::Relu => x.relu(),
            Activation::Gelu => x.gelu_erf(),
            // candle's `gelu` is the tanh approximation, i.e. HF's `gelu_new`.
            Activation::GeluTanh => x.gelu(),
            Activation::Silu => x.silu(),
        }
    }
}

impl T5Config {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let cfg: Self = serde_json::from_str(&text)
            .map_err(|e| Error::config(path, format!("not a T5 config.json: {e}")))?;
        cfg.check().map_err(|m| Error::config(path, m))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        self.check()
            .map_err(|m| Error::InvalidInput(format!("T5 config: {m}")))
    }

    /// `(activation, gated)` as HF's `T5Config.__init__` derives them from `feed_forward_proj`.
    pub fn activation(&self) -> std::result::Result<(Activation, bool), String> {
        let parts: Vec<&str> = self.feed_forward_proj.split('-').collect();
        let gated = parts[0] == "gated";
        if parts.len() > 2 || (parts.len() == 2 && !gated) {
            return Err(format!(
                "feed_forward_proj '{}' is neither 'ACT' nor 'gated-ACT'",
                self.feed_forward_proj
            ));
        }
        let act = match (self.feed_forward_proj.as_str(), parts[parts.len() - 1]) {
            // HF special case: "gated-gelu" means the tanh approximation.
            ("gated-gelu", _) | (_, "gelu_new") | (_, "gelu_pytorch_tanh") => Activation::GeluTanh,
            (_, "gelu") => Activation::Gelu,
            (_, "relu") => Activation::Relu,
            (_, "silu") | (_, "swish") => Activation::Silu,
            (_, other) => {
                return Err(format!(
                    "feed-forward activation '{other}' is not supported"
                ))
            }
        };
        Ok((act, gated))
    }

    fn check(&self) -> std::result::Result<(), String> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("d_kv", self.d_kv),
            ("d_ff", self.d_ff),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        // Generous bounds around the published T5 family (flan-t5-xxl: d_model 4096, d_ff
        // 10240, 24 layers, 64 heads; mT5: 250k tokens), see crate::model::bounds.
        let limits = [
            ("vocab_size", self.vocab_size, 1 << 20),
            ("d_model", self.d_model, 16_384),
            ("d_kv", self.d_kv, 1024),
            ("d_ff", self.d_ff, 65_536),
            ("num_layers", self.num_layers, 128),
            ("num_heads", self.num_heads, 256),
            (
                "relative_attention_num_buckets",
                self.relative_attention_num_buckets,
                1024,
            ),
            (
                "relative_attention_max_distance",
                self.relative_attention_max_distance,
                1 << 16,
            ),
        ];
        for (name, v, hi) in limits {
            crate::model::bounds::check("T5 config", name, v, 1, hi, "flan-t5 uses far less")
                .map_err(|e| e.to_string().replace("invalid input: T5 config: ", ""))?;
        }
        // Bidirectional buckets: half per direction, a quarter of them exact; the log-spaced
        // rest needs at least one exact bucket and max_distance beyond it.
        let max_exact = self.relative_attention_num_buckets / 4;
        if max_exact == 0 || self.relative_attention_max_distance <= max_exact {
            return Err(format!(
                "relative_attention_num_buckets {} / max_distance {} leave no room for log buckets",
                self.relative_attention_num_buckets, self.relative_attention_max_distance
            ));
        }
        if !(self.layer_norm_epsilon.is_finite() && self.layer_norm_epsilon > 0.0) {
            return Err(format!(
                "layer_norm_epsilon {} must be positive",
                self.layer_norm_epsilon
            ));
        }
        self.activation().map(|_| ())
    }

    fn flan(d_model: usize, d_ff: usize, num_heads: usize) -> Self {
        Self {
            vocab_size: 32128,
            d_model,
            d_kv: 64,
            d_ff,
            num_layers: 24,
            num_heads,
            relative_attention_num_buckets: 32,
            relative_attention_max_distance: 128,
            layer_norm_epsilon: 1e-6,
            feed_forward_proj: "gated-gelu".to_string(),
            dense_act_fn: Some("gelu_new".to_string()),
            is_gated_act: Some(true),
        }
    }

    /// `google/flan-t5-large` (EzAudio-L's text encoder).
    pub fn flan_t5_large() -> Self {
        Self::flan(1024, 2816, 16)
    }

    /// `google/flan-t5-xl` (EzAudio-XL's text encoder).
    pub fn flan_t5_xl() -> Self {
        Self::flan(2048, 5120, 32)
    }
}
