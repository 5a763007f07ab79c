//! A generated clip: the model's 24 kHz mono output plus how it was made.
//!
//! A clip is what the engine hands back and what a plugin stores; it reaches the audio thread
//! only as a [`PlaybackBuffer`] already at the host rate (see [`super::published`]).

use serde::{Deserialize, Serialize};

use super::published::PlaybackBuffer;
use super::resample::resample;
use crate::recipe::Recipe;
use crate::Result;

/// How a clip came to be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClipKind {
    /// Text-to-audio from noise.
    #[default]
    Generate,
    /// A region `[start_s, start_s + length_s)` regenerated inside an existing clip.
    Edit {
        start_s: f32,
        length_s: f32,
        /// Free-form description of the source audio (file name, parent clip, ...).
        source: Option<String>,
    },
    /// Text-to-audio whose loudness follows a control (EzAudio-ControlNet, energy).
    Controlled {
        /// What steered it: `reference` (a recording) or `envelope` (drawn points).
        control: String,
        /// ControlNet conditioning scale (1 = as trained).
        scale: f32,
        /// The condition that reached the model: normalised energy, `frame_rate` values per
        /// second from the clip's start.
        condition: Vec<f32>,
        frame_rate: f32,
    },
}

/// Everything needed to reproduce (or re-run with tweaks) a clip. Serialised flat: the
/// recipe's keys sit beside `model_id`, `kind` and `created`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ClipMeta {
    /// How it was made; `seconds` is the clip's real length (an edit keeps its source's).
    #[serde(flatten)]
    pub recipe: Recipe,
    pub model_id: String,
    pub kind: ClipKind,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
}

impl ClipMeta {
    /// The metadata of a clip made now from `recipe` by the model `model_id`.
    pub fn new(recipe: Recipe, model_id: impl Into<String>, kind: ClipKind) -> Self {
        Self {
            recipe,
            model_id: model_id.into(),
            kind,
            created: Self::unix_now(),
        }
    }

    /// Seconds since the Unix epoch now (0 if the clock is before 1970).
    pub fn unix_now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// Mono audio as the model produced it (24 kHz for EzAudio), with its recipe.
#[derive(Debug, Clone, PartialEq)]
pub struct Clip {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    pub meta: ClipMeta,
}

impl Clip {
    pub fn new(samples: Vec<f32>, sample_rate: u32, meta: ClipMeta) -> Self {
        Self {
            samples,
            sample_rate,
            meta,
        }
    }

    /// Length in seconds (0 for a zero sample rate).
    pub fn duration_s(&self) -> f32 {
        if self.sample_rate == 0 {
            return 0.0;
        }
        (self.samples.len() as f64 / self.sample_rate as f64) as f32
    }

    /// Largest absolute sample value (0 for an empty clip).
    pub fn peak(&self) -> f32 {
        self.samples.iter().fold(0.0f32, |m, s| m.max(s.abs()))
    }

    /// Resample to the host rate and package for the audio thread. Call this off the audio
    /// thread: it allocates and runs an FFT resampler.
    pub fn to_playback(&self, host_rate: u32, id: u64) -> Result<PlaybackBuffer> {
        let samples = resample(&self.samples, self.sample_rate, host_rate)?;
        Ok(PlaybackBuffer::new(samples, host_rate, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_helpers() {
        let mut samples = vec![0.0; 4000];
        samples[1] = -0.5;
        samples[2] = 0.25;
        let clip = Clip::new(samples, 4000, ClipMeta::default());
        assert_eq!(clip.duration_s(), 1.0);
        assert_eq!(clip.peak(), 0.5);
        let pb = clip.to_playback(8000, 7).unwrap();
        assert_eq!((pb.len(), pb.sample_rate(), pb.id()), (8000, 8000, 7));

        let meta = ClipMeta {
            recipe: Recipe::new("a dog barks"),
            kind: ClipKind::Edit {
                start_s: 1.0,
                length_s: 2.5,
                source: Some("take 3".into()),
            },
            created: ClipMeta::unix_now(),
            ..ClipMeta::default()
        };
        let json = serde_json::to_string(&meta).unwrap();
        assert_eq!(serde_json::from_str::<ClipMeta>(&json).unwrap(), meta);
    }
}
