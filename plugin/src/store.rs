//! The in-memory pads (prompts, settings, clips, history), shared by the editor, the
//! generation thread and the publisher, and persisted through nice-plug as custom fields
//! (see [`crate::state`] for the format). Never touched by the audio thread.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ezaudio_engine::audio::{Clip, ClipMeta};
use ezaudio_engine::Recipe;
use nice_plug::prelude::*;
use parking_lot::Mutex;

use crate::layout::PAD_COUNT;
use crate::level::OutputLevel;
use crate::state::{self, ClipRecord, ControlSettings, HistoryRecord, PadRecord, SavedSettings};

/// Earlier generations kept per pad.
pub const HISTORY_LEN: usize = 8;
/// Samples of history audio kept over all pads unless the project says otherwise (~2.8
/// minutes at 24 kHz, 16 MB as f32). Beyond it the oldest entries keep only their recipe.
/// A project setting ([`Bank::history_budget`], saved as `history_budget`).
pub const DEFAULT_HISTORY_BUDGET: usize = 4_000_000;
/// Largest settable budget (~23 minutes at 24 kHz, 128 MB of memory as f32).
pub const MAX_HISTORY_BUDGET: usize = 32_000_000;

#[derive(Debug, Clone)]
pub struct HistoryItem {
    pub meta: ClipMeta,
    pub clip: Option<Arc<Clip>>,
    /// Order of creation (for the budget: oldest audio goes first).
    pub serial: u64,
}

#[derive(Debug, Clone)]
pub struct PadData {
    /// What the pad's next generation makes (prompts included).
    pub recipe: Recipe,
    /// Keep the seed for the next generation (otherwise a new random one is drawn).
    pub seed_locked: bool,
    /// Steps of "Render final": the clip's recipe run again at this many steps.
    pub final_steps: u32,
    pub clip: Option<Arc<Clip>>,
    /// Newest first.
    pub history: Vec<HistoryItem>,
    /// Loudness control: follow the sidechain, drawn envelope.
    pub control: ControlSettings,
    /// The level the publisher applies to the clip (the clip itself stays raw).
    pub level: OutputLevel,
    /// Changes whenever `clip` changes; the publisher compares it.
    pub serial: u64,
}

impl Default for PadData {
    fn default() -> Self {
        Self {
            recipe: state::default_recipe(),
            seed_locked: false,
            final_steps: state::DEFAULT_FINAL_STEPS,
            clip: None,
            history: Vec::new(),
            control: ControlSettings::default(),
            level: OutputLevel::Off,
            serial: 0,
        }
    }
}

#[derive(Debug)]
pub struct Bank {
    pub pads: [PadData; PAD_COUNT],
    /// Problems found by the last state load (shown in the editor).
    pub load_messages: Vec<String>,
    /// Samples of history audio kept over all pads (a project setting).
    pub history_budget: usize,
    next_serial: u64,
}

impl Default for Bank {
    fn default() -> Self {
        Self {
            pads: Default::default(),
            load_messages: Vec::new(),
            history_budget: DEFAULT_HISTORY_BUDGET,
            next_serial: 0,
        }
    }
}

impl Bank {
    /// Samples of history audio held now (what the budget limits).
    pub fn history_samples(&self) -> usize {
        self.pads
            .iter()
            .flat_map(|p| &p.history)
            .filter_map(|h| h.clip.as_ref())
            .map(|c| c.samples.len())
            .sum()
    }

    /// Sets the history budget (clamped to [`MAX_HISTORY_BUDGET`]) and drops the oldest
    /// history audio beyond it at once.
    pub fn set_history_budget(&mut self, samples: usize) {
        self.history_budget = samples.min(MAX_HISTORY_BUDGET);
        enforce_budget(self);
    }

    fn serial(&mut self) -> u64 {
        self.next_serial += 1;
        self.next_serial
    }
}

/// The pads behind a lock, plus a change counter that tells the publisher to look again.
#[derive(Default)]
pub struct PadStore {
    bank: Mutex<Bank>,
    clip_changes: AtomicU64,
    /// Runs at the end of every state load, on the host's thread (see [`PadStore::on_load`]).
    after_load: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl PadStore {
    /// Runs `f` with the bank locked. Keep `f` short: no resampling or I/O inside.
    pub fn with<R>(&self, f: impl FnOnce(&mut Bank) -> R) -> R {
        f(&mut self.bank.lock())
    }

    /// Sets what runs after each state load (once; later calls are ignored). nice-plug does not
    /// re-activate the plugin after the host loads a state, so without this the loaded clips
    /// would reach the audio thread only at the generation thread's next tick, and a
    /// freewheeling bounce started right after loading a project could pass them by. (Host state
    /// loads run on the host's main thread. nice-plug moves only a state set from the editor
    /// through `GuiContext::set_state` onto the audio thread, and this editor never does that.)
    pub fn on_load(&self, f: impl Fn() + Send + Sync + 'static) {
        let _ = self.after_load.set(Box::new(f));
    }

    /// Bumped whenever a pad's clip changes (generation, restore, state load).
    pub fn clip_changes(&self) -> u64 {
        self.clip_changes.load(Ordering::SeqCst)
    }

    /// Sets the pad's output level; the publisher applies it on its next look.
    pub fn set_level(&self, pad: usize, level: OutputLevel) {
        let changed = self.with(|b| match b.pads.get_mut(pad) {
            Some(p) if p.level != level => {
                p.level = level;
                true
            }
            _ => false,
        });
        if changed {
            self.clip_changes.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The pad's clip and its serial, for publishing.
    pub fn clip(&self, pad: usize) -> (u64, Option<Arc<Clip>>) {
        self.with(|b| {
            b.pads
                .get(pad)
                .map(|p| (p.serial, p.clip.clone()))
                .unwrap_or((0, None))
        })
    }

    /// Makes `clip` the pad's current clip; the previous one moves to the history.
    pub fn set_clip(&self, pad: usize, clip: Clip) {
        self.with(|b| {
            let serial = b.serial();
            let Some(p) = b.pads.get_mut(pad) else { return };
            if let Some(old) = p.clip.take() {
                p.history.insert(
                    0,
                    HistoryItem {
                        meta: old.meta.clone(),
                        clip: Some(old),
                        serial: p.serial,
                    },
                );
                p.history.truncate(HISTORY_LEN);
            }
            p.clip = Some(Arc::new(clip));
            p.serial = serial;
            enforce_budget(b);
        });
        self.clip_changes.fetch_add(1, Ordering::SeqCst);
    }

    /// Swaps history entry `index` with the current clip. Returns false if it has no audio.
    pub fn restore(&self, pad: usize, index: usize) -> bool {
        let done = self.with(|b| {
            let serial = b.serial();
            let Some(p) = b.pads.get_mut(pad) else {
                return false;
            };
            let Some(clip) = p.history.get(index).and_then(|h| h.clip.clone()) else {
                return false;
            };
            let item = p.history.remove(index);
            if let Some(old) = p.clip.take() {
                p.history.insert(
                    0,
                    HistoryItem {
                        meta: old.meta.clone(),
                        clip: Some(old),
                        serial: p.serial,
                    },
                );
            }
            p.clip = Some(clip);
            p.serial = item.serial.max(serial);
            true
        });
        if done {
            self.clip_changes.fetch_add(1, Ordering::SeqCst);
        }
        done
    }

    pub fn load_messages(&self) -> Vec<String> {
        self.with(|b| b.load_messages.clone())
    }

    pub fn report(&self, message: String) {
        self.with(|b| {
            if b.load_messages.len() < 64 {
                b.load_messages.push(message)
            }
        });
    }

    fn to_record(p: &PadData) -> PadRecord {
        PadRecord {
            prompt: p.recipe.prompt.clone(),
            negative: p.recipe.negative.clone(),
            settings: SavedSettings {
                recipe: p.recipe.clone(),
                seed_locked: p.seed_locked,
                final_steps: p.final_steps,
            },
            clip: p.clip.as_deref().map(ClipRecord::from_clip),
            history: p
                .history
                .iter()
                .map(|h| HistoryRecord {
                    meta: h.meta.clone(),
                    clip: h.clip.as_deref().map(ClipRecord::from_clip),
                })
                .collect(),
            control: p.control.clone(),
            level: p.level,
        }
    }
}

/// Drops the audio (not the recipe) of the oldest history entries beyond the budget.
fn enforce_budget(b: &mut Bank) {
    let mut items: Vec<(u64, usize, usize, usize)> = Vec::new(); // (serial, pad, index, len)
    for (pi, p) in b.pads.iter().enumerate() {
        for (hi, h) in p.history.iter().enumerate() {
            if let Some(c) = &h.clip {
                items.push((h.serial, pi, hi, c.samples.len()));
            }
        }
    }
    let mut total: usize = items.iter().map(|i| i.3).sum();
    items.sort_unstable();
    for (_, pi, hi, len) in items {
        if total <= b.history_budget {
            break;
        }
        b.pads[pi].history[hi].clip = None;
        total -= len;
    }
}

// SAFETY: no parameters (the map is empty), only persisted fields; the struct is Send + Sync.
unsafe impl Params for PadStore {
    fn param_map(&self) -> Vec<(String, ParamPtr, String)> {
        Vec::new()
    }

    fn serialize_fields(&self) -> BTreeMap<String, String> {
        let mut fields = BTreeMap::new();
        fields.insert(
            state::VERSION_KEY.to_string(),
            state::STATE_VERSION.to_string(),
        );
        self.with(|b| {
            fields.insert(
                state::HISTORY_BUDGET_KEY.to_string(),
                b.history_budget.to_string(),
            );
            for (i, p) in b.pads.iter().enumerate() {
                if let Ok(json) = serde_json::to_string(&Self::to_record(p)) {
                    fields.insert(state::pad_key(i), json);
                }
            }
        });
        fields
    }

    fn deserialize_fields(&self, serialized: &BTreeMap<String, String>) {
        let mut messages = Vec::new();
        let version = state::decode_version(serialized.get(state::VERSION_KEY), &mut messages);
        let loaded: Vec<_> = (0..PAD_COUNT)
            .map(|i| match serialized.get(&state::pad_key(i)) {
                Some(text) => state::decode_pad(i, text, &mut messages),
                None => {
                    if version >= 1 {
                        messages.push(format!(
                            "Pad {}: missing from the saved state; left empty",
                            i + 1
                        ));
                    }
                    Default::default()
                }
            })
            .collect();
        let budget = match serialized.get(state::HISTORY_BUDGET_KEY) {
            None => DEFAULT_HISTORY_BUDGET,
            Some(text) => match serde_json::from_str::<u64>(text) {
                Ok(n) => usize::try_from(n)
                    .unwrap_or(usize::MAX)
                    .min(MAX_HISTORY_BUDGET),
                Err(_) => {
                    messages.push("History budget unreadable; the default is used".into());
                    DEFAULT_HISTORY_BUDGET
                }
            },
        };
        let summary = state::summary(&messages);
        self.with(|b| {
            b.history_budget = budget;
            let mut next = b.next_serial;
            for (slot, pad) in b.pads.iter_mut().zip(loaded) {
                let mut history: Vec<HistoryItem> = pad
                    .history
                    .into_iter()
                    .take(HISTORY_LEN)
                    .map(|(meta, clip)| HistoryItem {
                        meta,
                        clip: clip.map(Arc::new),
                        serial: 0,
                    })
                    .collect();
                // Newest first in the list: the oldest gets the smallest serial.
                for h in history.iter_mut().rev() {
                    next += 1;
                    h.serial = next;
                }
                next += 1;
                *slot = PadData {
                    recipe: pad.settings.recipe,
                    seed_locked: pad.settings.seed_locked,
                    final_steps: pad.settings.final_steps,
                    clip: pad.clip.map(Arc::new),
                    history,
                    control: pad.control,
                    level: pad.level,
                    serial: next,
                };
            }
            b.next_serial = next;
            enforce_budget(b);
            b.load_messages = summary.into_iter().chain(messages).collect();
        });
        self.clip_changes.fetch_add(1, Ordering::SeqCst);
        if let Some(after_load) = self.after_load.get() {
            after_load();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip(seed: u64, len: usize) -> Clip {
        Clip::new(
            vec![seed as f32 / 100.0; len],
            24_000,
            ClipMeta {
                recipe: Recipe {
                    seed,
                    ..Recipe::default()
                },
                ..Default::default()
            },
        )
    }

    #[test]
    fn new_clips_push_history_and_restore_swaps() {
        let store = PadStore::default();
        let c0 = store.clip_changes();
        store.set_clip(3, clip(1, 10));
        store.set_clip(3, clip(2, 10));
        assert_eq!(store.clip_changes(), c0 + 2);
        let (s2, cur) = store.clip(3);
        assert_eq!(cur.unwrap().meta.recipe.seed, 2);
        assert_eq!(store.with(|b| b.pads[3].history.len()), 1);
        assert!(store.restore(3, 0));
        let (s1, cur) = store.clip(3);
        assert_eq!(cur.unwrap().meta.recipe.seed, 1);
        assert_ne!(
            s1, s2,
            "restoring changes the serial so it gets republished"
        );
        assert_eq!(store.with(|b| b.pads[3].history[0].meta.recipe.seed), 2);
        assert!(!store.restore(3, 5));
    }

    #[test]
    fn history_is_bounded_per_pad_and_in_total_audio() {
        let store = PadStore::default();
        for s in 0..12 {
            store.set_clip(0, clip(s, 1000));
        }
        assert_eq!(store.with(|b| b.pads[0].history.len()), HISTORY_LEN);
        assert_eq!(store.with(|b| b.pads[0].history[0].meta.recipe.seed), 10);
        // Big clips: only the newest history audio fits the budget, recipes stay.
        let big = DEFAULT_HISTORY_BUDGET / 3 + 1;
        for s in 0..4 {
            store.set_clip(1, clip(100 + s, big));
        }
        let kept: Vec<bool> =
            store.with(|b| b.pads[1].history.iter().map(|h| h.clip.is_some()).collect());
        assert_eq!(kept, vec![true, true, false]);
        assert!(store.with(|b| b.pads[0].history.iter().all(|h| h.clip.is_none())));
    }

    #[test]
    fn fields_roundtrip_through_nice_plug_format() {
        let store = PadStore::default();
        store.with(|b| b.pads[5].recipe.prompt = "thunder".into());
        store.set_clip(5, clip(3, 100));
        store.set_clip(5, clip(4, 50));
        let fields = store.serialize_fields();
        let other = PadStore::default();
        other.deserialize_fields(&fields);
        assert!(
            other.load_messages().is_empty(),
            "{:?}",
            other.load_messages()
        );
        assert_eq!(other.clip(5).1.unwrap().samples, vec![0.04; 50]);
        assert_eq!(other.with(|b| b.pads[5].recipe.prompt.clone()), "thunder");
        assert_eq!(
            other.with(|b| b.pads[5].history[0].clip.as_ref().unwrap().samples.len()),
            100
        );
        assert_eq!(other.serialize_fields(), fields);

        // A damaged pad is reported; the others load.
        let mut damaged = fields.clone();
        damaged.insert("pad2".into(), "{\"prompt\": 3".into());
        other.deserialize_fields(&damaged);
        let messages = other.load_messages();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert_eq!(
            messages[0],
            "Pad 2: lost, left empty. Every other pad loaded intact."
        );
        assert!(other.clip(5).1.is_some());
    }

    #[test]
    fn a_damaged_audio_block_is_reported_in_plain_words() {
        let store = PadStore::default();
        store.set_clip(2, clip(7, 3 * crate::state::codec::BLOCK));
        let mut fields = store.serialize_fields();
        let mut pad: serde_json::Value = serde_json::from_str(&fields["pad3"]).unwrap();
        pad["clip"]["blocks"][1] = "not a block".into();
        fields.insert("pad3".into(), pad.to_string());
        let other = PadStore::default();
        other.deserialize_fields(&fields);
        assert_eq!(
            other.load_messages(),
            vec![
                "Pad 3: part of its audio silenced. Every other pad loaded intact.".to_string(),
                "Pad 3: audio damaged at 0.68-1.37 s (16384 samples silenced; the rest is intact)"
                    .to_string(),
            ]
        );
        let samples = other.clip(2).1.unwrap().samples.clone();
        assert!(samples[16_384..32_768].iter().all(|&s| s == 0.0));
        assert!(samples[..16_384]
            .iter()
            .chain(&samples[32_768..])
            .all(|&s| s == 0.07));
    }
}
