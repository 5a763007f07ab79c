//! Model folders: what every part of the product loads.
//!
//! ```text
//! <dir>/config.yml            official EzAudio config schema (model, autoencoder, text_encoder, diff)
//! <dir>/dit.pt | dit.safetensors            the DiT ({'model': state_dict} when .pt)
//! <dir>/vae/1m.pt | vae/*.safetensors       the VAE ({'state_dict': {'autoencoder.'+k}} when .pt)
//! <dir>/vae/config.json                     its stable-audio-tools config
//! <dir>/<text_encoder.model>/               Hugging Face T5 folder (config.json, weights, tokenizer.json)
//! ```

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::config::EzAudioConfig;

#[derive(Debug, Clone)]
pub struct ModelFolder {
    pub root: PathBuf,
    pub config: EzAudioConfig,
    pub dit: PathBuf,
    pub vae: PathBuf,
    pub vae_config: PathBuf,
    pub text_encoder: PathBuf,
}

impl ModelFolder {
    /// Resolves every file of a model folder; the error names the first missing one.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::weights(dir, "model folder not found"));
        }
        let config_path = first_existing(dir, &["config.yml", "config.yaml"])
            .ok_or_else(|| Error::weights(dir.join("config.yml"), "missing: the model's config.yml"))?;
        let config = EzAudioConfig::from_file(&config_path)?;
        let dit = first_existing(dir, &["dit.safetensors", "dit.pt"])
            .ok_or_else(|| Error::weights(dir.join("dit.pt"), "missing: the DiT checkpoint (dit.pt or dit.safetensors)"))?;
        let vae_dir = dir.join("vae");
        let vae = first_existing(&vae_dir, &["vae.safetensors", "1m.safetensors", "1m.pt"])
            .or_else(|| find_with_extension(&vae_dir, "safetensors"))
            .or_else(|| find_with_extension(&vae_dir, "pt"))
            .ok_or_else(|| Error::weights(vae_dir.join("1m.pt"), "missing: the VAE checkpoint (vae/1m.pt or vae/*.safetensors)"))?;
        let vae_config = vae_dir.join("config.json");
        if !vae_config.is_file() {
            return Err(Error::weights(&vae_config, "missing: the VAE's config.json"));
        }
        let text_encoder = resolve_text_encoder(dir, &config.text_encoder.model)?;
        Ok(Self { root: dir.to_path_buf(), config, dit, vae, vae_config, text_encoder })
    }

    /// A short identifier recorded in clip metadata.
    pub fn model_id(&self) -> String {
        self.config
            .model_name
            .clone()
            .unwrap_or_else(|| self.root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
    }
}

fn first_existing(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

fn find_with_extension(dir: &Path, ext: &str) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == ext))
        .collect();
    found.sort();
    found.into_iter().next()
}

/// `text_encoder.model` is a folder relative to the config, or a Hugging Face id whose files
/// were placed in a folder named after the id's last part (`google/flan-t5-xl` -> `flan-t5-xl/`).
fn resolve_text_encoder(dir: &Path, model: &str) -> Result<PathBuf> {
    let mut candidates = vec![dir.join(model)];
    if let Some(last) = model.rsplit('/').next() {
        candidates.push(dir.join(last));
        candidates.push(dir.join("text_encoder"));
    }
    candidates
        .into_iter()
        .find(|p| p.join("config.json").is_file())
        .ok_or_else(|| {
            Error::weights(
                dir.join(model),
                format!("missing: the text encoder '{model}' (a Hugging Face T5 folder with config.json, weights and tokenizer.json)"),
            )
        })
}
