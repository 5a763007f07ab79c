//! Writing a pad's clip to a WAV file (32-bit float, mono): at the model's own rate, so the
//! file holds exactly the generated samples, or resampled to the host's rate. The file is
//! written by the engine's WAV writer (the one the CLI uses); this room only picks the folder
//! and a name that is free, and claims it so that no existing file is ever overwritten.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use ezaudio_engine::audio::wav::{write_mono, SampleFormat};
use ezaudio_engine::audio::{resample, Clip, ClipMeta};

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

/// Writes `clip` into `dir` (created if needed) without overwriting: `stem.wav`, `stem-2.wav`...
/// Returns the path written.
pub fn export_wav(clip: &Clip, dir: &Path, stem: &str) -> Result<PathBuf, String> {
    export_wav_at(clip, dir, stem, clip.sample_rate)
}

/// Like [`export_wav`], resampled to `rate` first (e.g. the host's rate). Blocking work:
/// call it off the UI thread.
pub fn export_wav_at(clip: &Clip, dir: &Path, stem: &str, rate: u32) -> Result<PathBuf, String> {
    if clip.sample_rate == 0 || rate == 0 {
        return Err("clip has no sample rate".into());
    }
    let resampled;
    let samples = if rate == clip.sample_rate {
        &clip.samples
    } else {
        resampled = resample(&clip.samples, clip.sample_rate, rate).map_err(|e| e.to_string())?;
        &resampled
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = claim_name(dir, stem)?;
    write_mono(&path, samples, rate, SampleFormat::Float32).map_err(|e| {
        // Do not leave the claimed, empty or partly written file behind.
        let _ = std::fs::remove_file(&path);
        e.to_string()
    })?;
    Ok(path)
}

/// Creates the first free file of `stem.wav`, `stem-2.wav`, ... `stem-999.wav` in `dir` and
/// returns its path. The name is claimed by creating the file (create-new: it fails if the
/// file exists), so two exports racing for one name, or a file that appears meanwhile, can
/// never be overwritten.
fn claim_name(dir: &Path, stem: &str) -> Result<PathBuf, String> {
    for k in 1..1000 {
        let path = if k == 1 {
            dir.join(format!("{stem}.wav"))
        } else {
            dir.join(format!("{stem}-{k}.wav"))
        };
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(_) => return Ok(path),
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
}
