//! What the plugin's threads share: the pad store, the clip slots' writer side, the host
//! rate, the editor's audition requests, the capture buffer and the generation status (the
//! view types are in [`crate::status`]). The publisher lives here: it resamples each pad's
//! 24 kHz clip to the host rate and publishes it into the pad's slot. It runs on the main
//! thread (activate) or the generation thread, never on the audio thread, which holds only
//! the slots' readers and its own handle on the capture buffer.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use ezaudio_engine::audio::published::{ClipSlot, SlotReader};
use ezaudio_engine::audio::Clip;
use parking_lot::Mutex;

use crate::audio::recorder::CaptureBuffer;
use crate::layout::PAD_COUNT;
use crate::status::{JobView, ModelView, Progress, StepCost};
use crate::store::PadStore;

#[derive(Default)]
struct Published {
    /// (clip serial, rate) currently in each slot.
    pads: [(u64, u32); PAD_COUNT],
    next_id: u64,
}

pub struct Shared {
    pub store: Arc<PadStore>,
    pub slots: Vec<ClipSlot>,
    /// Host sample rate of the last activation (0: never activated).
    pub host_rate: AtomicU32,
    /// Bit N set: the editor asks the audio thread to play pad N once.
    pub audition: AtomicU32,
    /// Per pad: the state of its generation job, for the editor.
    pub progress: Mutex<[Progress; PAD_COUNT]>,
    /// The model's status and download state.
    pub model: Mutex<ModelView>,
    pub jobs: Mutex<[JobView; PAD_COUNT]>,
    /// How many cores generation may use (0: auto); the same value as the persisted
    /// `EzAudioParams::generation_cores`.
    pub generation_cores: Arc<AtomicU32>,
    /// What a step costs here, learned from every pad's jobs (for the editor's estimates).
    pub step_cost: Mutex<StepCost>,
    /// Per pad: the candidates of the last Variations run (None while still generating).
    pub candidates: Mutex<[Vec<Option<Arc<Clip>>>; PAD_COUNT]>,
    /// Per pad: the candidate now in the pad's slot for auditioning, if any.
    pub previewing: Mutex<[Option<usize>; PAD_COUNT]>,
    /// The sidechain capture buffer of the current activation (set in `activate`; the audio
    /// thread holds its own handle and never takes this lock).
    pub capture: Mutex<Option<Arc<CaptureBuffer>>>,
    /// What happened to the last capture, for the editor.
    pub capture_note: Mutex<String>,
    published: Mutex<Published>,
}

impl Shared {
    /// The shared half and the slots' readers (which go to the audio thread).
    pub fn new(store: Arc<PadStore>) -> (Arc<Self>, Vec<SlotReader>) {
        let (slots, readers): (Vec<ClipSlot>, Vec<SlotReader>) =
            (0..PAD_COUNT).map(|_| ClipSlot::new()).unzip();
        let shared = Arc::new(Self {
            store,
            slots,
            host_rate: AtomicU32::new(0),
            audition: AtomicU32::new(0),
            progress: Mutex::new(Default::default()),
            model: Mutex::new(ModelView::default()),
            jobs: Mutex::new(Default::default()),
            step_cost: Mutex::new(StepCost::default()),
            generation_cores: Arc::new(AtomicU32::new(0)),
            candidates: Mutex::new(Default::default()),
            previewing: Mutex::new(Default::default()),
            capture: Mutex::new(None),
            capture_note: Mutex::new(String::new()),
            published: Mutex::new(Published::default()),
        });
        (shared, readers)
    }

    /// Brings every slot up to date with the store at the current host rate. Resamples off
    /// the store's lock. Returns how many slots changed. Not for the audio thread.
    pub fn publish_all(&self) -> usize {
        let rate = self.host_rate.load(Ordering::SeqCst);
        if rate == 0 {
            return 0;
        }
        let mut published = self.published.lock();
        let mut changed = 0;
        for pad in 0..PAD_COUNT {
            let (serial, clip) = self.store.clip(pad);
            if published.pads[pad] == (serial, rate) {
                continue;
            }
            match clip {
                None => self.slots[pad].clear(),
                Some(clip) => {
                    published.next_id += 1;
                    match clip.to_playback(rate, published.next_id) {
                        Ok(buffer) => self.slots[pad].publish(Arc::new(buffer)),
                        Err(e) => {
                            self.slots[pad].clear();
                            self.store.report(format!(
                                "Pad {}: cannot play the clip at {rate} Hz: {e}",
                                pad + 1
                            ));
                        }
                    }
                }
            }
            published.pads[pad] = (serial, rate);
            self.previewing.lock()[pad] = None;
            changed += 1;
        }
        changed
    }

    /// Puts `clip` into the pad's slot in place of its own clip (auditioning a candidate)
    /// and plays it once. The pad's clip comes back with [`Shared::unpreview`] or the next
    /// change. Not for the audio thread (resamples).
    pub fn preview(&self, pad: usize, candidate: usize, clip: &Clip) -> Result<(), String> {
        let rate = self.host_rate.load(Ordering::SeqCst);
        if pad >= PAD_COUNT {
            return Err(format!("no pad {}", pad + 1));
        }
        if rate == 0 {
            return Err("the plugin is not active (no host sample rate yet)".into());
        }
        let mut published = self.published.lock();
        published.next_id += 1;
        let buffer = clip
            .to_playback(rate, published.next_id)
            .map_err(|e| e.to_string())?;
        self.slots[pad].publish(Arc::new(buffer));
        // Anything but the pad's (serial, rate): the next publish puts the pad's clip back.
        published.pads[pad] = (u64::MAX, rate);
        self.previewing.lock()[pad] = Some(candidate);
        drop(published);
        self.audition(pad);
        Ok(())
    }

    /// Ends auditioning: the pad's own clip goes back into its slot.
    pub fn unpreview(&self, pad: usize) {
        if pad < PAD_COUNT && self.previewing.lock()[pad].take().is_some() {
            self.published.lock().pads[pad] = (u64::MAX, 0);
            self.publish_all();
        }
    }

    /// Frees buffers no voice plays any more.
    pub fn collect(&self) {
        for slot in &self.slots {
            slot.collect();
        }
    }

    /// Asks the audio thread to play `pad` once (from the editor).
    pub fn audition(&self, pad: usize) {
        if pad < PAD_COUNT {
            self.audition.fetch_or(1 << pad, Ordering::SeqCst);
        }
    }
}
