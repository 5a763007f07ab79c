//! A pad's output level: off, a peak ceiling or a loudness (LUFS) target. Non-destructive: the
//! raw clip stays in the state; the level is a gain the publisher applies when it hands the
//! clip to the audio thread (and export applies when asked), so changing it never loses audio
//! and the audio thread never computes it.

use serde::{Deserialize, Serialize};

/// Default peak ceiling (dBFS): a little headroom below full scale.
pub const DEFAULT_PEAK_DBFS: f32 = -1.0;
/// Default loudness target (LUFS): a common target for sound effects and streaming.
pub const DEFAULT_LUFS: f32 = -16.0;
/// The largest gain a level may apply (+24 dB), so a near-silent clip is not blown up.
pub const MAX_GAIN_DB: f32 = 24.0;

/// How a pad's clip is levelled. Saved in the pad's JSON under `level`; a state without it
/// loads as [`OutputLevel::Off`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum OutputLevel {
    /// As generated.
    #[default]
    Off,
    /// Scaled so that the highest sample peaks at `dbfs`.
    Peak { dbfs: f32 },
    /// Scaled so that the integrated loudness (EBU R128) is `lufs`.
    Lufs { lufs: f32 },
}

impl OutputLevel {
    /// The setting with its value kept in range (a state may hold anything).
    pub fn sanitized(self) -> Self {
        let fix = |v: f32, lo: f32, hi: f32, default: f32| {
            if v.is_finite() {
                v.clamp(lo, hi)
            } else {
                default
            }
        };
        match self {
            Self::Off => Self::Off,
            Self::Peak { dbfs } => Self::Peak {
                dbfs: fix(dbfs, -30.0, 0.0, DEFAULT_PEAK_DBFS),
            },
            Self::Lufs { lufs } => Self::Lufs {
                lufs: fix(lufs, -40.0, -6.0, DEFAULT_LUFS),
            },
        }
    }

    /// The linear gain this level applies to `samples` (1 when off, or when the clip is silent
    /// or too short to measure, where no gain would be meaningful).
    pub fn gain(self, samples: &[f32], rate: u32) -> f32 {
        let db = match self.sanitized() {
            Self::Off => return 1.0,
            Self::Peak { dbfs } => match peak(samples) {
                p if p > 0.0 => dbfs - to_db(p),
                _ => return 1.0,
            },
            Self::Lufs { lufs } => match integrated_lufs(samples, rate) {
                Some(now) => lufs - now as f32,
                None => return 1.0,
            },
        };
        from_db(db.min(MAX_GAIN_DB))
    }

    /// A short label for the editor and the export sidecar.
    pub fn label(self) -> String {
        match self {
            Self::Off => "off".into(),
            Self::Peak { dbfs } => format!("peak {dbfs:.1} dBFS"),
            Self::Lufs { lufs } => format!("{lufs:.1} LUFS"),
        }
    }
}

/// Highest absolute sample value.
pub fn peak(samples: &[f32]) -> f32 {
    samples
        .iter()
        .filter(|s| s.is_finite())
        .fold(0.0f32, |m, s| m.max(s.abs()))
}

pub fn to_db(gain: f32) -> f32 {
    20.0 * gain.max(1e-12).log10()
}

pub fn from_db(db: f32) -> f32 {
    10f32.powf(db / 20.0)
}

/// Integrated loudness (ITU-R BS.1770, EBU R128) of a mono signal, as the CLI measures it;
/// None when it is shorter than one 400 ms block or gated out as silence.
pub fn integrated_lufs(samples: &[f32], rate: u32) -> Option<f64> {
    let mut meter = ebur128::EbuR128::new(1, rate, ebur128::Mode::I).ok()?;
    meter.add_frames_f32(samples).ok()?;
    meter.loudness_global().ok().filter(|l| l.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(amp: f32, rate: u32, seconds: f32) -> Vec<f32> {
        let n = (seconds * rate as f32) as usize;
        (0..n)
            .map(|i| amp * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / rate as f32).sin())
            .collect()
    }

    #[test]
    fn peak_and_loudness_gains() {
        let hot = sine(4.0, 24_000, 2.0); // +12 dBFS, as hot model output can be
        assert_eq!(OutputLevel::Off.gain(&hot, 24_000), 1.0);
        let g = OutputLevel::Peak { dbfs: -1.0 }.gain(&hot, 24_000);
        assert!((to_db(peak(&hot) * g) - -1.0).abs() < 0.01, "{g}");
        let g = OutputLevel::Lufs { lufs: -16.0 }.gain(&hot, 24_000);
        let scaled: Vec<f32> = hot.iter().map(|s| s * g).collect();
        let now = integrated_lufs(&scaled, 24_000).unwrap();
        assert!((now - -16.0).abs() < 0.1, "{now}");
        // Silence and too-short clips are left alone; a gain never exceeds +24 dB.
        assert_eq!(
            OutputLevel::Peak { dbfs: -1.0 }.gain(&[0.0; 10], 24_000),
            1.0
        );
        assert_eq!(
            OutputLevel::Lufs { lufs: -16.0 }.gain(&[0.1; 10], 24_000),
            1.0
        );
        let quiet = OutputLevel::Peak { dbfs: 0.0 }.gain(&[1e-6], 24_000);
        assert!((to_db(quiet) - MAX_GAIN_DB).abs() < 1e-3);
    }

    #[test]
    fn saved_form_and_old_states() {
        let json = serde_json::to_string(&OutputLevel::Peak { dbfs: -1.0 }).unwrap();
        assert_eq!(json, r#"{"mode":"peak","dbfs":-1.0}"#);
        let back: OutputLevel = serde_json::from_str(r#"{"mode":"lufs","lufs":-14}"#).unwrap();
        assert_eq!(back, OutputLevel::Lufs { lufs: -14.0 });
        assert_eq!(
            OutputLevel::Peak { dbfs: 9.0 }.sanitized(),
            OutputLevel::Peak { dbfs: 0.0 }
        );
    }
}
