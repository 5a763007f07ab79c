//! "Foley that follows the track", the generation thread's half: a finished sidechain capture
//! (recorded by [`crate::audio::recorder`]) becomes one controlled job per pad that follows
//! the sidechain. Here rather than in the recorder so that the audio room never sees the pads,
//! and here rather than in the runner because it is its own policy: how long a capture may
//! run, what a too-short one does, what the following pads remember of it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ezaudio_engine::audio::{Clip, ClipMeta};
use ezaudio_engine::engine::{ControlSource, Job};
use ezaudio_engine::Recipe;

use crate::jobs::controlled_job;
use crate::layout::{CAPTURE_SECONDS, MIN_CAPTURE_SECONDS, PAD_COUNT};
use crate::shared::Shared;
use crate::state::loudness_view;
use crate::store::PadData;

/// How long the next capture may run (seconds): as long as the longest pad that follows the
/// sidechain, or the whole buffer when no pad follows it. (The buffer clamps the value to
/// `MIN_CAPTURE_SECONDS..=CAPTURE_SECONDS`.)
pub fn capture_seconds<'a>(pads: impl IntoIterator<Item = &'a PadData>) -> f32 {
    let mut followers = pads
        .into_iter()
        .filter(|p| p.control.follow_sidechain)
        .peekable();
    if followers.peek().is_none() {
        return CAPTURE_SECONDS;
    }
    followers.map(|p| p.recipe.seconds).fold(0.0f32, f32::max)
}

/// Where pad `pad`'s clip starts on the host timeline at `host_rate`, if it follows the
/// sidechain and its capture recorded a position (the transport lock's origin; the lock
/// parameter itself is read by the audio thread). A capture made at another rate is rescaled.
pub fn lock_origin(pad: &PadData, host_rate: u32) -> Option<i64> {
    let c = &pad.control;
    let start = c.capture_start.filter(|_| c.follow_sidechain)?;
    if c.capture_rate == 0 || c.capture_rate == host_rate || host_rate == 0 {
        return Some(start);
    }
    Some((start as f64 * host_rate as f64 / c.capture_rate as f64).round() as i64)
}

/// Publishes every pad's [`lock_origin`] to the audio thread (main or generation thread).
pub fn publish_locks(shared: &Shared) {
    let rate = shared.host_rate.load(Ordering::Relaxed);
    let origins: [Option<i64>; PAD_COUNT] = shared
        .store
        .with(|b| std::array::from_fn(|i| b.pads.get(i).and_then(|p| lock_origin(p, rate))));
    for (pad, origin) in origins.into_iter().enumerate() {
        shared.locks.set(pad, origin);
    }
}

/// Makes every state load publish the loaded clips and lock origins at once, on the host's
/// thread, instead of at the generation thread's next tick (when a host rate is known: before
/// the first activation, `activate` publishes them).
pub fn publish_after_state_loads(shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    shared.store.on_load(move || {
        if let Some(shared) = weak.upgrade() {
            shared.publish_all();
            publish_locks(&shared);
        }
    });
}

/// Generation thread, every tick: keeps the capture length at the following pads' length, and
/// turns a finished capture into one controlled job per pad that follows the sidechain (which
/// also records the capture's start and loudness view in those pads), and republishes the
/// transport-lock origins (a state load or the editor may have changed them).
pub fn poll(shared: &Shared, fresh_seed: impl Fn() -> u64) -> Vec<(usize, Job)> {
    publish_locks(shared);
    let Some(buffer) = shared.capture.lock().clone() else {
        return Vec::new();
    };
    let followers: Vec<(usize, PadData)> = shared.store.with(|b| {
        b.pads
            .iter()
            .enumerate()
            .filter(|(_, p)| p.control.follow_sidechain)
            .map(|(i, p)| (i, p.clone()))
            .collect()
    });
    buffer.set_limit_seconds(capture_seconds(followers.iter().map(|(_, p)| p)));
    let Some(captured) = buffer.take() else {
        return Vec::new();
    };
    let seconds = captured.samples.len() as f32 / captured.rate.max(1) as f32;
    if followers.is_empty() {
        *shared.capture_note.lock() = "Sidechain captured, but no pad follows the sidechain".into();
        return Vec::new();
    }
    if seconds < MIN_CAPTURE_SECONDS {
        *shared.capture_note.lock() =
            format!("Capture too short ({seconds:.2} s): play at least {MIN_CAPTURE_SECONDS} s");
        return Vec::new();
    }
    let view = loudness_view(&captured.samples, captured.rate);
    let meta = ClipMeta {
        recipe: Recipe {
            seconds,
            ..Recipe::new("sidechain capture")
        },
        ..Default::default()
    };
    let clip = Arc::new(Clip::new(captured.samples, captured.rate, meta));
    *shared.capture_note.lock() = format!("Captured {seconds:.2} s of sidechain");
    let mut jobs = Vec::new();
    for (pad, data) in followers.into_iter().filter(|(p, _)| *p < PAD_COUNT) {
        if data.recipe.prompt.trim().is_empty() {
            *shared.capture_note.lock() =
                format!("Pad {}: follows the sidechain but has no prompt", pad + 1);
            continue;
        }
        let seed = fresh_seed();
        let job = controlled_job(
            &data,
            ControlSource::Reference(clip.clone()),
            seconds.min(data.recipe.seconds),
            seed,
        );
        let used_seed = match &job {
            Job::GenerateControlled(c) => c.recipe.seed,
            _ => seed,
        };
        shared.store.with(|b| {
            let c = &mut b.pads[pad].control;
            c.capture_start = captured.start;
            c.capture_rate = captured.rate;
            c.capture_view = view.clone();
            b.pads[pad].recipe.seed = used_seed;
        });
        jobs.push((pad, job));
    }
    jobs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_length_follows_the_longest_follower() {
        let mut pads: Vec<PadData> = (0..3).map(|_| PadData::default()).collect();
        pads[0].recipe.seconds = 4.0;
        assert_eq!(capture_seconds(&pads), CAPTURE_SECONDS, "nobody follows");
        pads[1].control.follow_sidechain = true;
        pads[1].recipe.seconds = 2.5;
        pads[2].control.follow_sidechain = true;
        pads[2].recipe.seconds = 6.0;
        assert_eq!(capture_seconds(&pads), 6.0);
        pads[2].recipe.seconds = f32::NAN;
        assert_eq!(capture_seconds(&pads), 2.5, "a NaN length is ignored");
    }

    #[test]
    fn lock_origin_needs_a_follower_with_a_position_and_follows_the_rate() {
        let mut pad = PadData::default();
        pad.control.capture_start = Some(48_000);
        pad.control.capture_rate = 48_000;
        assert_eq!(lock_origin(&pad, 48_000), None, "not following");
        pad.control.follow_sidechain = true;
        assert_eq!(lock_origin(&pad, 48_000), Some(48_000));
        assert_eq!(
            lock_origin(&pad, 96_000),
            Some(96_000),
            "one second at 96 kHz"
        );
        assert_eq!(lock_origin(&pad, 44_100), Some(44_100));
        pad.control.capture_start = None;
        assert_eq!(lock_origin(&pad, 48_000), None, "no position recorded");
    }

    /// A state loaded while the plugin is active (nice-plug does not re-activate it) reaches
    /// the audio thread before the call returns: clip slot and lock origin, with no tick.
    #[test]
    fn a_state_load_publishes_clips_and_lock_origins_at_once() {
        use nice_plug::prelude::Params;

        let source = crate::store::PadStore::default();
        source.with(|b| {
            let c = &mut b.pads[0].control;
            c.follow_sidechain = true;
            c.capture_start = Some(24_000);
            c.capture_rate = 24_000;
        });
        source.set_clip(0, Clip::new(vec![0.25; 480], 24_000, ClipMeta::default()));
        let fields = source.serialize_fields();

        let store = Arc::new(crate::store::PadStore::default());
        let (shared, mut readers) = Shared::new(store.clone());
        publish_after_state_loads(&shared);
        shared.host_rate.store(48_000, Ordering::SeqCst);
        assert!(readers[0].read().is_none());
        store.deserialize_fields(&fields);
        assert_eq!(
            shared.locks.get(0),
            Some(48_000),
            "one second in, at the host rate"
        );
        let played = readers[0].read().expect("the loaded clip is published");
        assert!(
            played.len() > 900,
            "resampled to 48 kHz: {} frames",
            played.len()
        );
    }
}
