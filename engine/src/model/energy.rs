//! The energy condition of EzAudio-ControlNet (`src/models/conditions/energy.py`,
//! `condition_wrapper.py`) and the reference pre-processing of `api/controlnet.py`.
//!
//! A clip becomes one value per hop (100 frames/s at 24 kHz with hop 240): the mean power over a
//! rectangular window of the reflect-padded signal, in dB with a floor at `min_db`, normalised
//! per clip so that `min_db` maps to 0 and the clip's loudest frame to 1. The ControlNet reads it
//! as `(B, 1, n)`; a hand-drawn envelope ([`energy_from_points`]) takes the place of that curve.

use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::error::{Error, Result};

/// The `conditioner:` section of the ControlNet yml (`Conditioner(**params['conditioner'])`).
/// Missing keys take the defaults of `EnergyExtractor.__init__`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ConditionerConfig {
    pub condition_type: String,
    #[serde(default = "d_hop")]
    pub hop_size: usize,
    #[serde(default = "d_window")]
    pub window_size: usize,
    #[serde(default = "d_padding")]
    pub padding: String,
    #[serde(default = "d_min_db")]
    pub min_db: f64,
    #[serde(default = "d_true")]
    pub norm: bool,
    #[serde(default)]
    pub quantize_levels: Option<usize>,
}

fn d_hop() -> usize {
    512
}
fn d_window() -> usize {
    1024
}
fn d_padding() -> String {
    "reflect".into()
}
fn d_min_db() -> f64 {
    -60.0
}
fn d_true() -> bool {
    true
}

impl ConditionerConfig {
    /// `ckpts/controlnet/energy_l.yml`'s `conditioner:` section.
    pub fn energy_l() -> Self {
        Self {
            condition_type: "energy".into(),
            hop_size: 240,
            window_size: 1920,
            padding: "reflect".into(),
            min_db: -60.0,
            norm: true,
            quantize_levels: None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.condition_type != "energy" {
            return Err(Error::Unsupported(format!(
                "conditioner: condition_type '{}' (only 'energy' is implemented)",
                self.condition_type
            )));
        }
        if self.hop_size == 0 || self.window_size == 0 {
            return Err(Error::InvalidInput(
                "conditioner: hop_size and window_size must be positive".into(),
            ));
        }
        Padding::parse(&self.padding)?;
        if self.quantize_levels.is_some_and(|q| q < 2) {
            return Err(Error::InvalidInput(
                "conditioner: quantize_levels must be at least 2".into(),
            ));
        }
        Ok(())
    }
}

/// `F.pad` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Padding {
    Reflect,
    Replicate,
    Circular,
    Constant,
}

impl Padding {
    fn parse(s: &str) -> Result<Self> {
        match s {
            "reflect" => Ok(Self::Reflect),
            "replicate" => Ok(Self::Replicate),
            "circular" => Ok(Self::Circular),
            "constant" => Ok(Self::Constant),
            other => Err(Error::Unsupported(format!(
                "conditioner: padding '{other}' (expected reflect, replicate, circular or constant)"
            ))),
        }
    }

    /// Sample `i` (may lie outside `0..n`) of the padded signal.
    fn sample(self, x: &[f32], i: isize) -> f32 {
        let n = x.len() as isize;
        let j = if (0..n).contains(&i) {
            i
        } else {
            match self {
                Self::Constant => return 0.0,
                // Mirror without repeating the edge sample (torch 'reflect').
                Self::Reflect if i < 0 => -i,
                Self::Reflect => 2 * (n - 1) - i,
                Self::Replicate => i.clamp(0, n - 1),
                Self::Circular => i.rem_euclid(n),
            }
        };
        x[j as usize]
    }
}

/// Every stage of the extractor for one clip (the names of `controlnet/energy.safetensors`).
#[derive(Debug, Clone, PartialEq)]
pub struct EnergyFrames {
    /// Mean of squares over each window: power, not RMS.
    pub frame_power: Vec<f32>,
    /// `10 log10(max(power, 10^(min_db/10)))`.
    pub gain_db: Vec<f32>,
    /// The condition: normalised `gain_db` when `norm`, else `gain_db` (then quantised if asked).
    pub energy: Vec<f32>,
}

/// `Conditioner(condition_type='energy', ...)`: `EnergyExtractor` then the permute to `(B, 1, n)`.
#[derive(Debug, Clone)]
pub struct EnergyConditioner {
    cfg: ConditionerConfig,
    padding: Padding,
}

impl EnergyConditioner {
    pub fn new(cfg: &ConditionerConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            cfg: cfg.clone(),
            padding: Padding::parse(&cfg.padding)?,
        })
    }

    pub fn config(&self) -> &ConditionerConfig {
        &self.cfg
    }

    /// Condition frames per second for audio at `sample_rate`.
    pub fn frame_rate(&self, sample_rate: u32) -> f32 {
        sample_rate as f32 / self.cfg.hop_size as f32
    }

    /// Frames of a clip of `len` samples (`N // hop`).
    pub fn frames_for(&self, len: usize) -> usize {
        len / self.cfg.hop_size
    }

    /// The extractor on one mono clip, keeping every stage.
    pub fn extract(&self, audio: &[f32]) -> Result<EnergyFrames> {
        let (hop, window) = (self.cfg.hop_size, self.cfg.window_size);
        let pad = window.saturating_sub(hop) / 2;
        // `unfold(...)[:, :, :N // hop]`: fewer when the padded clip holds fewer whole windows.
        let padded = audio.len() + 2 * pad;
        let windows = if padded >= window {
            (padded - window) / hop + 1
        } else {
            0
        };
        let n = (audio.len() / hop).min(windows);
        if self.padding == Padding::Reflect && pad >= audio.len() {
            // F.pad(mode='reflect') needs more samples than the padding.
            return Err(Error::InvalidInput(format!(
                "energy: the clip has {} samples; reflect padding of {pad} needs more",
                audio.len()
            )));
        }
        if n == 0 {
            return Err(Error::InvalidInput(format!(
                "energy: the clip has {} samples, less than one hop ({hop})",
                audio.len()
            )));
        }
        // Frame i covers padded samples [i*hop, i*hop + window), i.e. original sample
        // i*hop - pad onwards. Sums in f64: a faithful f32 mean, whatever the window.
        let frame_power: Vec<f32> = (0..n)
            .map(|i| {
                let start = (i * hop) as isize - pad as isize;
                let sum: f64 = (0..window as isize)
                    .map(|k| {
                        let v = self.padding.sample(audio, start + k) as f64;
                        v * v
                    })
                    .sum();
                (sum / window as f64) as f32
            })
            .collect();

        // The floor is a float64 0-d tensor in the reference, which does not promote: f32 math.
        let floor = 10f64.powf(self.cfg.min_db / 10.0) as f32;
        let gain_db: Vec<f32> = frame_power
            .iter()
            .map(|&p| 10.0 * p.max(floor).log10())
            .collect();

        let mut energy = gain_db.clone();
        if self.cfg.norm {
            let min_db = self.cfg.min_db as f32;
            let max = gain_db.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let denom = max - min_db + 1e-8;
            for e in &mut energy {
                *e = (*e - min_db) / denom;
            }
        }
        if let Some(q) = self.cfg.quantize_levels {
            let steps = (q - 1) as f32;
            for e in &mut energy {
                // torch.round rounds half to even.
                *e = (*e * steps).round_ties_even() / steps;
            }
        }
        Ok(EnergyFrames {
            frame_power,
            gain_db,
            energy,
        })
    }

    /// The condition values of one clip (`Conditioner(audio)[0, 0]`).
    pub fn energy(&self, audio: &[f32]) -> Result<Vec<f32>> {
        Ok(self.extract(audio)?.energy)
    }

    /// `Conditioner(audio, latent_shape)` for a batch of equally long clips: `(B, 1, n)` f32
    /// (each clip normalised by its own maximum, as the batched reference does).
    pub fn condition(&self, clips: &[&[f32]], device: &Device) -> Result<Tensor> {
        let mut values = Vec::new();
        let mut n = None;
        for clip in clips {
            let e = self.energy(clip)?;
            if *n.get_or_insert(e.len()) != e.len() {
                return Err(Error::InvalidInput(
                    "energy: the clips of a batch must have the same length".into(),
                ));
            }
            values.extend(e);
        }
        let n = n.ok_or_else(|| Error::InvalidInput("energy: no clip given".into()))?;
        Ok(Tensor::from_vec(values, (clips.len(), 1, n), device)?)
    }
}

/// A reference clip as `api/controlnet.py:generate_audio` prepares it before extraction.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedReference {
    /// `num_samples` samples: peak-normalised, noise-gated, zero-padded or trimmed.
    pub samples: Vec<f32>,
    /// Length of the clip as given; the generated audio is cut back to it when shorter.
    pub original_length: usize,
}

/// `gt / (max|gt| + 1e-9)`, then the optional noise gate `|x| <= surpass_noise -> 0` (off at 0),
/// then zero-padding or trimming to `num_samples`. `audio`: mono at the model's sample rate.
pub fn prepare_reference(
    audio: &[f32],
    surpass_noise: f32,
    num_samples: usize,
) -> Result<PreparedReference> {
    if audio.is_empty() {
        return Err(Error::InvalidInput("the reference clip is empty".into()));
    }
    if audio.iter().any(|v| !v.is_finite()) {
        return Err(Error::InvalidInput(
            "the reference clip holds NaN or infinite samples".into(),
        ));
    }
    if !surpass_noise.is_finite() || surpass_noise < 0.0 {
        return Err(Error::InvalidInput(format!(
            "surpass_noise must be a finite number >= 0, got {surpass_noise}"
        )));
    }
    let peak = audio.iter().fold(0f32, |m, v| m.max(v.abs()));
    // NumPy adds 1e-9 to the float32 peak and divides the float32 array by the result cast back.
    let divisor = (peak as f64 + 1e-9) as f32;
    let mut samples: Vec<f32> = audio
        .iter()
        .take(num_samples)
        .map(|v| v / divisor)
        .collect();
    if surpass_noise > 0.0 {
        for v in &mut samples {
            if v.abs() <= surpass_noise {
                *v = 0.0;
            }
        }
    }
    samples.resize(num_samples, 0.0);
    Ok(PreparedReference {
        samples,
        original_length: audio.len(),
    })
}

/// A hand-drawn energy envelope: `points` are `(seconds, level)` with level 0 (silence, the
/// extractor's `min_db` floor) to 1 (the loudest part), joined by straight lines and held flat
/// before the first and after the last point. Frame `i` is sampled at its window centre,
/// `(i + 0.5) / frame_rate` seconds. No points gives silence.
pub fn energy_from_points(points: &[(f32, f32)], frames: usize, frame_rate: f32) -> Vec<f32> {
    let mut pts: Vec<(f32, f32)> = points
        .iter()
        .filter(|(t, l)| t.is_finite() && l.is_finite())
        .map(|&(t, l)| (t, l.clamp(0.0, 1.0)))
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (Some(&first), Some(&last)) = (pts.first(), pts.last()) else {
        return vec![0.0; frames];
    };
    (0..frames)
        .map(|i| {
            let t = (i as f32 + 0.5) / frame_rate;
            if t <= first.0 {
                return first.1;
            }
            if t >= last.0 {
                return last.1;
            }
            // The segment [a, b] holding t (a.0 < t < b.0 with t strictly inside the range).
            let k = pts.partition_point(|p| p.0 <= t);
            let (a, b) = (pts[k - 1], pts[k]);
            let span = b.0 - a.0;
            if span <= 0.0 {
                b.1
            } else {
                a.1 + (b.1 - a.1) * (t - a.0) / span
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_is_piecewise_linear_and_held_at_the_ends() {
        let e = energy_from_points(&[(1.0, 1.0), (0.0, 0.0)], 4, 2.0);
        // Frame centres at 0.25, 0.75, 1.25, 1.75 s.
        assert_eq!(e, vec![0.25, 0.75, 1.0, 1.0]);
        assert_eq!(energy_from_points(&[], 3, 100.0), vec![0.0; 3]);
        assert_eq!(energy_from_points(&[(0.5, 2.0)], 2, 100.0), vec![1.0; 2]);
    }

    #[test]
    fn reflect_padding_mirrors_without_the_edge() {
        let x = [1.0, 2.0, 3.0];
        let p = Padding::Reflect;
        let got: Vec<f32> = (-2..5).map(|i| p.sample(&x, i)).collect();
        assert_eq!(got, vec![3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0]);
    }

    #[test]
    fn reference_is_normalised_gated_and_padded() {
        let r = prepare_reference(&[0.5, -0.01, 0.25], 0.05, 5).unwrap();
        assert_eq!(r.original_length, 3);
        assert_eq!(r.samples.len(), 5);
        assert!((r.samples[0] - 1.0).abs() < 1e-6);
        assert_eq!(r.samples[1], 0.0);
        assert!((r.samples[2] - 0.5).abs() < 1e-6);
        assert_eq!(&r.samples[3..], &[0.0, 0.0]);
    }
}
