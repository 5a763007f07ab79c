//! `ezaudio models list | fetch | verify | convert`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use clap::Subcommand;
use indicatif::ProgressBar;

use ezaudio_engine::install::{
    damaged_part, fetch_official_with, hf_cache_dir, resolve_model, user_models_dir, FetchProgress,
    ModelFolder, ModelSource, Official, MODELS_ENV,
};
use ezaudio_engine::model::dit::MaskDit;
use ezaudio_engine::model::sampler::Schedule;
use ezaudio_engine::model::t5::load_t5_folder;
use ezaudio_engine::model::text::TextTokenizer;
use ezaudio_engine::model::vae::{Oobleck, VaeConfig};
use ezaudio_engine::pipeline::{check_text_encoder, check_vae};
use ezaudio_engine::weights::Checkpoint;

use super::progress::{fmt_bytes, Reporter};
use super::session::{dtype_name, locate_model, not_installed};
use super::{offline, CliError, CliResult};

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Show installed models, where they are and their size on disk
    List,
    /// Download an official model (l or xl) into the Hugging Face cache
    Fetch {
        /// l (EzAudio-L, about 6 GB) or xl (EzAudio-XL, about 15 GB)
        #[arg(value_parser = parse_official)]
        model: Official,
        /// Also download the energy ControlNet for `generate --control` (EzAudio-L only, 1.2 GB)
        #[arg(long)]
        controlnet: bool,
    },
    /// Load every checkpoint and check its tensors' names and shapes against the model
    Verify {
        /// A model folder, or l / xl [default: l]
        #[arg(long, value_name = "DIR|l|xl")]
        model: Option<String>,
    },
    /// Write a model folder with safetensors checkpoints (faster to load; optionally f16/bf16)
    Convert {
        /// Source: a model folder, or l / xl
        #[arg(long, value_name = "DIR|l|xl")]
        model: String,
        /// Destination folder (created)
        #[arg(long)]
        out: PathBuf,
        /// Precision of the DiT and VAE tensors (the text encoder is copied as is: T5 is
        /// unstable in f16)
        #[arg(long, default_value = "f32", value_parser = |s: &str| ezaudio_engine::runtime::parse_dtype(s).map_err(|e| e.to_string()))]
        dtype: DType,
    },
}

fn parse_official(s: &str) -> Result<Official, String> {
    match s.parse::<ModelSource>() {
        Ok(ModelSource::Official(m)) => Ok(m),
        _ => Err(format!("'{s}' is not an official model (expected l or xl)")),
    }
}

pub fn run(cmd: ModelsCommand) -> CliResult {
    let rep = Reporter::new(false);
    match cmd {
        ModelsCommand::List => list(),
        ModelsCommand::Fetch { model, controlnet } => {
            if controlnet && model != Official::L {
                return Err(CliError::new(
                    "--controlnet: the published energy ControlNet belongs to EzAudio-L (use `fetch l --controlnet`)",
                ));
            }
            let folder = fetch_with(model, controlnet, &rep)?;
            crate::outln!("{} is installed at {}", model.name(), folder.root.display())?;
            Ok(())
        }
        ModelsCommand::Verify { model } => {
            let source = model.as_deref().unwrap_or("l").parse::<ModelSource>()?;
            verify(&source)
        }
        ModelsCommand::Convert { model, out, dtype } => {
            convert(&model.parse::<ModelSource>()?, &out, dtype, &rep)
        }
    }
}

/// Bytes on disk of a model's files (following the Hugging Face cache's symlinks).
fn folder_size(f: &ModelFolder) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let te: u64 = std::fs::read_dir(&f.text_encoder)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .map(|p| size(&p))
                .sum()
        })
        .unwrap_or(0);
    size(&f.dit) + size(&f.vae) + size(&f.vae_config) + size(&f.root.join("config.yml")) + te
}

fn list() -> CliResult {
    let mut found = 0;
    for m in [Official::L, Official::Xl] {
        match resolve_model(&ModelSource::Official(m)) {
            Ok(f) => match damaged_part(&f) {
                Some((file, why)) => crate::outln!(
                    "{:<12} {:>9}  {} DAMAGED: {why}\n{:<24}repair: delete {} and run `ezaudio models fetch {}`",
                    m.name(),
                    "-",
                    f.root.display(),
                    "",
                    file.display(),
                    short(m)
                )?,
                None => {
                    found += 1;
                    crate::outln!(
                        "{:<12} {:>9}  {}",
                        m.name(),
                        fmt_bytes(folder_size(&f)),
                        f.root.display()
                    )?;
                }
            },
            Err(_) => crate::outln!(
                "{:<12} {:>9}  (not installed: `ezaudio models fetch {}`)",
                m.name(),
                "-",
                short(m)
            )?,
        }
    }
    // Custom model folders beside the official ones.
    let roots: Vec<PathBuf> = std::env::var_os(MODELS_ENV)
        .map(PathBuf::from)
        .into_iter()
        .chain(user_models_dir())
        .collect();
    for root in &roots {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        dirs.sort();
        for dir in dirs {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name == Official::L.name()
                || name == Official::Xl.name()
                || !dir.join("config.yml").is_file()
            {
                continue;
            }
            match ModelFolder::open(&dir) {
                Ok(f) => {
                    found += 1;
                    crate::outln!(
                        "{:<12} {:>9}  {}",
                        f.model_id(),
                        fmt_bytes(folder_size(&f)),
                        dir.display()
                    )?;
                }
                Err(e) => {
                    crate::outln!("{name:<12} {:>9}  {} (incomplete: {e})", "-", dir.display())?
                }
            }
        }
    }
    if found == 0 {
        crate::outln!("\nNo EzAudio models are installed. `ezaudio models fetch l` downloads EzAudio-L (about 6 GB).")?;
    }
    crate::outln!("\nLooked in:")?;
    for d in roots.iter().chain(hf_cache_dir().iter()) {
        crate::outln!("  {}", d.display())?;
    }
    Ok(())
}

fn short(m: Official) -> &'static str {
    match m {
        Official::L => "l",
        Official::Xl => "xl",
    }
}

/// Downloads an official model's files into the Hugging Face cache that [`resolve_model`]
/// searches (see [`fetch_official`]), with a bar per file, then returns the resolved folder.
pub fn fetch(model: Official, rep: &Reporter) -> CliResult<ModelFolder> {
    fetch_with(model, false, rep)
}

/// [`fetch`], plus the ControlNet checkpoint ([`CONTROLNET_FILE`]) when `controlnet`.
pub fn fetch_with(model: Official, controlnet: bool, rep: &Reporter) -> CliResult<ModelFolder> {
    if offline() {
        return Err(CliError::new(format!(
            "downloads are disabled (EZAUDIO_OFFLINE / HF_HUB_OFFLINE)\n\n{}",
            not_installed(model)
        )));
    }
    // A damaged cached file would be kept by the download (it only fetches what is missing):
    // remove it, and its blob behind the cache's symlink, so it is fetched again.
    if let Ok(f) = resolve_model(&ModelSource::Official(model)) {
        while let Some((file, why)) = damaged_part(&f) {
            rep.warn(format!("{why}; removing it to download it again"));
            let blob = std::fs::canonicalize(&file).ok();
            let removed = std::fs::remove_file(&file).is_ok();
            if let Some(b) = blob.filter(|b| *b != file) {
                let _ = std::fs::remove_file(b);
            }
            if !removed {
                return Err(CliError::new(format!(
                    "cannot remove the damaged {}; delete it and run `ezaudio models fetch {}` again",
                    file.display(),
                    short(model)
                )));
            }
        }
    }
    let mut bar: Option<(usize, ProgressBar)> = None;
    let result = fetch_official_with(model, controlnet, &mut |p: FetchProgress| {
        if bar.as_ref().is_none_or(|(i, _)| *i != p.index) {
            if let Some((_, old)) = bar.take() {
                old.finish_and_clear();
            }
            if !rep.is_tty() {
                rep.note(format!("downloading {}: {}", p.repo, p.file));
            }
            let label = p.file.rsplit('/').next().unwrap_or(&p.file);
            bar = Some((p.index, rep.bytes_bar(label, 0)));
        }
        if let Some((_, b)) = &bar {
            if p.bytes_total > 0 {
                b.set_length(p.bytes_total);
            }
            b.set_position(p.bytes_done);
        }
    });
    if let Some((_, old)) = bar.take() {
        old.finish_and_clear();
    }
    let folder = result?;
    if let Some((file, why)) = damaged_part(&folder) {
        return Err(CliError::new(format!(
            "{why}\nthe download left a damaged file: delete {} and run `ezaudio models fetch {}` again",
            file.display(),
            short(model)
        )));
    }
    Ok(folder)
}

fn param_count(ckpt: &Checkpoint) -> usize {
    ckpt.names()
        .filter_map(|n| ckpt.dims(n))
        .map(|d| d.iter().product::<usize>())
        .sum()
}

fn verify(source: &ModelSource) -> CliResult {
    let folder = match source {
        ModelSource::Official(m) => resolve_model(source).map_err(|_| not_installed(*m))?,
        ModelSource::Folder(_) => locate_model(source, &Reporter::new(true))?,
    };
    let cfg = &folder.config;
    crate::outln!(
        "verifying {} at {}",
        folder.model_id(),
        folder.root.display()
    )?;
    let dev = Device::Cpu;
    let mut problems = 0;
    let mut report = |part: &str, outcome: ezaudio_engine::Result<String>| match outcome {
        Ok(msg) => crate::outln!("  OK       {part:<14} {msg}"),
        Err(e) => {
            problems += 1;
            crate::outln!("  PROBLEM  {part:<14} {e}")
        }
    };
    report(
        "config",
        Ok(format!(
            "DiT width {} x {} blocks, {} latent channels, {} Hz",
            cfg.model.embed_dim,
            cfg.model.depth,
            cfg.model.latent_channels(),
            cfg.autoencoder.sr
        )),
    )?;
    report(
        "scheduler",
        Schedule::new(&cfg.diff).map(|_| {
            format!(
                "DDIM, {} training steps, {}",
                cfg.diff.num_train_timesteps, cfg.diff.prediction_type
            )
        }),
    )?;
    let tok = folder.text_encoder.join("tokenizer.json");
    report(
        "tokenizer",
        TextTokenizer::from_file(&tok, cfg.text_encoder.max_length)
            .map(|_| tok.display().to_string()),
    )?;
    report(
        "text encoder",
        load_t5_folder(&folder.text_encoder, DType::F32, &dev).and_then(|(enc, _)| {
            check_text_encoder(&folder, enc.hidden_size())?;
            Ok(format!(
                "{} (width {})",
                folder.text_encoder.display(),
                enc.hidden_size()
            ))
        }),
    )?;
    report(
        "DiT",
        Checkpoint::load(&folder.dit, Some("model"), None).and_then(|ckpt| {
            MaskDit::new(&cfg.model, ckpt.var_builder(DType::F32, &dev))?;
            ckpt.ensure_all_used(|_| false)?;
            Ok(format!(
                "{} ({} tensors, {:.1}M parameters)",
                folder.dit.display(),
                ckpt.names().count(),
                param_count(&ckpt) as f64 / 1e6
            ))
        }),
    )?;
    report(
        "VAE",
        VaeConfig::from_file(&folder.vae_config).and_then(|vcfg| {
            let ckpt = Checkpoint::load(&folder.vae, Some("state_dict"), Some("autoencoder."))?;
            Oobleck::new(&vcfg, ckpt.var_builder(DType::F32, &dev))?;
            ckpt.ensure_all_used(|_| false)?;
            check_vae(&folder, &vcfg)?;
            Ok(format!(
                "{} ({} tensors, {:.1}M parameters)",
                folder.vae.display(),
                ckpt.names().count(),
                param_count(&ckpt) as f64 / 1e6
            ))
        }),
    )?;
    if problems > 0 {
        return Err(CliError::new(format!(
            "{problems} part(s) of {} failed verification",
            folder.model_id()
        )));
    }
    crate::outln!("all parts OK")?;
    Ok(())
}

/// Tensors ready for safetensors: contiguous, floating ones in `dtype`.
fn for_saving(ckpt: &Checkpoint, dtype: DType) -> CliResult<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for name in ckpt.names() {
        let Some(t) = ckpt.get(name)? else { continue };
        let t = if t.dtype().is_float() {
            t.to_dtype(dtype)?
        } else {
            t
        };
        out.insert(name.to_string(), t.contiguous()?);
    }
    Ok(out)
}

fn copy(from: &Path, to: &Path) -> CliResult {
    std::fs::copy(from, to).map(|_| ()).map_err(|e| {
        CliError::new(format!(
            "cannot copy {} to {}: {e}",
            from.display(),
            to.display()
        ))
    })
}

fn convert(source: &ModelSource, out: &Path, dtype: DType, rep: &Reporter) -> CliResult {
    let folder = locate_model(source, rep)?;
    let src_config = folder.root.join("config.yml");
    if !src_config.is_file() {
        return Err(CliError::new(format!(
            "{} has no config.yml to copy (models in the Hugging Face cache are converted from a model \
             folder: place the official files in a folder with the official config.yml first)",
            folder.root.display()
        )));
    }
    // Built under a temporary name beside `out` and renamed into place when complete and
    // loadable: a failure leaves no half-converted folder (and `out` is checked now, before the
    // checkpoints load).
    let staged = ezaudio_engine::files::stage_dir(out)?;
    let final_out = out;
    let out = staged.path();
    let mkdir = |d: &Path| {
        std::fs::create_dir_all(d)
            .map_err(|e| CliError::new(format!("cannot create {}: {e}", d.display())))
    };
    mkdir(&out.join("vae"))?;
    let save = |tensors: &HashMap<String, Tensor>, path: &Path| -> CliResult {
        candle_core::safetensors::save(tensors, path)
            .map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display())))
    };
    rep.note(format!(
        "DiT: {} -> dit.safetensors ({})",
        folder.dit.display(),
        dtype_name(dtype)
    ));
    let dit = Checkpoint::load(&folder.dit, Some("model"), None)?;
    save(&for_saving(&dit, dtype)?, &out.join("dit.safetensors"))?;
    drop(dit);
    // Weight norm stays as in the file (weight_g / weight_v); the loader folds it.
    rep.note(format!(
        "VAE: {} -> vae/vae.safetensors",
        folder.vae.display()
    ));
    let vae = Checkpoint::load(&folder.vae, Some("state_dict"), Some("autoencoder."))?;
    save(
        &for_saving(&vae, dtype)?,
        &out.join("vae").join("vae.safetensors"),
    )?;
    copy(&folder.vae_config, &out.join("vae").join("config.json"))?;
    // The text encoder is copied as is, into the folder name config.yml points at.
    let te_rel = folder
        .text_encoder
        .strip_prefix(&folder.root)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| {
            PathBuf::from(
                folder
                    .config
                    .text_encoder
                    .model
                    .rsplit('/')
                    .next()
                    .unwrap_or("text_encoder"),
            )
        });
    let te_out = out.join(te_rel);
    mkdir(&te_out)?;
    let entries = std::fs::read_dir(&folder.text_encoder).map_err(|e| {
        CliError::new(format!(
            "cannot read {}: {e}",
            folder.text_encoder.display()
        ))
    })?;
    for p in entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
    {
        if let Some(name) = p.file_name() {
            copy(&p, &te_out.join(name))?;
        }
    }
    copy(&src_config, &out.join("config.yml"))?;
    let converted = ModelFolder::open(out)?;
    let rel = |p: &Path| final_out.join(p.strip_prefix(out).unwrap_or(p));
    let (dit, vae) = (rel(&converted.dit), rel(&converted.vae));
    staged.commit()?;
    crate::outln!(
        "converted {} to {} (DiT {}, VAE {})",
        folder.model_id(),
        final_out.display(),
        dit.display(),
        vae.display()
    )?;
    Ok(())
}
