//! Writing a pad's clip to a WAV file (32-bit float, mono): at the model's own rate, so the
//! file holds exactly the generated samples, or resampled to the host's rate.

use std::path::{Path, PathBuf};

use ezaudio_engine::clip::{Clip, ClipMeta};

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
    for c in meta.prompt.chars().flat_map(char::to_lowercase) {
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
    format!("pad{:02}_{slug}_seed{}", pad + 1, meta.seed)
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
    if rate != clip.sample_rate {
        let samples = ezaudio_engine::clip::resample(&clip.samples, clip.sample_rate, rate)
            .map_err(|e| e.to_string())?;
        let resampled = Clip::new(samples, rate, clip.meta.clone());
        return export_wav_at(&resampled, dir, stem, rate);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = (1..1000)
        .map(|k| {
            if k == 1 {
                dir.join(format!("{stem}.wav"))
            } else {
                dir.join(format!("{stem}-{k}.wav"))
            }
        })
        .find(|p| !p.exists())
        .ok_or("too many files with this name")?;
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: clip.sample_rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut writer =
        hound::WavWriter::create(&path, spec).map_err(|e| format!("{}: {e}", path.display()))?;
    for &s in &clip.samples {
        writer
            .write_sample(s)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    writer
        .finalize()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_writes_bit_exact_float_wavs() {
        let meta = ClipMeta {
            prompt: "A dog, barking!  loud".into(),
            seed: 42,
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
        let mut reader = hound::WavReader::open(&a).unwrap();
        assert_eq!(reader.spec().sample_rate, 24_000);
        let back: Vec<f32> = reader.samples::<f32>().map(|s| s.unwrap()).collect();
        assert_eq!(back, clip.samples);
        let c = export_wav_at(
            &Clip::new(vec![0.1; 2400], 24_000, ClipMeta::default()),
            &dir,
            "y",
            48_000,
        )
        .unwrap();
        let reader = hound::WavReader::open(&c).unwrap();
        assert_eq!((reader.spec().sample_rate, reader.len()), (48_000, 4800));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
