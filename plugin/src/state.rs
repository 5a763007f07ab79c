//! The persisted format of everything a user made: per pad the prompt, negative prompt,
//! generation settings, the current clip (the model's own samples, bit-exact), a short
//! history of earlier generations and the loudness-control settings (with their bounds).
//! Only the format and its decoding live here; the live pads are [`crate::store`].
//!
//! Layout inside nice-plug's state (`PluginState::fields`, each value a JSON string):
//! * `ezaudio_version`: [`STATE_VERSION`] as a JSON number.
//! * `pad1` .. `pad16`: one [`PadRecord`] each, so a damaged pad never takes the others down.
//!
//! Clip audio is stored as raw little-endian `f32` bytes in standard base64 (`samples`), with
//! its sample count (`len`) and rate. General-purpose compression gains little on float
//! noise-like audio, so none is applied; the history's audio is bounded instead
//! ([`crate::store::HISTORY_AUDIO_BUDGET`]).
//!
//! Loading is tolerant: every pad and every field is read on its own; what cannot be read is
//! left at its default and described in a message the editor shows. Nothing here panics on
//! input. A state saved by an earlier release is kept as test data
//! (`tests/data/state-v2-release.bin`, checked by `tests/tests/state_compat.rs`): change the
//! format only in ways that still load it.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ezaudio_engine::audio::{Clip, ClipMeta};
use ezaudio_engine::{Recipe, Sampler};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::layout::MAX_RATE;

/// Version of the persisted pad format. 0: states without `ezaudio_version` (the skeleton,
/// parameters only). 1: pads with clips and history. 2: plus each pad's `control` (follow
/// sidechain, drawn envelope); absent in older states, where it takes its defaults.
pub const STATE_VERSION: u32 = 2;
pub const VERSION_KEY: &str = "ezaudio_version";

/// Frames per second of the loudness views (the ControlNet condition's rate).
pub const VIEW_HZ: f32 = 100.0;
/// Longest stored view (30 s).
pub const VIEW_MAX: usize = 3000;
/// Most points of a drawn envelope.
pub const MAX_POINTS: usize = 64;

pub fn pad_key(index: usize) -> String {
    format!("pad{}", index + 1)
}

/// The recipe a new pad starts from: EzAudio's defaults, but a draft with DPM-Solver++ 2M at
/// 25 steps instead of the official 100 DDIM steps. Why: the convergence study (README) puts
/// DPM++ 2M at 25 steps closer to the converged answer than DDIM at 25 (tiny model 0.055 vs
/// 0.073, exact control 0.070 vs 0.116), at a quarter of the official cost; and because it is
/// deterministic, "Render final" at [`DEFAULT_FINAL_STEPS`] refines the same sound.
pub fn default_recipe() -> Recipe {
    Recipe {
        steps: 25,
        sampler: Sampler::DpmPp2m,
        ..Recipe::default()
    }
}

/// Steps of "Render final" on a new pad: the official step count, with the draft's solver.
pub const DEFAULT_FINAL_STEPS: u32 = 100;

/// A pad's recipe as saved under `settings`: every key of the [`Recipe`] but the prompts (the
/// pad keeps `prompt` and `negative` at its top level), plus `seed_locked` and `final_steps`.
/// Keys a state lacks take [`default_recipe`]'s values, so a setting added to the recipe later
/// loads from older states — except the sampler: a state without one was made by a release
/// that had only DDIM, and its pads keep sounding as they did. The recipe's fields are not
/// listed here: it is serialised as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedSettings {
    pub recipe: Recipe,
    /// Keep the seed for the next generation (otherwise a new random one is drawn).
    pub seed_locked: bool,
    /// Steps of "Render final" (the draft's recipe re-run at more steps).
    pub final_steps: u32,
}

const PROMPT_KEYS: [&str; 2] = ["prompt", "negative"];
const SEED_LOCKED: &str = "seed_locked";
const FINAL_STEPS: &str = "final_steps";
const SAMPLER: &str = "sampler";

impl Default for SavedSettings {
    fn default() -> Self {
        Self {
            recipe: default_recipe(),
            seed_locked: false,
            final_steps: DEFAULT_FINAL_STEPS,
        }
    }
}

impl Serialize for SavedSettings {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = match serde_json::to_value(&self.recipe) {
            Ok(Value::Object(map)) => map,
            _ => return Err(serde::ser::Error::custom("a recipe is not a JSON object")),
        };
        PROMPT_KEYS.iter().for_each(|k| {
            map.remove(*k);
        });
        map.insert(SEED_LOCKED.into(), Value::Bool(self.seed_locked));
        map.insert(FINAL_STEPS.into(), Value::from(self.final_steps));
        map.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SavedSettings {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let Value::Object(saved) = Value::deserialize(deserializer)? else {
            return Err(D::Error::custom("settings are not an object"));
        };
        let Ok(Value::Object(mut merged)) = serde_json::to_value(default_recipe()) else {
            return Err(D::Error::custom("a recipe is not a JSON object"));
        };
        if !saved.contains_key(SAMPLER) {
            merged.insert(SAMPLER.into(), serde_json::json!(Sampler::Ddim));
        }
        let mut seed_locked = false;
        let mut final_steps = DEFAULT_FINAL_STEPS;
        for (key, value) in saved {
            match key.as_str() {
                SEED_LOCKED => {
                    seed_locked = value
                        .as_bool()
                        .ok_or_else(|| D::Error::custom("seed_locked is not true or false"))?
                }
                FINAL_STEPS => {
                    final_steps = value
                        .as_u64()
                        .and_then(|v| u32::try_from(v).ok())
                        .filter(|v| *v > 0)
                        .ok_or_else(|| D::Error::custom("final_steps is not a step count"))?
                }
                k if PROMPT_KEYS.contains(&k) => {}
                _ => {
                    merged.insert(key, value);
                }
            }
        }
        let recipe = serde_json::from_value(Value::Object(merged)).map_err(D::Error::custom)?;
        Ok(Self {
            recipe,
            seed_locked,
            final_steps,
        })
    }
}

/// How a pad's loudness control works (EzAudio-ControlNet), persisted under `control`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ControlSettings {
    /// A finished sidechain capture generates this pad, following the capture's loudness.
    pub follow_sidechain: bool,
    /// The drawn envelope: `(seconds, level 0..1)`, ascending in time.
    pub envelope: Vec<(f32, f32)>,
    /// ControlNet conditioning scale (1 = as trained).
    pub scale: f32,
    /// Noise gate on the captured audio after peak normalisation (0 = off).
    pub gate: f32,
    /// Where the last capture started: transport position in host samples, if the host said.
    pub capture_start: Option<i64>,
    /// Host rate of `capture_start`.
    pub capture_rate: u32,
    /// Loudness of the last capture for display: see [`loudness_view`].
    pub capture_view: Vec<f32>,
}

impl Default for ControlSettings {
    fn default() -> Self {
        Self {
            follow_sidechain: false,
            envelope: Vec::new(),
            scale: 1.0,
            gate: 0.0,
            capture_start: None,
            capture_rate: 0,
            capture_view: Vec::new(),
        }
    }
}

impl ControlSettings {
    /// Repairs values a damaged or hand-edited state may hold.
    pub fn sanitized(mut self) -> Self {
        self.envelope
            .retain(|(t, v)| t.is_finite() && v.is_finite() && *t >= 0.0);
        self.envelope
            .iter_mut()
            .for_each(|p| p.1 = p.1.clamp(0.0, 1.0));
        self.envelope.sort_by(|a, b| a.0.total_cmp(&b.0));
        self.envelope.truncate(MAX_POINTS);
        self.scale = if self.scale.is_finite() {
            self.scale.clamp(0.0, 2.0)
        } else {
            1.0
        };
        self.gate = if self.gate.is_finite() {
            self.gate.clamp(0.0, 0.99)
        } else {
            0.0
        };
        self.capture_view.retain(|v| v.is_finite());
        self.capture_view.truncate(VIEW_MAX);
        self
    }
}

/// RMS per `1 / VIEW_HZ` s, for display (at most [`VIEW_MAX`] values): the stored
/// `capture_view`, and the editor's view of a clip's loudness.
pub fn loudness_view(samples: &[f32], rate: u32) -> Vec<f32> {
    let hop = ((rate as f32 / VIEW_HZ).round() as usize).max(1);
    samples
        .chunks(hop)
        .take(VIEW_MAX)
        .map(|c| (c.iter().map(|s| s * s).sum::<f32>() / c.len() as f32).sqrt())
        .collect()
}

/// A clip as stored: rate, sample count, base64 of the little-endian `f32` samples, recipe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClipRecord {
    pub sample_rate: u32,
    pub len: usize,
    pub samples: String,
    pub meta: ClipMeta,
}

/// One earlier generation. Its audio may have been dropped to bound the state size; the
/// recipe stays so it can be regenerated.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryRecord {
    pub meta: ClipMeta,
    pub clip: Option<ClipRecord>,
}

/// One pad as stored under `padN`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PadRecord {
    pub prompt: String,
    pub negative: String,
    pub settings: SavedSettings,
    pub clip: Option<ClipRecord>,
    pub history: Vec<HistoryRecord>,
    pub control: ControlSettings,
}

pub fn encode_samples(samples: &[f32]) -> String {
    let mut bytes = Vec::with_capacity(samples.len() * 4);
    for s in samples {
        bytes.extend_from_slice(&s.to_le_bytes());
    }
    B64.encode(bytes)
}

impl ClipRecord {
    pub fn from_clip(clip: &Clip) -> Self {
        Self {
            sample_rate: clip.sample_rate,
            len: clip.samples.len(),
            samples: encode_samples(&clip.samples),
            meta: clip.meta.clone(),
        }
    }
}

/// Decodes a stored clip from loose JSON. Recoverable damage (a short sample block,
/// non-finite samples, an unreadable recipe) keeps what is readable and adds to `notes`.
pub fn decode_clip(value: &Value, notes: &mut Vec<String>) -> Result<Clip, String> {
    let obj = value.as_object().ok_or("clip is not an object")?;
    let sample_rate = obj
        .get("sample_rate")
        .and_then(Value::as_u64)
        .filter(|&r| r > 0 && r <= MAX_RATE as u64)
        .ok_or("clip has no valid sample rate")? as u32;
    let text = obj
        .get("samples")
        .and_then(Value::as_str)
        .ok_or("clip has no samples")?;
    let bytes = B64
        .decode(text.trim())
        .map_err(|e| format!("clip samples are not base64 ({e})"))?;
    if bytes.len() % 4 != 0 {
        notes.push(format!(
            "clip data has {} stray bytes; ignored",
            bytes.len() % 4
        ));
    }
    let mut samples: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if let Some(len) = obj.get("len").and_then(Value::as_u64) {
        if len != samples.len() as u64 {
            notes.push(format!(
                "clip should have {len} samples, {} were readable",
                samples.len()
            ));
        }
    }
    let bad = samples.iter().filter(|s| !s.is_finite()).count();
    if bad > 0 {
        samples
            .iter_mut()
            .filter(|s| !s.is_finite())
            .for_each(|s| *s = 0.0);
        notes.push(format!("{bad} non-finite samples replaced by silence"));
    }
    let meta = match obj
        .get("meta")
        .map(|m| serde_json::from_value::<ClipMeta>(m.clone()))
    {
        Some(Ok(meta)) => meta,
        Some(Err(e)) => {
            notes.push(format!("clip recipe unreadable ({e})"));
            ClipMeta::default()
        }
        None => ClipMeta::default(),
    };
    Ok(Clip::new(samples, sample_rate, meta))
}

/// A pad as loaded: the clip and history decoded, plus what went wrong.
#[derive(Debug, Clone, Default)]
pub struct LoadedPad {
    /// The pad's prompts and settings (`prompt`/`negative` from the pad's top level).
    pub settings: SavedSettings,
    pub clip: Option<Clip>,
    pub history: Vec<(ClipMeta, Option<Clip>)>,
    pub control: ControlSettings,
}

/// Reads one pad's JSON as far as possible. Problems are appended to `messages`, prefixed
/// with the pad's name.
pub fn decode_pad(index: usize, text: &str, messages: &mut Vec<String>) -> LoadedPad {
    let name = format!("Pad {}", index + 1);
    let mut pad = LoadedPad::default();
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            messages.push(format!("{name}: unreadable ({e}); left empty"));
            return pad;
        }
    };
    let Some(obj) = value.as_object() else {
        messages.push(format!("{name}: not an object; left empty"));
        return pad;
    };
    let text_field = |key: &str, messages: &mut Vec<String>| match obj.get(key) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            messages.push(format!("{name}: {key} unreadable"));
            String::new()
        }
    };
    if let Some(s) = obj.get("settings") {
        match serde_json::from_value::<SavedSettings>(s.clone()) {
            Ok(s) => pad.settings = s,
            Err(e) => messages.push(format!("{name}: settings unreadable ({e}); defaults used")),
        }
    }
    pad.settings.recipe.prompt = text_field("prompt", messages);
    pad.settings.recipe.negative = text_field("negative", messages);
    if let Some(c) = obj.get("control").filter(|c| !c.is_null()) {
        match serde_json::from_value::<ControlSettings>(c.clone()) {
            Ok(c) => pad.control = c.sanitized(),
            Err(e) => messages.push(format!(
                "{name}: control settings unreadable ({e}); defaults used"
            )),
        }
    }
    let mut notes = Vec::new();
    match obj.get("clip") {
        None | Some(Value::Null) => {}
        Some(c) => match decode_clip(c, &mut notes) {
            Ok(clip) => pad.clip = Some(clip),
            Err(e) => messages.push(format!("{name}: clip lost: {e}")),
        },
    }
    messages.extend(notes.drain(..).map(|n| format!("{name}: {n}")));
    match obj.get("history") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (k, item) in items.iter().enumerate() {
                let meta = item
                    .get("meta")
                    .and_then(|m| serde_json::from_value::<ClipMeta>(m.clone()).ok());
                let clip = match item.get("clip") {
                    None | Some(Value::Null) => None,
                    Some(c) => match decode_clip(c, &mut notes) {
                        Ok(clip) => Some(clip),
                        Err(e) => {
                            messages
                                .push(format!("{name}: history entry {} audio lost: {e}", k + 1));
                            None
                        }
                    },
                };
                messages.extend(
                    notes
                        .drain(..)
                        .map(|n| format!("{name}: history {}: {n}", k + 1)),
                );
                match (meta, clip) {
                    (Some(meta), clip) => pad.history.push((meta, clip)),
                    (None, Some(clip)) => pad.history.push((clip.meta.clone(), Some(clip))),
                    (None, None) => {
                        messages.push(format!("{name}: history entry {} unreadable", k + 1))
                    }
                }
            }
        }
        Some(_) => messages.push(format!("{name}: history unreadable")),
    }
    pad
}

/// Reads the state version: absent means 0 (parameters only); unreadable means "try as current".
pub fn decode_version(text: Option<&String>, messages: &mut Vec<String>) -> u32 {
    match text.map(|t| serde_json::from_str::<u32>(t)) {
        None => 0,
        Some(Ok(v)) => {
            if v > STATE_VERSION {
                messages.push(format!(
                    "Saved by a newer EzAudio (state version {v}, this one reads {STATE_VERSION}): loaded what is understood"
                ));
            }
            v
        }
        Some(Err(_)) => {
            messages.push("State version unreadable; reading it as the current format".into());
            STATE_VERSION
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip(samples: Vec<f32>) -> Clip {
        Clip::new(
            samples,
            24_000,
            ClipMeta {
                recipe: Recipe {
                    seed: 7,
                    ..Recipe::new("dog bark")
                },
                ..Default::default()
            },
        )
    }

    fn roundtrip(record: &PadRecord) -> (LoadedPad, Vec<String>) {
        let text = serde_json::to_string(record).unwrap();
        let mut msgs = Vec::new();
        (decode_pad(0, &text, &mut msgs), msgs)
    }

    #[test]
    fn clip_roundtrip_is_bit_exact() {
        let samples = vec![
            0.0,
            -0.0,
            1.0e-38,
            f32::MIN_POSITIVE,
            -0.123_456_79,
            0.999_999_9,
            f32::EPSILON,
        ];
        let record = PadRecord {
            prompt: "rain".into(),
            negative: "music".into(),
            settings: SavedSettings {
                recipe: Recipe {
                    seed: 42,
                    ..default_recipe()
                },
                seed_locked: true,
                final_steps: 70,
            },
            clip: Some(ClipRecord::from_clip(&clip(samples.clone()))),
            history: vec![HistoryRecord {
                meta: ClipMeta {
                    recipe: Recipe {
                        seed: 1,
                        ..Recipe::default()
                    },
                    ..Default::default()
                },
                clip: None,
            }],
            control: ControlSettings {
                follow_sidechain: true,
                envelope: vec![(0.0, 0.0), (0.5, 1.0)],
                capture_start: Some(96_000),
                ..Default::default()
            },
        };
        let (pad, msgs) = roundtrip(&record);
        assert!(msgs.is_empty(), "{msgs:?}");
        let got = pad.clip.unwrap();
        let bits = |v: &[f32]| v.iter().map(|s| s.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got.samples), bits(&samples));
        assert_eq!(got.meta.recipe.prompt, "dog bark");
        let r = &pad.settings.recipe;
        assert_eq!(
            (r.prompt.as_str(), r.negative.as_str(), r.seed),
            ("rain", "music", 42)
        );
        assert!(pad.settings.seed_locked);
        assert_eq!(pad.history.len(), 1);
        assert_eq!(pad.history[0].0.recipe.seed, 1);
        assert_eq!(pad.control, record.control);
    }

    #[test]
    fn settings_are_saved_as_the_recipe_without_its_prompts() {
        let saved = SavedSettings {
            recipe: Recipe {
                prompt: "kept at the pad's top level".into(),
                negative: "so not here".into(),
                seconds: 3.5,
                steps: 12,
                seed: 77,
                ..default_recipe()
            },
            seed_locked: true,
            final_steps: 80,
        };
        let v = serde_json::to_value(&saved).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort_unstable();
        // The keys of release 0.1.0's `settings` plus this release's `sampler` and
        // `final_steps`, nothing more, nothing less.
        assert_eq!(
            keys,
            [
                "eta",
                "final_steps",
                "guidance",
                "rescale",
                "sampler",
                "seconds",
                "seed",
                "seed_locked",
                "steps"
            ]
        );
        assert_eq!(v["sampler"], "dpm++2m");
        assert_eq!(
            (v["steps"].as_u64(), v["seed"].as_u64()),
            (Some(12), Some(77))
        );
        let back: SavedSettings = serde_json::from_value(v).unwrap();
        assert_eq!(back.recipe.steps, 12);
        assert_eq!(back.recipe.prompt, "", "prompts are not read from settings");
        assert!(back.seed_locked);
        assert_eq!(back, saved_without_prompts(&saved));
        assert!(
            serde_json::from_value::<SavedSettings>(serde_json::json!({"steps": "many"})).is_err()
        );
        for bad in [
            serde_json::json!({"final_steps": 0}),
            serde_json::json!({"final_steps": -3}),
            serde_json::json!({"final_steps": 1e12}),
            serde_json::json!({"sampler": "euler"}),
        ] {
            assert!(
                serde_json::from_value::<SavedSettings>(bad.clone()).is_err(),
                "{bad}"
            );
        }
        assert!(
            serde_json::from_value::<SavedSettings>(serde_json::json!({"seed_locked": 1})).is_err()
        );
    }

    fn saved_without_prompts(s: &SavedSettings) -> SavedSettings {
        let mut s = s.clone();
        s.recipe.prompt.clear();
        s.recipe.negative.clear();
        s
    }

    #[test]
    fn settings_from_before_samplers_load_as_ddim_at_their_steps() {
        // Release 0.1.0's keys: no sampler, no final_steps.
        let old = serde_json::json!({"eta": 1.0, "guidance": 5.0, "rescale": 0.75,
            "seconds": 4.0, "seed": 9, "seed_locked": false, "steps": 50});
        let s: SavedSettings = serde_json::from_value(old).unwrap();
        assert_eq!(s.recipe.sampler, Sampler::Ddim);
        assert_eq!(s.recipe.steps, 50);
        assert_eq!(s.final_steps, DEFAULT_FINAL_STEPS);
        // A new pad drafts with the fast solver; a saved sampler is kept as it is.
        assert_eq!(SavedSettings::default().recipe.sampler, Sampler::DpmPp2m);
        let s: SavedSettings =
            serde_json::from_value(serde_json::json!({"sampler": "unipc", "steps": 10})).unwrap();
        assert_eq!((s.recipe.sampler, s.recipe.steps), (Sampler::UniPc, 10));
    }

    #[test]
    fn states_without_control_load_with_defaults() {
        let mut msgs = Vec::new();
        let pad = decode_pad(
            0,
            r#"{"prompt": "rain", "settings": {"seconds": 4.0}}"#,
            &mut msgs,
        );
        assert!(msgs.is_empty(), "{msgs:?}");
        assert_eq!(pad.control, ControlSettings::default());
        // Settings a state lacks take the pad defaults; the prompt comes from the top level.
        let expected = Recipe {
            prompt: "rain".into(),
            seconds: 4.0,
            sampler: Sampler::Ddim, // no sampler saved: made by a DDIM-only release
            ..default_recipe()
        };
        assert_eq!(pad.settings.recipe, expected);
        assert!(!pad.settings.seed_locked);
        let bad = r#"{"control": {"envelope": [[1.0, 3.0], [0.5, 0.2]], "scale": 1e9}}"#;
        let pad = decode_pad(0, bad, &mut msgs);
        assert_eq!(pad.control.envelope, vec![(0.5, 0.2), (1.0, 1.0)]);
        assert_eq!(pad.control.scale, 2.0);
    }

    #[test]
    fn damaged_pads_load_what_they_can() {
        let mut msgs = Vec::new();
        assert!(decode_pad(2, "{\"prompt\": \"ha", &mut msgs)
            .settings
            .recipe
            .prompt
            .is_empty());
        assert!(msgs[0].starts_with("Pad 3: unreadable"), "{msgs:?}");

        // Truncated sample block, wrong settings type, NaNs: prompt and readable audio survive.
        let mut c = ClipRecord::from_clip(&clip(vec![0.5, f32::NAN, 0.25]));
        let mut bytes = B64.decode(&c.samples).unwrap();
        bytes.truncate(10);
        c.samples = B64.encode(bytes);
        let text = serde_json::json!({"prompt": "wind", "settings": "fast", "clip": c}).to_string();
        let mut msgs = Vec::new();
        let pad = decode_pad(0, &text, &mut msgs);
        assert_eq!(pad.settings.recipe.prompt, "wind");
        let defaults = SavedSettings::default();
        assert_eq!(pad.settings.recipe.steps, defaults.recipe.steps);
        assert_eq!(pad.settings.seed_locked, defaults.seed_locked);
        assert_eq!(pad.clip.unwrap().samples, vec![0.5, 0.0]);
        assert_eq!(msgs.len(), 4, "{msgs:?}"); // settings, stray bytes, length, NaN

        let mut msgs = Vec::new();
        let bad = serde_json::json!({"clip": {"sample_rate": 0, "samples": ""}}).to_string();
        assert!(decode_pad(0, &bad, &mut msgs).clip.is_none());
        assert!(msgs[0].contains("clip lost"), "{msgs:?}");
    }

    #[test]
    fn versions() {
        let mut msgs = Vec::new();
        assert_eq!(decode_version(None, &mut msgs), 0);
        assert_eq!(decode_version(Some(&"1".to_string()), &mut msgs), 1);
        assert!(msgs.is_empty());
        assert_eq!(decode_version(Some(&"9".to_string()), &mut msgs), 9);
        assert_eq!(msgs.len(), 1);
    }

    #[test]
    fn loudness_view_is_rms_per_hundredth() {
        let mut x = vec![0.0f32; 4800];
        x[2400..2640].fill(0.5);
        let v = loudness_view(&x, 24_000);
        assert_eq!(v.len(), 20);
        assert_eq!((v[9], v[10], v[11]), (0.0, 0.5, 0.0));
    }
}
