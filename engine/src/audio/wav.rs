//! WAV files in and out.
//!
//! Reading accepts whatever `hound` reads (8/16/24/32-bit integer PCM, 32-bit float, any number
//! of channels) and mixes to mono, because EzAudio is a mono model. Writing produces mono
//! 32-bit float (the default: the model's output may exceed ±1 and float keeps it), or 24/16-bit
//! integer PCM, which cannot hold values beyond full scale: callers decide how to bring the
//! signal into range first (see the CLI's `--normalize`); [`write_mono`] then only clamps.

use std::fmt;
use std::path::Path;

use super::resample::{MAX_RATE, MIN_RATE};
use crate::error::{Error, Result};
use crate::files;

/// Sample format of a written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SampleFormat {
    /// IEEE float, 32 bits: keeps values beyond ±1.
    #[default]
    Float32,
    Int24,
    Int16,
}

impl SampleFormat {
    pub fn from_bits(bits: u16) -> Result<Self> {
        match bits {
            32 => Ok(Self::Float32),
            24 => Ok(Self::Int24),
            16 => Ok(Self::Int16),
            other => Err(Error::InvalidInput(format!(
                "unsupported bit depth {other} (expected 32, 24 or 16)"
            ))),
        }
    }
    pub fn bits(self) -> u16 {
        match self {
            Self::Float32 => 32,
            Self::Int24 => 24,
            Self::Int16 => 16,
        }
    }
    /// Integer formats clip at full scale.
    pub fn is_integer(self) -> bool {
        !matches!(self, Self::Float32)
    }
}

impl fmt::Display for SampleFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Float32 => write!(f, "32-bit float"),
            Self::Int24 => write!(f, "24-bit PCM"),
            Self::Int16 => write!(f, "16-bit PCM"),
        }
    }
}

/// A WAV file mixed to mono.
#[derive(Debug, Clone, PartialEq)]
pub struct MonoAudio {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    /// Channels in the file before the mix.
    pub channels: u16,
}

impl MonoAudio {
    pub fn duration_s(&self) -> f64 {
        self.samples.len() as f64 / self.sample_rate.max(1) as f64
    }
}

fn unreadable(path: &Path, e: impl fmt::Display) -> Error {
    Error::InvalidInput(format!("{}: not a readable WAV file ({e})", path.display()))
}

/// Reads any WAV `hound` understands and mixes its channels to mono (the mean of the channels).
/// Folders, special files and sample rates outside [`MIN_RATE`]..=[`MAX_RATE`] are refused by
/// name before any sample is read.
pub fn read_mono(path: &Path) -> Result<MonoAudio> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::InvalidInput(format!(
                "{}: no such file",
                path.display()
            )))
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    if meta.is_dir() {
        return Err(Error::InvalidInput(format!(
            "{} is a folder, not a WAV file",
            path.display()
        )));
    }
    if !meta.is_file() {
        return Err(Error::InvalidInput(format!(
            "{} is not a regular file (a device, FIFO or socket); give a WAV file",
            path.display()
        )));
    }
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    decode_mono(std::io::BufReader::new(file), path)
}

/// [`read_mono`] on bytes from any reader; `origin` names them in messages.
pub fn decode_mono<R: std::io::Read>(reader: R, origin: &Path) -> Result<MonoAudio> {
    let path = origin;
    let mut reader = hound::WavReader::new(reader).map_err(|e| unreadable(path, e))?;
    let spec = reader.spec();
    if spec.channels == 0 || spec.sample_rate == 0 {
        return Err(unreadable(path, "zero channels or zero sample rate"));
    }
    if !(MIN_RATE..=MAX_RATE).contains(&spec.sample_rate) {
        return Err(Error::InvalidInput(format!(
            "{}: sample rate {} Hz is outside the supported {MIN_RATE}..={MAX_RATE} Hz",
            path.display(),
            spec.sample_rate
        )));
    }
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader
            .samples::<f32>()
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| unreadable(path, e))?,
        hound::SampleFormat::Int => {
            if spec.bits_per_sample == 0 || spec.bits_per_sample > 32 {
                return Err(unreadable(
                    path,
                    format!("{}-bit integer samples", spec.bits_per_sample),
                ));
            }
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| unreadable(path, e))?
        }
    };
    let ch = spec.channels as usize;
    let samples: Vec<f32> = if ch == 1 {
        interleaved
    } else {
        interleaved
            .chunks_exact(ch)
            .map(|frame| frame.iter().sum::<f32>() / ch as f32)
            .collect()
    };
    if samples.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{}: the file holds no audio",
            path.display()
        )));
    }
    if samples.iter().any(|s| !s.is_finite()) {
        return Err(unreadable(path, "it contains NaN or infinite samples"));
    }
    Ok(MonoAudio {
        samples,
        sample_rate: spec.sample_rate,
        channels: spec.channels,
    })
}

/// Writes mono samples to `path`, replacing it whole (a temporary file renamed into place, see
/// [`crate::files`]). Integer formats clamp to full scale (bring the level into range first);
/// non-finite samples are an error rather than a silent zero.
pub fn write_mono(
    path: &Path,
    samples: &[f32],
    sample_rate: u32,
    format: SampleFormat,
) -> Result<()> {
    let mut staged = files::stage(path)?;
    write_mono_to(staged.file(), path, samples, sample_rate, format)?;
    files::commit_all(vec![staged], true)
}

/// The WAV bytes of [`write_mono`], into `out` (flushed; syncing is the caller's); `path`
/// names the destination in messages.
pub fn write_mono_to<W: std::io::Write + std::io::Seek>(
    out: W,
    path: &Path,
    samples: &[f32],
    sample_rate: u32,
    format: SampleFormat,
) -> Result<()> {
    if let Some(i) = samples.iter().position(|s| !s.is_finite()) {
        return Err(Error::InvalidInput(format!(
            "refusing to write {}: sample {i} is not a finite number (the model output is broken)",
            path.display()
        )));
    }
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate,
        bits_per_sample: format.bits(),
        sample_format: if format.is_integer() {
            hound::SampleFormat::Int
        } else {
            hound::SampleFormat::Float
        },
    };
    let io_err = |e: hound::Error| match e {
        hound::Error::IoError(io) => Error::write(path, io),
        other => Error::InvalidInput(format!("cannot write {}: {other}", path.display())),
    };
    let mut buf = std::io::BufWriter::new(out);
    let mut writer = hound::WavWriter::new(&mut buf, spec).map_err(io_err)?;
    match format {
        SampleFormat::Float32 => {
            for &s in samples {
                writer.write_sample(s).map_err(io_err)?;
            }
        }
        SampleFormat::Int24 | SampleFormat::Int16 => {
            // Full scale is 2^(bits-1), as when reading; +1.0 itself lands one step lower.
            let full = (1i64 << (format.bits() - 1)) as f32;
            for &s in samples {
                let v = (s.clamp(-1.0, 1.0) * full).round().clamp(-full, full - 1.0);
                writer.write_sample(v as i32).map_err(io_err)?;
            }
        }
    }
    writer.finalize().map_err(io_err)?;
    std::io::Write::flush(&mut buf).map_err(|e| Error::write(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_format() {
        let dir = tempfile::tempdir().unwrap();
        let x: Vec<f32> = (0..1000).map(|i| ((i as f32) * 0.01).sin() * 0.9).collect();
        for (bits, tol) in [
            (32u16, 0.0f32),
            (24, 0.5 / 8_388_608.0),
            (16, 0.5 / 32_768.0),
        ] {
            let p = dir.path().join(format!("t{bits}.wav"));
            write_mono(&p, &x, 24_000, SampleFormat::from_bits(bits).unwrap()).unwrap();
            let back = read_mono(&p).unwrap();
            assert_eq!(
                (back.sample_rate, back.channels, back.samples.len()),
                (24_000, 1, x.len())
            );
            let err = back
                .samples
                .iter()
                .zip(&x)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(err <= tol, "{bits}-bit error {err}");
        }
    }

    #[test]
    fn float_keeps_overs_and_stereo_mixes_to_mono() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("over.wav");
        write_mono(&p, &[1.5, -2.0], 8000, SampleFormat::Float32).unwrap();
        assert_eq!(read_mono(&p).unwrap().samples, vec![1.5, -2.0]);

        let p = dir.path().join("stereo.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 44_100,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&p, spec).unwrap();
        for v in [16384i16, 0, -16384, -16384] {
            w.write_sample(v).unwrap();
        }
        w.finalize().unwrap();
        let m = read_mono(&p).unwrap();
        assert_eq!((m.channels, m.samples.clone()), (2, vec![0.25, -0.5]));
    }

    #[test]
    fn rejects_garbage_and_nan() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.wav");
        std::fs::write(&p, b"not a wav file at all").unwrap();
        assert!(read_mono(&p)
            .unwrap_err()
            .to_string()
            .contains("not a readable WAV"));
        assert!(write_mono(&p, &[f32::NAN], 8000, SampleFormat::Int16).is_err());
    }
}
