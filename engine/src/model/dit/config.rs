//! The `model:` section of the official EzAudio yml (`MaskDiT(**params['model'])`).
//!
//! Every key of the official constructor is accepted; a missing key takes the default of the
//! Python signature (`MaskDiT` / `UDiT`), so a config means here what it means there. The port
//! implements the feature set of the published checkpoints; [`DitConfig::validate`] names any
//! switch set otherwise, and bounds every size (see [`crate::model::bounds`]).

use serde::Deserialize;

use crate::error::{Error, Result};

/// `img_size`: an int for 1-D input, `[h, w]` for 2-D. Unused for 1-D input (any length works).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ImgSize {
    Len(usize),
    Hw([usize; 2]),
}

/// Unknown keys are an error that names them: a misspelt `depht` would otherwise be ignored and
/// the load would fail later on a tensor count that seems to have nothing to do with it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DitConfig {
    // MaskDiT wrapper; mae_prob / mask_ratio / mask_span only matter in training.
    #[serde(default)]
    pub mae: bool,
    #[serde(default = "d_mae_prob")]
    pub mae_prob: f64,
    #[serde(default = "d_mask_ratio")]
    pub mask_ratio: Vec<f64>,
    #[serde(default = "d_mask_span")]
    pub mask_span: usize,
    // UDiT
    #[serde(default = "d_img_size")]
    pub img_size: ImgSize,
    #[serde(default = "d_patch_size")]
    pub patch_size: usize,
    #[serde(default = "d_in_chans")]
    pub in_chans: usize,
    #[serde(default)]
    pub out_chans: Option<usize>,
    #[serde(default = "d_input_type")]
    pub input_type: String,
    #[serde(default = "d_embed_dim")]
    pub embed_dim: usize,
    #[serde(default = "d_depth")]
    pub depth: usize,
    #[serde(default = "d_num_heads")]
    pub num_heads: usize,
    #[serde(default = "d_mlp_ratio")]
    pub mlp_ratio: f64,
    #[serde(default)]
    pub qkv_bias: bool,
    /// Accepted and without effect: the reference attends through
    /// `F.scaled_dot_product_attention` without passing it, so the scale is always 1/sqrt(head_dim).
    #[serde(default)]
    pub qk_scale: Option<f64>,
    #[serde(default)]
    pub qk_norm: Option<String>,
    #[serde(default = "d_norm_layer")]
    pub norm_layer: String,
    #[serde(default = "d_act_layer")]
    pub act_layer: String,
    #[serde(default)]
    pub context_norm: bool,
    /// Gradient checkpointing: no effect on inference.
    #[serde(default)]
    pub use_checkpoint: bool,
    #[serde(default = "d_time_fusion")]
    pub time_fusion: String,
    #[serde(default)]
    pub ada_sola_rank: Option<usize>,
    #[serde(default)]
    pub ada_sola_alpha: Option<f64>,
    #[serde(default)]
    pub cls_dim: Option<usize>,
    #[serde(default = "d_context_dim")]
    pub context_dim: Option<usize>,
    #[serde(default = "d_context_fusion")]
    pub context_fusion: String,
    #[serde(default = "d_context_max_length")]
    pub context_max_length: Option<usize>,
    #[serde(default = "d_context_pe_method")]
    pub context_pe_method: String,
    #[serde(default = "d_pe_method")]
    pub pe_method: String,
    #[serde(default = "d_rope_mode")]
    pub rope_mode: String,
    #[serde(default = "d_true")]
    pub use_conv: bool,
    #[serde(default = "d_true")]
    pub skip: bool,
    #[serde(default = "d_true")]
    pub skip_norm: bool,
}

// Defaults of the Python signatures (MaskDiT.__init__, UDiT.__init__).
fn d_mae_prob() -> f64 {
    0.5
}
fn d_mask_ratio() -> Vec<f64> {
    vec![0.25, 1.0]
}
fn d_mask_span() -> usize {
    10
}
fn d_img_size() -> ImgSize {
    ImgSize::Len(224)
}
fn d_patch_size() -> usize {
    16
}
fn d_in_chans() -> usize {
    3
}
fn d_input_type() -> String {
    "2d".into()
}
fn d_embed_dim() -> usize {
    768
}
fn d_depth() -> usize {
    12
}
fn d_num_heads() -> usize {
    12
}
fn d_mlp_ratio() -> f64 {
    4.0
}
fn d_norm_layer() -> String {
    "layernorm".into()
}
fn d_act_layer() -> String {
    "gelu".into()
}
fn d_time_fusion() -> String {
    "token".into()
}
fn d_context_dim() -> Option<usize> {
    Some(768)
}
fn d_context_fusion() -> String {
    "concat".into()
}
fn d_context_max_length() -> Option<usize> {
    Some(128)
}
fn d_context_pe_method() -> String {
    "sinu".into()
}
fn d_pe_method() -> String {
    "abs".into()
}
fn d_rope_mode() -> String {
    "none".into()
}
fn d_true() -> bool {
    true
}

impl DitConfig {
    /// `ckpts/ezaudio-l.yml` (pairs with flan-t5-large, context 1024).
    pub fn ezaudio_l() -> Self {
        Self::ezaudio(1024, 24, 32, 1024)
    }

    /// `ckpts/ezaudio-xl.yml` (pairs with flan-t5-xl, context 2048).
    pub fn ezaudio_xl() -> Self {
        Self::ezaudio(1152, 28, 36, 2048)
    }

    fn ezaudio(embed_dim: usize, depth: usize, rank: usize, context_dim: usize) -> Self {
        Self {
            mae: true,
            mae_prob: 0.25,
            mask_ratio: vec![0.25, 1.0],
            mask_span: 10,
            img_size: ImgSize::Len(500),
            patch_size: 1,
            in_chans: 257,
            out_chans: Some(128),
            input_type: "1d".into(),
            embed_dim,
            depth,
            num_heads: 16,
            mlp_ratio: 4.0,
            qkv_bias: false,
            qk_scale: None,
            qk_norm: Some("layernorm".into()),
            norm_layer: "layernorm".into(),
            act_layer: "geglu".into(),
            context_norm: true,
            use_checkpoint: true,
            time_fusion: "ada_sola_bias".into(),
            ada_sola_rank: Some(rank),
            ada_sola_alpha: Some(rank as f64),
            cls_dim: None,
            context_dim: Some(context_dim),
            context_fusion: "cross".into(),
            context_max_length: None,
            context_pe_method: "none".into(),
            pe_method: "none".into(),
            rope_mode: "shared".into(),
            use_conv: true,
            skip: true,
            skip_norm: true,
        }
    }

    /// Channels of the latent the model predicts (`out_chans`).
    pub fn latent_channels(&self) -> usize {
        self.out_chans.unwrap_or(self.in_chans)
    }

    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads.max(1)
    }

    /// Width of the GEGLU hidden layer: `int(embed_dim * mlp_ratio)` as in the reference.
    pub fn mlp_inner_dim(&self) -> usize {
        (self.embed_dim as f64 * self.mlp_ratio) as usize
    }

    /// `ada_sola_alpha / ada_sola_rank`.
    pub fn ada_scaling(&self) -> f64 {
        match (self.ada_sola_alpha, self.ada_sola_rank) {
            (Some(a), Some(r)) if r > 0 => a / r as f64,
            _ => 1.0,
        }
    }

    /// Checks that the config asks only for what this port implements (the feature set of the
    /// published EzAudio checkpoints) and that its sizes agree with each other.
    pub fn validate(&self) -> Result<()> {
        fn is(key: &str, value: &str, expected: &str) -> Result<()> {
            if value == expected {
                Ok(())
            } else {
                Err(unsupported(
                    key,
                    &format!("'{value}'"),
                    &format!("'{expected}'"),
                ))
            }
        }
        fn flag(key: &str, value: bool, expected: bool) -> Result<()> {
            if value == expected {
                Ok(())
            } else {
                Err(unsupported(key, &value.to_string(), &expected.to_string()))
            }
        }
        self.check_sizes()?;
        flag("mae", self.mae, true)?;
        is("input_type", &self.input_type, "1d")?;
        if self.patch_size != 1 {
            return Err(unsupported("patch_size", &self.patch_size.to_string(), "1"));
        }
        is("time_fusion", &self.time_fusion, "ada_sola_bias")?;
        is("context_fusion", &self.context_fusion, "cross")?;
        is(
            "qk_norm",
            self.qk_norm.as_deref().unwrap_or("null"),
            "layernorm",
        )?;
        is("norm_layer", &self.norm_layer, "layernorm")?;
        is("act_layer", &self.act_layer, "geglu")?;
        is("rope_mode", &self.rope_mode, "shared")?;
        is("pe_method", &self.pe_method, "none")?;
        is("context_pe_method", &self.context_pe_method, "none")?;
        flag("context_norm", self.context_norm, true)?;
        flag("use_conv", self.use_conv, true)?;
        flag("skip", self.skip, true)?;
        flag("skip_norm", self.skip_norm, true)?;
        if let Some(c) = self.cls_dim {
            return Err(unsupported("cls_dim", &c.to_string(), "null"));
        }
        if self.context_dim.is_none_or(|c| c == 0) {
            return Err(unsupported("context_dim", "null", "a positive width"));
        }
        match (self.ada_sola_rank, self.ada_sola_alpha) {
            (Some(r), Some(_)) if r > 0 => {}
            _ => {
                return Err(Error::Unsupported(
                    "DiT config: time_fusion 'ada_sola_bias' needs ada_sola_rank > 0 and ada_sola_alpha".into(),
                ))
            }
        }
        let out = self.out_chans.ok_or_else(|| {
            Error::Unsupported("DiT config: out_chans is null (mae needs the latent width)".into())
        })?;
        if self.in_chans != 2 * out + 1 {
            return Err(Error::Unsupported(format!(
                "DiT config: in_chans = {} but the MaskDiT input [x, gt, mask] has 2*out_chans+1 = {} channels",
                self.in_chans,
                2 * out + 1
            )));
        }
        if self.num_heads == 0 || self.head_dim() * self.num_heads != self.embed_dim {
            return Err(Error::Unsupported(format!(
                "DiT config: embed_dim {} is not divisible by num_heads {}",
                self.embed_dim, self.num_heads
            )));
        }
        if self.head_dim() & 1 == 1 {
            return Err(Error::Unsupported(format!(
                "DiT config: head_dim {} is odd (RoPE rotates pairs)",
                self.head_dim()
            )));
        }
        if self.mlp_inner_dim() == 0 {
            return Err(unsupported(
                "mlp_ratio",
                &self.mlp_ratio.to_string(),
                "a positive ratio",
            ));
        }
        Ok(())
    }
}

impl DitConfig {
    /// Every size within what the architecture can run, each checked by its own name (so
    /// `embed_dim: 0` is blamed on `embed_dim`, not on a derived width).
    fn check_sizes(&self) -> Result<()> {
        use crate::model::bounds::{check, check_f64};
        const S: &str = "DiT config";
        check(
            S,
            "embed_dim",
            self.embed_dim,
            1,
            8192,
            "EzAudio-L 1024, XL 1152",
        )?;
        check(S, "depth", self.depth, 1, 256, "EzAudio-L 24, XL 28")?;
        check(S, "num_heads", self.num_heads, 1, 256, "EzAudio 16")?;
        check_f64(S, "mlp_ratio", self.mlp_ratio, 0.0625, 16.0, "EzAudio 4.0")?;
        check(S, "in_chans", self.in_chans, 1, 8193, "EzAudio 257")?;
        if let Some(o) = self.out_chans {
            check(S, "out_chans", o, 1, 4096, "EzAudio 128")?;
        }
        if let Some(c) = self.context_dim {
            check(S, "context_dim", c, 1, 16_384, "EzAudio-L 1024, XL 2048")?;
        }
        if let Some(r) = self.ada_sola_rank {
            check(
                S,
                "ada_sola_rank",
                r,
                1,
                self.embed_dim,
                "EzAudio-L 32, XL 36; at most embed_dim",
            )?;
        }
        if let Some(a) = self.ada_sola_alpha {
            check_f64(S, "ada_sola_alpha", a, -1e6, 1e6, "EzAudio-L 32, XL 36")?;
        }
        Ok(())
    }
}

fn unsupported(key: &str, value: &str, expected: &str) -> Error {
    Error::Unsupported(format!(
        "DiT config: {key} = {value} (this port implements only {key} = {expected}, as in EzAudio-L/XL)"
    ))
}
