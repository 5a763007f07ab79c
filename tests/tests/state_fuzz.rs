//! Hostile states through the real CLAP host: a state with clips of several blocks and
//! history audio, as the plugin saves it, damaged at random in seeded cases:
//!
//! * the container (the saved bytes themselves: zstd-compressed JSON after nice-plug's length)
//!   truncated, bit-flipped or spliced. nice-plug reads the container all or nothing, so such
//!   a state is either refused (the host is told; the plugin keeps the pads it had, still
//!   playing) or, rarely, read whole; never a crash.
//! * single fields inside a readable container (one or more pads' JSON truncated, flipped,
//!   spliced): the state loads, every undamaged pad comes back bit for bit, the plugin keeps
//!   running and saves a state that loads again.
//!
//! The thousands of cases of the second kind run without the host in the plugin's own tests
//! (`plugin/src/state_fuzz.rs`, which also checks the editor's damage report); here a few
//! hundred prove the same holds through the CLAP entry points.

use ezaudio_tests::blob::*;
use ezaudio_tests::{clap_bundle, Note, PluginUnderTest};
use serde_json::{json, Value};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Cases of each kind (about 0.1 s each in a debug bundle).
const CASES: u64 = 100;

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|s| s.to_bits()).collect()
}

/// Pads 1-4 with clips (pad 1 of three blocks at 24 kHz, pad 2 at 48 kHz) and history audio.
fn scene() -> Vec<u8> {
    let lens = [40_000, 6000, 2500, 900];
    let pads: Vec<(usize, Value)> = lens
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let rate = if i == 1 { 48_000 } else { 24_000 };
            let mut pad = pad_json(&test_clip(len, 50 + i as u32), rate, &format!("pad {i}"));
            pad["history"] = json!([
                {"meta": meta("older", 3), "clip": clip_json(&test_clip(700, 60 + i as u32), 24_000, "older")},
                {"meta": meta("oldest", 2), "clip": null}
            ]);
            (i, pad)
        })
        .collect();
    state_blob(&pads, &[])
}

/// Every clip of every pad (current, then history), as bits.
fn audio(state: &Value) -> Vec<Vec<Option<Vec<u32>>>> {
    (0..16)
        .map(|i| {
            let pad = pad_of(state, i);
            let mut all = vec![clip_samples(&pad["clip"]).map(|c| bits(&c))];
            if let Some(h) = pad["history"].as_array() {
                all.extend(h.iter().map(|e| clip_samples(&e["clip"]).map(|c| bits(&c))));
            }
            all
        })
        .collect()
}

fn damage(bytes: &mut Vec<u8>, other: &[u8], r: &mut Rng) {
    if bytes.is_empty() {
        return;
    }
    let at = r.below(bytes.len());
    match r.below(3) {
        0 => bytes.truncate(at),
        1 => {
            for _ in 0..1 + r.below(8) {
                let i = r.below(bytes.len());
                bytes[i] ^= 1 << r.below(8);
            }
        }
        _ => {
            let from = r.below(other.len());
            let n = r.below(3000).min(other.len() - from);
            let end = (at + r.below(3000)).min(bytes.len());
            bytes.splice(at..end, other[from..from + n].iter().copied());
        }
    }
}

/// Pad 1 (note 36, stem 1) still plays its clip: the plugin is alive and kept or loaded it.
fn plays(plugin: &mut PluginUnderTest, clip: &[f32]) {
    let out = plugin
        .render(24_000.0, 256, 1200, &[Note::on(10, 36, 1.0)])
        .expect("render after a hostile state");
    assert_eq!(bits(&out[1][0][10..1000]), bits(&clip[..990]));
}

#[test]
fn damaged_states_through_the_host_never_crash_and_keep_undamaged_pads() {
    let t0 = std::time::Instant::now();
    let mut plugin = PluginUnderTest::load(&clap_bundle()).expect("load");
    plugin.load_state(&scene()).expect("scene");
    let saved = plugin.save_state().expect("save");
    let state = parse_state(&saved);
    let want = audio(&state);
    let pad1 = clip_samples(&pad_of(&state, 0)["clip"]).expect("pad 1 clip");
    assert_eq!(pad1.len(), 40_000);

    // The container: refused (previous pads kept) or read whole; never a crash.
    let (mut refused, mut read, mut kept) = (0, 0, 0);
    for case in 0..CASES {
        let mut r = Rng(case.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut bytes = saved.clone();
        damage(&mut bytes, &saved, &mut r);
        match plugin.load_state(&bytes) {
            Err(_) => {
                refused += 1;
                // Refused: the pads it had are still there and play.
                if case % 10 == 0 {
                    plays(&mut plugin, &pad1);
                }
            }
            Ok(()) => {
                read += 1;
                // Read whole: the damage zstd cannot notice (it keeps no checksum) changed
                // some decompressed bytes, and the plugin's own checks took over: count the
                // pads that still came back whole.
                let got = audio(&parse_state(&plugin.save_state().expect("save")));
                kept += (0..16).filter(|&p| got[p] == want[p]).count();
                let _ = plugin.render(24_000.0, 256, 600, &[Note::on(10, 36, 1.0)]);
                plugin
                    .load_state(&saved)
                    .expect("the good state loads again");
                plays(&mut plugin, &pad1);
            }
        }
    }

    // Single fields inside a readable (plain JSON) container.
    let fields: Vec<String> = (0..4)
        .map(|i| {
            state["fields"][format!("pad{}", i + 1)]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut intact_checked = 0;
    for case in 0..CASES {
        let mut r = Rng(case.wrapping_mul(0xD134_2543_DE82_EF95) | 1);
        let mut json = state.clone();
        let mut hit = [false; 16];
        for _ in 0..1 + r.below(2) {
            let pad = r.below(4);
            let key = format!("pad{}", pad + 1);
            let mut text = json["fields"][&key].as_str().unwrap().as_bytes().to_vec();
            damage(&mut text, fields[r.below(4)].as_bytes(), &mut r);
            json["fields"][&key] = Value::String(String::from_utf8_lossy(&text).into_owned());
            hit[pad] = true;
        }
        plugin
            .load_state(&with_length(json.to_string().as_bytes()))
            .unwrap_or_else(|e| panic!("case {case}: a readable container was refused: {e}"));
        let got = audio(&parse_state(&plugin.save_state().expect("save")));
        for pad in (0..16).filter(|&p| !hit[p]) {
            assert_eq!(
                got[pad],
                want[pad],
                "case {case}: undamaged pad {} changed",
                pad + 1
            );
            intact_checked += 1;
        }
        if !hit[0] {
            plays(&mut plugin, &pad1);
        }
    }
    eprintln!(
        "container damage: {refused} refused, {read} read whole ({kept} of their {} pads whole); \
         field damage: {CASES} states loaded, {intact_checked} undamaged pads restored bit for \
         bit; {:.1} s",
        read * 16,
        t0.elapsed().as_secs_f32()
    );
    assert!(
        refused > CASES / 2,
        "most container damage is refused, not misread"
    );
}
