//! EzAudio-ControlNet (energy) parity on `controlnet/`: the energy extractor and conditioner,
//! single ControlNet + UDiT forwards, the debug intermediates, the controlled generation end to
//! end (paired with `model-tiny/`), and the real checkpoint's layout.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor};
use ezaudio_engine::install::{ControlNetFileConfig, ControlNetFolder, ModelFolder};
use ezaudio_engine::model::controlnet::{ControlNetConfig, DitControlNet};
use ezaudio_engine::model::dit::{DitConfig, MaskDit, Recorder};
use ezaudio_engine::model::energy::{prepare_reference, EnergyConditioner};
use ezaudio_engine::pipeline::{ControlInput, ControlNet, Noise, Pipeline, RunOptions};
use ezaudio_engine::weights::{Checkpoint, LayoutProbe};
use ezaudio_engine::{Recipe, Result};

use crate::common::{
    self, assert_close, fixture, fixtures_dir, get, rel_error, TOL_FORWARD, TOL_PIPELINE,
};

fn yml() -> ControlNetFileConfig {
    let p = fixture("controlnet/energy_tiny.yml");
    ControlNetFileConfig::from_file(&p).unwrap_or_else(|e| panic!("{e}"))
}

/// ControlNet skips for one call: the condition embedded and the context prepared for it alone.
fn skips_once(
    net: &DitControlNet,
    (input, t, ctx, mask): (&Tensor, &Tensor, &Tensor, &Tensor),
    cond: &Tensor,
    scale: f64,
    mut rec: Option<&mut Recorder>,
) -> Result<Vec<Tensor>> {
    let embedded = net.embed_condition(cond, rec.as_deref_mut())?;
    let prepared = net.prepare_context(ctx, mask, rec.as_deref_mut())?;
    net.forward(input, t, &prepared, &embedded, scale, rec)
}

/// The UDiT for one call, on a prepared input, with optional ControlNet skips.
fn unet_once(
    dit: &MaskDit,
    (input, t, ctx, mask): (&Tensor, &Tensor, &Tensor, &Tensor),
    skips: Option<&[Tensor]>,
    mut rec: Option<&mut Recorder>,
) -> Result<Tensor> {
    let prepared = dit.prepare_context(ctx, mask, rec.as_deref_mut())?;
    dit.forward(input, t, &prepared, skips, rec)
}

fn check(what: &str, port: &Tensor, reference: &Tensor, tol: f32) {
    eprintln!("{what}: rel {:e}", rel_error(port, reference));
    assert_close(what, port, reference, tol);
}

fn vec1(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn conditioner() -> EnergyConditioner {
    EnergyConditioner::new(&yml().conditioner).unwrap_or_else(|e| panic!("{e}"))
}

/// Strict loading of `file` (`.pt` with container key 'model', or `.safetensors`).
fn controlnet(file: &str) -> DitControlNet {
    let cfg = yml();
    let container = file.ends_with(".pt").then_some("model");
    let ckpt = Checkpoint::load(&fixture(file), container, None).unwrap_or_else(|e| panic!("{e}"));
    let net = DitControlNet::new(
        &cfg.controlnet,
        &cfg.model,
        ckpt.var_builder(DType::F32, &crate::common::test_device()),
    )
    .unwrap_or_else(|e| panic!("building the ControlNet from {file}: {e}"));
    ckpt.ensure_all_used(|_| false)
        .unwrap_or_else(|e| panic!("strict loading of {file}: {e}"));
    net
}

/// The paired MaskDiT of `model-tiny/`, built from the ControlNet yml's `model:` section.
fn unet() -> MaskDit {
    let folder =
        ModelFolder::open(&fixtures_dir().join("model-tiny")).unwrap_or_else(|e| panic!("{e}"));
    let ckpt = Checkpoint::load(&folder.dit, Some("model"), None).unwrap_or_else(|e| panic!("{e}"));
    let dit = MaskDit::new(
        &yml().model,
        ckpt.var_builder(DType::F32, &crate::common::test_device()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    ckpt.ensure_all_used(|_| false)
        .unwrap_or_else(|e| panic!("{e}"));
    dit
}

#[test]
fn controlnet_energy_extractor_matches() {
    let cond = conditioner();
    let e = common::load("controlnet/energy.safetensors");
    let mut clips: Vec<&str> = e.keys().filter_map(|k| k.strip_suffix(".audio")).collect();
    clips.sort();
    assert!(
        !clips.is_empty(),
        "energy.safetensors holds no '<clip>.audio'"
    );
    for clip in clips {
        let audio = vec1(get(&e, &format!("{clip}.audio")));
        let frames = cond
            .extract(&audio)
            .unwrap_or_else(|e| panic!("{clip}: {e}"));
        let as_ref = |name: &str, v: &[f32]| {
            let r = get(&e, &format!("{clip}.{name}"));
            let t = Tensor::from_slice(v, r.dims(), &Device::Cpu).unwrap_or_else(|err| {
                panic!("{clip}.{name}: {} values vs {:?}: {err}", v.len(), r.dims())
            });
            check(&format!("{clip}.{name}"), &t, r, TOL_FORWARD);
        };
        as_ref("frame_power", &frames.frame_power);
        as_ref("gain_db", &frames.gain_db);
        as_ref("energy", &frames.energy);
        let c = cond
            .condition(&[&audio], &crate::common::test_device())
            .unwrap();
        check(
            &format!("{clip}.condition"),
            &c,
            get(&e, &format!("{clip}.condition")),
            TOL_FORWARD,
        );
    }

    // The batched extractor of forward.safetensors: each item normalised by its own maximum.
    let f = common::load("controlnet/forward.safetensors");
    let audio = get(&f, "condition_audio");
    let rows: Vec<Vec<f32>> = (0..audio.dim(0).unwrap())
        .map(|i| vec1(&audio.get(i).unwrap()))
        .collect();
    let refs: Vec<&[f32]> = rows.iter().map(|r| r.as_slice()).collect();
    let c = cond
        .condition(&refs, &crate::common::test_device())
        .unwrap();
    check("forward.condition", &c, get(&f, "condition"), TOL_FORWARD);
}

#[test]
fn controlnet_forward_matches() {
    let f = common::load("controlnet/forward.safetensors");
    let dit = unet();
    let (t, ctx, mask, cond) = (
        get(&f, "timesteps"),
        get(&f, "context"),
        get(&f, "context_mask"),
        get(&f, "condition"),
    );
    let input = dit.prepare_input(get(&f, "x"), None, None).unwrap();
    check("unet_input", &input, get(&f, "unet_input"), TOL_FORWARD);
    let input = get(&f, "unet_input");
    let n_skips = f
        .keys()
        .filter(|k| k.starts_with("controlnet_skips."))
        .count();
    assert!(n_skips > 0, "forward.safetensors holds no controlnet_skips");

    for file in [
        "controlnet/controlnet.safetensors",
        "controlnet/controlnet.pt",
    ] {
        let net = controlnet(file);
        assert_eq!(net.num_skips(), n_skips, "{file}: number of skips");
        let skips = skips_once(&net, (input, t, ctx, mask), cond, 1.0, None)
            .unwrap_or_else(|e| panic!("{e}"));
        for (i, s) in skips.iter().enumerate() {
            check(
                &format!("{file}: controlnet_skips.{i}"),
                s,
                get(&f, &format!("controlnet_skips.{i}")),
                TOL_FORWARD,
            );
        }
        let out = unet_once(&dit, (input, t, ctx, mask), Some(&skips), None).unwrap();
        check(&format!("{file}: out"), &out, get(&f, "out"), TOL_FORWARD);

        let scale = vec1(get(&f, "conditioning_scale_alt"))[0] as f64;
        let skips_alt = skips_once(&net, (input, t, ctx, mask), cond, scale, None).unwrap();
        let out_alt = unet_once(&dit, (input, t, ctx, mask), Some(&skips_alt), None).unwrap();
        check(
            &format!("{file}: out_cscale_alt"),
            &out_alt,
            get(&f, "out_cscale_alt"),
            TOL_FORWARD,
        );

        // A 0-d timestep, broadcast to the batch by both networks.
        let t0 = get(&f, "timestep_scalar").reshape(()).unwrap();
        let skips0 = skips_once(&net, (input, &t0, ctx, mask), cond, 1.0, None).unwrap();
        for (i, s) in skips0.iter().enumerate() {
            let name = format!("scalar_t.controlnet_skips.{i}");
            check(&format!("{file}: {name}"), s, get(&f, &name), TOL_FORWARD);
        }
        let out0 = unet_once(&dit, (input, &t0, ctx, mask), Some(&skips0), None).unwrap();
        check(
            &format!("{file}: scalar_t.out"),
            &out0,
            get(&f, "scalar_t.out"),
            TOL_FORWARD,
        );

        // Embedding the condition and preparing the context once, then reusing both for two
        // steps, gives the same skips as a call of its own.
        let embedded = net.embed_condition(cond, None).unwrap();
        let prepared = net.prepare_context(ctx, mask, None).unwrap();
        for _ in 0..2 {
            let again = net
                .forward(input, t, &prepared, &embedded, 1.0, None)
                .unwrap();
            assert_eq!(again.len(), skips.len());
            for (a, b) in again.iter().zip(&skips) {
                assert_eq!(
                    rel_error(a, b),
                    0.0,
                    "{file}: a reused prepared context differs from a fresh one"
                );
            }
        }
        // A prepared context of another batch is refused, not broadcast.
        let single = net
            .prepare_context(
                &ctx.narrow(0, 0, 1).unwrap(),
                &mask.narrow(0, 0, 1).unwrap(),
                None,
            )
            .unwrap();
        if ctx.dim(0).unwrap() > 1 {
            assert!(net
                .forward(input, t, &single, &embedded, 1.0, None)
                .is_err());
        }
    }
    let out = unet_once(&dit, (input, t, ctx, mask), None, None).unwrap();
    check(
        "out_no_control",
        &out,
        get(&f, "out_no_control"),
        TOL_FORWARD,
    );
}

#[test]
fn controlnet_debug_intermediates_match() {
    let f = common::load("controlnet/forward.safetensors");
    let debug = common::load("controlnet/debug.safetensors");
    let dit = unet();
    let net = controlnet("controlnet/controlnet.safetensors");
    let (input, t, ctx, mask) = (
        get(&f, "unet_input"),
        get(&f, "timesteps"),
        get(&f, "context"),
        get(&f, "context_mask"),
    );
    let mut rec = Vec::new();
    let skips = skips_once(
        &net,
        (input, t, ctx, mask),
        get(&f, "condition"),
        1.0,
        Some(&mut Recorder::new(&mut rec)),
    )
    .unwrap();
    let mut rec_unet = Vec::new();
    unet_once(
        &dit,
        (input, t, ctx, mask),
        Some(&skips),
        Some(&mut Recorder::new(&mut rec_unet)),
    )
    .unwrap();
    let ours: HashMap<String, Tensor> = rec.into_iter().collect();
    let ours_unet: HashMap<String, Tensor> = rec_unet.into_iter().collect();
    let mut names: Vec<&String> = debug.keys().collect();
    names.sort();
    assert!(!names.is_empty());
    for name in names {
        let port = match name.strip_prefix("unet.") {
            Some(rest) => ours_unet.get(rest),
            None => ours.get(name.as_str()),
        }
        .unwrap_or_else(|| panic!("debug tensor '{name}' is not recorded by the port"));
        check(
            &format!("debug {name}"),
            port,
            get(&debug, name),
            TOL_FORWARD,
        );
    }
}

fn settings(run: &serde_json::Value) -> Recipe {
    let num = |k: &str| {
        run[k]
            .as_f64()
            .unwrap_or_else(|| panic!("generate.json has no numeric '{k}'"))
    };
    Recipe {
        prompt: run["prompt"].as_str().expect("prompt").to_string(),
        negative: run["negative_prompt"].as_str().unwrap_or("").to_string(),
        seconds: num("seconds") as f32,
        steps: num("ddim_steps") as u32,
        sampler: Default::default(),
        guidance: num("guidance_scale") as f32,
        rescale: num("guidance_rescale") as f32,
        eta: num("eta") as f32,
        seed: num("seed") as u64,
    }
}

#[test]
fn controlnet_generation_matches_the_reference() {
    let run = common::read_json("controlnet/generate.json");
    let g = common::load("controlnet/generate.safetensors");
    let folder =
        ModelFolder::open(&fixtures_dir().join("model-tiny")).unwrap_or_else(|e| panic!("{e}"));
    let pipe = Pipeline::load(&folder, &crate::common::test_device(), DType::F32)
        .unwrap_or_else(|e| panic!("{e}"));
    let cn_folder = ControlNetFolder::open(&fixtures_dir().join("controlnet"))
        .unwrap_or_else(|e| panic!("{e}"));
    let cn = ControlNet::load(&cn_folder, &pipe).unwrap_or_else(|e| panic!("{e}"));

    let settings = settings(&run);
    let seconds = run["seconds"].as_f64().expect("seconds");
    let gate = run["surpass_noise"].as_f64().expect("surpass_noise") as f32;
    let scale = run["conditioning_scale"]
        .as_f64()
        .expect("conditioning_scale");
    let raw = vec1(get(&g, "reference_audio_raw"));

    // Pre-processing and condition.
    let reference = get(&g, "reference_audio");
    let prepared = prepare_reference(&raw, gate, reference.elem_count()).unwrap();
    let ours = Tensor::from_slice(&prepared.samples, reference.dims(), &Device::Cpu).unwrap();
    check("reference_audio", &ours, reference, TOL_FORWARD);
    let control = ControlInput::Reference {
        audio: raw.clone(),
        surpass_noise: gate,
    };
    let (condition, keep) = pipe.control_condition(&cn, seconds, &control).unwrap();
    check("condition", &condition, get(&g, "condition"), TOL_FORWARD);
    assert_eq!(keep, Some(raw.len()));

    // Step 0 pieces: the CFG batch with the condition duplicated.
    let (text, _) = pipe.encode_text(&[settings.prompt.as_str()]).unwrap();
    check("text_hidden", &text, get(&g, "text_hidden"), TOL_PIPELINE);
    let (ctx, ctx_mask) = pipe
        .encode_text(&[settings.prompt.as_str(), settings.negative.as_str()])
        .unwrap();
    let x0 = get(&g, "step0.latents_in");
    let input = pipe
        .dit()
        .prepare_input(&Tensor::cat(&[x0, x0], 0).unwrap(), None, None)
        .unwrap();
    check(
        "step0.unet_input",
        &input,
        get(&g, "step0.unet_input"),
        TOL_FORWARD,
    );
    let t0 = Tensor::new(
        run["timesteps"][0].as_i64().expect("timesteps"),
        &Device::Cpu,
    )
    .unwrap();
    let cond2 = Tensor::cat(&[&condition, &condition], 0).unwrap();
    let skips = skips_once(
        cn.net(),
        (&input, &t0, &ctx, &ctx_mask),
        &cond2,
        scale,
        None,
    )
    .unwrap();
    for (i, s) in skips.iter().enumerate() {
        let name = format!("step0.controlnet_skips.{i}");
        check(&name, s, get(&g, &name), TOL_FORWARD);
    }

    // End to end with the recorded initial noise.
    let init = get(&g, "init_noise");
    let steps: Vec<Tensor> = (0..settings.steps as usize)
        .filter_map(|i| g.get(&format!("step{i}.variance_noise")).cloned())
        .collect();
    let out = pipe
        .generate_controlled(
            &cn,
            &settings,
            &control,
            scale,
            &RunOptions::traced(Noise::Recorded {
                init,
                steps: &steps,
            }),
            &mut |_| true,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let timesteps: Vec<i64> = vec1(&get(&g, "timesteps").to_dtype(DType::F32).unwrap())
        .iter()
        .map(|&t| t as i64)
        .collect();
    assert_eq!(
        pipe.scheduler().timesteps(settings.steps as usize).unwrap(),
        timesteps,
        "timesteps"
    );
    assert_eq!(out.trace.len(), timesteps.len(), "number of steps");
    for (i, step) in out.trace.iter().enumerate() {
        let s = |k: &str| format!("step{i}.{k}");
        check(
            &s("latents_in"),
            &step.latents_in,
            get(&g, &s("latents_in")),
            TOL_PIPELINE,
        );
        check(
            &s("out_text"),
            &step.out_text,
            get(&g, &s("out_text")),
            TOL_PIPELINE,
        );
        let uncond = step.out_uncond.as_ref().expect("CFG batch");
        check(
            &s("out_uncond"),
            uncond,
            get(&g, &s("out_uncond")),
            TOL_PIPELINE,
        );
        check(
            &s("out_pred"),
            &step.out_pred,
            get(&g, &s("out_pred")),
            TOL_PIPELINE,
        );
        check(
            &s("latents_out"),
            &step.latents_out,
            get(&g, &s("latents_out")),
            TOL_PIPELINE,
        );
    }
    check(
        "final_latent",
        &out.final_latent,
        get(&g, "final_latent"),
        TOL_PIPELINE,
    );

    // The API returns the waveform cut to the reference's length.
    let trimmed = vec1(
        &get(&g, "output_trimmed_length")
            .to_dtype(DType::F32)
            .unwrap(),
    )[0] as usize;
    assert_eq!(out.samples.len(), trimmed, "output length");
    let wave = get(&g, "waveform")
        .flatten_all()
        .unwrap()
        .narrow(0, 0, trimmed)
        .unwrap();
    let ours = Tensor::from_slice(&out.samples, trimmed, &Device::Cpu).unwrap();
    check("waveform (trimmed)", &ours, &wave, TOL_PIPELINE);
}

#[test]
fn controlnet_envelope_generation_runs() {
    // No reference: a drawn envelope drives the same loop (shape and finiteness only).
    let folder =
        ModelFolder::open(&fixtures_dir().join("model-tiny")).unwrap_or_else(|e| panic!("{e}"));
    let pipe = Pipeline::load(&folder, &crate::common::test_device(), DType::F32)
        .unwrap_or_else(|e| panic!("{e}"));
    let cn = ControlNet::load(
        &ControlNetFolder::open(&fixtures_dir().join("controlnet")).unwrap(),
        &pipe,
    )
    .unwrap();
    let s = Recipe {
        steps: 2,
        seconds: 0.6,
        ..Recipe::new("rain")
    };
    let control = ControlInput::Envelope(vec![(0.0, 0.0), (0.3, 1.0), (0.6, 0.2)]);
    let out = pipe
        .generate_controlled(&cn, &s, &control, 1.0, &RunOptions::default(), &mut |_| {
            true
        })
        .unwrap();
    assert!(
        out.trace.is_empty(),
        "a production run keeps no per-step trace"
    );
    assert_eq!(
        out.samples.len(),
        (0.6 * pipe.sample_rate() as f64).round() as usize
    );
    assert!(out.samples.iter().all(|v| v.is_finite()));
}

#[test]
fn controlnet_real_layout() {
    let json = common::read_json("controlnet/real-layout.json");
    let e = &json["controlnet_energy_l"];
    let tensors = e["tensors"]
        .as_object()
        .expect("controlnet_energy_l.tensors");
    let layout: BTreeMap<String, Vec<usize>> = tensors
        .iter()
        .map(|(k, v)| {
            let dims = v
                .as_array()
                .expect("shape")
                .iter()
                .map(|d| d.as_u64().expect("dim") as usize)
                .collect();
            (k.clone(), dims)
        })
        .collect();
    let total: u64 = layout
        .values()
        .map(|s| s.iter().product::<usize>() as u64)
        .sum();
    let probe = LayoutProbe::new(layout);
    DitControlNet::new(
        &ControlNetConfig::energy_l(),
        &DitConfig::ezaudio_l(),
        probe.var_builder(DType::F32, &Device::Cpu),
    )
    .unwrap_or_else(|e| panic!("building at real size: {e}"));
    let mismatches = probe.mismatches();
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    let requested: u64 = probe
        .requested()
        .values()
        .map(|s| s.iter().product::<usize>() as u64)
        .sum();
    assert_eq!(requested, total);
    let params = e["params"].as_u64().expect("params");
    let buffers = e["buffers_in_state_dict"]
        .as_array()
        .map(|b| b.len())
        .unwrap_or(0);
    assert!(
        requested >= params && buffers > 0,
        "params {params}, requested {requested}"
    );

    // The built-in energy_l.yml builds the same network.
    let builtin = ControlNetFileConfig::energy_l();
    assert_eq!(builtin.controlnet, ControlNetConfig::energy_l());
    let probe2 = LayoutProbe::new(probe.requested());
    DitControlNet::new(
        &builtin.controlnet,
        &builtin.model,
        probe2.var_builder(DType::F32, &Device::Cpu),
    )
    .unwrap_or_else(|e| panic!("built-in energy_l: {e}"));
    assert!(probe2.mismatches().is_empty());

    // The fixture yml's controlnet section has the real one's structure.
    let tiny = yml().controlnet;
    let real = ControlNetConfig::energy_l();
    assert_eq!(
        (tiny.cond_in, tiny.cond_mask, tiny.cond_blocks.len()),
        (real.cond_in, real.cond_mask, real.cond_blocks.len())
    );
}
