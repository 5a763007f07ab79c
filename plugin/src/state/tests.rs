//! The saved format's own tests: round trips, old formats, damage.

use super::*;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

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
        level: crate::level::OutputLevel::Lufs { lufs: -14.0 },
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
    assert_eq!(pad.level, record.level);
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
    assert!(serde_json::from_value::<SavedSettings>(serde_json::json!({"steps": "many"})).is_err());
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
    // A state from before the output level plays its clips as they are.
    assert_eq!(pad.level, crate::level::OutputLevel::Off);
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

    // A legacy (version 2) clip: truncated sample block, wrong settings type, NaNs: the
    // prompt and the readable audio survive.
    let bytes: Vec<u8> = [0.5f32, f32::NAN, 0.25]
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    let c =
        serde_json::json!({"sample_rate": 24000, "len": 3, "samples": B64.encode(&bytes[..10])});
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
