//! Hostile inputs through the real binary: absurd or misspelt model configs (refused by name,
//! the same way by `models verify` and by loading), WAVs at impossible rates or that are not
//! files, and a failing `models convert` (which must leave nothing behind).

mod sandbox;
#[path = "../../engine/tests/support/mod.rs"]
mod support;

use sandbox::{copy_dir, gen, write_wav, Sandbox};
use support::{assert_fails, assert_ok, model_tiny, text};

/// A copy of the tiny model with one edit to its config.yml.
fn patched_model(sb: &Sandbox, name: &str, edit: impl Fn(&str) -> String) -> String {
    let dir = sb.path(name);
    copy_dir(&model_tiny(), &dir);
    let cfg = dir.join("config.yml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let patched = edit(&text);
    assert_ne!(patched, text, "{name}: the edit changed nothing");
    std::fs::write(&cfg, patched).unwrap();
    dir.to_string_lossy().into_owned()
}

#[test]
fn absurd_configs_are_refused_by_name_in_verify_and_generate() {
    let sb = Sandbox::new();
    // (name, text in config.yml, its replacement, what the error must say)
    let cases = [
        (
            "long",
            "max_length: 16",
            "max_length: 100000000",
            "text_encoder: max_length = 100000000 is out of range (1..=512",
        ),
        ("depht", "  depth: 4", "  depht: 4", "unknown field `depht`"),
        (
            "embed0",
            "embed_dim: 20",
            "embed_dim: 0",
            "embed_dim = 0 is out of range",
        ),
        (
            "heads",
            "num_heads: 2",
            "num_heads: 100000",
            "num_heads = 100000 is out of range",
        ),
        ("rate", "sr: 24000", "sr: 3", "sr = 3 is out of range"),
        (
            "ratio",
            "mlp_ratio: 4.0",
            "mlp_ratio: .inf",
            "mlp_ratio = inf is out of range",
        ),
        (
            "diffkey",
            "clip_sample: false",
            "clip_sampel: false",
            "unknown key(s) 'clip_sampel'",
        ),
        (
            "topkey",
            "model_name:",
            "modle_name:",
            "unknown field `modle_name`",
        ),
    ];
    for (name, from, to, needle) in cases {
        let model = patched_model(&sb, name, |t| t.replace(from, to));
        let out = sb.run(&["models", "verify", "--model", &model]);
        assert_fails(&out, needle);
        assert!(!text(&out.stdout).contains("all parts OK"), "{name}");
        let out = sb.run(&gen(
            std::path::Path::new(&model),
            &format!("{name}.wav"),
            1,
        ));
        assert_fails(&out, needle);
    }
}

#[test]
fn input_wavs_with_impossible_rates_or_kinds_are_named() {
    let sb = Sandbox::new();
    let model = model_tiny().to_string_lossy().into_owned();
    let edit = |input: &str| {
        vec![
            "edit".to_string(),
            input.into(),
            "--start".into(),
            "0".into(),
            "--length".into(),
            "0.1".into(),
            "--prompt".into(),
            "rain".into(),
            "--model".into(),
            model.clone(),
            "--steps".into(),
            "1".into(),
            "-o".into(),
            "out.wav".into(),
        ]
    };
    for rate in [1u32, 7, 999, 2_000_000] {
        let p = sb.path(&format!("r{rate}.wav"));
        write_wav(&p, rate, 64);
        assert_fails(
            &sb.run(&edit(p.to_str().unwrap())),
            &format!("sample rate {rate} Hz is outside the supported 1000..=1536000 Hz"),
        );
        let mut args = gen(&model_tiny(), "c.wav", 1);
        args.extend(["--control".into(), p.to_string_lossy().into_owned()]);
        assert_fails(&sb.run(&args), &format!("sample rate {rate} Hz"));
    }
    std::fs::create_dir(sb.path("dir.wav")).unwrap();
    assert_fails(&sb.run(&edit("dir.wav")), "is a folder, not a WAV file");
    assert_fails(&sb.run(&edit("/dev/zero")), "not a regular file");
    assert_fails(&sb.run(&edit("missing.wav")), "no such file");
    // The lowest accepted rate works end to end.
    write_wav(&sb.path("low.wav"), 1000, 1000);
    assert_ok(&sb.run(&edit("low.wav")));
    assert_eq!(
        hound::WavReader::open(sb.path("out.wav"))
            .unwrap()
            .spec()
            .sample_rate,
        1000
    );
}

#[test]
fn failed_convert_leaves_nothing_and_an_occupied_folder_is_refused_first() {
    let sb = Sandbox::new();
    let broken = sb.path("broken");
    copy_dir(&model_tiny(), &broken);
    std::fs::write(broken.join("vae/1m.pt"), b"not a checkpoint").unwrap();
    let out = sb.run(&["models", "convert", "--model", "broken", "--out", "conv"]);
    assert_fails(&out, "1m.pt");
    assert!(
        !sb.path("conv").exists(),
        "a failed convert left its folder"
    );
    assert!(sb.leftovers().is_empty(), "{:?}", sb.leftovers());

    std::fs::create_dir(sb.path("full")).unwrap();
    std::fs::write(sb.path("full/keep.txt"), b"mine").unwrap();
    let model = model_tiny().to_string_lossy().into_owned();
    let out = sb.run(&["models", "convert", "--model", &model, "--out", "full"]);
    assert_fails(&out, "not an empty folder");
    assert!(!text(&out.stderr).contains("DiT:"), "checked after loading");
    assert_eq!(std::fs::read(sb.path("full/keep.txt")).unwrap(), b"mine");
}

/// A Hugging Face cache holding a garbage 8 kB "checkpoint" is reported damaged, with the file
/// to delete, instead of listed as installed.
#[test]
fn list_reports_a_damaged_cache_and_how_to_repair_it() {
    let sb = Sandbox::new();
    let hub = sb.path("home/hf/hub");
    let snap = |repo: &str| {
        let d = hub.join(repo);
        std::fs::create_dir_all(d.join("refs")).unwrap();
        std::fs::write(d.join("refs/main"), "abc").unwrap();
        let s = d.join("snapshots/abc");
        std::fs::create_dir_all(&s).unwrap();
        s
    };
    let ez = snap("models--OpenSound--EzAudio");
    let tiny = model_tiny();
    for (rel, bytes) in [
        ("ckpts/s3/ezaudio_s3_l.pt", vec![0x42u8; 8192]),
        (
            "ckpts/vae/1m.pt",
            std::fs::read(tiny.join("vae/1m.pt")).unwrap(),
        ),
        (
            "ckpts/vae/config.json",
            std::fs::read(tiny.join("vae/config.json")).unwrap(),
        ),
    ] {
        std::fs::create_dir_all(ez.join(rel).parent().unwrap()).unwrap();
        std::fs::write(ez.join(rel), bytes).unwrap();
    }
    let te = snap("models--google--flan-t5-large");
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(tiny.join("text_encoder").join(f), te.join(f)).unwrap();
    }
    let out = sb.run(&["models", "list"]);
    assert_ok(&out);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("EzAudio-L") && stdout.contains("DAMAGED"),
        "{stdout}"
    );
    assert!(stdout.contains("ezaudio_s3_l.pt"), "{stdout}");
    assert!(
        stdout.contains("repair: delete") && stdout.contains("models fetch l"),
        "{stdout}"
    );
    assert!(
        stdout.contains("No EzAudio models are installed"),
        "{stdout}"
    );
}
