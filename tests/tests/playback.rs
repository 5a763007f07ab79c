//! Pads playing known clips (put in through the plugin state) in the real CLAP host:
//! sample-exact onsets on main and stems, velocity, gate/one-shot, choke, pitch, block-size
//! independence. All at 48 kHz with 48 kHz clips (published unchanged), unless noted.

use ezaudio_tests::blob::*;
use ezaudio_tests::{clap_bundle, Note, PluginUnderTest, Render};

const RATE: f64 = 48_000.0;
/// The plugin's anti-click fade: 1.5 ms at 48 kHz.
const FADE: usize = 72;

fn plugin_with(
    pads: &[(usize, serde_json::Value)],
    params: &[(&str, serde_json::Value)],
) -> PluginUnderTest {
    let mut plugin = PluginUnderTest::load(&clap_bundle()).expect("load");
    plugin
        .load_state(&state_blob(pads, params))
        .expect("state loads");
    plugin
}

/// What a voice at unity gain, centre pan and ratio 1 outputs for sample `j` of a clip of
/// `len` samples: the end fade scales the last `FADE` samples by (samples left) / FADE.
fn expected(x: &[f32], j: usize, velocity: f32) -> f32 {
    let left = (x.len() - j) as f64;
    let fade = if left < FADE as f64 {
        (left / FADE as f64) as f32
    } else {
        1.0
    };
    x[j] * (velocity * fade)
}

fn assert_clip_at(out: &Render, port: usize, x: &[f32], k: usize, velocity: f32) {
    for (ch, o) in out[port].iter().enumerate().take(2) {
        assert!(
            o[..k].iter().all(|&s| s == 0.0),
            "port {port} ch {ch}: sound before {k}"
        );
        for j in 0..x.len() {
            assert_eq!(
                o[k + j],
                expected(x, j, velocity),
                "port {port} ch {ch} frame {}",
                k + j
            );
        }
        assert!(
            o[k + x.len()..].iter().all(|&s| s == 0.0),
            "port {port} ch {ch}: sound after the clip"
        );
    }
}

#[test]
fn note_at_offset_k_plays_the_clip_from_k_on_main_and_its_stem() {
    let x = test_clip(4800, 1);
    let mut plugin = plugin_with(&[(2, pad_json(&x, 48_000, "click"))], &[]);
    for k in [0usize, 1, 1000, 1037] {
        let out = plugin
            .render(RATE, 64, 8000, &[Note::on(k as u32, 38, 1.0)])
            .expect("render");
        assert_clip_at(&out, 0, &x, k, 1.0); // main
        assert_clip_at(&out, 3, &x, k, 1.0); // "Stem 3"
        for port in (1..17).filter(|&p| p != 3) {
            assert!(
                out[port].iter().flatten().all(|&s| s == 0.0),
                "stem {port} should be silent"
            );
        }
    }
}

#[test]
fn velocity_scales_and_routing_and_pan_follow_params() {
    let x = test_clip(2000, 2);
    let params = [
        ("pad1_output", i32_param(7)),
        ("pad1_pan", f32_param(0.5)),
        ("pad1_gain", f32_param(0.5)),
    ];
    let mut plugin = plugin_with(&[(0, pad_json(&x, 48_000, "a"))], &params);
    let out = plugin
        .render(RATE, 128, 3000, &[Note::on(100, 36, 0.5)])
        .expect("render");
    // Balance pan at +0.5: left x0.5, right x1; pad gain 0.5; velocity 0.5.
    for j in 0..x.len() - FADE {
        let v = x[j] * 0.5;
        assert_eq!(out[0][0][100 + j], v * 0.25, "main L {j}");
        assert_eq!(out[0][1][100 + j], v * 0.5, "main R {j}");
        assert_eq!(out[7][0][100 + j], v * 0.25, "stem 7 L {j}");
    }
    assert!(
        out[1].iter().flatten().all(|&s| s == 0.0),
        "pad 1 routed away from stem 1"
    );
}

#[test]
fn gate_releases_on_note_off_one_shot_plays_on() {
    let x = vec![0.5f32; 9600];
    let pads = [
        (0, pad_json(&x, 48_000, "gate")),
        (1, pad_json(&x, 48_000, "shot")),
    ];
    let params = [
        ("pad1_mode", enum_param("gate")),
        ("pad1_release", f32_param(10.0)),
    ];
    let mut plugin = plugin_with(&pads, &params);
    let notes = [
        Note::on(0, 36, 1.0),
        Note::on(0, 37, 1.0),
        Note::off(2000, 36),
        Note::off(2000, 37),
    ];
    let out = plugin.render(RATE, 256, 12_000, &notes).expect("render");
    let gate = &out[1][0];
    let shot = &out[2][0];
    assert_eq!(gate[1999], 0.5);
    assert_eq!(gate[2000], 0.5, "release starts at full level");
    assert!(
        (gate[2240] - 0.25).abs() < 1e-3,
        "half way through 10 ms: {}",
        gate[2240]
    );
    assert!(
        gate[2481..].iter().all(|&s| s == 0.0),
        "silent after the 480-sample release"
    );
    assert!(
        shot[2000..9600 - FADE].iter().all(|&s| s == 0.5),
        "one-shot ignores note-off"
    );
}

#[test]
fn choke_group_cuts_the_other_pad() {
    let x = vec![0.5f32; 9600];
    let pads = [
        (0, pad_json(&x, 48_000, "open")),
        (1, pad_json(&x, 48_000, "closed")),
    ];
    let params = [("pad1_choke", i32_param(1)), ("pad2_choke", i32_param(1))];
    let mut plugin = plugin_with(&pads, &params);
    let out = plugin
        .render(
            RATE,
            100,
            6000,
            &[Note::on(100, 36, 1.0), Note::on(2000, 37, 1.0)],
        )
        .expect("render");
    let (open, closed) = (&out[1][0], &out[2][0]);
    assert!(open[100..2000].iter().all(|&s| s == 0.5));
    assert_eq!(open[2000], 0.5, "choke fade starts at full level");
    assert!(open[2001] < 0.5 && open[2000 + FADE / 2] > 0.0);
    assert!(
        open[2000 + FADE + 1..].iter().all(|&s| s == 0.0),
        "choked within 1.5 ms"
    );
    assert!(closed[..2000].iter().all(|&s| s == 0.0));
    assert!(closed[2000..6000].iter().all(|&s| s == 0.5));
}

#[test]
fn pitch_plus_twelve_plays_at_double_speed() {
    let x = test_clip(4800, 3);
    let mut plugin = plugin_with(
        &[(0, pad_json(&x, 48_000, "p"))],
        &[("pad1_pitch", f32_param(12.0))],
    );
    let out = plugin
        .render(RATE, 64, 5000, &[Note::on(10, 36, 1.0)])
        .expect("render");
    let o = &out[1][0];
    for j in 0..2400 - FADE {
        assert_eq!(o[10 + j], x[2 * j], "frame {j}");
    }
    assert!(
        o[10 + 2400..].iter().all(|&s| s == 0.0),
        "ends after half the time"
    );
}

#[test]
fn chromatic_mode_plays_the_selected_pad_across_the_keyboard() {
    let x = test_clip(4800, 4);
    let params = [
        ("chromatic", bool_param(true)),
        ("chromatic_pad", i32_param(2)),
        ("chromatic_root", i32_param(60)),
    ];
    let mut plugin = plugin_with(&[(1, pad_json(&x, 48_000, "c"))], &params);
    let out = plugin
        .render(
            RATE,
            64,
            3000,
            &[Note::on(0, 60, 1.0), Note::on(1000, 72, 1.0)],
        )
        .expect("render");
    let o = &out[2][0];
    assert_eq!(o[500], x[500], "root plays at pitch");
    // From 1000 on: the root voice plus the octave voice (x[2j]).
    assert_eq!(o[1100], x[1100] + x[200]);
}

#[test]
fn a_24k_clip_is_resampled_to_the_host_rate() {
    let mut x = vec![0.0f32; 2400];
    x[1000] = 1.0;
    let mut plugin = plugin_with(&[(0, pad_json(&x, 24_000, "impulse"))], &[]);
    let out = plugin
        .render(RATE, 64, 6000, &[Note::on(50, 36, 1.0)])
        .expect("render");
    let o = &out[1][0];
    let peak = (0..o.len())
        .max_by(|&a, &b| o[a].abs().total_cmp(&o[b].abs()))
        .unwrap();
    assert!(
        (peak as i64 - (50 + 2000)).abs() <= 1,
        "impulse at 1000 of 24 kHz lands at 2000 of 48 kHz, got {}",
        peak - 50
    );
    assert!(
        o[50 + 4800..].iter().all(|&s| s == 0.0),
        "4800 samples at 48 kHz"
    );
}

#[test]
fn output_is_identical_for_any_block_size() {
    let pads = [
        (0, pad_json(&test_clip(3000, 5), 48_000, "a")),
        (1, pad_json(&test_clip(2500, 6), 48_000, "b")),
        (4, pad_json(&test_clip(4000, 7), 24_000, "c")),
    ];
    let params = [
        ("pad2_mode", enum_param("gate")),
        ("pad2_pitch", f32_param(3.5)),
        ("pad5_pitch", f32_param(-7.25)),
        ("pad5_start", f32_param(0.1)),
        ("pad5_end", f32_param(0.8)),
        ("pad5_pan", f32_param(-0.3)),
        ("main_gain", f32_param(0.7)),
    ];
    let notes = [
        Note::on(3, 36, 0.9),
        Note::on(70, 37, 0.6),
        Note::on(511, 40, 1.0),
        Note::off(900, 37),
        Note::on(1500, 36, 0.3),
        Note::on(2100, 40, 0.8),
    ];
    let mut plugin = plugin_with(&pads, &params);
    let reference = plugin.render(RATE, 64, 6000, &notes).expect("render");
    assert!(reference[0][0].iter().any(|&s| s != 0.0));
    for block in [1u32, 512, 997] {
        let out = plugin.render(RATE, block, 6000, &notes).expect("render");
        for (p, (a, b)) in out.iter().zip(&reference).enumerate() {
            assert!(a == b, "port {p} differs with block size {block}");
        }
    }
}
