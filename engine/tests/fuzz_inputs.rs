//! Seeded fuzzing of the two parsers a user hands files to: the WAV reader (`edit`, `--control`)
//! and the model config loaders (config.yml, the VAE's and T5's config.json).
//!
//! Each case mutates a valid file (bit flips, truncation, splices, header fields and config
//! values set to extremes) with a fixed-seed generator, so a failure names a case that
//! reproduces. Every case must end cleanly: an error or a value within bounds, never a panic.

mod support;
use support::model_tiny;

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use ezaudio_engine::audio::wav::{decode_mono, write_mono_to, SampleFormat};
use ezaudio_engine::audio::{MAX_RATE, MIN_RATE};
use ezaudio_engine::model::config::{EzAudioConfig, MAX_TEXT_TOKENS};
use ezaudio_engine::model::t5::T5Config;
use ezaudio_engine::model::vae::VaeConfig;

const INTERESTING_U32: [u32; 10] = [
    0,
    1,
    7,
    999,
    1000,
    24_000,
    0x7fff_ffff,
    0xffff_ffff,
    MAX_RATE,
    MAX_RATE + 1,
];

fn base_wavs() -> Vec<Vec<u8>> {
    let x: Vec<f32> = (0..300).map(|i| ((i as f32) * 0.05).sin() * 0.8).collect();
    let mut out = Vec::new();
    for format in [
        SampleFormat::Float32,
        SampleFormat::Int24,
        SampleFormat::Int16,
    ] {
        let mut c = Cursor::new(Vec::new());
        write_mono_to(&mut c, Path::new("base.wav"), &x, 24_000, format).unwrap();
        out.push(c.into_inner());
    }
    // A stereo 8-bit file, from hound directly.
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 44_100,
        bits_per_sample: 8,
        sample_format: hound::SampleFormat::Int,
    };
    let mut c = Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut c, spec).unwrap();
    for i in 0..200 {
        w.write_sample((i % 50) as i8).unwrap();
    }
    w.finalize().unwrap();
    out.push(c.into_inner());
    out
}

fn mutate_bytes(rng: &mut ChaCha8Rng, mut b: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.random_range(1..4) {
        if b.is_empty() {
            break;
        }
        match rng.random_range(0..6) {
            0 => {
                let i = rng.random_range(0..b.len());
                b[i] ^= 1 << rng.random_range(0..8);
            }
            1 => {
                let n = rng.random_range(0..b.len());
                b.truncate(n);
            }
            2 => {
                // Splice: a random range copied over another place.
                let (a, c) = (rng.random_range(0..b.len()), rng.random_range(0..b.len()));
                let n = rng.random_range(0..64).min(b.len() - a).min(b.len() - c);
                let chunk = b[a..a + n].to_vec();
                b[c..c + n].copy_from_slice(&chunk);
            }
            3 => {
                // A header field (chunk sizes, channels, rate, byte rate, block align, bits) set
                // to an extreme.
                let fields = [4usize, 16, 20, 22, 24, 28, 32, 34, 40];
                let at = fields[rng.random_range(0..fields.len())];
                let v = INTERESTING_U32[rng.random_range(0..INTERESTING_U32.len())];
                if at + 4 <= b.len() {
                    let width = if [20, 22, 32, 34].contains(&at) { 2 } else { 4 };
                    b[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
                }
            }
            4 => {
                let i = rng.random_range(0..b.len());
                b[i] = [0u8, 0xff, 0x7f, 0x80][rng.random_range(0..4)];
            }
            _ => {
                let i = rng.random_range(0..=b.len());
                let extra: Vec<u8> = (0..rng.random_range(1..32)).map(|_| rng.random()).collect();
                b.splice(i..i, extra);
            }
        }
    }
    b
}

#[test]
fn wav_reader_survives_thousands_of_damaged_files() {
    let bases = base_wavs();
    let mut rng = ChaCha8Rng::seed_from_u64(0x57a7);
    let (mut ok, mut refused) = (0, 0);
    let cases = 6000;
    for case in 0..cases {
        let base = bases[case % bases.len()].clone();
        let bytes = mutate_bytes(&mut rng, base);
        let result = catch_unwind(AssertUnwindSafe(|| {
            decode_mono(Cursor::new(&bytes), Path::new("fuzz.wav"))
        }));
        match result {
            Err(_) => panic!(
                "case {case}: the WAV reader panicked on {} bytes",
                bytes.len()
            ),
            Ok(Ok(a)) => {
                assert!(
                    (MIN_RATE..=MAX_RATE).contains(&a.sample_rate),
                    "case {case}"
                );
                assert!(!a.samples.is_empty() && a.samples.iter().all(|s| s.is_finite()));
                assert!(a.channels > 0, "case {case}");
                ok += 1;
            }
            Ok(Err(e)) => {
                assert!(e.to_string().contains("fuzz.wav"), "case {case}: {e}");
                refused += 1;
            }
        }
    }
    eprintln!("WAV fuzz: {cases} cases, {ok} read, {refused} refused by name, 0 panics");
    assert!(
        ok > 0 && refused > 0,
        "the mutations are too weak or too strong"
    );
}

const EXTREMES: [&str; 14] = [
    "0",
    "-1",
    "1",
    "100000000",
    "18446744073709551615",
    "99999999999999999999999",
    "1e300",
    ".nan",
    ".inf",
    "-.inf",
    "null",
    "'x'",
    "[1, 2]",
    "{a: 1}",
];

fn mutate_yaml(rng: &mut ChaCha8Rng, text: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for _ in 0..rng.random_range(1..4) {
        let i = rng.random_range(0..lines.len());
        match rng.random_range(0..6) {
            0 | 1 => {
                // A value set to an extreme.
                if let Some(colon) = lines[i].find(':') {
                    let v = EXTREMES[rng.random_range(0..EXTREMES.len())];
                    lines[i] = format!("{} {v}", &lines[i][..=colon]);
                }
            }
            2 => {
                lines.remove(i);
                if lines.is_empty() {
                    lines.push(String::new());
                }
            }
            3 => {
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            4 => {
                // A misspelt key.
                if let Some(colon) = lines[i].find(':') {
                    let mut key: Vec<char> = lines[i][..colon].chars().collect();
                    if key.len() > 3 {
                        let k = rng.random_range(1..key.len() - 1);
                        key.swap(k, k + 1);
                    }
                    let rest = lines[i][colon..].to_string();
                    lines[i] = key.into_iter().collect::<String>() + &rest;
                }
            }
            _ => {
                let mut b = lines[i].clone().into_bytes();
                if !b.is_empty() {
                    let j = rng.random_range(0..b.len());
                    b[j] ^= 1 << rng.random_range(0..7);
                }
                lines[i] = String::from_utf8_lossy(&b).into_owned();
            }
        }
    }
    lines.join("\n")
}

#[test]
fn config_loaders_survive_thousands_of_damaged_configs() {
    let dir = model_tiny();
    let yml = std::fs::read_to_string(dir.join("config.yml")).unwrap();
    let vae = std::fs::read_to_string(dir.join("vae/config.json")).unwrap();
    let t5 = std::fs::read_to_string(dir.join("text_encoder/config.json")).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0xc0f1);
    let (mut cases, mut ok) = (0, 0);
    for case in 0..3000 {
        let text = mutate_yaml(&mut rng, &yml);
        let r = catch_unwind(|| EzAudioConfig::from_yaml_str(&text, Path::new("fuzz.yml")));
        cases += 1;
        match r {
            Err(_) => panic!("case {case}: config.yml loader panicked on:\n{text}"),
            Ok(Ok(c)) => {
                ok += 1;
                assert!(c.text_encoder.max_length <= MAX_TEXT_TOKENS, "case {case}");
                assert!(
                    c.model.embed_dim <= 8192 && c.model.depth <= 256,
                    "case {case}"
                );
                assert!(
                    (MIN_RATE..=MAX_RATE).contains(&c.autoencoder.sr),
                    "case {case}"
                );
            }
            Ok(Err(e)) => assert!(e.to_string().contains("fuzz.yml"), "case {case}: {e}"),
        }
    }
    // JSON configs: the same line mutations (JSON lines are `"key": value,`).
    for (name, base) in [("vae", &vae), ("t5", &t5)] {
        for case in 0..1500 {
            let text = mutate_yaml(&mut rng, base);
            cases += 1;
            let r = catch_unwind(|| match name {
                "vae" => serde_json::from_str::<VaeConfig>(&text)
                    .map_err(|e| e.to_string())
                    .and_then(|c| c.validate().map_err(|e| e.to_string())),
                _ => serde_json::from_str::<T5Config>(&text)
                    .map_err(|e| e.to_string())
                    .and_then(|c| c.validate().map_err(|e| e.to_string())),
            });
            match r {
                Err(_) => panic!("{name} case {case}: the loader panicked on:\n{text}"),
                Ok(Ok(())) => ok += 1,
                Ok(Err(_)) => {}
            }
        }
    }
    eprintln!("config fuzz: {cases} cases, {ok} accepted within bounds, 0 panics");
    assert!(ok > 0 && ok < cases);
}
