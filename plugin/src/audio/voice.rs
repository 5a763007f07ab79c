//! One playing note: reads a published clip at a pitch ratio with 4-point cubic Hermite
//! interpolation, with velocity, short anti-click fades and a linear release.
//!
//! Plain data, no allocation: a voice holds a [`PlaybackHandle`] (dropping it on the audio
//! thread only decrements a count; the slot's keeper frees buffers elsewhere).

use ezaudio_engine::audio::published::PlaybackHandle;

/// Length of the anti-click fades (trimmed start, clip end, choke, steal), in milliseconds.
pub const FADE_MS: f32 = 1.5;

/// Marks a voice started without a key (audition from the editor): note-offs never match it.
pub const NO_KEY: u8 = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Idle,
    /// Sounding at full envelope.
    Playing,
    /// Gate note released: ramping down over the pad's release time.
    Releasing,
    /// Choked or stolen: ramping down over [`FADE_MS`]. Does not count against polyphony.
    Fading,
}

/// Everything a voice needs to start; computed from the pad's parameters at note-on (the
/// plugin's `trigger`).
#[derive(Debug, Clone)]
pub struct VoiceStart {
    pub pad: u8,
    pub key: u8,
    pub velocity: f32,
    /// Playback speed, `2^(semitones / 12)`.
    pub ratio: f64,
    /// First and one-past-last sample to play, in buffer samples.
    pub start: usize,
    pub end: usize,
    /// Whether note-off releases the voice.
    pub gate: bool,
    pub choke: u8,
    /// 0: main only; N: also "Stem N".
    pub stem: u8,
    /// Anti-click fade length in output samples (>= 1).
    pub fade_len: u32,
    /// Release length in output samples (>= 1).
    pub release_len: u32,
}

#[derive(Debug)]
pub struct Voice {
    pub stage: Stage,
    pub pad: u8,
    pub key: u8,
    pub gate: bool,
    pub choke: u8,
    pub stem: u8,
    /// Start order; smaller is older.
    pub age: u64,
    buffer: Option<PlaybackHandle>,
    pos: f64,
    ratio: f64,
    end: f64,
    velocity: f32,
    /// Output samples of fade-in left to play, and the fade's length (0: no fade-in).
    fade_in_done: u32,
    fade_in_len: u32,
    fade_len: u32,
    release_len: u32,
    env: f32,
    env_step: f32,
}

impl Default for Voice {
    fn default() -> Self {
        Self {
            stage: Stage::Idle,
            pad: 0,
            key: NO_KEY,
            gate: false,
            choke: 0,
            stem: 0,
            age: 0,
            buffer: None,
            pos: 0.0,
            ratio: 1.0,
            end: 0.0,
            velocity: 0.0,
            fade_in_done: 0,
            fade_in_len: 0,
            fade_len: 1,
            release_len: 1,
            env: 0.0,
            env_step: 0.0,
        }
    }
}

impl Voice {
    pub fn is_active(&self) -> bool {
        self.stage != Stage::Idle
    }

    /// Counts against the polyphony limit (playing or releasing, not fading out).
    pub fn is_sounding(&self) -> bool {
        matches!(self.stage, Stage::Playing | Stage::Releasing)
    }

    pub fn envelope(&self) -> f32 {
        self.env
    }

    pub fn start(&mut self, s: VoiceStart, buffer: PlaybackHandle, age: u64) {
        let len = buffer.len();
        let end = s.end.min(len);
        let start = s.start.min(end);
        self.stage = if start < end && s.ratio.is_finite() && s.ratio > 0.0 {
            Stage::Playing
        } else {
            Stage::Idle
        };
        self.pad = s.pad;
        self.key = s.key;
        self.gate = s.gate;
        self.choke = s.choke;
        self.stem = s.stem;
        self.age = age;
        self.pos = start as f64;
        self.ratio = s.ratio;
        self.end = end as f64;
        self.velocity = s.velocity;
        self.fade_len = s.fade_len.max(1);
        self.release_len = s.release_len.max(1);
        // A clip's own first sample is where the model put it; a trimmed start cuts into the
        // waveform and gets a fade-in.
        self.fade_in_len = if start > 0 { self.fade_len } else { 0 };
        self.fade_in_done = 0;
        self.env = 1.0;
        self.env_step = 0.0;
        self.buffer = if self.stage == Stage::Idle {
            None
        } else {
            Some(buffer)
        };
    }

    /// Gate note-off: ramp to silence over the release time.
    pub fn release(&mut self) {
        if self.stage == Stage::Playing {
            self.stage = Stage::Releasing;
            self.env_step = self.env / self.release_len as f32;
        }
    }

    /// Choke or steal: ramp to silence over the short anti-click fade.
    pub fn fade_out(&mut self) {
        if matches!(self.stage, Stage::Playing | Stage::Releasing) {
            self.stage = Stage::Fading;
            self.env_step = self.env / self.fade_len as f32;
        }
    }

    /// Stops at once (only for a voice that is already nearly silent).
    pub fn kill(&mut self) {
        self.stage = Stage::Idle;
        self.buffer = None;
    }

    /// The next mono output sample (before pad gain and pan).
    pub fn next_sample(&mut self) -> f32 {
        if self.stage == Stage::Idle {
            return 0.0;
        }
        let Some(buffer) = self.buffer.as_ref() else {
            self.stage = Stage::Idle;
            return 0.0;
        };
        if self.pos >= self.end {
            self.kill();
            return 0.0;
        }
        let x = buffer.samples();
        let i = self.pos.floor();
        let frac = (self.pos - i) as f32;
        let i = i as usize;
        let value = if frac == 0.0 {
            x[i]
        } else {
            hermite(x, i, frac)
        };

        let mut gain = self.velocity * self.env;
        if self.fade_in_done < self.fade_in_len {
            gain *= self.fade_in_done as f32 / self.fade_in_len as f32;
            self.fade_in_done += 1;
        }
        // Output samples left until the end, including this one.
        let left = (self.end - self.pos) / self.ratio;
        if left < self.fade_len as f64 {
            gain *= (left / self.fade_len as f64).min(1.0) as f32;
        }

        self.pos += self.ratio;
        if self.env_step > 0.0 {
            self.env -= self.env_step;
            if self.env <= 0.0 {
                self.env = 0.0;
                self.kill();
            }
        }
        value * gain
    }
}

/// 4-point, 3rd-order Hermite (Catmull-Rom) interpolation between `x[i]` and `x[i + 1]`;
/// samples outside the buffer count as silence.
#[inline]
pub fn hermite(x: &[f32], i: usize, t: f32) -> f32 {
    let at = |k: isize| -> f32 {
        if k < 0 {
            0.0
        } else {
            x.get(k as usize).copied().unwrap_or(0.0)
        }
    };
    let i = i as isize;
    let (xm1, x0, x1, x2) = (at(i - 1), at(i), at(i + 1), at(i + 2));
    let c1 = 0.5 * (x1 - xm1);
    let c2 = xm1 - 2.5 * x0 + 2.0 * x1 - 0.5 * x2;
    let c3 = 0.5 * (x2 - xm1) + 1.5 * (x0 - x1);
    ((c3 * t + c2) * t + c1) * t + x0
}

#[cfg(test)]
mod tests {
    use super::*;
    use ezaudio_engine::audio::published::{ClipSlot, PlaybackBuffer};
    use std::sync::Arc;

    pub(crate) fn handle(samples: Vec<f32>) -> (ClipSlot, PlaybackHandle) {
        let (slot, mut reader) = ClipSlot::new();
        slot.publish(Arc::new(PlaybackBuffer::new(samples, 48_000, 1)));
        let h = reader.acquire().expect("published");
        (slot, h)
    }

    fn start(len: usize) -> VoiceStart {
        VoiceStart {
            pad: 0,
            key: 36,
            velocity: 1.0,
            ratio: 1.0,
            start: 0,
            end: len,
            gate: false,
            choke: 0,
            stem: 1,
            fade_len: 4,
            release_len: 10,
        }
    }

    #[test]
    fn hermite_is_exact_on_samples_and_on_lines() {
        let x = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(hermite(&x, 2, 0.0), 2.0);
        assert!((hermite(&x, 2, 0.25) - 2.25).abs() < 1e-6);
        // A parabola is reproduced better than linear interpolation would.
        let p: Vec<f32> = (0..8).map(|k| (k * k) as f32).collect();
        let h = hermite(&p, 3, 0.5);
        assert!((h - 12.25).abs() < 0.26, "hermite {h}"); // linear would give 12.5
        assert!((h - 12.25).abs() < (12.5f32 - 12.25).abs());
    }

    #[test]
    fn plays_the_buffer_then_fades_the_last_samples() {
        let (_slot, h) = handle(vec![0.5; 10]);
        let mut v = Voice::default();
        v.start(start(10), h, 0);
        let out: Vec<f32> = (0..12).map(|_| v.next_sample()).collect();
        assert_eq!(&out[..6], &[0.5; 6]);
        // The last three samples (fewer than 4 left) fade: 3/4, 2/4, 1/4.
        assert_eq!(&out[6..10], &[0.5, 0.375, 0.25, 0.125]);
        assert_eq!(&out[10..], &[0.0, 0.0]);
        assert_eq!(v.stage, Stage::Idle);
    }

    #[test]
    fn double_speed_skips_every_other_sample() {
        let x: Vec<f32> = (0..100).map(|k| k as f32 / 100.0).collect();
        let (_slot, h) = handle(x);
        let mut v = Voice::default();
        v.start(
            VoiceStart {
                ratio: 2.0,
                ..start(100)
            },
            h,
            0,
        );
        let out: Vec<f32> = (0..10).map(|_| v.next_sample()).collect();
        for (k, o) in out.iter().enumerate() {
            assert_eq!(*o, (2 * k) as f32 / 100.0);
        }
    }

    #[test]
    fn trimmed_start_fades_in_and_release_ramps_down() {
        let (_slot, h) = handle(vec![1.0; 100]);
        let mut v = Voice::default();
        v.start(
            VoiceStart {
                start: 10,
                gate: true,
                ..start(100)
            },
            h,
            0,
        );
        let a: Vec<f32> = (0..5).map(|_| v.next_sample()).collect();
        assert_eq!(a, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        v.release();
        assert_eq!(v.stage, Stage::Releasing);
        let r: Vec<f32> = (0..12).map(|_| v.next_sample()).collect();
        assert_eq!(r[0], 1.0);
        assert!((r[5] - 0.5).abs() < 1e-6);
        assert!(r[10].abs() < 1e-6 && r[11] == 0.0, "{r:?}");
        assert_eq!(v.stage, Stage::Idle);
    }
}
