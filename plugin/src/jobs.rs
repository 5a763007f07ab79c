//! From a pad to a job: what each action submits to the engine, with the pad's prompt and
//! settings clamped to what the model accepts, and the seeds it uses. Generate, Variations,
//! Edit (regenerate a span), a drawn envelope and a followed sidechain all start here, whether
//! the editor or the generation thread asks; the runner ([`crate::generation`]) only carries
//! the jobs out. Pure functions of the pad's data, unit-tested.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use ezaudio_engine::audio::{Clip, ClipKind};
use ezaudio_engine::engine::{ControlParams, ControlSource, EditParams, Job};
use ezaudio_engine::Recipe;

use crate::layout::{CAPTURE_SECONDS, MIN_CAPTURE_SECONDS};
use crate::store::PadData;

/// A fresh random seed (std's per-process random keys, mixed with the clock).
pub fn random_seed() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() >> 32 // short enough to read, type and note down
}

/// The job for a Generate click, and the seed it uses. A locked seed is reused; otherwise
/// `fresh_seed` is taken (and should be stored back so the user sees and can lock it).
pub fn generate_request(pad: &PadData, fresh_seed: u64) -> Recipe {
    let s = &pad.recipe;
    Recipe {
        prompt: s.prompt.trim().to_string(),
        negative: s.negative.trim().to_string(),
        seconds: s.seconds.clamp(0.5, 30.0),
        steps: s.steps.clamp(1, MAX_STEPS),
        sampler: s.sampler,
        guidance: s.guidance.clamp(0.0, 50.0),
        rescale: s.rescale.clamp(0.0, 1.0),
        eta: s.eta.clamp(0.0, 1.0),
        seed: if pad.seed_locked { s.seed } else { fresh_seed },
    }
}

/// Most steps a pad asks for (the engine refuses more than the model's training timesteps).
pub const MAX_STEPS: u32 = 1000;

/// The job for "Render final": the pad's clip made again from its own recipe — same prompt,
/// seed, sampler and guidance — at the pad's final step count. With a deterministic sampler
/// the draft and the final solve the same ODE, so the final is the draft, cleaner.
pub fn final_request(pad: &PadData) -> Result<Recipe, &'static str> {
    let Some(clip) = &pad.clip else {
        return Err("Generate a draft first");
    };
    if !matches!(clip.meta.kind, ClipKind::Generate) {
        return Err(
            "Render final re-runs a generated clip; this one is an edit or follows a control",
        );
    }
    let steps = pad.final_steps.clamp(1, MAX_STEPS);
    if clip.meta.recipe.steps >= steps {
        return Err("This clip already has at least the final step count");
    }
    Ok(Recipe {
        steps,
        ..clip.meta.recipe.clone()
    })
}

/// Why a final rendered from `recipe` will not sound like its draft, if it will not: the
/// stochastic samplers draw fresh noise at every step, so another step count is another sound.
pub fn final_differs(recipe: &Recipe) -> Option<&'static str> {
    (!recipe.sampler.is_deterministic(recipe.eta)).then_some(
        "This draft's sampler adds fresh noise every step (DDIM with eta > 0, or DPM++ 2M SDE): \
         the final will be a different take. Draft with DPM++ 2M or UniPC to refine the same sound.",
    )
}

/// The seeds of `count` variations: the pad's seed and the following ones when locked (so
/// they are reproducible), fresh random ones otherwise.
pub fn variation_requests(
    pad: &PadData,
    count: usize,
    mut fresh: impl FnMut() -> u64,
) -> Vec<Recipe> {
    (0..count)
        .map(|i| {
            let seed = if pad.seed_locked {
                pad.recipe.seed.wrapping_add(i as u64)
            } else {
                fresh()
            };
            let mut r = generate_request(pad, seed);
            r.seed = seed;
            r
        })
        .collect()
}

/// Shortest span the editor sends for editing (seconds).
pub const MIN_EDIT_S: f32 = 0.05;
/// Context kept on each side of an edited span (the official UI's default).
pub const EDIT_BOUNDARY_S: f32 = 2.0;

/// The job for "Regenerate selection": the span of `clip` from `prompt` (the pad's prompt
/// when empty), with the pad's settings; `seed` is used unless the pad's seed is locked.
pub fn edit_request(
    pad: &PadData,
    clip: Arc<Clip>,
    span: (f32, f32),
    prompt: &str,
    seed: u64,
) -> Result<EditParams, &'static str> {
    let (start, end) = span;
    let long_enough = end - start >= MIN_EDIT_S; // false for NaN too
    if !long_enough || start < 0.0 {
        return Err("Select a span on the waveform first (drag across it)");
    }
    let mut gen = generate_request(pad, seed);
    let prompt = prompt.trim();
    if !prompt.is_empty() {
        gen.prompt = prompt.to_string();
    }
    if gen.prompt.is_empty() {
        return Err("Type a prompt for the edit");
    }
    gen.seconds = clip.duration_s();
    Ok(EditParams {
        source: clip,
        start_s: start,
        length_s: end - start,
        boundary_s: EDIT_BOUNDARY_S,
        recipe: gen,
    })
}

/// The controlled job for `pad` following `control`, with the pad's prompt and settings.
pub fn controlled_job(pad: &PadData, control: ControlSource, seconds: f32, seed: u64) -> Job {
    let mut gen = generate_request(pad, seed);
    gen.seconds = seconds.clamp(MIN_CAPTURE_SECONDS, CAPTURE_SECONDS);
    Job::GenerateControlled(ControlParams {
        recipe: gen,
        control,
        conditioning_scale: pad.control.scale,
        surpass_noise: pad.control.gate,
        controlnet: None,
    })
}

/// The job for a pad's drawn envelope (`None` without points), as long as the pad's length.
pub fn envelope_job(pad: &PadData, seed: u64) -> Option<Job> {
    if pad.control.envelope.is_empty() {
        return None;
    }
    let seconds = pad
        .recipe
        .seconds
        .clamp(MIN_CAPTURE_SECONDS, CAPTURE_SECONDS);
    Some(controlled_job(
        pad,
        ControlSource::Envelope(pad.control.envelope.clone()),
        seconds,
        seed,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ezaudio_engine::audio::ClipMeta;
    use ezaudio_engine::Sampler;

    use crate::state;

    #[test]
    fn seed_lock_and_request() {
        let mut pad = PadData::default();
        pad.recipe.prompt = "  rain on a tin roof ".into();
        pad.recipe.seed = 5;
        assert_eq!(generate_request(&pad, 99).seed, 99);
        pad.seed_locked = true;
        let r = generate_request(&pad, 99);
        assert_eq!(
            (r.seed, r.prompt.as_str(), r.steps),
            (5, "rain on a tin roof", state::default_recipe().steps)
        );
        assert_eq!(r.sampler, pad.recipe.sampler);
        assert_ne!(random_seed(), random_seed());
    }

    #[test]
    fn variations_and_edit_requests() {
        let mut pad = PadData::default();
        pad.recipe.prompt = "glass".into();
        let mut n = 100;
        let seeds: Vec<u64> = variation_requests(&pad, 4, || {
            n += 1;
            n
        })
        .iter()
        .map(|r| r.seed)
        .collect();
        assert_eq!(seeds, vec![101, 102, 103, 104]);
        pad.recipe.seed = 7;
        pad.seed_locked = true;
        let seeds: Vec<u64> = variation_requests(&pad, 3, || 0)
            .iter()
            .map(|r| r.seed)
            .collect();
        assert_eq!(seeds, vec![7, 8, 9]);

        let clip = Arc::new(Clip::new(vec![0.0; 48_000], 24_000, ClipMeta::default()));
        let e = edit_request(&pad, clip.clone(), (0.5, 1.25), " a cat ", 3).unwrap();
        assert_eq!(
            (
                e.start_s,
                e.length_s,
                e.recipe.prompt.as_str(),
                e.recipe.seed,
                e.recipe.seconds
            ),
            (0.5, 0.75, "a cat", 7, 2.0)
        );
        assert_eq!(
            edit_request(&pad, clip.clone(), (0.5, 1.0), "", 3)
                .unwrap()
                .recipe
                .prompt,
            "glass"
        );
        assert!(edit_request(&pad, clip, (0.5, 0.5), "", 3).is_err());
    }

    #[test]
    fn render_final_reruns_the_clips_recipe_at_the_final_steps() {
        let mut pad = PadData::default();
        assert!(final_request(&pad).is_err(), "no clip, no final");
        let draft = Recipe {
            steps: 10,
            sampler: Sampler::UniPc,
            seed: 42,
            ..Recipe::new("thunder")
        };
        let meta = ClipMeta {
            recipe: draft.clone(),
            ..ClipMeta::default()
        };
        pad.clip = Some(Arc::new(Clip::new(vec![0.0; 2400], 24_000, meta)));
        // The pad's own settings have moved on since; the final follows the clip.
        pad.recipe.prompt = "something else".into();
        pad.recipe.seed = 1;
        pad.final_steps = 60;
        let r = final_request(&pad).unwrap();
        assert_eq!(
            r,
            Recipe {
                steps: 60,
                ..draft.clone()
            }
        );
        assert_eq!(final_differs(&r), None);
        // Stochastic drafts are allowed but flagged.
        let sde = Recipe {
            sampler: Sampler::DpmPp2mSde,
            ..draft.clone()
        };
        assert!(final_differs(&sde).is_some());
        let ddim = Recipe {
            sampler: Sampler::Ddim,
            eta: 1.0,
            ..draft.clone()
        };
        assert!(final_differs(&ddim).is_some());
        assert_eq!(final_differs(&Recipe { eta: 0.0, ..ddim }), None);
        // Nothing to refine: already at (or past) the final count; or not a generated clip.
        pad.final_steps = 10;
        assert!(final_request(&pad).is_err());
        pad.final_steps = 60;
        let edited = ClipMeta {
            recipe: draft,
            kind: ClipKind::Edit {
                start_s: 0.0,
                length_s: 0.05,
                source: None,
            },
            ..ClipMeta::default()
        };
        pad.clip = Some(Arc::new(Clip::new(vec![0.0; 2400], 24_000, edited)));
        assert!(final_request(&pad).is_err());
    }
}
