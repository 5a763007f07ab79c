//! The editor's logic, apart from drawing: what a Generate click submits, how progress and
//! clips are described, the waveform envelope. Pure functions, unit-tested.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use ezaudio_engine::clip::Clip;

use crate::generation::{worker::GenerateParams, Progress};
use crate::store::PadData;

/// A fresh random seed (std's per-process random keys, mixed with the clock).
pub fn random_seed() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.finish() >> 1 // keep it readable as a positive i64 too
}

/// The job for a Generate click, and the seed it uses. A locked seed is reused; otherwise
/// `fresh_seed` is taken (and should be stored back so the user sees and can lock it).
pub fn generate_request(pad: &PadData, fresh_seed: u64) -> GenerateParams {
    let s = &pad.settings;
    GenerateParams {
        prompt: pad.prompt.trim().to_string(),
        negative: pad.negative.trim().to_string(),
        seconds: s.seconds.clamp(0.5, 30.0),
        steps: s.steps.clamp(1, 1000),
        guidance: s.guidance.clamp(0.0, 50.0),
        rescale: s.rescale.clamp(0.0, 1.0),
        eta: s.eta.clamp(0.0, 1.0),
        seed: if s.seed_locked { s.seed } else { fresh_seed },
    }
}

/// Why Generate is not possible right now, if it isn't.
pub fn generate_blocker(pad: &PadData, progress: &Progress) -> Option<&'static str> {
    if pad.prompt.trim().is_empty() {
        Some("Type a prompt first")
    } else if progress.is_running() {
        Some("Generating...")
    } else {
        None
    }
}

/// What the progress bar shows: a fraction (None: nothing to show) and a caption.
pub fn progress_view(p: &Progress) -> (Option<f32>, String) {
    match p {
        Progress::Idle => (None, String::new()),
        Progress::Queued => (Some(0.0), "Queued".into()),
        Progress::LoadingModel => (Some(0.0), "Loading model...".into()),
        Progress::EncodingText => (Some(0.02), "Encoding prompt...".into()),
        Progress::Step { k, n } => {
            let f = if *n == 0 { 0.0 } else { (*k as f32 / *n as f32).clamp(0.0, 1.0) };
            (Some(0.05 + 0.9 * f), format!("Step {k}/{n}"))
        }
        Progress::Decoding => (Some(0.97), "Decoding audio...".into()),
        Progress::Done => (Some(1.0), "Done".into()),
        Progress::Failed(e) => (None, format!("Failed: {e}")),
        Progress::Cancelled => (None, "Cancelled".into()),
    }
}

/// One line about a clip: length, seed, steps.
pub fn clip_summary(clip: &Clip) -> String {
    format!("{:.2} s, seed {}, {} steps, guidance {}", clip.duration_s(), clip.meta.seed, clip.meta.steps, clip.meta.guidance)
}

/// The caption of a pad button: number, then the start of its prompt.
pub fn pad_caption(index: usize, pad: &PadData) -> String {
    let prompt = pad.clip.as_ref().map(|c| c.meta.prompt.as_str()).unwrap_or(pad.prompt.as_str());
    let short: String = prompt.chars().take(18).collect();
    let ellipsis = if prompt.chars().count() > 18 { "..." } else { "" };
    format!("{}\n{short}{ellipsis}", index + 1)
}

/// Min/max per column over `columns` equal slices of `samples`.
pub fn waveform_envelope(samples: &[f32], columns: usize) -> Vec<(f32, f32)> {
    if samples.is_empty() || columns == 0 {
        return Vec::new();
    }
    (0..columns)
        .map(|c| {
            let a = c * samples.len() / columns;
            let b = ((c + 1) * samples.len() / columns).max(a + 1).min(samples.len());
            samples[a.min(samples.len() - 1)..b]
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &s| (lo.min(s), hi.max(s)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ezaudio_engine::clip::ClipMeta;

    #[test]
    fn seed_lock_and_request() {
        let mut pad = PadData { prompt: "  rain on a tin roof ".into(), ..Default::default() };
        pad.settings.seed = 5;
        assert_eq!(generate_request(&pad, 99).seed, 99);
        pad.settings.seed_locked = true;
        let r = generate_request(&pad, 99);
        assert_eq!((r.seed, r.prompt.as_str(), r.steps), (5, "rain on a tin roof", 50));
        assert_ne!(random_seed(), random_seed());
    }

    #[test]
    fn blockers_and_progress() {
        let pad = PadData::default();
        assert_eq!(generate_blocker(&pad, &Progress::Idle), Some("Type a prompt first"));
        let pad = PadData { prompt: "x".into(), ..Default::default() };
        assert_eq!(generate_blocker(&pad, &Progress::Step { k: 1, n: 2 }), Some("Generating..."));
        assert_eq!(generate_blocker(&pad, &Progress::Failed("x".into())), None);
        let (f, t) = progress_view(&Progress::Step { k: 25, n: 50 });
        assert_eq!((f, t.as_str()), (Some(0.5), "Step 25/50"));
        assert_eq!(progress_view(&Progress::Failed("engine not available".into())).1, "Failed: engine not available");
    }

    #[test]
    fn envelope_and_captions() {
        let env = waveform_envelope(&[0.0, 1.0, -1.0, 0.5, 0.25, -0.25], 3);
        assert_eq!(env, vec![(0.0, 1.0), (-1.0, 0.5), (-0.25, 0.25)]);
        assert_eq!(waveform_envelope(&[0.5], 4), vec![(0.5, 0.5); 4]);
        let pad = PadData { prompt: "a very long prompt about thunder".into(), ..Default::default() };
        assert_eq!(pad_caption(0, &pad), "1\na very long prompt...");
        let clip = Clip::new(vec![0.0; 24_000], 24_000, ClipMeta { seed: 3, steps: 50, guidance: 5.0, ..Default::default() });
        assert_eq!(clip_summary(&clip), "1.00 s, seed 3, 50 steps, guidance 5");
    }
}
