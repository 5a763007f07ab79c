//! "Foley that follows the track", end to end in the real CLAP host with the fixtures' tiny
//! model and tiny energy ControlNet: a pad follows the sidechain, the capture is armed, a
//! sidechain with bursts at known times is played; the plugin's generation thread submits a
//! controlled job, and the condition that reached the model (recorded in the clip's metadata,
//! saved with the state) must have its peaks where the bursts were.

use std::time::{Duration, Instant};

use ezaudio_tests::blob::*;
use ezaudio_tests::{clap_bundle, fixtures_with_controlnet, PluginUnderTest};
use serde_json::{json, Value};

const RATE: f64 = 48_000.0;

fn pad_state(blob: &[u8], index: usize) -> Value {
    let state = parse_state(blob);
    state["fields"][format!("pad{}", index + 1)]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null)
}

fn in_any(t: f64, bursts: &[(f64, f64)], slack: f64) -> bool {
    bursts
        .iter()
        .any(|&(a, b)| t >= a - slack && t <= b + slack)
}

#[test]
fn captured_bursts_steer_the_control_that_reaches_the_model() {
    let fx = fixtures_with_controlnet();
    let gen: Value = serde_json::from_str(
        &std::fs::read_to_string(fx.join("controlnet/generate.json")).unwrap(),
    )
    .unwrap();
    let seconds = gen["seconds"].as_f64().expect("seconds");
    // The plugin's engine thread reads these when it starts (with the plugin's generation thread).
    std::env::set_var("EZAUDIO_MODEL", fx.join("model-tiny"));
    std::env::set_var("EZAUDIO_CONTROLNET", fx.join("controlnet"));
    std::env::set_var("EZAUDIO_DEVICE", "cpu");
    std::env::set_var("EZAUDIO_DTYPE", "f32");

    let bursts = [
        (0.2 * seconds, 0.3 * seconds),
        (0.65 * seconds, 0.75 * seconds),
    ];
    let frames = ((seconds + 0.2) * RATE) as usize;
    let x = test_clip(frames, 5);
    let side: Vec<f32> = (0..frames)
        .map(|i| {
            let t = i as f64 / RATE;
            x[i] * if in_any(t, &bursts, 0.0) { 1.6 } else { 0.004 }
        })
        .collect();

    let pad = json!({
        "prompt": gen["prompt"], "negative": "",
        "settings": {"seconds": seconds, "steps": 2, "guidance": 3.5, "rescale": 0.0, "eta": 0.0, "seed": 1, "seed_locked": true},
        "control": {"follow_sidechain": true, "scale": 1.0}
    });
    let mut plugin = PluginUnderTest::load(&clap_bundle()).expect("load");
    plugin
        .load_state(&state_blob(
            &[(0, pad)],
            &[("capture_sidechain", bool_param(true))],
        ))
        .expect("state");
    plugin
        .render_with_inputs(RATE, 480, frames as u32, &[], &[vec![side.clone(), side]])
        .expect("render");

    let t0 = Instant::now();
    let pad = loop {
        let pad = pad_state(&plugin.save_state().expect("save"), 0);
        if pad["clip"]["meta"]["kind"]["type"] == "controlled" {
            break pad;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "no controlled clip after 300 s; pad: {}",
            pad
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let kind = &pad["clip"]["meta"]["kind"];
    assert_eq!(kind["control"], "reference");
    let fps = kind["frame_rate"].as_f64().expect("frame_rate");
    let cond: Vec<f64> = kind["condition"]
        .as_array()
        .expect("condition")
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(!cond.is_empty());
    let shown: Vec<String> = cond.iter().map(|v| format!("{v:.2}")).collect();
    eprintln!("condition at {fps} frames/s: {}", shown.join(" "));
    // Loud inside the bursts, quiet away from them (a frame's window is +-40 ms wide).
    let slack = 0.05;
    for (i, v) in cond.iter().enumerate() {
        let t = (i as f64 + 0.5) / fps;
        if t > seconds - 0.05 {
            break; // the padded end of the reference
        }
        if in_any(t, &bursts, -0.03) {
            assert!(*v > 0.8, "frame {i} ({t:.3} s) inside a burst is {v}");
        } else if !in_any(t, &bursts, slack) {
            assert!(*v < 0.5, "frame {i} ({t:.3} s) away from the bursts is {v}");
        }
    }
    // The clip is the capture's length, and the capture's own loudness view was kept.
    let len = pad["clip"]["len"].as_u64().unwrap() as f64
        / pad["clip"]["sample_rate"].as_u64().unwrap() as f64;
    assert!((len - seconds).abs() < 1e-3, "clip is {len} s");
    let view = pad["control"]["capture_view"]
        .as_array()
        .expect("capture view");
    assert_eq!(view.len(), (seconds * 100.0).round() as usize);
    assert_eq!(
        pad["control"]["capture_start"],
        Value::Null,
        "no transport: no position"
    );
}
