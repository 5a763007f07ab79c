//! Model and device selection shared by `generate` and `edit`: finds (or installs) the model,
//! opens the device once to say which one runs, and starts the engine thread.

use std::path::PathBuf;

use candle_core::DType;
use clap::Args;

use ezaudio_engine::engine::{Engine, ModelChoice};
use ezaudio_engine::install::{
    hf_cache_dir, not_installed_message, resolve_model, user_models_dir, ModelFolder, ModelSource,
    Official, MODELS_ENV,
};
use ezaudio_engine::model::dit::ImgSize;
pub use ezaudio_engine::runtime::dtype_name;
use ezaudio_engine::runtime::{describe, parse_dtype, DeviceChoice};

use super::progress::Reporter;
use super::{models_cmd, offline, CliError, CliResult};

#[derive(Debug, Clone, Args)]
pub struct ModelOpts {
    /// A model folder, or `l` / `xl` for the official EzAudio-L / EzAudio-XL (downloaded on
    /// first use unless EZAUDIO_OFFLINE=1) [default: l]
    #[arg(long, value_name = "DIR|l|xl")]
    pub model: Option<String>,
    /// Where to run: auto (CUDA or Metal when built in and present, else CPU), cpu, cuda,
    /// cuda:N, metal
    #[arg(long, default_value = "auto", value_parser = parse_device_arg)]
    pub device: DeviceChoice,
    /// Model precision: f32, f16 or bf16 (half precision is for GPUs)
    #[arg(long, default_value = "f32", value_parser = parse_dtype_arg)]
    pub dtype: DType,
    /// CPU threads (default: all cores)
    #[arg(long)]
    pub threads: Option<usize>,
}

fn parse_device_arg(s: &str) -> Result<DeviceChoice, String> {
    s.parse::<DeviceChoice>().map_err(|e| e.to_string())
}

fn parse_dtype_arg(s: &str) -> Result<DType, String> {
    parse_dtype(s).map_err(|e| e.to_string())
}

impl ModelOpts {
    pub fn source(&self) -> CliResult<ModelSource> {
        match &self.model {
            None => Ok(ModelSource::Official(Official::L)),
            Some(s) => Ok(s.parse::<ModelSource>()?),
        }
    }

    /// `--threads`: candle's CPU kernels read the Rayon pool size from the environment, so it
    /// must be set before the first tensor operation.
    pub fn apply_threads(&self) -> CliResult {
        if let Some(n) = self.threads {
            if n == 0 || n > 1024 {
                return Err(CliError::new(format!(
                    "--threads must be between 1 and 1024, got {n}"
                )));
            }
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        }
        Ok(())
    }
}

/// A ready-to-use engine plus what the metadata records about it.
pub struct Session {
    pub engine: Engine,
    pub folder: ModelFolder,
    pub source: ModelSource,
    pub device: String,
    pub dtype: DType,
}

impl Session {
    pub fn open(opts: &ModelOpts, rep: &Reporter) -> CliResult<Self> {
        opts.apply_threads()?;
        let source = opts.source()?;
        let folder = locate_model(&source, rep)?;
        // Opened here only to fail early and to say which device runs; the engine opens its own.
        let (device, fallback) = opts.device.open_explained()?;
        let name = describe(&device);
        let why = match (opts.device, name.as_str(), fallback) {
            (DeviceChoice::Auto, "CPU", _)
                if !candle_core::utils::cuda_is_available()
                    && !candle_core::utils::metal_is_available() =>
            {
                " (--device auto: this build has no CUDA or Metal support)".to_string()
            }
            (DeviceChoice::Auto, "CPU", Some(why)) => format!(" (--device auto: {why})"),
            (DeviceChoice::Auto, "CPU", None) => " (--device auto: no GPU found)".to_string(),
            (DeviceChoice::Auto, _, _) => " (--device auto)".to_string(),
            _ => String::new(),
        };
        rep.note(format!(
            "model: {} ({}), device: {name}{why}, dtype: {}",
            folder.model_id(),
            folder.root.display(),
            dtype_name(opts.dtype)
        ));
        if name == "CPU" && opts.dtype != DType::F32 {
            rep.warn(format!(
                "{} on the CPU is slow and less accurate; f32 is recommended there",
                dtype_name(opts.dtype)
            ));
        }
        let engine = Engine::shared(ModelChoice {
            source: source.clone(),
            device: opts.device,
            dtype: opts.dtype,
        });
        Ok(Self {
            engine,
            folder,
            source,
            device: name,
            dtype: opts.dtype,
        })
    }

    /// The model's own clip length (DiT positions / latent rate), e.g. 10 s for EzAudio-L.
    pub fn trained_seconds(&self) -> f64 {
        let c = &self.folder.config;
        let frames = match c.model.img_size {
            ImgSize::Len(n) => n,
            ImgSize::Hw([_, w]) => w,
        };
        frames as f64 / c.autoencoder.latent_sr.max(1) as f64
    }

    pub fn sample_rate(&self) -> u32 {
        self.folder.config.autoencoder.sr
    }
}

/// Where an official model may be installed, in lookup order (see [`resolve_model`]).
pub fn search_dirs(model: Official) -> Vec<PathBuf> {
    let roots = std::env::var_os(MODELS_ENV)
        .map(PathBuf::from)
        .into_iter()
        .chain(user_models_dir());
    roots.map(|r| r.join(model.name())).collect()
}

pub fn not_installed(model: Official) -> CliError {
    let mut msg = not_installed_message(model, &search_dirs(model));
    if let Some(hub) = hf_cache_dir() {
        msg += &format!(
            "\n`ezaudio models fetch` keeps the files in the Hugging Face cache at {}.",
            hub.display()
        );
    }
    CliError::new(msg)
}

/// Resolves the model; an official model that is not installed is downloaded first (unless
/// offline), with the install instructions as the error when that fails.
pub fn locate_model(source: &ModelSource, rep: &Reporter) -> CliResult<ModelFolder> {
    let err = match resolve_model(source) {
        Ok(folder) => return Ok(folder),
        Err(e) => e,
    };
    let model = match source {
        ModelSource::Folder(dir) if !dir.is_dir() => {
            return Err(CliError::new(format!(
                "model folder {} not found (pass a folder holding config.yml, dit.pt, vae/ and the text \
                 encoder, or --model l / --model xl for the official models)",
                dir.display()
            )))
        }
        ModelSource::Folder(_) => return Err(err.into()),
        ModelSource::Official(m) => *m,
    };
    // A folder that exists but is broken is reported as is; downloading would not fix it.
    if search_dirs(model)
        .iter()
        .any(|d| d.join("config.yml").is_file())
    {
        return Err(err.into());
    }
    if offline() {
        return Err(not_installed(model));
    }
    rep.note(format!(
        "{} is not installed; downloading it now ({})",
        model.name(),
        model.download_size()
    ));
    if let Err(e) = models_cmd::fetch(model, rep) {
        return Err(CliError::new(format!(
            "could not download {}: {e}\n\n{}",
            model.name(),
            not_installed(model)
        )));
    }
    Ok(resolve_model(source)?)
}

/// Quotes a word for a POSIX shell when needed.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=+,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
