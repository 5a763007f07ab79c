//! Writing a pad's clip to a WAV file (32-bit float or 24-bit PCM, mono) with a `.wav.json`
//! sidecar like the CLI's (the clip's `ClipMeta` plus the output's rate, format, gain, peak and
//! loudness): at the model's own rate, so the file holds exactly the generated samples, or
//! resampled to the host's rate; with the pad's output level applied or raw. The file is
//! written by the engine's WAV writer (the one the CLI uses); this room picks the folder and a
//! name that carries the rate and format, and claims it so that no file is ever overwritten.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use ezaudio_engine::audio::wav::{write_mono, SampleFormat};
use ezaudio_engine::audio::{resample, Clip, ClipMeta};
use serde::Serialize;

use crate::level::{self, OutputLevel};

/// `~/Music/EzAudio` (or the system temp folder when there is no home).
pub fn default_export_dir() -> PathBuf {
    std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .map(|home| PathBuf::from(home).join("Music").join("EzAudio"))
        .unwrap_or_else(|| std::env::temp_dir().join("EzAudio"))
}

/// `pad03_dog-barking-in-the_seed42` (no extension): pad, a slug of the prompt, the seed.
pub fn file_stem(pad: usize, meta: &ClipMeta) -> String {
    let mut slug = String::new();
    for c in meta.recipe.prompt.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
        if slug.len() >= 32 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    let slug = if slug.is_empty() { "clip" } else { slug };
    format!("pad{:02}_{slug}_seed{}", pad + 1, meta.recipe.seed)
}

/// How a clip is written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExportSpec {
    pub rate: u32,
    pub format: SampleFormat,
    /// Applied before writing (the pad's level, or off for the raw clip).
    pub level: OutputLevel,
}

/// `stem_24000Hz_f32` / `stem_48000Hz_24bit`: the rate and format are part of the name, so
/// exports of one clip at different settings never collide.
pub fn spec_stem(stem: &str, spec: &ExportSpec) -> String {
    let format = match spec.format {
        SampleFormat::Float32 => "f32",
        SampleFormat::Int24 => "24bit",
        SampleFormat::Int16 => "16bit",
    };
    format!("{stem}_{}Hz_{format}", spec.rate)
}

/// Beside each WAV (`<file>.wav.json`), in the CLI's layout: the clip's recipe and kind, then
/// the output.
#[derive(Debug, Clone, Serialize)]
pub struct Sidecar {
    #[serde(flatten)]
    pub meta: ClipMeta,
    pub command: &'static str,
    pub engine: &'static str,
    pub engine_version: &'static str,
    pub model_sample_rate: u32,
    pub sample_rate: u32,
    pub bits: u16,
    pub format: String,
    /// `none`, `peak` or `lufs`, as the CLI names its normalisations.
    pub normalize: &'static str,
    /// The pad's level setting behind `normalize` (its target).
    pub level: OutputLevel,
    pub gain_db: f64,
    pub peak_dbfs: Option<f64>,
    pub loudness_lufs: Option<f64>,
    pub clipped_samples: usize,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    pub wav: PathBuf,
    pub sidecar: PathBuf,
    /// The name wanted was taken, so a `-N` suffix was added.
    pub renamed: bool,
    pub gain_db: f32,
}

/// `<file>.wav.json`.
pub fn sidecar_path(wav: &Path) -> PathBuf {
    let mut name = wav
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".json");
    wav.with_file_name(name)
}

/// Writes `clip` into `dir` (created if needed) without overwriting: `stem.wav`, `stem-2.wav`...
/// at the clip's rate, 32-bit float, raw. Returns the path written.
pub fn export_wav(clip: &Clip, dir: &Path, stem: &str) -> Result<PathBuf, String> {
    export_wav_at(clip, dir, stem, clip.sample_rate)
}

/// Like [`export_wav`], resampled to `rate` first (e.g. the host's rate). Blocking work:
/// call it off the UI thread.
pub fn export_wav_at(clip: &Clip, dir: &Path, stem: &str, rate: u32) -> Result<PathBuf, String> {
    let spec = ExportSpec {
        rate,
        format: SampleFormat::Float32,
        level: OutputLevel::Off,
    };
    export_clip(clip, dir, stem, &spec).map(|e| e.wav)
}

/// Writes `clip` as `spec` says, with its sidecar, under `stem` (the caller adds
/// [`spec_stem`] for a name with the rate). Integer formats cannot hold more than full scale:
/// a clip that would clip there is scaled down to -1 dBFS (as the CLI's `auto` does) and the
/// sidecar records the gain. Blocking: call it off the UI thread.
pub fn export_clip(
    clip: &Clip,
    dir: &Path,
    stem: &str,
    spec: &ExportSpec,
) -> Result<Exported, String> {
    if clip.sample_rate == 0 || spec.rate == 0 {
        return Err("clip has no sample rate".into());
    }
    let mut samples = if spec.rate == clip.sample_rate {
        clip.samples.clone()
    } else {
        resample(&clip.samples, clip.sample_rate, spec.rate).map_err(|e| e.to_string())?
    };
    // Measured on the raw clip at its own rate, as the publisher does: the file sounds as the pad.
    let mut gain = spec.level.gain(&clip.samples, clip.sample_rate);
    let ceiling = level::from_db(level::DEFAULT_PEAK_DBFS);
    if spec.format.is_integer() && level::peak(&samples) * gain > 1.0 {
        gain = ceiling / level::peak(&samples).max(1e-12);
    }
    if gain != 1.0 {
        samples.iter_mut().for_each(|s| *s *= gain);
    }
    let clipped = match spec.format.is_integer() {
        true => samples.iter().filter(|s| s.abs() > 1.0).count(),
        false => 0,
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let (wav, renamed) = claim_name(dir, stem)?;
    let json = sidecar_path(&wav);
    let cleanup = |e: String| {
        // Do not leave the claimed, empty or partly written files behind.
        let _ = std::fs::remove_file(&wav);
        let _ = std::fs::remove_file(&json);
        e
    };
    write_mono(&wav, &samples, spec.rate, spec.format).map_err(|e| cleanup(e.to_string()))?;
    let peak = level::peak(&samples) as f64;
    let sidecar = Sidecar {
        meta: clip.meta.clone(),
        command: "ezaudio-plugin export",
        engine: "ezaudio-engine",
        engine_version: env!("CARGO_PKG_VERSION"),
        model_sample_rate: clip.sample_rate,
        sample_rate: spec.rate,
        bits: spec.format.bits(),
        format: spec.format.to_string(),
        normalize: match spec.level {
            OutputLevel::Off => "none",
            OutputLevel::Peak { .. } => "peak",
            OutputLevel::Lufs { .. } => "lufs",
        },
        level: spec.level,
        gain_db: if (gain - 1.0).abs() < 1e-9 {
            0.0
        } else {
            level::to_db(gain) as f64
        },
        peak_dbfs: (peak > 0.0).then(|| 20.0 * peak.log10()),
        loudness_lufs: level::integrated_lufs(&samples, spec.rate),
        clipped_samples: clipped,
    };
    let text = serde_json::to_string_pretty(&sidecar).map_err(|e| cleanup(e.to_string()))?;
    std::fs::write(&json, text + "\n")
        .map_err(|e| cleanup(format!("cannot write {}: {e}", json.display())))?;
    Ok(Exported {
        wav,
        sidecar: json,
        renamed,
        gain_db: level::to_db(gain),
    })
}

/// Creates the first free file of `stem.wav`, `stem-2.wav`, ... `stem-999.wav` in `dir` and
/// returns its path (and whether a suffix was needed). The name is claimed by creating the file (create-new: it fails if the
/// file exists), so two exports racing for one name, or a file that appears meanwhile, can
/// never be overwritten.
fn claim_name(dir: &Path, stem: &str) -> Result<(PathBuf, bool), String> {
    for k in 1..1000 {
        let path = if k == 1 {
            dir.join(format!("{stem}.wav"))
        } else {
            dir.join(format!("{stem}-{k}.wav"))
        };
        // A sidecar without its WAV (a file deleted by hand) also keeps its name taken.
        if sidecar_path(&path).exists() {
            continue;
        }
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(_) => return Ok((path, k > 1)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    Err("too many files with this name".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ezaudio_engine::audio::wav::read_mono;
    use ezaudio_engine::Recipe;

    #[test]
    fn names_and_writes_bit_exact_float_wavs() {
        let meta = ClipMeta {
            recipe: Recipe {
                seed: 42,
                ..Recipe::new("A dog, barking!  loud")
            },
            ..Default::default()
        };
        assert_eq!(file_stem(2, &meta), "pad03_a-dog-barking-loud_seed42");
        assert_eq!(file_stem(0, &ClipMeta::default()), "pad01_clip_seed0");
        let dir = std::env::temp_dir().join(format!("ezaudio-export-test-{}", std::process::id()));
        let clip = Clip::new(vec![0.25, -1.0, 1.0e-7, 0.0], 24_000, meta);
        let a = export_wav(&clip, &dir, "x").unwrap();
        let b = export_wav(&clip, &dir, "x").unwrap();
        assert_eq!(a.file_name().unwrap(), "x.wav");
        assert_eq!(b.file_name().unwrap(), "x-2.wav");
        let back = read_mono(&a).unwrap();
        assert_eq!((back.sample_rate, back.channels), (24_000, 1));
        assert_eq!(back.samples, clip.samples);
        let c = export_wav_at(
            &Clip::new(vec![0.1; 2400], 24_000, ClipMeta::default()),
            &dir,
            "y",
            48_000,
        )
        .unwrap();
        let back = read_mono(&c).unwrap();
        assert_eq!((back.sample_rate, back.samples.len()), (48_000, 4800));
        // A file that is already there (even an empty one) is never overwritten.
        std::fs::write(dir.join("z.wav"), b"").unwrap();
        std::fs::write(dir.join("z-2.wav"), b"mine").unwrap();
        let d = export_wav(&clip, &dir, "z").unwrap();
        assert_eq!(d.file_name().unwrap(), "z-3.wav");
        assert_eq!(std::fs::read(dir.join("z-2.wav")).unwrap(), b"mine");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn levelled_24_bit_export_with_sidecar() {
        let dir = std::env::temp_dir().join(format!("ezaudio-export24-{}", std::process::id()));
        let meta = ClipMeta {
            recipe: Recipe {
                seed: 9,
                ..Recipe::new("hot hit")
            },
            ..Default::default()
        };
        // +12 dBFS: the pad's -1 dBFS peak level brings it into range.
        let samples: Vec<f32> = (0..24_000).map(|i| 4.0 * (i as f32 * 0.1).sin()).collect();
        let clip = Clip::new(samples, 24_000, meta);
        let spec = ExportSpec {
            rate: 48_000,
            format: SampleFormat::Int24,
            level: OutputLevel::Peak { dbfs: -1.0 },
        };
        let stem = spec_stem(&file_stem(0, &clip.meta), &spec);
        assert_eq!(stem, "pad01_hot-hit_seed9_48000Hz_24bit");
        let a = export_clip(&clip, &dir, &stem, &spec).unwrap();
        assert_eq!(
            a.wav.file_name().unwrap(),
            "pad01_hot-hit_seed9_48000Hz_24bit.wav"
        );
        assert_eq!(
            a.sidecar.file_name().unwrap(),
            "pad01_hot-hit_seed9_48000Hz_24bit.wav.json"
        );
        assert!(!a.renamed);
        let back = read_mono(&a.wav).unwrap();
        assert_eq!(back.sample_rate, 48_000);
        let p = level::to_db(level::peak(&back.samples));
        assert!((p - -1.0).abs() < 0.05, "{p}");
        let side: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&a.sidecar).unwrap()).unwrap();
        assert_eq!(side["prompt"], "hot hit");
        assert_eq!(
            (side["bits"].as_u64(), side["sample_rate"].as_u64()),
            (Some(24), Some(48_000))
        );
        assert_eq!(side["normalize"], "peak");
        assert!(
            (side["gain_db"].as_f64().unwrap() - -13.04).abs() < 0.05,
            "{}",
            side["gain_db"]
        );
        // The same export again is a new file, and says so.
        let b = export_clip(&clip, &dir, &stem, &spec).unwrap();
        assert!(b.renamed);
        assert_eq!(
            b.wav.file_name().unwrap(),
            "pad01_hot-hit_seed9_48000Hz_24bit-2.wav"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
