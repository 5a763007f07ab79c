//! Oobleck VAE against `vae/` (tiny random-weight model from the official code), the
//! `model-tiny/vae` checkpoint and the real checkpoint layout.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor};
use ezaudio_engine::model::vae::{Oobleck, VaeConfig};
use ezaudio_engine::weights::{Checkpoint, LayoutProbe};
use ezaudio_engine::Error;

use crate::common::*;

fn config() -> VaeConfig {
    VaeConfig::from_file(&fixture("vae/config.json")).expect("vae/config.json")
}

fn checkpoint(rel: &str) -> Checkpoint {
    Checkpoint::load(&fixture(rel), Some("state_dict"), Some("autoencoder.")).expect(rel)
}

fn model(ckpt: &Checkpoint, cfg: &VaeConfig) -> Oobleck {
    let vae = Oobleck::new(
        cfg,
        ckpt.var_builder(DType::F32, &crate::common::test_device()),
    )
    .expect("build VAE");
    ckpt.ensure_all_used(|_| false)
        .expect("every checkpoint tensor used");
    vae
}

/// Debug tensors `<prefix>.layers.<i>.out`, by index.
fn layer_outputs(debug: &HashMap<String, Tensor>, prefix: &str) -> BTreeMap<usize, Tensor> {
    let head = format!("{prefix}.layers.");
    debug
        .iter()
        .filter_map(|(k, t)| {
            let i = k.strip_prefix(&head)?.strip_suffix(".out")?.parse().ok()?;
            Some((i, t.clone()))
        })
        .collect()
}

fn check_trace(what: &str, trace: &[Tensor], reference: &BTreeMap<usize, Tensor>) -> f32 {
    assert!(
        !reference.is_empty(),
        "vae/debug.safetensors has no {what}.layers.*.out tensors"
    );
    let mut worst = 0f32;
    for (i, r) in reference {
        let port = trace
            .get(*i)
            .unwrap_or_else(|| panic!("{what}.layers.{i} does not exist in the port"));
        assert_close(&format!("{what}.layers.{i}.out"), port, r, TOL_FORWARD);
        worst = worst.max(rel_error(port, r));
    }
    worst
}

fn check_decode(vae: &Oobleck) -> f32 {
    let io = load("vae/decode.safetensors");
    let debug = load("vae/debug.safetensors");
    let latent = get(&io, "latent");
    let (audio, trace) = vae.decode_traced(latent).unwrap();
    let worst = check_trace("decoder", &trace, &layer_outputs(&debug, "decoder"));
    assert_close("decode audio", &audio, get(&io, "audio"), TOL_FORWARD);
    let plain = vae.decode(latent).unwrap();
    assert_close("decode (untraced)", &plain, &audio, 0.0);
    worst.max(rel_error(&audio, get(&io, "audio")))
}

fn check_encode(vae: &Oobleck) -> f32 {
    let io = load("vae/encode.safetensors");
    let debug = load("vae/debug.safetensors");
    let audio = get(&io, "audio");
    let (out, trace) = vae.encode_traced(audio).unwrap();
    assert_close("encoder_out", &out, get(&io, "encoder_out"), TOL_FORWARD);
    let mut worst = check_trace("encoder", &trace, &layer_outputs(&debug, "encoder"));

    let mean = vae.encode_mean(audio).unwrap();
    let ref_mean = get(&io, "mean");
    assert_close("encode mean", &mean, ref_mean, TOL_FORWARD);
    worst = worst.max(rel_error(&mean, ref_mean));

    // The sampled latent with recorded noise if the fixture has it, else a fixed pattern; the
    // reference is mean + stdev * noise from the recorded stdev.
    let noise = match io.get("noise") {
        Some(n) => n.clone(),
        None => {
            let n = ref_mean.elem_count();
            let t = Tensor::arange(0u32, n as u32, &Device::Cpu)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            (t * 0.7)
                .unwrap()
                .sin()
                .unwrap()
                .affine(1.5, 0.0)
                .unwrap()
                .reshape(ref_mean.dims())
                .unwrap()
        }
    };
    let reference = (ref_mean + get(&io, "stdev").mul(&noise).unwrap()).unwrap();
    let sample = vae.encode_sample(audio, &noise).unwrap();
    assert_close("encode sample", &sample, &reference, TOL_FORWARD);
    worst.max(rel_error(&sample, &reference))
}

#[test]
fn vae_decode_matches_reference() {
    let vae = model(&checkpoint("vae/vae.pt"), &config());
    let worst = check_decode(&vae);
    eprintln!("vae decode: max rel error {worst:e}");
}

#[test]
fn vae_encode_matches_reference() {
    let vae = model(&checkpoint("vae/vae.pt"), &config());
    let worst = check_encode(&vae);
    eprintln!("vae encode: max rel error {worst:e}");
}

/// The device-generic layers, what a GPU runs (candle's convolutions, the padding-0 transposed
/// convolution + trim, op-by-op Snake), against the reference: on the CPU in f64, where none of
/// the CPU kernels of `kernels/` takes part.
#[test]
fn vae_generic_path_matches_reference() {
    let ckpt = checkpoint("vae/vae.pt");
    let vae = Oobleck::new(&config(), ckpt.var_builder(DType::F64, &Device::Cpu)).unwrap();
    let worst = check_decode(&vae).max(check_encode(&vae));
    eprintln!("vae generic path (f64, CPU): max rel error {worst:e}");
}

#[test]
fn vae_effective_weights_match_reference() {
    let vae = model(&checkpoint("vae/vae.pt"), &config());
    let weights: HashMap<String, Tensor> = vae.effective_weights().into_iter().collect();
    let debug = load("vae/debug.safetensors");
    let mut n = 0;
    let mut worst = 0f32;
    for (k, r) in &debug {
        let Some(name) = k.strip_suffix(".weight_effective") else {
            continue;
        };
        let w = weights
            .get(name)
            .unwrap_or_else(|| panic!("the port has no convolution '{name}'"));
        assert_close(k, w, r, TOL_FORWARD);
        worst = worst.max(rel_error(w, r));
        n += 1;
    }
    assert!(
        n > 0,
        "vae/debug.safetensors has no *.weight_effective tensors"
    );
    eprintln!("vae weight norm: {n} weights, max rel error {worst:e}");
}

#[test]
fn vae_safetensors_twin_matches_reference() {
    let vae = model(&checkpoint("vae/vae.safetensors"), &config());
    check_decode(&vae);
    check_encode(&vae);
}

#[test]
fn vae_decoder_only_skips_the_encoder() {
    let ckpt = checkpoint("vae/vae.pt");
    let cfg = config();
    let vae = Oobleck::new_decoder_only(
        &cfg,
        ckpt.var_builder(DType::F32, &crate::common::test_device()),
    )
    .unwrap();
    let unused = ckpt.unused();
    assert!(
        !unused.is_empty() && unused.iter().all(|n| n.starts_with("encoder.")),
        "{unused:?}"
    );
    ckpt.ensure_all_used(|n| n.starts_with("encoder.")).unwrap();
    check_decode(&vae);
    let audio = get(&load("vae/encode.safetensors"), "audio").clone();
    assert!(matches!(
        vae.encode_mean(&audio),
        Err(Error::Unsupported(_))
    ));
}

#[test]
fn vae_rejects_bad_inputs() {
    let vae = model(&checkpoint("vae/vae.pt"), &config());
    let cfg = config();
    let wrong = Tensor::zeros((1, cfg.latent_channels() + 1, 4), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(vae.decode(&wrong), Err(Error::InvalidInput(_))));
    let audio = get(&load("vae/encode.safetensors"), "audio").clone();
    let mean = vae.encode_mean(&audio).unwrap();
    let bad_noise = mean.narrow(2, 0, 1).unwrap();
    assert!(matches!(
        vae.encode_sample(&audio, &bad_noise),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn vae_config_reads_fixture_and_rejects_bad_files() {
    let cfg = config();
    let json = read_json("vae/config.json");
    let dec = &json["model"]["decoder"]["config"];
    let strides: usize = dec["strides"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .product();
    assert_eq!(cfg.samples_per_latent(), strides);
    assert_eq!(
        cfg.latent_channels(),
        dec["latent_dim"].as_u64().unwrap() as usize
    );
    assert_eq!(
        cfg.sample_rate(),
        json["sample_rate"].as_u64().unwrap() as usize
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("config.json");
    std::fs::write(&bad, "{ not json").unwrap();
    assert!(matches!(
        VaeConfig::from_file(&bad),
        Err(Error::Config { .. })
    ));
    std::fs::write(&bad, r#"{"model": {"latent_dim": 8}}"#).unwrap();
    let err = VaeConfig::from_file(&bad).unwrap_err();
    assert!(
        matches!(err, Error::Config { .. }) && err.to_string().contains("decoder"),
        "{err}"
    );
    let mut v = json.clone();
    v["model"]["decoder"]["config"]["use_nearest_upsample"] = true.into();
    std::fs::write(&bad, v.to_string()).unwrap();
    assert!(matches!(
        VaeConfig::from_file(&bad),
        Err(Error::Config { .. })
    ));
}

#[test]
fn vae_model_tiny_checkpoint_builds() {
    let cfg = VaeConfig::from_file(&fixture("model-tiny/vae/config.json")).unwrap();
    let vae = model(&checkpoint("model-tiny/vae/1m.pt"), &cfg);
    let latent = Tensor::randn(0f32, 1.0, (1, cfg.latent_channels(), 3), &Device::Cpu).unwrap();
    let audio = vae.decode(&latent).unwrap();
    assert_eq!(audio.dims(), &[1, 1, 3 * cfg.samples_per_latent()]);
    let back = vae.encode_mean(&audio).unwrap();
    assert_eq!(back.dims(), latent.dims());
}

#[test]
fn vae_real_layout() {
    let json = read_json("real-layout.json");
    let entry = &json["vae"];
    let prefix = entry["key_prefix"].as_str().unwrap_or("");
    let tensors = entry["tensors"]
        .as_object()
        .expect("real-layout.json: vae.tensors");
    let expected: BTreeMap<String, Vec<usize>> = tensors
        .iter()
        .map(|(k, v)| {
            let dims = v
                .as_array()
                .expect("shape list")
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            (k.strip_prefix(prefix).unwrap_or(k).to_string(), dims)
        })
        .collect();
    let cfg = VaeConfig::oobleck_24k();
    cfg.validate().unwrap();
    assert_eq!(
        (
            cfg.samples_per_latent(),
            cfg.latent_channels(),
            cfg.sample_rate()
        ),
        (480, 128, 24000)
    );
    let probe = LayoutProbe::new(expected);
    Oobleck::new(&cfg, probe.var_builder(DType::F32, &Device::Cpu))
        .expect("build the real-size VAE");
    let problems = probe.mismatches();
    assert!(
        problems.is_empty(),
        "{} layout problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn vae_f64_uses_the_generic_path() {
    // Float64 skips the fused CPU SnakeBeta, so this checks the tensor-op path and the dtype casts.
    let ckpt = checkpoint("vae/vae.pt");
    let vae = Oobleck::new(
        &config(),
        ckpt.var_builder(DType::F64, &crate::common::test_device()),
    )
    .unwrap();
    let io = load("vae/decode.safetensors");
    let latent = get(&io, "latent").to_dtype(DType::F64).unwrap();
    let audio = vae.decode(&latent).unwrap();
    assert_eq!(audio.dtype(), DType::F64);
    assert_close("decode f64", &audio, get(&io, "audio"), TOL_FORWARD);
}

/// Real-size decode speed on this machine with random weights:
/// `cargo test -p ezaudio-engine --test parity vae_real_size_timing -- --ignored --nocapture`
/// (`VAE_FRAMES`, default 50 = 1 s of audio).
#[test]
#[ignore]
fn vae_real_size_timing() {
    let json = read_json("real-layout.json");
    let prefix = json["vae"]["key_prefix"].as_str().unwrap_or("").to_string();
    let tensors: HashMap<String, Tensor> = json["vae"]["tensors"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let dims: Vec<usize> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let t = Tensor::randn(0f32, 0.1, dims, &Device::Cpu).unwrap();
            (k.strip_prefix(prefix.as_str()).unwrap_or(k).to_string(), t)
        })
        .collect();
    let ckpt = Checkpoint::from_tensors("random", tensors);
    let cfg = VaeConfig::oobleck_24k();
    let t0 = std::time::Instant::now();
    let vae = Oobleck::new_decoder_only(
        &cfg,
        ckpt.var_builder(DType::F32, &crate::common::test_device()),
    )
    .unwrap();
    eprintln!("build: {:?}", t0.elapsed());
    let frames: usize = std::env::var("VAE_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let latent =
        Tensor::randn(0f32, 1.0, (1, cfg.latent_channels(), frames), &Device::Cpu).unwrap();
    let t0 = std::time::Instant::now();
    let audio = vae.decode(&latent).unwrap();
    eprintln!(
        "decode {frames} frames -> {:?}: {:?}",
        audio.dims(),
        t0.elapsed()
    );
}
