//! Plugin state in the real CLAP host: clips survive save/load bit for bit, and damaged or
//! random states never crash the plugin.

use ezaudio_tests::blob::*;
use ezaudio_tests::{clap_bundle, Note, PluginUnderTest};

const RATE: f64 = 48_000.0;

fn notes() -> Vec<Note> {
    vec![
        Note::on(0, 36, 1.0),
        Note::on(300, 40, 0.7),
        Note::on(900, 41, 0.5),
    ]
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|s| s.to_bits()).collect()
}

#[test]
fn saved_state_reproduces_every_clip_bit_for_bit_in_a_fresh_instance() {
    let a = test_clip(24_000, 11); // one second at the model's rate
    let b: Vec<f32> = test_clip(4800, 12).iter().map(|s| s * 1.0e-3).collect();
    let mut with_history = pad_json(&b, 48_000, "quiet");
    with_history["history"] = serde_json::json!([{"meta": meta("older", 3), "clip": clip_json(&a[..100], 24_000, "older")}]);
    let blob = state_blob(
        &[(0, pad_json(&a, 24_000, "loud")), (5, with_history)],
        &[("pad6_note", i32_param(40))],
    );

    let mut first = PluginUnderTest::load(&clap_bundle()).expect("load");
    first.load_state(&blob).expect("load state");
    let saved = first.save_state().expect("save");
    assert_eq!(
        bits(&saved_clip(&saved, 0).expect("pad 1 clip saved")),
        bits(&a)
    );
    assert_eq!(
        bits(&saved_clip(&saved, 5).expect("pad 6 clip saved")),
        bits(&b)
    );
    assert!(saved_clip(&saved, 1).is_none());
    let json = parse_state(&saved);
    assert_eq!(json["fields"]["ezaudio_version"], "3");
    let pad6: serde_json::Value =
        serde_json::from_str(json["fields"]["pad6"].as_str().unwrap()).unwrap();
    assert_eq!(pad6["history"][0]["meta"]["prompt"], "older");
    assert_eq!(pad6["history"][0]["clip"]["len"], 100);

    let mut second = PluginUnderTest::load(&clap_bundle()).expect("load");
    second.load_state(&saved).expect("load saved state");
    assert_eq!(
        second.save_state().expect("save again"),
        saved,
        "save -> load -> save is stable"
    );

    let one = first.render(RATE, 128, 30_000, &notes()).expect("render");
    let two = second.render(RATE, 128, 30_000, &notes()).expect("render");
    assert!(one[0][0].iter().any(|&s| s != 0.0));
    assert!(one == two, "the reloaded instance sounds the same");
    assert!(
        one[6][0][300..1000].iter().any(|&s| s != 0.0),
        "pad 6 moved to note 40 plays on stem 6"
    );
}

#[test]
fn states_saved_before_pads_existed_still_load() {
    // The skeleton's state: parameters only, no ezaudio fields.
    let old = with_length(br#"{"version":"0.1.0","params":{"main_gain":{"f32":0.5}},"fields":{}}"#);
    let mut plugin = PluginUnderTest::load(&clap_bundle()).expect("load");
    plugin.load_state(&old).expect("old state loads");
    let saved = parse_state(&plugin.save_state().expect("save"));
    assert_eq!(saved["params"]["main_gain"]["f32"], 0.5);
    assert_eq!(saved["fields"]["ezaudio_version"], "3");
}

fn plays_pad_one(plugin: &mut PluginUnderTest, x: &[f32]) {
    let out = plugin
        .render(RATE, 64, 2000, &[Note::on(10, 36, 1.0)])
        .expect("render after a bad state");
    assert!(out.iter().flatten().flatten().all(|s| s.is_finite()));
    assert_eq!(out[1][0][10..1000], x[..990], "pad 1 still plays its clip");
}

#[test]
fn corrupt_truncated_and_random_states_never_crash() {
    let x = test_clip(4800, 21);
    let good = state_blob(&[(0, pad_json(&x, 48_000, "keep"))], &[]);
    let mut plugin = PluginUnderTest::load(&clap_bundle()).expect("load");
    plugin.load_state(&good).expect("good state");

    // Rejected outright: the previous state stays.
    let mut random = Vec::new();
    let mut r = 0x1234_5678u32;
    for _ in 0..5000 {
        r ^= r << 13;
        r ^= r >> 17;
        r ^= r << 5;
        random.push(r as u8);
    }
    let bad_blobs: Vec<Vec<u8>> = vec![
        Vec::new(),
        good[..4].to_vec(),
        good[..good.len() / 2].to_vec(),
        random.clone(),
        with_length(&random),
        with_length(b"{\"version\": 1, \"params\": [], \"fields\": 7}"),
        [u64::MAX.to_le_bytes().to_vec(), b"{}".to_vec()].concat(),
    ];
    for (i, blob) in bad_blobs.iter().enumerate() {
        let _ = plugin.load_state(blob); // may be refused; must not crash
        plays_pad_one(&mut plugin, &x);
        let _ = i;
    }

    // Accepted with damage: undamaged pads load, damaged ones load what they can.
    let mut damaged_clip = pad_json(&test_clip(1000, 22), 48_000, "cut");
    let samples = damaged_clip["clip"]["samples"]
        .as_str()
        .unwrap()
        .to_string();
    damaged_clip["clip"]["samples"] =
        serde_json::Value::String(samples[..samples.len() / 2].to_string());
    let mut json = parse_state(&state_blob(
        &[(0, pad_json(&x, 48_000, "keep")), (2, damaged_clip)],
        &[
            ("pad1_pitch", f32_param(1.0e30)),
            ("pad1_choke", i32_param(-5)),
            ("pad1_mode", enum_param("nonsense")),
        ],
    ));
    json["fields"]["pad2"] =
        serde_json::Value::String("{\"prompt\": 3, \"clip\": {\"samples\": \"!!!\"}".into());
    json["fields"]["pad4"] = serde_json::Value::String("[1, 2, 3]".into());
    json["fields"]["ezaudio_version"] = serde_json::Value::String("\"x\"".into());
    plugin
        .load_state(&with_length(json.to_string().as_bytes()))
        .expect("partly damaged state loads");
    let out = plugin
        .render(
            RATE,
            64,
            2000,
            &[Note::on(10, 36, 1.0), Note::on(10, 38, 1.0)],
        )
        .expect("render");
    assert!(out.iter().flatten().flatten().all(|s| s.is_finite()));
    assert!(
        out[1][0].iter().any(|&s| s != 0.0),
        "pad 1 plays (pitch clamped to range)"
    );
    assert!(
        out[3][0].iter().any(|&s| s != 0.0),
        "pad 3 plays the readable half of its clip"
    );
    let saved = plugin.save_state().expect("save after damage");
    assert_eq!(
        saved_clip(&saved, 2).map(|c| c.len()),
        Some(500),
        "half of the base64 -> 500 samples"
    );
}

/// Bytes per stored sample of a whole saved state, a clip of `len` samples of `audio` on
/// each of 16 pads plus one history clip each.
fn bytes_per_sample(audio: impl Fn(usize, u32) -> Vec<f32>, len: usize) -> f64 {
    let pads: Vec<_> = (0..16)
        .map(|i| {
            let mut pad = pad_json(&audio(len, i), 24_000, "p");
            pad["history"] = serde_json::json!([{"meta": meta("older", 3), "clip": clip_json(&audio(len / 4, 100 + i), 24_000, "older")}]);
            (i as usize, pad)
        })
        .collect();
    let mut plugin = PluginUnderTest::load(&clap_bundle()).expect("load");
    plugin.load_state(&state_blob(&pads, &[])).expect("state");
    let saved = plugin.save_state().expect("save");
    assert_eq!(
        saved_clip(&saved, 3).map(|c| bits(&c)),
        Some(bits(&audio(len, 3)))
    );
    saved.len() as f64 / (16 * (len + len / 4)) as f64
}

#[test]
fn the_saved_state_costs_at_most_4_bytes_per_sample() {
    // Uniform noise (every mantissa bit random: the hardest case) and a decaying tone.
    let noise = bytes_per_sample(test_clip, 48_000);
    let tone = bytes_per_sample(
        |len, seed| {
            (0..len)
                .map(|i| {
                    let t = i as f32 / 24_000.0;
                    (-3.0 * t).exp()
                        * (2.0 * std::f32::consts::PI * (110.0 + seed as f32) * t).sin()
                })
                .collect()
        },
        48_000,
    );
    eprintln!("saved state: {noise:.2} bytes per sample of noise, {tone:.2} of a decaying tone (raw f32: 4, base64: 5.33)");
    assert!(noise <= 4.0, "{noise:.2} bytes per sample");
    assert!(tone <= 4.0, "{tone:.2} bytes per sample");
}
