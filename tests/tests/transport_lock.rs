//! Transport-locked follow pads in the real CLAP host: a pad that follows the sidechain and
//! whose capture started at transport position `ORIGIN` plays its clip when the host's
//! transport passes `ORIGIN`, sample-accurately and without a note; it chases jumps, restarts
//! on every loop pass and stops with the transport. The bundle runs with allocation aborts on.

use ezaudio_tests::blob::*;
use ezaudio_tests::{clap_bundle, PluginUnderTest, Render, RenderSpec};
use serde_json::{json, Value};

const RATE: f64 = 48_000.0;
/// The anti-click fade: 1.5 ms at 48 kHz.
const FADE: usize = 72;
/// Where the pad's capture started (host samples at 48 kHz).
const ORIGIN: i64 = 10_000;
const LEN: usize = 4800;
/// Not a divisor of the offsets below, so starts fall inside blocks.
const BLOCK: u32 = 64;

/// A pad that followed the sidechain from `ORIGIN` and holds the generated clip `x`.
fn follow_pad(x: &[f32], follow: bool) -> Value {
    let mut pad = pad_json(x, 48_000, "footsteps");
    pad["control"] = json!({
        "follow_sidechain": follow, "scale": 1.0,
        "capture_start": ORIGIN, "capture_rate": 48_000
    });
    pad
}

fn plugin(pad: Value, params: &[(&str, Value)]) -> PluginUnderTest {
    let mut plugin = PluginUnderTest::load(&clap_bundle()).expect("load");
    plugin
        .load_state(&state_blob(&[(0, pad)], params))
        .expect("state loads");
    plugin
}

fn render(
    plugin: &mut PluginUnderTest,
    frames: u32,
    at: &dyn Fn(u32) -> Option<(bool, i64)>,
) -> Render {
    plugin
        .render_spec(&RenderSpec {
            transport: Some(at),
            ..RenderSpec::new(RATE, BLOCK, frames, &[])
        })
        .expect("render")
}

/// Clip sample `j` as a voice plays it at unity: the last `FADE` samples fade out.
fn played(x: &[f32], j: usize) -> f32 {
    let left = x.len() - j;
    if left < FADE {
        x[j] * (left as f64 / FADE as f64) as f32
    } else {
        x[j]
    }
}

fn silent(o: &[f32], what: &str) {
    if let Some(i) = o.iter().position(|&s| s != 0.0) {
        panic!("{what}: sound at frame {i} of the range ({})", o[i]);
    }
}

#[test]
fn the_clip_starts_where_the_transport_passes_the_capture_start() {
    let x = test_clip(LEN, 11);
    let mut p = plugin(follow_pad(&x, true), &[]);
    // Play from 9000: the clip's first sample is due at render frame 1000, 40 frames into a
    // block of 64.
    let out = render(&mut p, 7000, &|f| Some((true, 9000 + f as i64)));
    for port in [0, 1] {
        // Main, and "Stem 1" (pad 1's default output).
        for (ch, o) in out[port].iter().enumerate().take(2) {
            silent(&o[..1000], "before the capture start");
            for j in 0..LEN {
                assert_eq!(
                    o[1000 + j],
                    played(&x, j),
                    "port {port} ch {ch} clip sample {j}"
                );
            }
            silent(&o[1000 + LEN..], "after the clip");
        }
    }
    assert!(
        out[2..].iter().flatten().flatten().all(|&s| s == 0.0),
        "other stems silent"
    );
}

#[test]
fn every_loop_pass_replays_the_clip_from_the_capture_start() {
    let x = test_clip(LEN, 12);
    let mut p = plugin(follow_pad(&x, true), &[]);
    // Loop [9600, 12800): each pass reaches the clip 400 frames in and plays 2800 samples of
    // it before the transport jumps back.
    let (loop_start, loop_len) = (9_600i64, 3_200u32);
    let out = render(&mut p, 3 * loop_len, &|f| {
        Some((true, loop_start + (f % loop_len) as i64))
    });
    let o = &out[0][0];
    for pass in 0..3usize {
        let base = pass * loop_len as usize;
        if pass == 0 {
            silent(&o[..400], "before the first start");
        } else {
            // The previous pass's voice fades out over FADE frames after the jump, no longer,
            // never louder than the clip.
            for j in 0..FADE {
                assert!(o[base + j].abs() <= x[2800 + j].abs() + 1e-6, "tail {j}");
            }
            assert!(
                o[base + FADE / 2] != 0.0,
                "the old voice fades rather than cuts"
            );
            silent(
                &o[base + FADE..base + 400],
                "between the loop start and the clip",
            );
        }
        for j in 0..2800 {
            assert_eq!(o[base + 400 + j], x[j], "pass {pass} clip sample {j}");
        }
    }
}

#[test]
fn a_jump_into_the_clip_chases_and_stopping_the_transport_stops_it() {
    let x = test_clip(LEN, 13);
    let mut p = plugin(follow_pad(&x, true), &[]);
    // 0..1280: rolling from 0 (before the clip). 1280: jump to 12000 (clip sample 2000).
    // 2304: transport stops. 4096: plays again from 9000 (clip due 1000 frames later).
    let at = |f: u32| -> Option<(bool, i64)> {
        let f = f as i64;
        Some(match f {
            0..1280 => (true, f),
            1280..2304 => (true, 12_000 + f - 1280),
            2304..4096 => (false, 13_024),
            _ => (true, 9_000 + f - 4096),
        })
    };
    let out = render(&mut p, 11_000, &at);
    let o = &out[0][1];
    silent(&o[..1280], "before the jump");
    for j in 0..1024 {
        // Chasing starts mid-clip, so it fades in like a trimmed start.
        let gain = if j < FADE {
            j as f32 / FADE as f32
        } else {
            1.0
        };
        assert_eq!(o[1280 + j], x[2000 + j] * gain, "chased sample {j}");
    }
    for j in 0..FADE {
        let gain = 1.0 - j as f32 / FADE as f32;
        assert!(
            (o[2304 + j] - x[3024 + j] * gain).abs() < 1e-6,
            "stop fade {j}: {}",
            o[2304 + j]
        );
    }
    silent(&o[2304 + FADE..5096], "while stopped and before the clip");
    for j in 0..LEN {
        assert_eq!(o[5096 + j], played(&x, j), "replayed sample {j}");
    }
    silent(&o[5096 + LEN..], "after the replay");
}

#[test]
fn no_lock_without_following_with_the_lock_off_or_without_a_transport() {
    let x = test_clip(LEN, 14);
    let rolling = |f: u32| Some((true, 9000 + f as i64));
    let mut not_following = plugin(follow_pad(&x, false), &[]);
    let out = render(&mut not_following, 7000, &rolling);
    silent(&out[0][0], "a pad that does not follow the sidechain");
    let mut unlocked = plugin(follow_pad(&x, true), &[("pad1_lock", bool_param(false))]);
    let out = render(&mut unlocked, 7000, &rolling);
    silent(&out[0][0], "lock off");
    let mut no_transport = plugin(follow_pad(&x, true), &[]);
    let out = render(&mut no_transport, 7000, &|_| None);
    silent(&out[0][0], "no transport");
}
