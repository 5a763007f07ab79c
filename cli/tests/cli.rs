//! The `ezaudio` binary end to end, on the fixtures' complete tiny model folder.
//!
//! Every run gets a private HOME / XDG / HF_HOME and EZAUDIO_OFFLINE=1, so nothing touches the
//! real user folders or the network. Sizes and rates come from the fixture files.

mod sandbox;
#[path = "../../engine/tests/support/mod.rs"]
mod support;
use sandbox::Sandbox;
use support::{assert_fails, assert_ok, model_tiny, text};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// (sample rate, seconds) of the fixture's reference generation.
fn reference() -> (u32, f64) {
    let p = model_tiny().join("reference.json");
    let text =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    let json: serde_json::Value = serde_json::from_str(&text).expect("reference.json is JSON");
    let rate = json["sample_rate"].as_u64().expect("sample_rate") as u32;
    let run = json["runs"]
        .as_object()
        .and_then(|r| r.values().next())
        .expect("a reference run");
    (rate, run["seconds"].as_f64().expect("seconds"))
}

fn read_wav(p: &Path) -> (hound::WavSpec, Vec<f32>) {
    let mut r = hound::WavReader::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let spec = r.spec();
    let s = match spec.sample_format {
        hound::SampleFormat::Float => r.samples::<f32>().map(Result::unwrap).collect(),
        hound::SampleFormat::Int => {
            let scale = (1u32 << (spec.bits_per_sample - 1)) as f32;
            r.samples::<i32>()
                .map(|v| v.unwrap() as f32 / scale)
                .collect()
        }
    };
    (spec, s)
}

fn sidecar(wav: &Path) -> serde_json::Value {
    let p = PathBuf::from(format!("{}.json", wav.display()));
    serde_json::from_str(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap()
}

fn gen_args(model: &Path, prompt: &str, out: &str, seconds: f64, seed: u64) -> Vec<String> {
    [
        "generate",
        prompt,
        "-o",
        out,
        "--model",
        &model.to_string_lossy(),
        "--steps",
        "3",
        "--seconds",
        &seconds.to_string(),
        "--seed",
        &seed.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn generate_writes_wav_and_sidecar() {
    let (rate, seconds) = reference();
    let sb = Sandbox::new();
    let out = sb.run(&gen_args(
        &model_tiny(),
        "a dog barking in the distance",
        "dog.wav",
        seconds,
        42,
    ));
    assert_ok(&out);
    let err = text(&out.stderr);
    assert!(
        err.contains("device: CPU"),
        "the device used is not reported:\n{err}"
    );

    let (spec, samples) = read_wav(&sb.path("dog.wav"));
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (1, rate, 32)
    );
    assert_eq!(spec.sample_format, hound::SampleFormat::Float);
    assert_eq!(samples.len(), (seconds * rate as f64).round() as usize);
    assert!(samples.iter().all(|s| s.is_finite()));
    assert!(samples.iter().any(|&s| s != 0.0), "silent output");

    let meta = sidecar(&sb.path("dog.wav"));
    assert_eq!(meta["prompt"], "a dog barking in the distance");
    assert_eq!(meta["seed"], 42);
    assert_eq!(meta["steps"], 3);
    assert_eq!(meta["seconds"].as_f64().unwrap(), seconds);
    assert_eq!(meta["sample_rate"], rate);
    assert_eq!(meta["bits"], 32);
    assert_eq!(meta["device"], "CPU");
    assert_eq!(meta["dtype"], "f32");
    assert_eq!(meta["engine_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        PathBuf::from(meta["model_path"].as_str().unwrap()),
        model_tiny()
    );
    assert!(meta["command"].as_str().unwrap().contains("--seed 42"));
    assert_eq!(meta["kind"]["type"], "generate");
}

#[test]
fn seeds_are_reproducible_and_distinct() {
    let (_, seconds) = reference();
    let sb = Sandbox::new();
    for (out, seed) in [("a.wav", 5u64), ("b.wav", 5), ("c.wav", 6)] {
        assert_ok(&sb.run(&gen_args(
            &model_tiny(),
            "rain on a tin roof",
            out,
            seconds,
            seed,
        )));
    }
    let bytes = |f: &str| std::fs::read(sb.path(f)).unwrap();
    assert_eq!(bytes("a.wav"), bytes("b.wav"), "same seed, different audio");
    assert_ne!(
        bytes("a.wav"),
        bytes("c.wav"),
        "different seeds, same audio"
    );
}

#[test]
fn variations_rate_bits_and_normalize() {
    let (rate, seconds) = reference();
    let sb = Sandbox::new();
    let mut args = gen_args(&model_tiny(), "a door slam", "slam.wav", seconds, 7);
    let out_rate = rate * 2;
    args.extend(
        [
            "--variations",
            "2",
            "--sample-rate",
            &out_rate.to_string(),
            "--bits",
            "16",
            "--normalize",
            "peak",
        ]
        .map(String::from),
    );
    assert_ok(&sb.run(&args));
    assert!(!sb.path("slam.wav").exists());
    for (i, seed) in [(1, 7), (2, 8)] {
        let p = sb.path(&format!("slam-{i}.wav"));
        let (spec, samples) = read_wav(&p);
        assert_eq!((spec.sample_rate, spec.bits_per_sample), (out_rate, 16));
        assert_eq!(samples.len(), (seconds * out_rate as f64).round() as usize);
        let peak = samples.iter().fold(0f32, |m, s| m.max(s.abs()));
        assert!(
            (20.0 * peak.log10() + 1.0).abs() < 0.01,
            "peak {peak} is not -1 dBFS"
        );
        let meta = sidecar(&p);
        assert_eq!(
            (meta["seed"].as_u64(), meta["bits"].as_u64()),
            (Some(seed), Some(16))
        );
        assert_eq!(meta["normalize"], "peak");
    }
}

#[test]
fn batch_cue_file() {
    let (rate, seconds) = reference();
    let sb = Sandbox::new();
    let cues = format!(
        "# foley list\nprompt,seconds,seed,negative\n\"a dog, barking\",{seconds},11,\n\nfootsteps on gravel,{},12,music\n",
        seconds / 2.0
    );
    std::fs::write(sb.path("cues.csv"), cues).unwrap();
    let model = model_tiny().to_string_lossy().into_owned();
    let out = sb.run(&[
        "generate",
        "--batch",
        "cues.csv",
        "--out-dir",
        "foley",
        "--model",
        &model,
        "--steps",
        "2",
    ]);
    assert_ok(&out);
    let (_, a) = read_wav(&sb.path("foley/001-a-dog-barking.wav"));
    let (_, b) = read_wav(&sb.path("foley/002-footsteps-on-gravel.wav"));
    assert_eq!(a.len(), (seconds * rate as f64).round() as usize);
    assert_eq!(b.len(), (seconds / 2.0 * rate as f64).round() as usize);
    let meta = sidecar(&sb.path("foley/002-footsteps-on-gravel.wav"));
    assert_eq!(
        (meta["seed"].as_u64(), meta["negative"].as_str()),
        (Some(12), Some("music"))
    );

    // Plain list, one prompt per line.
    std::fs::write(
        sb.path("plain.txt"),
        "thunder\n\n# skip me\nbirds at dawn\n",
    )
    .unwrap();
    let secs = seconds.to_string();
    let out = sb.run(&[
        "generate",
        "--batch",
        "plain.txt",
        "--out-dir",
        "plain",
        "--model",
        &model,
        "--steps",
        "2",
        "--seconds",
        &secs,
    ]);
    assert_ok(&out);
    assert!(
        sb.path("plain/001-thunder.wav").is_file()
            && sb.path("plain/002-birds-at-dawn.wav").is_file()
    );
}

#[test]
fn edit_changes_only_the_span() {
    let (rate, seconds) = reference();
    let sb = Sandbox::new();
    let total = 2.0 * seconds;
    // At the model's rate and at twice it (where the edit is spliced into the original samples).
    for (name, out_rate) in [("src", rate), ("src48", rate * 2)] {
        let mut args = gen_args(
            &model_tiny(),
            "a busy street",
            &format!("{name}.wav"),
            total,
            3,
        );
        args.extend(["--sample-rate".to_string(), out_rate.to_string()]);
        assert_ok(&sb.run(&args));
        let (start, length, boundary) = (total * 0.25, total * 0.25, total * 0.125);
        let edited = format!("{name}-edit.wav");
        let model = model_tiny().to_string_lossy().into_owned();
        let out = sb.run(&[
            "edit",
            &format!("{name}.wav"),
            "--start",
            &start.to_string(),
            "--length",
            &length.to_string(),
            "--boundary",
            &boundary.to_string(),
            "--prompt",
            "a car horn",
            "-o",
            &edited,
            "--model",
            &model,
            "--steps",
            "2",
            "--seed",
            "9",
        ]);
        assert_ok(&out);
        let (_, a) = read_wav(&sb.path(&format!("{name}.wav")));
        let (spec, b) = read_wav(&sb.path(&edited));
        assert_eq!((spec.sample_rate, b.len()), (out_rate, a.len()));
        let r = out_rate as f64;
        let (lo, hi) = (
            ((start - boundary) * r).floor() as usize,
            ((start + length + boundary) * r).ceil() as usize,
        );
        assert_eq!(
            a[..lo],
            b[..lo],
            "{name}: samples before the edited chunk changed"
        );
        assert_eq!(
            a[hi..],
            b[hi..],
            "{name}: samples after the edited chunk changed"
        );
        assert!(a[lo..hi] != b[lo..hi], "{name}: the span did not change");
        assert!(b.iter().all(|s| s.is_finite()));
        let meta = sidecar(&sb.path(&edited));
        assert_eq!(meta["kind"]["type"], "edit");
        assert_eq!(meta["prompt"], "a car horn");
    }
}

#[test]
fn bad_inputs_fail_cleanly() {
    let (_, seconds) = reference();
    let sb = Sandbox::new();
    let model = model_tiny().to_string_lossy().into_owned();
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["generate", "a dog", "-o", "x.wav", "--model", &model]
            .map(String::from)
            .to_vec();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    assert_fails(
        &sb.run(&base(&["--steps", "0"])),
        "--steps must be between 1",
    );
    assert_fails(
        &sb.run(&base(&["--steps", "10000"])),
        "--steps must be between 1",
    );
    assert_fails(
        &sb.run(&base(&["--seconds", "-1"])),
        "positive number of seconds",
    );
    assert_fails(&sb.run(&base(&["--seconds", "600"])), "maximum");
    assert_fails(&sb.run(&base(&["--device", "quantum"])), "unknown device");
    assert_fails(&sb.run(&base(&["--variations", "0"])), "--variations");
    assert_fails(&sb.run(&["generate", "", "--model", &model]), "empty");
    assert_fails(
        &sb.run(&["generate", "a dog", "--model", "no/such/folder"]),
        "not found",
    );
    assert!(!sb.path("x.wav").exists());

    std::fs::write(sb.path("empty.txt"), "\n# nothing here\n\n").unwrap();
    assert_fails(
        &sb.run(&["generate", "--batch", "empty.txt", "--model", &model]),
        "no prompts",
    );
    std::fs::write(sb.path("bad.csv"), "prompt,seconds\nrain,-3\n").unwrap();
    assert_fails(
        &sb.run(&["generate", "--batch", "bad.csv", "--model", &model]),
        "line 2",
    );

    std::fs::write(sb.path("notwav.wav"), "this is not audio").unwrap();
    let edit = |input: &str, start: &str| {
        sb.run(&[
            "edit", input, "--start", start, "--length", "0.2", "--prompt", "a bang", "--model",
            &model, "--steps", "2",
        ])
    };
    assert_fails(&edit("notwav.wav", "0"), "not a readable WAV");
    assert_fails(&edit("missing.wav", "0"), "no such file");
    assert_ok(&sb.run(&gen_args(&model_tiny(), "hum", "clip.wav", seconds, 1)));
    assert_fails(&edit("clip.wav", &(seconds * 3.0).to_string()), "outside");
    assert_fails(&edit("clip.wav", "-1"), "--start");
    // Existing files are kept unless --force.
    assert_fails(
        &sb.run(&gen_args(&model_tiny(), "hum", "clip.wav", seconds, 1)),
        "--force",
    );
}

#[test]
fn models_verify_list_and_convert() {
    let (_, seconds) = reference();
    let sb = Sandbox::new();
    let model = model_tiny().to_string_lossy().into_owned();
    let out = sb.run(&["models", "verify", "--model", &model]);
    assert_ok(&out);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("all parts OK") && !stdout.contains("PROBLEM"),
        "{stdout}"
    );
    for part in ["DiT", "VAE", "text encoder", "tokenizer"] {
        assert!(
            stdout.contains(part),
            "verify says nothing about {part}:\n{stdout}"
        );
    }

    let out = sb.run(&["models", "list"]);
    assert_ok(&out);
    assert!(
        text(&out.stdout).contains("No EzAudio models are installed"),
        "{}",
        text(&out.stdout)
    );

    // Converted to safetensors, the folder verifies and generates the same audio.
    assert_ok(&sb.run(&["models", "convert", "--model", &model, "--out", "conv"]));
    assert!(
        sb.path("conv/dit.safetensors").is_file() && sb.path("conv/vae/vae.safetensors").is_file()
    );
    assert_ok(&sb.run(&["models", "verify", "--model", "conv"]));
    let conv = sb.path("conv");
    assert_ok(&sb.run(&gen_args(&model_tiny(), "wind", "orig.wav", seconds, 4)));
    assert_ok(&sb.run(&gen_args(&conv, "wind", "conv.wav", seconds, 4)));
    let (_, a) = read_wav(&sb.path("orig.wav"));
    let (_, b) = read_wav(&sb.path("conv.wav"));
    assert_eq!(a, b, "the converted model sounds different");
}

#[test]
fn first_run_offline_explains_how_to_install() {
    let sb = Sandbox::new();
    let started = Instant::now();
    let out = sb.run(&["generate", "a dog barking in the distance", "-o", "dog.wav"]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_fails(&out, "ezaudio models fetch l");
    let err = text(&out.stderr);
    assert!(
        err.contains("not installed") && err.contains("OpenSound/EzAudio"),
        "{err}"
    );
    assert!(!sb.path("dog.wav").exists());
    assert_fails(
        &sb.run(&["models", "fetch", "xl"]),
        "downloads are disabled",
    );
    assert_fails(&sb.run(&["models", "verify"]), "not installed");
}

#[test]
fn models_list_finds_the_hugging_face_cache() {
    // The layout `models fetch` leaves behind, with a sharded text encoder (as flan-t5-xl is).
    let sb = Sandbox::new();
    let hub = sb.path("home/hf/hub");
    let tiny = model_tiny();
    let snapshot = |repo: &str, rev: &str| {
        let dir = hub.join(repo);
        std::fs::create_dir_all(dir.join("refs")).unwrap();
        std::fs::write(dir.join("refs/main"), rev).unwrap();
        dir.join("snapshots").join(rev)
    };
    let ez = snapshot("models--OpenSound--EzAudio", "abc123");
    for (from, to) in [
        ("dit.pt", "ckpts/s3/ezaudio_s3_l.pt"),
        ("vae/1m.pt", "ckpts/vae/1m.pt"),
        ("vae/config.json", "ckpts/vae/config.json"),
    ] {
        std::fs::create_dir_all(ez.join(to).parent().unwrap()).unwrap();
        std::fs::copy(tiny.join(from), ez.join(to)).unwrap();
    }
    let te = snapshot("models--google--flan-t5-large", "def456");
    std::fs::create_dir_all(&te).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(tiny.join("text_encoder").join(f), te.join(f)).unwrap();
    }
    std::fs::copy(
        tiny.join("text_encoder/model.safetensors"),
        te.join("model-00001-of-00001.safetensors"),
    )
    .unwrap();
    std::fs::write(
        te.join("model.safetensors.index.json"),
        r#"{"weight_map": {}}"#,
    )
    .unwrap();

    let out = sb.run(&["models", "list"]);
    assert_ok(&out);
    let stdout = text(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("ezaudio-l "))
        .expect("no ezaudio-l line");
    assert!(line.contains("abc123") && line.contains("kB"), "{stdout}");
    assert!(
        !stdout.contains("No EzAudio models are installed"),
        "{stdout}"
    );
}

/// Sidecars written by release 0.1.0, before the generation settings became one `Recipe`:
/// kept as test data (`tests/data/sidecars-0.1.0/`), they read unchanged as clip metadata,
/// and today's CLI writes the same keys with the same recipe for the same command.
#[test]
fn sidecars_of_release_0_1_0_load_unchanged() {
    use ezaudio_engine::audio::{ClipKind, ClipMeta};
    use ezaudio_engine::Recipe;

    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sidecars-0.1.0");
    let read = |name: &str| -> (serde_json::Value, ClipMeta) {
        let text = std::fs::read_to_string(data.join(name)).unwrap();
        let meta = serde_json::from_str::<ClipMeta>(&text)
            .unwrap_or_else(|e| panic!("{name} no longer loads: {e}"));
        (serde_json::from_str(&text).unwrap(), meta)
    };

    let (old, meta) = read("dog.wav.json");
    assert_eq!(
        meta.recipe,
        Recipe {
            prompt: "a dog barking".into(),
            negative: "low quality".into(),
            seconds: 0.5,
            steps: 2,
            // 0.1.0 had no sampler key: it ran DDIM, and the sidecar loads as DDIM.
            sampler: ezaudio_engine::model::sampler::Sampler::Ddim,
            guidance: 4.5,
            rescale: 0.5,
            eta: 0.5,
            seed: 3,
        }
    );
    assert!(old.get("sampler").is_none());
    assert_eq!(meta.kind, ClipKind::Generate);
    assert_eq!(meta.model_id, "EzAudio-tiny-fixture");
    assert_eq!(meta.created, 1796158862);

    let (_, edit) = read("dog-edit.wav.json");
    assert_eq!(
        (edit.recipe.prompt.as_str(), edit.recipe.seed),
        ("glass breaking", 9)
    );
    assert_eq!(
        edit.kind,
        ClipKind::Edit {
            start_s: 0.1,
            length_s: 0.2,
            source: Some("dog.wav".into())
        }
    );

    let (_, controlled) = read("steps.wav.json");
    match &controlled.kind {
        ClipKind::Controlled {
            control,
            scale,
            condition,
            frame_rate,
        } => {
            assert_eq!(
                (control.as_str(), *scale, *frame_rate),
                ("envelope", 1.0, 100.0)
            );
            assert_eq!(condition.len(), 50, "0.5 s of condition at 100 frames/s");
            assert_eq!(condition[0], 0.024999999);
        }
        other => panic!("steps.wav.json: expected a controlled clip, got {other:?}"),
    }

    // The same command today: the same keys, the same recipe.
    let sb = Sandbox::new();
    let model = model_tiny();
    let model = model.to_string_lossy();
    assert_ok(&sb.run(&[
        "generate",
        "a dog barking",
        "--negative",
        "low quality",
        "--model",
        &model,
        "--steps",
        "2",
        "--seconds",
        "0.5",
        "--seed",
        "3",
        "--guidance",
        "4.5",
        "--rescale",
        "0.5",
        "--eta",
        "0.5",
        "-o",
        "dog.wav",
    ]));
    let new = sidecar(&sb.path("dog.wav"));
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    // Every 0.1.0 key is still written; the one key added since is the sampler.
    let mut expected = keys(&old);
    expected.push("sampler".into());
    expected.sort();
    assert_eq!(keys(&new), expected, "the sidecar's keys changed");
    assert_eq!(new["sampler"], "ddim");
    let now: ClipMeta = serde_json::from_value(new.clone()).unwrap();
    assert_eq!(now.recipe, meta.recipe);
    assert_eq!(now.kind, meta.kind);
    for key in [
        "engine",
        "model_sample_rate",
        "sample_rate",
        "bits",
        "format",
        "normalize",
    ] {
        assert_eq!(new[key], old[key], "sidecar '{key}'");
    }
}

#[test]
fn sampler_is_chosen_listed_and_recorded() {
    let (_, seconds) = reference();
    let sb = Sandbox::new();
    let help = sb.run(&["generate", "--help"]);
    assert_ok(&help);
    let help = text(&help.stdout);
    for name in ["ddim", "dpm++2m", "dpm++2m-sde", "unipc"] {
        assert!(
            help.contains(name),
            "--help does not list '{name}':\n{help}"
        );
    }
    let model = model_tiny();
    let mut runs = vec![];
    for name in ["ddim", "dpm++2m", "unipc"] {
        let out = format!("{}.wav", name.replace('+', "p"));
        let mut args = gen_args(&model, "a dog barking", &out, seconds, 4);
        args.extend(["--sampler".to_string(), name.to_string()]);
        assert_ok(&sb.run(&args));
        let meta = sidecar(&sb.path(&out));
        assert_eq!(meta["sampler"], name);
        let cmd = meta["command"].as_str().unwrap();
        assert!(cmd.contains(&format!("--sampler {name}")), "{cmd}");
        runs.push(read_wav(&sb.path(&out)).1);
    }
    assert!(
        runs[0] != runs[1] && runs[1] != runs[2],
        "the sampler changed nothing"
    );
    // The recorded command makes the same file again.
    let mut again = gen_args(&model, "a dog barking", "again.wav", seconds, 4);
    again.extend(["--sampler".to_string(), "dpm++2m".to_string()]);
    assert_ok(&sb.run(&again));
    assert_eq!(read_wav(&sb.path("again.wav")).1, runs[1]);

    let mut bad = gen_args(&model, "a dog barking", "bad.wav", seconds, 4);
    bad.extend(["--sampler".to_string(), "euler".to_string()]);
    assert_fails(&sb.run(&bad), "dpm++2m");

    let out = sb.run(&[
        "edit",
        "ddim.wav",
        "--start",
        &(seconds * 0.25).to_string(),
        "--length",
        &(seconds * 0.25).to_string(),
        "--prompt",
        "a car horn",
        "-o",
        "edit.wav",
        "--model",
        &model.to_string_lossy(),
        "--steps",
        "2",
        "--sampler",
        "dpm++2m-sde",
    ]);
    assert_ok(&out);
    let meta = sidecar(&sb.path("edit.wav"));
    assert_eq!(meta["sampler"], "dpm++2m-sde");
    assert!(meta["command"]
        .as_str()
        .unwrap()
        .contains("--sampler dpm++2m-sde"));

    // A cue file may name the sampler and the steps per cue.
    std::fs::write(
        sb.path("cues.csv"),
        format!("prompt,seconds,sampler,steps\ndraft,{seconds},dpm++2m,2\nfinal,{seconds},,\n"),
    )
    .unwrap();
    assert_ok(&sb.run(&[
        "generate",
        "--batch",
        "cues.csv",
        "--out-dir",
        "cues",
        "--model",
        &model.to_string_lossy(),
        "--steps",
        "3",
        "--sampler",
        "unipc",
    ]));
    let draft = sidecar(&sb.path("cues/001-draft.wav"));
    assert_eq!(
        (draft["sampler"].as_str(), draft["steps"].as_u64()),
        (Some("dpm++2m"), Some(2))
    );
    let fin = sidecar(&sb.path("cues/002-final.wav"));
    assert_eq!(
        (fin["sampler"].as_str(), fin["steps"].as_u64()),
        (Some("unipc"), Some(3))
    );
}
