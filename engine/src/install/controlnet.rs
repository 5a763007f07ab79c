//! ControlNet folders: the energy ControlNet's yml and checkpoint, and where one is found for a
//! model.
//!
//! ```text
//! <dir>/energy_l.yml (or config.yml, or the folder's only .yml)   sections model, controlnet,
//!                                                                  conditioner, autoencoder, text_encoder, diff
//! <dir>/s3_l_energy.pt | controlnet.pt | controlnet.safetensors   {'model': DiTControlNet.state_dict()}
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::config::{AutoencoderConfig, EzAudioConfig, TextEncoderConfig};
use crate::model::controlnet::ControlNetConfig;
use crate::model::ddim::DdimConfig;
use crate::model::dit::DitConfig;
use crate::model::energy::ConditionerConfig;

/// The ControlNet yml (`ckpts/controlnet/energy_l.yml`). Only `model`, `controlnet` and
/// `conditioner` are used; the other sections are checked against the paired model.
#[derive(Debug, Clone, Deserialize)]
pub struct ControlNetFileConfig {
    #[serde(default)]
    pub model_name: Option<String>,
    pub model: DitConfig,
    pub controlnet: ControlNetConfig,
    pub conditioner: ConditionerConfig,
    #[serde(default)]
    pub autoencoder: Option<AutoencoderConfig>,
    #[serde(default)]
    pub text_encoder: Option<TextEncoderConfig>,
    #[serde(default)]
    pub diff: Option<DdimConfig>,
}

impl ControlNetFileConfig {
    /// `ckpts/controlnet/energy_l.yml` (EzAudio-L-Energy, paired with EzAudio-L).
    pub fn energy_l() -> Self {
        let l = EzAudioConfig::ezaudio_l();
        Self {
            model_name: Some("EzAudio-L-Energy".into()),
            model: l.model,
            controlnet: ControlNetConfig::energy_l(),
            conditioner: ConditionerConfig::energy_l(),
            autoencoder: Some(l.autoencoder),
            text_encoder: Some(l.text_encoder),
            diff: Some(l.diff),
        }
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let cfg: Self =
            serde_yaml_ng::from_str(&text).map_err(|e| Error::config(path, e.to_string()))?;
        let checked = cfg
            .model
            .validate()
            .and_then(|_| cfg.controlnet.validate())
            .and_then(|_| cfg.conditioner.validate());
        checked.map_err(|e| match e {
            Error::Unsupported(m) | Error::InvalidInput(m) => Error::config(path, m),
            other => other,
        })?;
        Ok(cfg)
    }
}

/// Where a ControlNet's files are.
#[derive(Debug, Clone)]
pub struct ControlNetFolder {
    pub config_path: PathBuf,
    pub checkpoint: PathBuf,
    pub config: ControlNetFileConfig,
}

impl ControlNetFolder {
    /// Explicit files.
    pub fn from_files(config_path: &Path, checkpoint: &Path) -> Result<Self> {
        if !checkpoint.is_file() {
            return Err(Error::weights(
                checkpoint,
                "ControlNet checkpoint not found",
            ));
        }
        Ok(Self {
            config: ControlNetFileConfig::from_file(config_path)?,
            config_path: config_path.to_path_buf(),
            checkpoint: checkpoint.to_path_buf(),
        })
    }

    /// A folder with the yml and the checkpoint (names in the module documentation). Without a
    /// yml, the official `s3_l_energy.pt` alone is taken with the built-in `energy_l.yml`.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::weights(dir, "ControlNet folder not found"));
        }
        let config = ["energy_l.yml", "config.yml", "config.yaml"]
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_file())
            .or_else(|| only_file_with_extension(dir, &["yml", "yaml"]));
        let official = dir.join("s3_l_energy.pt");
        let config = match config {
            Some(c) => c,
            None if official.is_file() => {
                return Ok(Self {
                    config_path: official.clone(),
                    checkpoint: official,
                    config: ControlNetFileConfig::energy_l(),
                })
            }
            None => {
                return Err(Error::weights(
                    dir.join("energy_l.yml"),
                    "missing: the ControlNet's yml config",
                ))
            }
        };
        let checkpoint = ["s3_l_energy.pt", "controlnet.safetensors", "controlnet.pt"]
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_file())
            .or_else(|| only_file_with_extension(dir, &["pt"]))
            .ok_or_else(|| {
                Error::weights(
                    dir.join("s3_l_energy.pt"),
                    "missing: the ControlNet checkpoint (s3_l_energy.pt, controlnet.pt or controlnet.safetensors)",
                )
            })?;
        Self::from_files(&config, &checkpoint)
    }
}

/// Environment variable naming a ControlNet folder (used when no folder is given explicitly).
pub const CONTROLNET_ENV: &str = "EZAUDIO_CONTROLNET";

/// Finds the ControlNet for the model in `model_root`: the explicit folder; else
/// `$EZAUDIO_CONTROLNET`; else `<model>/controlnet/`, `<model>/ckpts/controlnet/` (the Hugging
/// Face snapshot layout); else, for EzAudio-L (`official_l`), the Hugging Face cache's
/// `OpenSound/EzAudio` `ckpts/controlnet/`. The error lists every place searched.
pub fn resolve_controlnet(
    explicit: Option<&Path>,
    model_root: &Path,
    official_l: bool,
) -> Result<ControlNetFolder> {
    if let Some(dir) = explicit {
        return ControlNetFolder::open(dir);
    }
    if let Some(dir) = std::env::var_os(CONTROLNET_ENV).filter(|v| !v.is_empty()) {
        return ControlNetFolder::open(Path::new(&dir)).map_err(|e| {
            Error::InvalidInput(format!(
                "{CONTROLNET_ENV} = {}: {e}",
                Path::new(&dir).display()
            ))
        });
    }
    let mut candidates = vec![
        model_root.join("controlnet"),
        model_root.join("ckpts").join("controlnet"),
    ];
    if official_l {
        let repo = crate::install::repo_cache_name(crate::install::EZAUDIO_REPO);
        if let Some(snap) = crate::install::hf_cache_dir()
            .and_then(|hub| crate::install::latest_snapshot(&hub.join(repo)))
        {
            candidates.push(snap.join("ckpts").join("controlnet"));
        }
    }
    for dir in &candidates {
        if dir.is_dir() {
            return ControlNetFolder::open(dir);
        }
    }
    let places: Vec<String> = candidates
        .iter()
        .map(|p| format!("  {}", p.display()))
        .collect();
    Err(Error::weights(
        &candidates[0],
        format!(
            "no ControlNet found. Controlled generation needs the energy ControlNet next to the model:\n{}\n\
             (a folder with s3_l_energy.pt, from {}: {}, plus optionally energy_l.yml), or a folder \
             given with --controlnet / {CONTROLNET_ENV}. `ezaudio models fetch l --controlnet` downloads it.",
            places.join("\n"),
            crate::install::EZAUDIO_REPO,
            crate::install::CONTROLNET_FILE,
        ),
    ))
}

fn only_file_with_extension(dir: &Path, exts: &[&str]) -> Option<PathBuf> {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| exts.iter().any(|x| e == *x)))
        .collect();
    (found.len() == 1).then(|| found[0].clone())
}
