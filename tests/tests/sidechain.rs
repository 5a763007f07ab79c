//! The sidechain capture in the real CLAP host, under `assert_process_allocs` (the debug bundle
//! aborts on any allocation in process()): arming, filling the buffer, disarming mid-capture and
//! re-arming must never allocate. The host provides the sidechain port as a DAW does.

use ezaudio_tests::blob::*;
use ezaudio_tests::{clap_bundle, PluginUnderTest};
use serde_json::json;

const RATE: f64 = 16_000.0;

fn noise(frames: usize) -> Vec<Vec<Vec<f32>>> {
    let x = test_clip(frames, 77);
    vec![vec![x.clone(), x.iter().map(|s| -s).collect()]]
}

#[test]
fn the_plugin_declares_a_stereo_sidechain_input() {
    let mut plugin = PluginUnderTest::load(&clap_bundle()).expect("load");
    assert_eq!(plugin.input_ports(), vec![2]);
}

#[test]
fn capturing_the_sidechain_does_not_allocate_in_process() {
    let mut plugin = PluginUnderTest::load(&clap_bundle()).expect("load");
    // No pad follows the sidechain: the capture is taken and dropped by the generation thread.
    let x = test_clip(4800, 3);
    let pads = [
        (0, pad_json(&x, 16_000, "a")),
        (
            1,
            json!({"prompt": "", "control": {"follow_sidechain": false}}),
        ),
    ];
    let armed = |on: bool| state_blob(&pads, &[("capture_sidechain", bool_param(on))]);
    plugin.load_state(&armed(true)).expect("state");
    // Longer than the 10 s buffer: the capture stops when full, the rest is ignored.
    let frames = (RATE as u32) * 10 + 8000;
    let out = plugin
        .render_with_inputs(
            RATE,
            512,
            frames,
            &[ezaudio_tests::Note::on(100, 36, 1.0)],
            &noise(frames as usize),
        )
        .expect("render");
    assert!(
        out[0][0].iter().any(|&s| s != 0.0),
        "the pad still plays while capturing"
    );
    // Disarm, re-arm, disarm mid-capture; odd block sizes.
    for (on, block, frames) in [
        (false, 97, 3000u32),
        (true, 333, 20_000),
        (false, 64, 2000),
        (true, 1, 300),
    ] {
        plugin.load_state(&armed(on)).expect("state");
        plugin
            .render_with_inputs(RATE, block, frames, &[], &noise(frames as usize))
            .expect("render");
    }
    // Without sidechain data the port still gets (silent) buffers.
    plugin.render(RATE, 256, 4000, &[]).expect("render");
}
