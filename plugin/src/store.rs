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
use crate::state::{self, ClipRecord, ControlSettings, HistoryRecord, PadRecord, SavedSettings};

/// Earlier generations kept per pad.
pub const HISTORY_LEN: usize = 8;
/// Samples of history audio kept over all pads (~2.8 minutes at 24 kHz, 16 MB as f32).
/// Beyond it the oldest entries keep only their recipe.
pub const HISTORY_AUDIO_BUDGET: usize = 4_000_000;

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
            serial: 0,
        }
    }
}

#[derive(Debug, Default)]
pub struct Bank {
    pub pads: [PadData; PAD_COUNT],
    /// Problems found by the last state load (shown in the editor).
    pub load_messages: Vec<String>,
    next_serial: u64,
}

impl Bank {
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
}

impl PadStore {
    /// Runs `f` with the bank locked. Keep `f` short: no resampling or I/O inside.
    pub fn with<R>(&self, f: impl FnOnce(&mut Bank) -> R) -> R {
        f(&mut self.bank.lock())
    }

    /// Bumped whenever a pad's clip changes (generation, restore, state load).
    pub fn clip_changes(&self) -> u64 {
        self.clip_changes.load(Ordering::SeqCst)
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
        if total <= HISTORY_AUDIO_BUDGET {
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
        self.with(|b| {
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
                    serial: next,
                };
            }
            b.next_serial = next;
            enforce_budget(b);
            b.load_messages = messages;
        });
        self.clip_changes.fetch_add(1, Ordering::SeqCst);
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
        let big = HISTORY_AUDIO_BUDGET / 3 + 1;
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
        assert_eq!(other.load_messages().len(), 1);
        assert!(other.clip(5).1.is_some());
    }
}
