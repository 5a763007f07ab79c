//! Turning a clip into a file: output rate, level (`--normalize`), bit depth, and the JSON
//! sidecar that records how to make the same file again.
//!
//! Level policy (`--normalize auto`, the default): never boost, never clip silently.
//! - 32-bit float keeps the model's output untouched, including peaks beyond ±1 (a warning says
//!   so, because many players clip them).
//! - 24/16-bit cannot hold peaks beyond full scale, so a clip that would exceed -1 dBFS is scaled
//!   down to a -1 dBFS peak (and only then); quieter clips keep their level.
//!
//! `peak` scales every clip to `--peak-db` (default -1 dBFS), `lufs` to `--lufs` integrated
//! loudness (ITU-R BS.1770, default -23 LUFS as in EBU R128), `none` changes nothing and, for
//! integer formats, clips what exceeds full scale, with a warning that counts the samples.
//!
//! Files: every destination is checked before any model loads ([`check_free`]: the folder is
//! writable, the path is not a folder or a device); the WAV and its sidecar are written to
//! temporary files beside them and renamed into place together ([`ezaudio_engine::files`]), so
//! a kill or a full disk never leaves a truncated file or a sidecar describing other audio, and
//! without `--force` two processes racing for one name never interleave: one wins.

use std::path::{Path, PathBuf};

use clap::ValueEnum;
use serde::Serialize;

use ezaudio_engine::audio::wav::{write_mono_to, SampleFormat};
use ezaudio_engine::audio::{resample, Clip, ClipMeta};
use ezaudio_engine::files;

use super::progress::Reporter;
use super::{loudness, CliError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Normalize {
    /// Float: untouched. 24/16-bit: scaled down to a -1 dBFS peak only if it would clip.
    #[default]
    Auto,
    /// No gain; integer formats clip what exceeds full scale (with a warning).
    None,
    /// Scale the peak to --peak-db dBFS.
    Peak,
    /// Scale the integrated loudness (ITU-R BS.1770) to --lufs LUFS.
    Lufs,
}

/// How files are written; shared by `generate` and `edit`.
#[derive(Debug, Clone)]
pub struct OutputSpec {
    pub sample_rate: Option<u32>,
    pub format: SampleFormat,
    pub normalize: Normalize,
    pub peak_db: f32,
    pub lufs: f32,
    pub overwrite: bool,
}

/// Recorded beside each WAV (`<file>.wav.json`): the clip's recipe plus everything else needed
/// to regenerate it exactly.
#[derive(Debug, Clone, Serialize)]
pub struct Sidecar {
    #[serde(flatten)]
    pub meta: ClipMeta,
    pub command: String,
    pub model: String,
    pub model_path: PathBuf,
    pub device: String,
    pub dtype: String,
    pub engine: &'static str,
    pub engine_version: &'static str,
    pub model_sample_rate: u32,
    pub sample_rate: u32,
    pub bits: u16,
    pub format: String,
    pub normalize: Normalize,
    pub gain_db: f64,
    pub peak_dbfs: Option<f64>,
    pub loudness_lufs: Option<f64>,
    pub clipped_samples: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_file: Option<PathBuf>,
}

/// What the recipe needs beyond the clip's own metadata.
#[derive(Debug, Clone)]
pub struct Provenance {
    pub command: String,
    pub model: String,
    pub model_path: PathBuf,
    pub device: String,
    pub dtype: String,
    pub source_file: Option<PathBuf>,
}

pub fn sidecar_path(wav: &Path) -> PathBuf {
    let mut name = wav
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".json");
    wav.with_file_name(name)
}

/// Checks every destination (and its sidecar) before any work: refuses to replace existing
/// files unless `--force` was given, and refuses folders, special files and folders that cannot
/// be written (see [`files::check_destination`]).
pub fn check_free(paths: &[PathBuf], overwrite: bool) -> Result<(), CliError> {
    let all: Vec<PathBuf> = paths
        .iter()
        .flat_map(|p| [p.clone(), sidecar_path(p)])
        .collect();
    for p in &all {
        files::check_destination(p)?;
    }
    if overwrite {
        return Ok(());
    }
    if let Some(p) = all.iter().find(|p| p.exists()) {
        return Err(CliError::new(format!(
            "{} already exists (pass --force to overwrite)",
            p.display()
        )));
    }
    Ok(())
}

/// The output path of `-o`: `.wav` is added when the name has no extension. A folder, a device
/// and any other extension (`x.mp3` would hold WAV bytes) are refused.
pub fn wav_path(path: PathBuf) -> Result<PathBuf, CliError> {
    if path.file_name().is_none() || path.is_dir() {
        return Err(CliError::new(format!(
            "{} is a folder; give a file name (e.g. {}) or use --out-dir",
            path.display(),
            path.join("clip.wav").display()
        )));
    }
    if path.exists() && !path.is_file() {
        return Err(CliError::new(format!(
            "{} is not a regular file (a device, FIFO or socket); ezaudio writes a WAV file and its \
             .wav.json sidecar, so give a file path",
            path.display()
        )));
    }
    match path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()) {
        None => Ok(path.with_extension("wav")),
        Some(e) if e == "wav" || e == "wave" => Ok(path),
        Some(e) => Err(CliError::new(format!(
            "{}: ezaudio writes WAV files only, not .{e}; name the output .wav (and convert it afterwards)",
            path.display()
        ))),
    }
}

fn db(x: f64) -> f64 {
    20.0 * x.log10()
}

fn peak(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// Applies the level policy; returns (samples, gain in dB, clipped sample count).
pub fn level(
    samples: Vec<f32>,
    rate: u32,
    spec: &OutputSpec,
    rep: &Reporter,
    name: &str,
) -> (Vec<f32>, f64, usize) {
    let p = peak(&samples) as f64;
    let int = spec.format.is_integer();
    let mut gain = 1.0f64;
    match spec.normalize {
        Normalize::Auto | Normalize::None if p == 0.0 => {}
        Normalize::Auto => {
            let ceiling = 10f64.powf(-1.0 / 20.0);
            if int && p > ceiling {
                gain = ceiling / p;
                rep.note(format!(
                    "{name}: peak {:+.1} dBFS scaled down to -1 dBFS to fit {} (use --bits 32 to keep the level)",
                    db(p),
                    spec.format
                ));
            }
        }
        Normalize::None => {}
        Normalize::Peak if p > 0.0 => gain = 10f64.powf(spec.peak_db as f64 / 20.0) / p,
        Normalize::Peak => rep.warn(format!("{name}: the clip is silent; nothing to normalise")),
        Normalize::Lufs => match loudness::integrated_lufs(&samples, rate) {
            Some(l) => gain = 10f64.powf((spec.lufs as f64 - l) / 20.0),
            None => rep.warn(format!(
                "{name}: loudness is undefined (shorter than 0.4 s or near silence); level left unchanged"
            )),
        },
    }
    let mut out = samples;
    if gain != 1.0 {
        out.iter_mut().for_each(|s| *s = (*s as f64 * gain) as f32);
    }
    let over = out.iter().filter(|s| s.abs() > 1.0).count();
    if over > 0 {
        let after = db(peak(&out) as f64);
        if int {
            rep.warn(format!(
                "{name}: {over} sample(s) above full scale (peak {after:+.1} dBFS) were clipped for {}; \
                 use --normalize peak or --bits 32 to avoid it",
                spec.format
            ));
        } else {
            rep.warn(format!(
                "{name}: peak {after:+.1} dBFS is above full scale; kept as is in the 32-bit float file \
                 (many players clip it: --normalize peak brings it to -1 dBFS)"
            ));
        }
    }
    (out, db(gain), if int { over } else { 0 })
}

/// Resamples, levels and writes `clip` plus its sidecar. Returns the written rate.
pub fn write_clip(
    clip: &Clip,
    path: &Path,
    spec: &OutputSpec,
    prov: &Provenance,
    rep: &Reporter,
) -> Result<(), CliError> {
    let rate = spec.sample_rate.unwrap_or(clip.sample_rate);
    let samples = resample(&clip.samples, clip.sample_rate, rate)?;
    write_samples(samples, rate, clip, path, spec, prov, rep)
}

/// Like [`write_clip`] for samples already at the output rate (edits spliced at the file's rate).
pub fn write_samples(
    samples: Vec<f32>,
    rate: u32,
    clip: &Clip,
    path: &Path,
    spec: &OutputSpec,
    prov: &Provenance,
    rep: &Reporter,
) -> Result<(), CliError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            CliError::new(format!("cannot create folder {}: {e}", parent.display()))
        })?;
    }
    let (samples, gain_db, clipped) = level(samples, rate, spec, rep, &name);
    let mut wav = files::stage(path)?;
    write_mono_to(wav.file(), path, &samples, rate, spec.format)?;
    let p = peak(&samples) as f64;
    let sidecar = Sidecar {
        meta: clip.meta.clone(),
        command: prov.command.clone(),
        model: prov.model.clone(),
        model_path: prov.model_path.clone(),
        device: prov.device.clone(),
        dtype: prov.dtype.clone(),
        engine: "ezaudio-engine",
        engine_version: env!("CARGO_PKG_VERSION"),
        model_sample_rate: clip.sample_rate,
        sample_rate: rate,
        bits: spec.format.bits(),
        format: spec.format.to_string(),
        normalize: spec.normalize,
        gain_db: if gain_db.abs() < 1e-9 { 0.0 } else { gain_db },
        peak_dbfs: (p > 0.0).then(|| {
            db(p.min(if spec.format.is_integer() {
                1.0
            } else {
                f64::MAX
            }))
        }),
        loudness_lufs: loudness::integrated_lufs(&samples, rate),
        clipped_samples: clipped,
        source_file: prov.source_file.clone(),
    };
    let json_path = sidecar_path(path);
    let text = serde_json::to_string_pretty(&sidecar)
        .map_err(|e| CliError::new(format!("metadata: {e}")))?;
    let mut json = files::stage(&json_path)?;
    std::io::Write::write_all(json.file(), (text + "\n").as_bytes())
        .map_err(|e| CliError::new(format!("cannot write {}: {e}", json_path.display())))?;
    // Both or neither: a failure above dropped the temporary files and kept the old pair.
    files::commit_all(vec![wav, json], spec.overwrite)?;
    let loud = sidecar
        .loudness_lufs
        .map(|l| format!(", {l:.1} LUFS"))
        .unwrap_or_default();
    let pk = sidecar
        .peak_dbfs
        .map(|p| format!(", peak {p:+.1} dBFS"))
        .unwrap_or_default();
    rep.note(format!(
        "wrote {} ({:.2} s, {} Hz, {}{pk}{loud})",
        path.display(),
        samples.len() as f64 / rate as f64,
        rate,
        spec.format
    ));
    Ok(())
}
