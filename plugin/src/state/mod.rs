//! The persisted format of everything a user made: per pad the prompt, negative prompt,
//! generation settings, the current clip (the model's own samples, bit-exact), a short
//! history of earlier generations and the loudness-control settings (with their bounds).
//! Only the format and its decoding live here; the live pads are [`crate::store`].
//!
//! Layout inside nice-plug's state (`PluginState::fields`, each value a JSON string):
//! * `ezaudio_version`: [`STATE_VERSION`] as a JSON number.
//! * `pad1` .. `pad16`: one [`PadRecord`] each, so a damaged pad never takes the others down.
//! * `history_budget` (since version 3): the history audio budget in samples, a project
//!   setting ([`crate::store::DEFAULT_HISTORY_BUDGET`] when absent).
//!
//! Clip audio is stored losslessly in compressed blocks ([`codec`]: byte planes + zlib, in
//! base64), each with its own checksum, so damage costs only the blocks it touches. Versions
//! before 3 stored one base64 string of the raw samples (`samples`), still read. nice-plug
//! compresses the whole state with zstd on save (feature `zstd`), which wins back base64's
//! 8-bits-per-6 cost: 3.4-3.6 bytes per sample measured, against 5.33 before. zstd keeps no
//! checksum, so container damage it does not notice reaches these fields, whose own checks
//! (block checksums, lengths) catch it.
//!
//! Loading is tolerant: every pad and every field is read on its own; what cannot be read is
//! left at its default and described in a message the editor shows. Nothing here panics on
//! input. A state saved by an earlier release is kept as test data
//! (`tests/data/state-v2-release.bin`, checked by `tests/tests/state_compat.rs`): change the
//! format only in ways that still load it.

pub mod codec;

use ezaudio_engine::audio::{Clip, ClipMeta};
use ezaudio_engine::{Recipe, Sampler};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::layout::MAX_RATE;

/// Version of the persisted pad format. 0: states without `ezaudio_version` (the skeleton,
/// parameters only). 1: pads with clips and history. 2: plus each pad's `control` (follow
/// sidechain, drawn envelope); absent in older states, where it takes its defaults.
/// 3: clip audio in compressed blocks (`codec`, `blocks`) instead of `samples`, and the
/// `history_budget` field.
pub const STATE_VERSION: u32 = 3;
pub const VERSION_KEY: &str = "ezaudio_version";
pub const HISTORY_BUDGET_KEY: &str = "history_budget";

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

/// A clip as stored: rate, sample count, the audio in [`codec::CODEC`] blocks, recipe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClipRecord {
    pub sample_rate: u32,
    pub len: usize,
    pub codec: String,
    pub blocks: Vec<String>,
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
    /// The pad's output level (a gain applied at publish; the clip stays raw). States
    /// without it load as off.
    pub level: crate::level::OutputLevel,
}

impl ClipRecord {
    pub fn from_clip(clip: &Clip) -> Self {
        Self {
            sample_rate: clip.sample_rate,
            len: clip.samples.len(),
            codec: codec::CODEC.into(),
            blocks: codec::encode_blocks(&clip.samples),
            meta: clip.meta.clone(),
        }
    }
}

/// Decodes a stored clip (either format) from loose JSON. Recoverable damage (damaged
/// blocks, a short sample block, non-finite samples, an unreadable recipe) keeps what is
/// readable and adds a plain-words note to `notes`.
pub fn decode_clip(value: &Value, notes: &mut Vec<String>) -> Result<Clip, String> {
    let obj = value.as_object().ok_or("it is not an object")?;
    let sample_rate = obj
        .get("sample_rate")
        .and_then(Value::as_u64)
        .filter(|&r| r > 0 && r <= MAX_RATE as u64)
        .ok_or("it has no valid sample rate")? as u32;
    let len = obj.get("len").and_then(Value::as_u64);
    let mut decoded = match (obj.get("blocks"), obj.get("samples")) {
        (Some(blocks), _) => {
            match obj.get("codec").and_then(Value::as_str) {
                Some(codec::CODEC) => {}
                Some(other) => return Err(format!("its audio is in an unknown format ({other})")),
                None => return Err("its audio format is not named".into()),
            }
            let len = len.ok_or("its length is missing")?;
            codec::decode_blocks(blocks, usize::try_from(len).unwrap_or(usize::MAX))?
        }
        (None, Some(Value::String(text))) => {
            let (decoded, stray) = codec::decode_legacy(text)?;
            if stray > 0 {
                notes.push(format!("clip data has {stray} stray bytes; ignored"));
            }
            if let Some(len) = len.filter(|&l| l != decoded.samples.len() as u64) {
                notes.push(format!(
                    "clip should have {len} samples, {} were readable",
                    decoded.samples.len()
                ));
            }
            decoded
        }
        _ => return Err("it has no samples".into()),
    };
    if !decoded.damaged.is_empty() {
        let lost: usize = decoded.damaged.iter().map(|r| r.len()).sum();
        notes.push(format!(
            "audio damaged at {} ({lost} samples silenced; the rest is intact)",
            codec::spans(&decoded.damaged, sample_rate)
        ));
    }
    let samples = &mut decoded.samples;
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
    Ok(Clip::new(decoded.samples, sample_rate, meta))
}

/// A pad as loaded: the clip and history decoded, plus what went wrong.
#[derive(Debug, Clone, Default)]
pub struct LoadedPad {
    /// The pad's prompts and settings (`prompt`/`negative` from the pad's top level).
    pub settings: SavedSettings,
    pub clip: Option<Clip>,
    pub history: Vec<(ClipMeta, Option<Clip>)>,
    pub control: ControlSettings,
    pub level: crate::level::OutputLevel,
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
    if let Some(l) = obj.get("level").filter(|l| !l.is_null()) {
        match serde_json::from_value::<crate::level::OutputLevel>(l.clone()) {
            Ok(l) => pad.level = l.sanitized(),
            Err(e) => messages.push(format!("{name}: output level unreadable ({e}); off")),
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
            if items.len() > HISTORY_MAX {
                messages.push(format!(
                    "{name}: history has {} entries; the newest {HISTORY_MAX} kept",
                    items.len()
                ));
            }
            // History audio a pad may load: bounds what a hostile state can allocate.
            let mut room = codec::MAX_CLIP_SAMPLES;
            for (k, item) in items.iter().take(HISTORY_MAX).enumerate() {
                let meta = item
                    .get("meta")
                    .and_then(|m| serde_json::from_value::<ClipMeta>(m.clone()).ok());
                let clip = match item.get("clip") {
                    None | Some(Value::Null) => None,
                    Some(c) if claimed_len(c) > room => {
                        messages.push(format!(
                            "{name}: history {}: audio dropped (the pad's history holds more than {} samples); its recipe is kept",
                            k + 1,
                            codec::MAX_CLIP_SAMPLES
                        ));
                        None
                    }
                    Some(c) => match decode_clip(c, &mut notes) {
                        Ok(clip) => {
                            room = room.saturating_sub(clip.samples.len());
                            Some(clip)
                        }
                        Err(e) => {
                            messages.push(format!("{name}: history {}: audio lost: {e}", k + 1));
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
                    (None, None) => messages.push(format!("{name}: history {}: unreadable", k + 1)),
                }
            }
        }
        Some(_) => messages.push(format!("{name}: history unreadable")),
    }
    pad
}

/// One line over a load's messages for the editor: which pads were damaged and how badly,
/// in plain words ("Pad 3: part of its audio silenced; Pad 5: lost, left empty"). None when
/// no pad was damaged.
pub fn summary(messages: &[String]) -> Option<String> {
    // Worst first: a pad is described by the worst thing that happened to it.
    const KINDS: [(&str, &str); 5] = [
        ("left empty", "lost, left empty"),
        ("clip lost", "its clip lost"),
        ("audio damaged", "part of its audio silenced"),
        ("history", "part of its history lost"),
        ("", "partly damaged, the rest restored"),
    ];
    let mut worst: Vec<(usize, usize)> = Vec::new(); // (pad number, kind)
    for m in messages {
        let Some((n, rest)) = m.strip_prefix("Pad ").and_then(|r| r.split_once(": ")) else {
            continue;
        };
        let Ok(n) = n.parse::<usize>() else { continue };
        let kind = if rest.starts_with("history") {
            3
        } else {
            KINDS
                .iter()
                .position(|(key, _)| rest.contains(key))
                .unwrap_or(KINDS.len() - 1)
        };
        match worst.iter_mut().find(|(p, _)| *p == n) {
            Some(w) => w.1 = w.1.min(kind),
            None => worst.push((n, kind)),
        }
    }
    if worst.is_empty() {
        return None;
    }
    worst.sort_unstable();
    let pads: Vec<String> = worst
        .iter()
        .map(|(n, k)| format!("Pad {n}: {}", KINDS[*k].1))
        .collect();
    Some(format!(
        "{}. Every other pad loaded intact.",
        pads.join("; ")
    ))
}

/// Most history entries read per pad (the store keeps [`crate::store::HISTORY_LEN`]).
const HISTORY_MAX: usize = 16;

/// How many samples a stored clip says it holds (its `len`, or what its legacy text can
/// hold), read before decoding it.
fn claimed_len(clip: &Value) -> usize {
    let len = clip.get("len").and_then(Value::as_u64);
    let text = clip
        .get("samples")
        .and_then(Value::as_str)
        .map(|t| t.len() / 4 * 3 / 4);
    len.map(|l| usize::try_from(l).unwrap_or(usize::MAX))
        .max(text)
        .unwrap_or(0)
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
mod tests;
