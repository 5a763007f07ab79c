//! The voice pool: note-on/off, choke groups, stealing and per-frame mixing to the main bus
//! and the stems. Audio-thread code: fixed-size arrays, no allocation, no locks.

use ezaudio_engine::audio::published::PlaybackHandle;

use crate::audio::voice::{Stage, Voice, VoiceStart};
use crate::layout::PAD_COUNT;

/// Voices that may sound at once (playing or releasing).
pub const POLYPHONY: usize = 32;
/// Extra slots so stolen and choked voices can finish their anti-click fade.
const POOL: usize = POLYPHONY + 8;

/// Left/right gains per pad for one frame (pad gain x pan law).
pub type PadGains = [[f32; 2]; PAD_COUNT];

/// Balance pan law: centre leaves both channels at unity, panning attenuates the far side
/// linearly (hard left = left only).
#[inline]
pub fn pan_gains(gain: f32, pan: f32) -> [f32; 2] {
    let pan = if pan.is_nan() {
        0.0
    } else {
        pan.clamp(-1.0, 1.0)
    };
    [gain * (1.0 - pan).min(1.0), gain * (1.0 + pan).min(1.0)]
}

/// Adds one frame of `v` to `main` and to its stem (shared by the note pool and the
/// transport-locked voices, so both mix the same way).
#[inline]
pub fn mix(
    v: &mut Voice,
    gains: &PadGains,
    main: &mut [f32; 2],
    stems: &mut [[f32; 2]; PAD_COUNT],
) {
    let s = v.next_sample();
    let [gl, gr] = gains[v.pad as usize % PAD_COUNT];
    let (l, r) = (s * gl, s * gr);
    main[0] += l;
    main[1] += r;
    if let Some(stem) = (v.stem as usize)
        .checked_sub(1)
        .and_then(|i| stems.get_mut(i))
    {
        stem[0] += l;
        stem[1] += r;
    }
}

/// The pool of voices every pad plays through.
pub struct Voices {
    voices: [Voice; POOL],
    next_age: u64,
}

impl Default for Voices {
    fn default() -> Self {
        Self {
            voices: std::array::from_fn(|_| Voice::default()),
            next_age: 0,
        }
    }
}

impl Voices {
    /// Starts a voice. A choke group silences the group's voices first; beyond
    /// [`POLYPHONY`] the oldest released voice (else the oldest voice) is faded out.
    pub fn note_on(&mut self, start: VoiceStart, buffer: PlaybackHandle) {
        if start.choke > 0 {
            for v in self
                .voices
                .iter_mut()
                .filter(|v| v.is_active() && v.choke == start.choke)
            {
                v.fade_out();
            }
        }
        if self.sounding() >= POLYPHONY {
            if let Some(victim) = self.victim() {
                self.voices[victim].fade_out();
            }
        }
        let slot = match self.voices.iter().position(|v| !v.is_active()) {
            Some(free) => free,
            // Every slot busy: cut the quietest fading voice (it is nearly silent anyway).
            None => self.quietest(),
        };
        self.voices[slot].kill();
        self.voices[slot].start(start, buffer, self.next_age);
        self.next_age += 1;
    }

    /// Releases gate voices of `key` (`None`: every key). One-shot voices ignore note-offs.
    pub fn note_off(&mut self, key: Option<u8>) {
        for v in self.voices.iter_mut() {
            if v.gate && v.stage == Stage::Playing && key.is_none_or(|k| k == v.key) {
                v.release();
            }
        }
    }

    /// Host choke (or "all notes off"): fade out voices of `key` (`None`: all).
    pub fn choke(&mut self, key: Option<u8>) {
        for v in self.voices.iter_mut() {
            if key.is_none_or(|k| k == v.key) {
                v.fade_out();
            }
        }
    }

    /// Stops everything at once (reset; no audio is running).
    pub fn reset(&mut self) {
        self.voices.iter_mut().for_each(Voice::kill);
    }

    pub fn active(&self) -> usize {
        self.voices.iter().filter(|v| v.is_active()).count()
    }

    pub fn sounding(&self) -> usize {
        self.voices.iter().filter(|v| v.is_sounding()).count()
    }

    /// Voices currently in the pool, for inspection (tests, meters).
    pub fn voices(&self) -> &[Voice] {
        &self.voices
    }

    /// Renders one frame: adds every voice to `main` and to its stem.
    #[inline]
    pub fn tick(
        &mut self,
        gains: &PadGains,
        main: &mut [f32; 2],
        stems: &mut [[f32; 2]; PAD_COUNT],
    ) {
        for v in self.voices.iter_mut().filter(|v| v.is_active()) {
            mix(v, gains, main, stems);
        }
    }

    fn victim(&self) -> Option<usize> {
        self.voices
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_sounding())
            // Released voices first (false < true), then the oldest.
            .min_by_key(|(_, v)| (v.stage != Stage::Releasing, v.age))
            .map(|(i, _)| i)
    }

    fn quietest(&self) -> usize {
        self.voices
            .iter()
            .enumerate()
            .min_by(|(_, a), (_, b)| {
                let fading = |v: &Voice| v.stage != Stage::Fading;
                (fading(a), a.envelope(), a.age)
                    .partial_cmp(&(fading(b), b.envelope(), b.age))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .map(|(i, _)| i)
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::voice::NO_KEY;
    use ezaudio_engine::audio::published::{ClipSlot, PlaybackBuffer, SlotReader};
    use std::sync::Arc;

    fn slot(samples: Vec<f32>) -> (ClipSlot, SlotReader) {
        let (slot, reader) = ClipSlot::new();
        slot.publish(Arc::new(PlaybackBuffer::new(samples, 48_000, 1)));
        (slot, reader)
    }

    fn start(pad: u8, key: u8, choke: u8, gate: bool) -> VoiceStart {
        VoiceStart {
            pad,
            key,
            velocity: 1.0,
            ratio: 1.0,
            start: 0,
            end: 1000,
            gate,
            choke,
            stem: pad + 1,
            fade_len: 4,
            release_len: 100,
        }
    }

    const UNITY: PadGains = [[1.0, 1.0]; PAD_COUNT];

    fn frame(s: &mut Voices) -> ([f32; 2], [[f32; 2]; PAD_COUNT]) {
        let (mut main, mut stems) = ([0.0; 2], [[0.0; 2]; PAD_COUNT]);
        s.tick(&UNITY, &mut main, &mut stems);
        (main, stems)
    }

    #[test]
    fn mixes_to_main_and_own_stem_only() {
        let (_w, mut r) = slot(vec![0.25; 1000]);
        let mut s = Voices::default();
        s.note_on(start(2, 38, 0, false), r.acquire().unwrap());
        let (main, stems) = frame(&mut s);
        assert_eq!(main, [0.25, 0.25]);
        assert_eq!(stems[2], [0.25, 0.25]);
        assert!(stems
            .iter()
            .enumerate()
            .all(|(i, st)| i == 2 || *st == [0.0, 0.0]));
    }

    #[test]
    fn steals_released_voices_first_then_oldest() {
        let (_w, mut r) = slot(vec![0.1; 1000]);
        let mut s = Voices::default();
        for k in 0..POLYPHONY as u8 {
            s.note_on(start(0, k, 0, true), r.acquire().unwrap());
        }
        assert_eq!(s.sounding(), POLYPHONY);
        // Release key 5: it becomes the preferred victim although key 0 is older.
        s.note_off(Some(5));
        s.note_on(start(0, 100, 0, true), r.acquire().unwrap());
        assert_eq!(s.sounding(), POLYPHONY);
        let stage_of =
            |s: &Voices, key: u8| s.voices().iter().find(|v| v.key == key).map(|v| v.stage);
        assert_eq!(stage_of(&s, 5), Some(Stage::Fading));
        assert_eq!(stage_of(&s, 0), Some(Stage::Playing));
        // Next steal takes the oldest playing voice (key 0).
        s.note_on(start(0, 101, 0, true), r.acquire().unwrap());
        assert_eq!(stage_of(&s, 0), Some(Stage::Fading));
        assert_eq!(stage_of(&s, 1), Some(Stage::Playing));
        // The fades finish within fade_len frames and free their slots.
        for _ in 0..5 {
            frame(&mut s);
        }
        assert_eq!(s.active(), POLYPHONY);
    }

    #[test]
    fn pool_exhaustion_never_fails_a_note() {
        let (_w, mut r) = slot(vec![0.1; 1000]);
        let mut s = Voices::default();
        for k in 0..200u32 {
            s.note_on(start(0, (k % 128) as u8, 0, false), r.acquire().unwrap());
        }
        assert_eq!(s.sounding(), POLYPHONY);
        assert_eq!(s.active(), POOL);
        assert!(s
            .voices()
            .iter()
            .any(|v| v.key == (199 % 128) as u8 && v.stage == Stage::Playing));
    }

    #[test]
    fn choke_group_fades_its_members_only() {
        let (_w, mut r) = slot(vec![1.0; 1000]);
        let mut s = Voices::default();
        s.note_on(start(0, 36, 1, false), r.acquire().unwrap()); // open hat, group 1
        s.note_on(start(3, 40, 0, false), r.acquire().unwrap()); // kick, no group
        frame(&mut s);
        s.note_on(start(1, 37, 1, false), r.acquire().unwrap()); // closed hat chokes group 1
                                                                 // The fade starts at full level and ramps down over fade_len (4) frames.
        let levels: Vec<f32> = (0..4).map(|_| frame(&mut s).1[0][0]).collect();
        assert_eq!(levels, vec![1.0, 0.75, 0.5, 0.25]);
        let (_, stems) = frame(&mut s);
        assert_eq!(stems[1], [1.0, 1.0]);
        assert_eq!(stems[3], [1.0, 1.0]);
        assert_eq!(stems[0], [0.0, 0.0], "choked voice is gone after the fade");
        assert_eq!(s.active(), 2);
    }

    #[test]
    fn one_shot_ignores_note_off_gate_releases() {
        let (_w, mut r) = slot(vec![1.0; 1000]);
        let mut s = Voices::default();
        s.note_on(start(0, 36, 0, false), r.acquire().unwrap());
        s.note_on(start(1, 37, 0, true), r.acquire().unwrap());
        s.note_off(Some(36));
        s.note_off(Some(37));
        for _ in 0..150 {
            frame(&mut s);
        }
        let (_, stems) = frame(&mut s);
        assert_eq!(stems[0], [1.0, 1.0]);
        assert_eq!(stems[1], [0.0, 0.0]);
        // Auditions (no key) ignore note-offs even for a wildcard.
        s.note_on(
            VoiceStart {
                key: NO_KEY,
                ..start(2, 0, 0, false)
            },
            r.acquire().unwrap(),
        );
        s.note_off(None);
        assert_eq!(frame(&mut s).1[2], [1.0, 1.0]);
    }

    #[test]
    fn pan_law() {
        assert_eq!(pan_gains(0.5, 0.0), [0.5, 0.5]);
        assert_eq!(pan_gains(1.0, -1.0), [1.0, 0.0]);
        assert_eq!(pan_gains(1.0, 0.5), [0.5, 1.0]);
    }
}
