//! The VST3 in pedalboard (Spotify's JUCE-based host, from PyPI): the state puts a known clip
//! on pad 3, a MIDI note renders it, and the output must be the clip at the note's sample.
//! The driver is `tests/hosts/pedalboard_render.py`; `scripts/setup.sh` installs pedalboard.
//! Before the nice-plug patches (vendor/nice-plug/PATCHED.md) this host aborted on the
//! first block: JUCE passes null channel pointers for the aux buses it disabled.

use std::path::Path;
use std::process::Command;

use ezaudio_tests::blob::*;
use ezaudio_tests::{hosts_required, vst3_bundle, workspace_root};

const RATE: usize = 48_000;
const FADE: usize = 72;

fn python() -> String {
    std::env::var("EZAUDIO_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// pedalboard importable? Otherwise skip (locally) or fail (CI).
fn pedalboard_available() -> bool {
    let ok = Command::new(python())
        .args(["-c", "import pedalboard, numpy"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            !hosts_required(),
            "pedalboard is not importable by {}: run scripts/setup.sh (pip install pedalboard)",
            python()
        );
        eprintln!("SKIPPED: pedalboard not installed (scripts/setup.sh installs it)");
    }
    ok
}

/// Renders one second with `notes` ("KEY:SECONDS:VELOCITY") at `buffer` frames a block;
/// returns (left, right).
fn render(dir: &Path, state: &[u8], notes: &[&str], buffer: u32) -> (Vec<f32>, Vec<f32>) {
    let state_path = dir.join("state.json");
    // The VST3 component state is nice-plug's JSON without the CLAP length prefix.
    std::fs::write(&state_path, &state[8..]).expect("write state");
    let out = dir.join(format!("out-{buffer}.f32"));
    let mut cmd = Command::new(python());
    cmd.arg(workspace_root().join("tests/hosts/pedalboard_render.py"))
        .arg(vst3_bundle())
        .arg(&state_path)
        .arg(&out)
        .args(["--buffer", &buffer.to_string(), "--rate", &RATE.to_string()]);
    for n in notes {
        cmd.args(["--note", n]);
    }
    let run = cmd.output().expect("python runs");
    assert!(
        run.status.success(),
        "pedalboard render failed ({:?}):\n{}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let bytes = std::fs::read(&out).expect("output written");
    let samples: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(samples.len(), 2 * RATE, "two channels of one second");
    let (l, r) = samples.split_at(RATE);
    (l.to_vec(), r.to_vec())
}

#[test]
fn a_midi_note_plays_the_pads_clip_at_its_sample_in_pedalboard() {
    if !pedalboard_available() {
        return;
    }
    let x = test_clip(4800, 41);
    let state = state_blob(&[(2, pad_json(&x, 48_000, "click"))], &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    // Pad 3 plays from key 38; 0.25 s is sample 12000, velocity 127 is full scale.
    let (l, r) = render(dir.path(), &state, &["38:0.25:127"], 512);
    for (name, o) in [("left", &l), ("right", &r)] {
        let onset = o.iter().position(|&s| s != 0.0);
        assert_eq!(onset, Some(12_000), "{name}: first sound");
        for (j, &want) in x.iter().enumerate() {
            let left = x.len() - j;
            let fade = if left < FADE {
                left as f32 / FADE as f32
            } else {
                1.0
            };
            let got = o[12_000 + j];
            assert!(
                (got - want * fade).abs() < 1e-6,
                "{name} clip sample {j}: {got} vs {}",
                want * fade
            );
        }
        assert!(
            o[12_000 + x.len()..].iter().all(|&s| s == 0.0),
            "{name}: silence after"
        );
    }
    // Larger blocks (the host's choice) must not move or change anything.
    let (l2, _) = render(dir.path(), &state, &["38:0.25:127"], 8192);
    assert_eq!(l2, l, "8192-frame blocks render the same");
}
