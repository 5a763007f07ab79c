//! The two audio layouts and misbehaving block sizes, in the real CLAP host with the debug
//! bundle's allocation aborts on: the full layout (main + 16 stems + sidechain) comes first,
//! the plain stereo one second (for hosts that pass only a main bus); a host may pass blocks
//! longer than the `max_frames_count` it announced, and the output must not change.

use ezaudio_tests::blob::*;
use ezaudio_tests::{clap_bundle, Note, PluginUnderTest, RenderSpec};

const RATE: f64 = 48_000.0;
/// The plain layout's audio-ports-config id (its index in the plugin's layout list).
const PLAIN: u32 = 1;

fn loaded(x: &[f32]) -> PluginUnderTest {
    let mut plugin = PluginUnderTest::load(&clap_bundle()).expect("load");
    plugin
        .load_state(&state_blob(&[(2, pad_json(x, 48_000, "click"))], &[]))
        .expect("state loads");
    plugin
}

#[test]
fn the_full_layout_comes_first_and_the_plain_one_can_be_selected() {
    let mut plugin = PluginUnderTest::load(&clap_bundle()).expect("load");
    assert_eq!(
        plugin.layouts(),
        [
            "Stereo mix + 16 stereo stems, stereo sidechain in",
            "Stereo mix only"
        ]
    );
    assert_eq!(plugin.output_ports(), [2; 17], "full layout by default");
    assert_eq!(plugin.input_ports(), [2]);
    plugin
        .select_layout(PLAIN)
        .expect("plain layout selectable");
    assert_eq!(plugin.output_ports(), [2]);
    assert_eq!(plugin.input_ports(), Vec::<u32>::new());
    plugin.select_layout(0).expect("and back");
    assert_eq!(plugin.output_ports(), [2; 17]);
}

#[test]
fn the_plain_layout_plays_every_pad_on_the_main_mix() {
    let x = test_clip(4800, 21);
    let notes = [Note::on(1037, 38, 1.0)];
    let full = loaded(&x).render(RATE, 256, 8000, &notes).expect("full");
    let mut plugin = loaded(&x);
    plugin.select_layout(PLAIN).expect("plain");
    let plain = plugin.render(RATE, 256, 8000, &notes).expect("plain");
    assert_eq!(plain.len(), 1, "one output port");
    assert_eq!(
        plain[0], full[0],
        "the main mix is the same in both layouts"
    );
    assert!(plain[0][0][..1037].iter().all(|&s| s == 0.0));
    assert_eq!(plain[0][0][1037], x[0]);
}

/// A host announcing 512 frames and passing 8192 (what pedalboard did): the same audio as
/// blocks within the announced size, in the layout such hosts get.
#[test]
fn blocks_longer_than_announced_render_the_same_audio() {
    let x = test_clip(4800, 22);
    let notes = [Note::on(100, 38, 1.0), Note::on(9000, 38, 0.5)];
    let mut reference = loaded(&x);
    reference.select_layout(PLAIN).expect("plain");
    let expected = reference
        .render(RATE, 512, 20_000, &notes)
        .expect("in-spec");
    let mut plugin = loaded(&x);
    plugin.select_layout(PLAIN).expect("plain");
    let over_long = plugin
        .render_spec(&RenderSpec {
            announced: 512,
            ..RenderSpec::new(RATE, 8192, 20_000, &notes)
        })
        .expect("over-long blocks");
    assert_eq!(over_long[0], expected[0]);
    assert_eq!(
        over_long[0][0][9000],
        x[0] * 0.5,
        "the second note at its sample"
    );
}

/// The full layout (with the sidechain input), blocks longer than announced: the plugin's own
/// code is block-length independent, and the patched nice-plug keeps room for 32768 frames in
/// its copy of the sidechain (vendor/nice-plug/PATCHED.md), so nothing allocates. It runs in a
/// child process because the debug bundle aborts on an allocation in process(): the parent
/// then reports the child's stderr instead of dying with it.
#[test]
fn full_layout_over_long_blocks_render_without_allocating() {
    const CHILD: &str = "EZAUDIO_LAYOUT_CHILD";
    let x = test_clip(4800, 23);
    let notes = [Note::on(100, 38, 1.0)];
    if std::env::var_os(CHILD).is_some() {
        let mut plugin = loaded(&x);
        let expected = plugin
            .render_spec(&RenderSpec::new(RATE, 512, 20_000, &notes))
            .expect("announced blocks");
        let mut plugin = loaded(&x);
        let out = plugin
            .render_spec(&RenderSpec {
                announced: 512,
                ..RenderSpec::new(RATE, 8192, 20_000, &notes)
            })
            .expect("over-long blocks");
        assert_eq!(out[3][0][100], x[0], "stem 3 plays");
        assert_eq!(out, expected, "over-long blocks change the audio");
        return;
    }
    let child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "full_layout_over_long_blocks_render_without_allocating",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .expect("child runs");
    assert!(
        child.status.success(),
        "the full layout failed on 8192-frame blocks announced as 512; status {:?}, stderr: {}",
        child.status,
        String::from_utf8_lossy(&child.stderr)
    );
}
