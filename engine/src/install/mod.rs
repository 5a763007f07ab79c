//! Installing models: model folders (what every part of the product loads), the order they are
//! looked up in, the Hugging Face cache, downloading ([`fetch_official`]) and ControlNet folders.
//!
//! ```text
//! <dir>/config.yml            official EzAudio config schema (model, autoencoder, text_encoder, diff)
//! <dir>/dit.pt | dit.safetensors            the DiT ({'model': state_dict} when .pt)
//! <dir>/vae/1m.pt | vae/*.safetensors       the VAE ({'state_dict': {'autoencoder.'+k}} when .pt)
//! <dir>/vae/config.json                     its stable-audio-tools config
//! <dir>/<text_encoder.model>/               Hugging Face T5 folder (config.json, weights, tokenizer.json)
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::model::config::EzAudioConfig;

mod controlnet;
mod fetch;
mod integrity;

pub use controlnet::{resolve_controlnet, ControlNetFileConfig, ControlNetFolder};
pub use fetch::{
    fetch_official, fetch_official_cancellable, fetch_official_with, unlink_if_damaged,
    FetchProgress,
};
pub use integrity::{check_checkpoint, damaged_part};

/// The published EzAudio models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Official {
    L,
    Xl,
}

impl Official {
    pub fn name(self) -> &'static str {
        match self {
            Self::L => "ezaudio-l",
            Self::Xl => "ezaudio-xl",
        }
    }
    pub fn config(self) -> EzAudioConfig {
        match self {
            Self::L => EzAudioConfig::ezaudio_l(),
            Self::Xl => EzAudioConfig::ezaudio_xl(),
        }
    }
    /// File of the DiT checkpoint in the `OpenSound/EzAudio` repository.
    pub fn dit_file(self) -> &'static str {
        match self {
            Self::L => "ckpts/s3/ezaudio_s3_l.pt",
            Self::Xl => "ckpts/s3/ezaudio_s3_xl.pt",
        }
    }
    /// The Hugging Face repository of the matching text encoder.
    pub fn text_encoder_repo(self) -> &'static str {
        match self {
            Self::L => "google/flan-t5-large",
            Self::Xl => "google/flan-t5-xl",
        }
    }
    /// Approximate download size, for messages.
    pub fn download_size(self) -> &'static str {
        match self {
            Self::L => "about 6 GB: DiT 2.4 GB, VAE 0.2 GB, FLAN-T5-large 3.1 GB (the file includes its decoder)",
            Self::Xl => "about 15 GB: DiT 3.5 GB, VAE 0.2 GB, FLAN-T5-XL 11.4 GB (the files include its decoder)",
        }
    }
}

/// Hugging Face repository holding the EzAudio checkpoints.
pub const EZAUDIO_REPO: &str = "OpenSound/EzAudio";
pub const VAE_FILE: &str = "ckpts/vae/1m.pt";
pub const VAE_CONFIG_FILE: &str = "ckpts/vae/config.json";
/// The energy ControlNet paired with EzAudio-L (EzAudio-ControlNet), and its config.
pub const CONTROLNET_FILE: &str = "ckpts/controlnet/s3_l_energy.pt";
pub const CONTROLNET_CONFIG_FILE: &str = "ckpts/controlnet/energy_l.yml";
/// Files of a text-encoder repository the engine needs.
pub const TEXT_ENCODER_FILES: &[&str] = &["config.json", "model.safetensors", "tokenizer.json"];

/// What to load: a model folder on disk, or an official model found by [`resolve_model`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModelSource {
    Folder(PathBuf),
    Official(Official),
}

impl FromStr for ModelSource {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "l" | "ezaudio-l" => Ok(Self::Official(Official::L)),
            "xl" | "ezaudio-xl" => Ok(Self::Official(Official::Xl)),
            "" => Err(Error::InvalidInput("empty model name".into())),
            _ => Ok(Self::Folder(PathBuf::from(s))),
        }
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Folder(p) => write!(f, "{}", p.display()),
            Self::Official(m) => write!(f, "{}", m.name()),
        }
    }
}

/// Environment variable naming a folder that holds model folders (`ezaudio-l/`, `ezaudio-xl/`).
pub const MODELS_ENV: &str = "EZAUDIO_MODELS";

/// The per-user folder for model folders (e.g. `~/.local/share/ezaudio/models` on Linux).
pub fn user_models_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("ezaudio").join("models"))
}

/// Hugging Face's cache (`$HF_HOME/hub`, default `~/.cache/huggingface/hub`).
pub fn hf_cache_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("HF_HOME") {
        return Some(PathBuf::from(home).join("hub"));
    }
    dirs::home_dir().map(|h| h.join(".cache").join("huggingface").join("hub"))
}

/// Finds a model, in this order: the explicit folder; `$EZAUDIO_MODELS/<name>`; the per-user
/// folder; the Hugging Face cache (where `ezaudio models fetch` puts the official files).
pub fn resolve_model(source: &ModelSource) -> Result<ModelFolder> {
    let official = match source {
        ModelSource::Folder(dir) => return ModelFolder::open(dir),
        ModelSource::Official(m) => *m,
    };
    let mut searched = Vec::new();
    let roots = std::env::var_os(MODELS_ENV)
        .map(PathBuf::from)
        .into_iter()
        .chain(user_models_dir());
    for root in roots {
        let dir = root.join(official.name());
        if dir.join("config.yml").is_file() {
            return ModelFolder::open(&dir);
        }
        searched.push(dir);
    }
    if let Some(folder) = hf_cache_dir().and_then(|hub| ModelFolder::from_hf_cache(&hub, official))
    {
        return Ok(folder);
    }
    Err(Error::weights(
        searched.first().cloned().unwrap_or_default(),
        not_installed_message(official, &searched),
    ))
}

/// Plain instructions for a model that is not installed.
pub fn not_installed_message(model: Official, searched: &[PathBuf]) -> String {
    let places: Vec<String> = searched
        .iter()
        .map(|p| format!("  {}", p.display()))
        .collect();
    format!(
        "{name} is not installed ({size}).\n\
         Download it with `ezaudio models fetch {short}` (needs internet), or place a model folder at one of:\n{places}\n\
         A model folder holds config.yml, dit.pt ({repo}: {dit}), vae/1m.pt and vae/config.json \
         ({repo}: {vae}, {vae_cfg}) and the text encoder folder {te_name}/ ({te}: {te_files}).",
        name = model.name(),
        size = model.download_size(),
        short = if model == Official::L { "l" } else { "xl" },
        places = places.join("\n"),
        repo = EZAUDIO_REPO,
        dit = model.dit_file(),
        vae = VAE_FILE,
        vae_cfg = VAE_CONFIG_FILE,
        te = model.text_encoder_repo(),
        te_name = model.text_encoder_repo().rsplit('/').next().unwrap_or_default(),
        te_files = TEXT_ENCODER_FILES.join(", "),
    )
}

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
        let config_path = first_existing(dir, &["config.yml", "config.yaml"]).ok_or_else(|| {
            Error::weights(dir.join("config.yml"), "missing: the model's config.yml")
        })?;
        let config = EzAudioConfig::from_file(&config_path)?;
        let dit = first_existing(dir, &["dit.safetensors", "dit.pt"]).ok_or_else(|| {
            Error::weights(
                dir.join("dit.pt"),
                "missing: the DiT checkpoint (dit.pt or dit.safetensors)",
            )
        })?;
        let vae_dir = dir.join("vae");
        let vae = first_existing(&vae_dir, &["vae.safetensors", "1m.safetensors", "1m.pt"])
            .or_else(|| find_with_extension(&vae_dir, "safetensors"))
            .or_else(|| find_with_extension(&vae_dir, "pt"))
            .ok_or_else(|| {
                Error::weights(
                    vae_dir.join("1m.pt"),
                    "missing: the VAE checkpoint (vae/1m.pt or vae/*.safetensors)",
                )
            })?;
        let vae_config = vae_dir.join("config.json");
        if !vae_config.is_file() {
            return Err(Error::weights(
                &vae_config,
                "missing: the VAE's config.json",
            ));
        }
        let text_encoder = resolve_text_encoder(dir, &config.text_encoder.model)?;
        Ok(Self {
            root: dir.to_path_buf(),
            config,
            dit,
            vae,
            vae_config,
            text_encoder,
        })
    }

    /// An official model from the Hugging Face cache layout
    /// (`models--OpenSound--EzAudio/snapshots/<rev>/ckpts/...`), if every file is there.
    pub fn from_hf_cache(hub: &Path, model: Official) -> Option<Self> {
        let ez = latest_snapshot(&hub.join(repo_cache_name(EZAUDIO_REPO)))?;
        let te = latest_snapshot(&hub.join(repo_cache_name(model.text_encoder_repo())))?;
        let dit = ez.join(model.dit_file());
        let vae = ez.join(VAE_FILE);
        let vae_config = ez.join(VAE_CONFIG_FILE);
        // flan-t5-xl is sharded: its index stands in for model.safetensors.
        let te_file_present = |f: &&str| {
            te.join(f).is_file()
                || (*f == "model.safetensors" && te.join("model.safetensors.index.json").is_file())
        };
        let complete = [&dit, &vae, &vae_config].iter().all(|p| p.is_file())
            && TEXT_ENCODER_FILES.iter().all(te_file_present);
        complete.then(|| Self {
            root: ez.clone(),
            config: model.config(),
            dit,
            vae,
            vae_config,
            text_encoder: te,
        })
    }

    /// A short identifier recorded in clip metadata.
    pub fn model_id(&self) -> String {
        self.config.model_name.clone().unwrap_or_else(|| {
            self.root
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
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

/// `org/name` -> `models--org--name`, Hugging Face's cache folder name.
pub fn repo_cache_name(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

pub(crate) fn latest_snapshot(repo_dir: &Path) -> Option<PathBuf> {
    let main_ref = std::fs::read_to_string(repo_dir.join("refs").join("main")).ok();
    if let Some(rev) = main_ref.map(|r| r.trim().to_string()) {
        let dir = repo_dir.join("snapshots").join(rev);
        if dir.is_dir() {
            return Some(dir);
        }
    }
    std::fs::read_dir(repo_dir.join("snapshots"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.is_dir())
}

/// Environment variables that disable downloads (any value but empty, `0` or `false`).
pub const OFFLINE_ENV: [&str; 2] = ["EZAUDIO_OFFLINE", "HF_HUB_OFFLINE"];

/// Whether downloads are disabled by the environment.
pub fn offline() -> bool {
    OFFLINE_ENV.iter().any(|v| {
        std::env::var(v)
            .is_ok_and(|s| !s.is_empty() && s != "0" && !s.eq_ignore_ascii_case("false"))
    })
}
