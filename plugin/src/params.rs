//! Host-automatable parameters. Ids are part of every saved project: never rename one.
//!
//! Global ids: `main_gain`, `chromatic`, `chromatic_pad`, `chromatic_root`, `capture_sidechain`.
//! Per pad N (1..=16): `padN_gain`, `padN_pan`, `padN_pitch`, `padN_start`, `padN_end`,
//! `padN_mode`, `padN_release`, `padN_choke`, `padN_output`, `padN_note`.
//! Everything that is not a number a host could automate (prompts, clips, history) is in
//! [`crate::store::PadStore`], persisted alongside these.

use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use nice_plug::prelude::*;

use crate::layout::PAD_COUNT;
use crate::store::PadStore;

/// What a note-off does to a pad's voices.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayMode {
    /// Plays to the end (of the trimmed region); note-off is ignored.
    #[id = "one_shot"]
    #[name = "One-shot"]
    OneShot,
    /// Plays while the key is held, then releases.
    #[id = "gate"]
    #[name = "Gate"]
    Gate,
}

/// Number of choke groups (0 means "no group").
pub const CHOKE_GROUPS: i32 = 8;

/// Reads back what the "None" / "Stem N" / "Group N" formatters write (and plain numbers).
fn parse_labelled_int(text: &str, label: &str) -> Option<i32> {
    let t = text.trim().to_ascii_lowercase();
    if t == "none" || t == "off" {
        return Some(0);
    }
    t.strip_prefix(label).unwrap_or(&t).trim().parse().ok()
}

#[derive(Params)]
pub struct PadParams {
    /// Pad level (linear, shown in dB).
    #[id = "gain"]
    pub gain: FloatParam,
    /// -1 (left) .. 1 (right); balance law, centre is unity on both sides.
    #[id = "pan"]
    pub pan: FloatParam,
    /// Semitones, read at note-on.
    #[id = "pitch"]
    pub pitch: FloatParam,
    /// Trim start, fraction of the clip.
    #[id = "start"]
    pub start: FloatParam,
    /// Trim end, fraction of the clip.
    #[id = "end"]
    pub end: FloatParam,
    #[id = "mode"]
    pub mode: EnumParam<PlayMode>,
    /// Release time in gate mode, milliseconds.
    #[id = "release"]
    pub release: FloatParam,
    /// 0 = none, 1..=8: a note on a pad chokes every voice of the same group.
    #[id = "choke"]
    pub choke: IntParam,
    /// 0 = no stem, N = "Stem N". The main output always carries the full mix.
    #[id = "output"]
    pub output: IntParam,
    /// MIDI key that triggers this pad (outside chromatic mode).
    #[id = "note"]
    pub note: IntParam,
}

impl PadParams {
    /// Parameters of pad `index` (0-based): note 36 + index, routed to its own stem.
    pub fn new(index: usize) -> Self {
        let n = index + 1;
        Self {
            gain: FloatParam::new(
                format!("Pad {n} Gain"),
                1.0,
                FloatRange::Skewed {
                    min: util::db_to_gain(-60.0),
                    max: util::db_to_gain(12.0),
                    factor: FloatRange::gain_skew_factor(-60.0, 12.0),
                },
            )
            .with_smoother(SmoothingStyle::Logarithmic(10.0))
            .with_unit(" dB")
            .with_value_to_string(formatters::v2s_f32_gain_to_db(1))
            .with_string_to_value(formatters::s2v_f32_gain_to_db()),
            pan: FloatParam::new(
                format!("Pad {n} Pan"),
                0.0,
                FloatRange::Linear {
                    min: -1.0,
                    max: 1.0,
                },
            )
            .with_smoother(SmoothingStyle::Linear(10.0))
            .with_value_to_string(formatters::v2s_f32_panning())
            .with_string_to_value(formatters::s2v_f32_panning()),
            pitch: FloatParam::new(
                format!("Pad {n} Pitch"),
                0.0,
                FloatRange::Linear {
                    min: -24.0,
                    max: 24.0,
                },
            )
            .with_step_size(0.01)
            .with_unit(" st"),
            start: FloatParam::new(
                format!("Pad {n} Start"),
                0.0,
                FloatRange::Linear { min: 0.0, max: 1.0 },
            )
            .with_unit(" %")
            .with_value_to_string(formatters::v2s_f32_percentage(1))
            .with_string_to_value(formatters::s2v_f32_percentage()),
            end: FloatParam::new(
                format!("Pad {n} End"),
                1.0,
                FloatRange::Linear { min: 0.0, max: 1.0 },
            )
            .with_unit(" %")
            .with_value_to_string(formatters::v2s_f32_percentage(1))
            .with_string_to_value(formatters::s2v_f32_percentage()),
            mode: EnumParam::new(format!("Pad {n} Mode"), PlayMode::OneShot),
            release: FloatParam::new(
                format!("Pad {n} Release"),
                50.0,
                FloatRange::Skewed {
                    min: 1.0,
                    max: 5000.0,
                    factor: FloatRange::skew_factor(-2.0),
                },
            )
            .with_unit(" ms")
            .with_value_to_string(formatters::v2s_f32_rounded(1)),
            choke: IntParam::new(
                format!("Pad {n} Choke"),
                0,
                IntRange::Linear {
                    min: 0,
                    max: CHOKE_GROUPS,
                },
            )
            .with_value_to_string(Arc::new(|v| {
                if v == 0 {
                    "None".into()
                } else {
                    format!("Group {v}")
                }
            }))
            .with_string_to_value(Arc::new(|s| parse_labelled_int(s, "group"))),
            output: IntParam::new(
                format!("Pad {n} Output"),
                n as i32,
                IntRange::Linear {
                    min: 0,
                    max: PAD_COUNT as i32,
                },
            )
            .with_value_to_string(Arc::new(|v| {
                if v == 0 {
                    "None".into()
                } else {
                    format!("Stem {v}")
                }
            }))
            .with_string_to_value(Arc::new(|s| parse_labelled_int(s, "stem"))),
            note: IntParam::new(
                format!("Pad {n} Note"),
                36 + index as i32,
                IntRange::Linear { min: 0, max: 127 },
            )
            .with_value_to_string(formatters::v2s_i32_key_formatter())
            .with_string_to_value(formatters::s2v_i32_key_formatter()),
        }
    }
}

#[derive(Params)]
pub struct EzAudioParams {
    /// Level of the main stereo mix (stems are not affected).
    #[id = "main_gain"]
    pub main_gain: FloatParam,
    /// Chromatic mode: the selected pad plays across the keyboard around the root note.
    #[id = "chromatic"]
    pub chromatic: BoolParam,
    /// The pad played in chromatic mode, 1..=16.
    #[id = "chromatic_pad"]
    pub chromatic_pad: IntParam,
    /// The key that plays the chromatic pad at its own pitch.
    #[id = "chromatic_root"]
    pub chromatic_root: IntParam,
    /// Armed: the next blocks of the sidechain input are captured (from the first block after
    /// arming, or from transport start when the host reports a stopped transport) until the
    /// capture is full or this is switched off; then pads that follow the sidechain generate.
    #[id = "capture_sidechain"]
    pub capture: BoolParam,

    #[nested(id_prefix = "pad1", group = "Pad 1")]
    pub pad1: PadParams,
    #[nested(id_prefix = "pad2", group = "Pad 2")]
    pub pad2: PadParams,
    #[nested(id_prefix = "pad3", group = "Pad 3")]
    pub pad3: PadParams,
    #[nested(id_prefix = "pad4", group = "Pad 4")]
    pub pad4: PadParams,
    #[nested(id_prefix = "pad5", group = "Pad 5")]
    pub pad5: PadParams,
    #[nested(id_prefix = "pad6", group = "Pad 6")]
    pub pad6: PadParams,
    #[nested(id_prefix = "pad7", group = "Pad 7")]
    pub pad7: PadParams,
    #[nested(id_prefix = "pad8", group = "Pad 8")]
    pub pad8: PadParams,
    #[nested(id_prefix = "pad9", group = "Pad 9")]
    pub pad9: PadParams,
    #[nested(id_prefix = "pad10", group = "Pad 10")]
    pub pad10: PadParams,
    #[nested(id_prefix = "pad11", group = "Pad 11")]
    pub pad11: PadParams,
    #[nested(id_prefix = "pad12", group = "Pad 12")]
    pub pad12: PadParams,
    #[nested(id_prefix = "pad13", group = "Pad 13")]
    pub pad13: PadParams,
    #[nested(id_prefix = "pad14", group = "Pad 14")]
    pub pad14: PadParams,
    #[nested(id_prefix = "pad15", group = "Pad 15")]
    pub pad15: PadParams,
    #[nested(id_prefix = "pad16", group = "Pad 16")]
    pub pad16: PadParams,

    /// Prompts, clips and history (persisted, not automatable).
    #[nested]
    pub store: Arc<PadStore>,

    /// How many cores generation may use (0: all but one, leaving one to the host's audio).
    /// Saved with the project, not automatable; shared with the generation thread, which
    /// applies it when it submits a job (see `ezaudio_engine::engine::compute`).
    #[persist = "generation_cores"]
    pub generation_cores: Arc<AtomicU32>,
}

impl EzAudioParams {
    /// The pads' parameters in pad order.
    pub fn pads(&self) -> [&PadParams; PAD_COUNT] {
        [
            &self.pad1,
            &self.pad2,
            &self.pad3,
            &self.pad4,
            &self.pad5,
            &self.pad6,
            &self.pad7,
            &self.pad8,
            &self.pad9,
            &self.pad10,
            &self.pad11,
            &self.pad12,
            &self.pad13,
            &self.pad14,
            &self.pad15,
            &self.pad16,
        ]
    }

    pub fn pad(&self, index: usize) -> &PadParams {
        self.pads()[index.min(PAD_COUNT - 1)]
    }

    pub fn new(store: Arc<PadStore>) -> Self {
        Self {
            main_gain: FloatParam::new(
                "Main Gain",
                util::db_to_gain(0.0),
                FloatRange::Skewed {
                    min: util::db_to_gain(-60.0),
                    max: util::db_to_gain(12.0),
                    factor: FloatRange::gain_skew_factor(-60.0, 12.0),
                },
            )
            .with_smoother(SmoothingStyle::Logarithmic(20.0))
            .with_unit(" dB")
            .with_value_to_string(formatters::v2s_f32_gain_to_db(1))
            .with_string_to_value(formatters::s2v_f32_gain_to_db()),
            chromatic: BoolParam::new("Chromatic", false),
            chromatic_pad: IntParam::new(
                "Chromatic Pad",
                1,
                IntRange::Linear {
                    min: 1,
                    max: PAD_COUNT as i32,
                },
            ),
            chromatic_root: IntParam::new(
                "Chromatic Root",
                60,
                IntRange::Linear { min: 0, max: 127 },
            )
            .with_value_to_string(formatters::v2s_i32_key_formatter())
            .with_string_to_value(formatters::s2v_i32_key_formatter()),
            capture: BoolParam::new("Capture Sidechain", false),
            pad1: PadParams::new(0),
            pad2: PadParams::new(1),
            pad3: PadParams::new(2),
            pad4: PadParams::new(3),
            pad5: PadParams::new(4),
            pad6: PadParams::new(5),
            pad7: PadParams::new(6),
            pad8: PadParams::new(7),
            pad9: PadParams::new(8),
            pad10: PadParams::new(9),
            pad11: PadParams::new(10),
            pad12: PadParams::new(11),
            pad13: PadParams::new(12),
            pad14: PadParams::new(13),
            pad15: PadParams::new(14),
            pad16: PadParams::new(15),
            store,
            generation_cores: Arc::new(AtomicU32::new(0)),
        }
    }
}

impl Default for EzAudioParams {
    fn default() -> Self {
        Self::new(Arc::new(PadStore::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_ints_roundtrip() {
        let store = Arc::new(PadStore::default());
        let params = EzAudioParams::new(store);
        for p in params.pads() {
            for v in 0..=PAD_COUNT as i32 {
                let text = p
                    .output
                    .normalized_value_to_string(p.output.preview_normalized(v), true);
                assert_eq!(
                    p.output.string_to_normalized_value(&text),
                    Some(p.output.preview_normalized(v)),
                    "{text}"
                );
            }
        }
        assert_eq!(parse_labelled_int(" Group 3 ", "group"), Some(3));
        assert_eq!(parse_labelled_int("none", "stem"), Some(0));
        assert_eq!(parse_labelled_int("12", "stem"), Some(12));
        assert_eq!(parse_labelled_int("loud", "stem"), None);
    }
}
