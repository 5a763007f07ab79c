//! `ezaudio generate --control` / `--control-envelope`: loudness-controlled generation with the
//! fixtures' tiny model and the tiny energy ControlNet paired with it. Private HOME and
//! EZAUDIO_OFFLINE=1 as in `cli.rs`; sizes and rates come from the fixture files.

mod sandbox;
#[path = "../../engine/tests/support/mod.rs"]
mod support;
use sandbox::Sandbox;
use support::{assert_fails, assert_ok, controlnet_tiny, json, model_tiny};

use std::path::{Path, PathBuf};

/// (model sample rate, seconds, conditioner hop) of the fixture's controlled generation.
fn reference() -> (u32, f64, usize) {
    let gen = json(&controlnet_tiny().join("generate.json"));
    let seconds = gen["seconds"].as_f64().expect("seconds");
    let rate = (gen["num_samples"].as_f64().expect("num_samples") / seconds).round() as u32;
    let yml =
        std::fs::read_to_string(controlnet_tiny().join(gen["config"].as_str().expect("config")))
            .unwrap();
    let hop = yml
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("hop_size:")
                .map(|v| v.trim().parse::<usize>().unwrap())
        })
        .expect("hop_size in the yml");
    (rate, seconds, hop)
}

fn read_wav(p: &Path) -> (u32, Vec<f32>) {
    let mut r = hound::WavReader::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let rate = r.spec().sample_rate;
    (rate, r.samples::<f32>().map(Result::unwrap).collect())
}

fn write_wav(p: &Path, rate: u32, samples: &[f32]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(p, spec).unwrap();
    for s in samples {
        w.write_sample(*s).unwrap();
    }
    w.finalize().unwrap();
}

/// Quiet noise with loud bursts at `bursts` (start, end) seconds.
fn bursty(rate: u32, seconds: f64, bursts: &[(f64, f64)]) -> Vec<f32> {
    let n = (seconds * rate as f64).round() as usize;
    (0..n)
        .map(|i| {
            let t = i as f64 / rate as f64;
            let loud = bursts.iter().any(|&(a, b)| t >= a && t < b);
            let noise = ((i as f32 * 12.9898).sin() * 43_758.547).fract();
            noise * if loud { 0.8 } else { 0.002 }
        })
        .collect()
}

fn gen_args(out: &str, seconds: f64, seed: u64, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["generate", "footsteps on gravel", "-o", out, "--model"]
        .map(String::from)
        .to_vec();
    v.push(model_tiny().to_string_lossy().into_owned());
    v.extend(
        [
            "--steps",
            "3",
            "--seconds",
            &seconds.to_string(),
            "--seed",
            &seed.to_string(),
        ]
        .map(String::from),
    );
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn sidecar(wav: &Path) -> serde_json::Value {
    json(&PathBuf::from(format!("{}.json", wav.display())))
}

/// Frame index of the condition's maximum.
fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold(0, |best, (i, &x)| if x > v[best] { i } else { best })
}

fn condition(meta: &serde_json::Value) -> (Vec<f32>, f64) {
    assert_eq!(meta["kind"]["type"], "controlled", "{meta}");
    let c = meta["kind"]["condition"]
        .as_array()
        .expect("condition")
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    (c, meta["kind"]["frame_rate"].as_f64().expect("frame_rate"))
}

#[test]
fn reference_control_changes_the_sound_and_follows_the_reference() {
    let (rate, seconds, hop) = reference();
    let sb = Sandbox::new();
    // The reference at another rate (resampled by the engine), one burst in its second half.
    let ref_rate = rate * 2;
    let burst = (0.6 * seconds, 0.75 * seconds);
    write_wav(
        &sb.path("ref.wav"),
        ref_rate,
        &bursty(ref_rate, seconds, &[burst]),
    );
    let cn = controlnet_tiny().to_string_lossy().into_owned();
    assert_ok(&sb.run(&gen_args("plain.wav", seconds, 11, &[])));
    let out = sb.run(&gen_args(
        "ctl.wav",
        seconds,
        11,
        &["--control", "ref.wav", "--controlnet", &cn],
    ));
    assert_ok(&out);

    let (r1, plain) = read_wav(&sb.path("plain.wav"));
    let (r2, ctl) = read_wav(&sb.path("ctl.wav"));
    assert_eq!((r1, r2), (rate, rate));
    let want = (seconds * rate as f64).round() as usize;
    assert_eq!((plain.len(), ctl.len()), (want, want));
    assert!(ctl.iter().all(|s| s.is_finite()));
    assert_ne!(plain, ctl, "the control made no difference");

    let meta = sidecar(&sb.path("ctl.wav"));
    assert!(
        meta["command"]
            .as_str()
            .unwrap()
            .contains("--control ref.wav"),
        "{meta}"
    );
    let (cond, fps) = condition(&meta);
    assert!((fps - rate as f64 / hop as f64).abs() < 1e-3);
    let peak = argmax(&cond) as f64 / fps;
    assert!(
        peak >= burst.0 - 0.03 && peak <= burst.1 + 0.03,
        "condition peaks at {peak} s, burst at {burst:?}"
    );
    assert!(
        cond[(0.2 * seconds * fps) as usize] < 0.5,
        "quiet part is loud in the condition: {cond:?}"
    );
}

#[test]
fn envelope_control_from_the_environment_folder() {
    let (rate, seconds, _) = reference();
    let sb = Sandbox::new();
    let env = format!("0:0,{}:1,{}:0", 0.3 * seconds, 0.6 * seconds);
    let args = gen_args(
        "env.wav",
        seconds,
        5,
        &["--control-envelope", &env, "--control-scale", "0.8"],
    );
    let out = sb
        .command(&args)
        .env("EZAUDIO_CONTROLNET", controlnet_tiny())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run ezaudio");
    assert_ok(&out);
    let (_, samples) = read_wav(&sb.path("env.wav"));
    assert_eq!(samples.len(), (seconds * rate as f64).round() as usize);
    let meta = sidecar(&sb.path("env.wav"));
    let (cond, fps) = condition(&meta);
    assert_eq!(meta["kind"]["control"], "envelope");
    assert!((meta["kind"]["scale"].as_f64().unwrap() - 0.8).abs() < 1e-6);
    let peak = argmax(&cond) as f64 / fps;
    assert!(
        (peak - 0.3 * seconds).abs() <= 1.5 / fps,
        "envelope peak at {peak} s"
    );
}

#[test]
fn bad_controls_fail_with_clear_errors() {
    let (_, seconds, _) = reference();
    let sb = Sandbox::new();
    let cn = controlnet_tiny().to_string_lossy().into_owned();
    std::fs::write(sb.path("notes.wav"), b"this is not audio").unwrap();
    write_wav(&sb.path("empty.wav"), 24_000, &[]);
    std::fs::create_dir_all(sb.path("emptydir")).unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--control", "missing.wav", "--controlnet", &cn],
            "missing.wav",
        ),
        (
            vec!["--control", "notes.wav", "--controlnet", &cn],
            "not a readable wav",
        ),
        (
            vec!["--control", "empty.wav", "--controlnet", &cn],
            "no audio",
        ),
        (
            vec!["--control-envelope", "0:0,zz", "--controlnet", &cn],
            "--control-envelope",
        ),
        (
            vec![
                "--control-envelope",
                "0:0,1:1",
                "--control-scale",
                "nan",
                "--controlnet",
                &cn,
            ],
            "--control-scale",
        ),
        (
            vec!["--control-envelope", "0:0,1:1", "--controlnet", "nowhere"],
            "nowhere",
        ),
        // model-tiny has no controlnet/ folder and nothing else is set.
        (vec!["--control-envelope", "0:0,1:1"], "no ControlNet found"),
        (
            vec!["--control-envelope", "0:0,1:1", "--controlnet", "emptydir"],
            "missing",
        ),
    ];
    for (extra, needle) in cases {
        let out = sb.run(&gen_args("bad.wav", seconds, 1, &extra));
        assert_fails(&out, needle);
        assert!(!sb.path("bad.wav").exists(), "{extra:?} wrote a file");
    }
}
