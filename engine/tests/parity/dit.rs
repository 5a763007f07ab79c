//! MaskDiT(UDiT) against `dit/` (tiny random-weight model from the official code) and the real
//! checkpoint layouts in `real-layout.json`.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor};
use ezaudio_engine::model::dit::{rope_inv_freq, DitConfig, MaskDit, Recorder};
use ezaudio_engine::weights::{Checkpoint, LayoutProbe};
use ezaudio_engine::Error;

use super::common::{self, assert_close, get, rel_error, TOL_FORWARD};

fn config() -> DitConfig {
    let json = common::read_json("dit/config.json");
    let model = json
        .get("model")
        .unwrap_or_else(|| panic!("dit/config.json has no 'model' section"));
    serde_json::from_value(model.clone()).unwrap_or_else(|e| panic!("dit/config.json: {e}"))
}

/// Loads `file` strictly: every tensor of the checkpoint must be used by the model.
fn build(file: &str) -> MaskDit {
    let path = common::fixture(file);
    let container = if file.ends_with(".pt") {
        Some("model")
    } else {
        None
    };
    let ckpt = Checkpoint::load(&path, container, None).unwrap_or_else(|e| panic!("{e}"));
    let model = MaskDit::new(
        &config(),
        ckpt.var_builder(DType::F32, &crate::common::test_device()),
    )
    .unwrap_or_else(|e| panic!("building the DiT from {file}: {e}"));
    ckpt.ensure_all_used(|_| false)
        .unwrap_or_else(|e| panic!("strict loading of {file}: {e}"));
    model
}

struct Case {
    x: Tensor,
    timesteps: Tensor,
    context: Tensor,
    context_mask: Tensor,
    gt: Option<Tensor>,
    mae_mask: Option<Tensor>,
}

fn case(map: &HashMap<String, Tensor>, inpaint: bool) -> Case {
    Case {
        x: get(map, "x").clone(),
        timesteps: get(map, "timesteps").clone(),
        context: get(map, "context").clone(),
        context_mask: get(map, "context_mask").clone(),
        gt: inpaint.then(|| get(map, "gt").clone()),
        mae_mask: inpaint.then(|| get(map, "mae_mask_infer").clone()),
    }
}

/// One whole forward as the reference's `MaskDiT.forward` does it (input, context, UDiT),
/// recording into `rec` when given; the result in `x`'s dtype.
fn run_recorded(model: &MaskDit, c: &Case, mut rec: Option<&mut Recorder>) -> Tensor {
    let forward = || -> ezaudio_engine::Result<Tensor> {
        let input = model.prepare_input(&c.x, c.gt.as_ref(), c.mae_mask.as_ref())?;
        if let Some(rec) = rec.as_deref_mut() {
            rec.record(|| "model_input".into(), &input);
        }
        let context = model.prepare_context(&c.context, &c.context_mask, rec.as_deref_mut())?;
        let out = model.forward(&input, &c.timesteps, &context, None, rec)?;
        Ok(out.to_dtype(c.x.dtype())?)
    };
    forward().unwrap_or_else(|e| panic!("DiT forward: {e}"))
}

fn run(model: &MaskDit, c: &Case) -> Tensor {
    run_recorded(model, c, None)
}

fn check(what: &str, port: &Tensor, reference: &Tensor) {
    eprintln!("{what}: rel {:e}", rel_error(port, reference));
    assert_close(what, port, reference, TOL_FORWARD);
}

#[test]
fn dit_config_validates() {
    let cfg = config();
    cfg.validate()
        .unwrap_or_else(|e| panic!("dit/config.json: {e}"));
    for real in [DitConfig::ezaudio_l(), DitConfig::ezaudio_xl()] {
        real.validate()
            .unwrap_or_else(|e| panic!("built-in config: {e}"));
    }
    let mut bad = cfg.clone();
    bad.time_fusion = "token".into();
    match bad.validate() {
        Err(Error::Unsupported(msg)) => assert!(msg.contains("time_fusion"), "{msg}"),
        other => panic!("time_fusion 'token' should be unsupported, got {other:?}"),
    }
    let mut bad = cfg;
    bad.rope_mode = "dual".into();
    assert!(matches!(bad.validate(), Err(Error::Unsupported(_))));
}

#[test]
fn dit_strict_load_pt_and_safetensors_agree() {
    let gen = common::load("dit/forward_gen.safetensors");
    let c = case(&gen, false);
    let from_pt = run(&build("dit/model.pt"), &c);
    let from_st = run(&build("dit/model.safetensors"), &c);
    check("forward_gen.out (model.pt)", &from_pt, get(&gen, "out"));
    check(
        "forward_gen.out (model.safetensors)",
        &from_st,
        get(&gen, "out"),
    );
}

#[test]
fn dit_rope_inv_freq_matches_checkpoint() {
    let cfg = config();
    let st = common::load("dit/model.safetensors");
    let expected = rope_inv_freq(cfg.head_dim());
    let mut seen = 0;
    for (name, t) in &st {
        if name.ends_with("rotary.inv_freq") {
            let v = t.to_vec1::<f32>().unwrap();
            assert_eq!(
                v, expected,
                "{name}: formula values differ from the checkpoint"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, cfg.depth / 2 * 2 + 1, "one inv_freq buffer per block");
}

#[test]
fn dit_forward_gen() {
    let model = build("dit/model.safetensors");
    let gen = common::load("dit/forward_gen.safetensors");
    let c = case(&gen, false);
    check("forward_gen.out", &run(&model, &c), get(&gen, "out"));

    // Stored as (1,); the reference passed it as a 0-d tensor. Check both spellings.
    let scalar = get(&gen, "timestep_scalar");
    let zero_d = scalar.reshape(()).unwrap();
    for (label, t) in [("0-d", zero_d), ("(1,)", scalar.clone())] {
        let c = Case {
            timesteps: t,
            ..case(&gen, false)
        };
        check(
            &format!("forward_gen.out_scalar_t ({label})"),
            &run(&model, &c),
            get(&gen, "out_scalar_t"),
        );
    }
}

#[test]
fn dit_forward_inpaint() {
    let model = build("dit/model.safetensors");
    let inp = common::load("dit/forward_inpaint.safetensors");
    let c = case(&inp, true);
    let input = model
        .prepare_input(&c.x, c.gt.as_ref(), c.mae_mask.as_ref())
        .unwrap();
    check(
        "forward_inpaint.model_input",
        &input,
        get(&inp, "model_input"),
    );
    check("forward_inpaint.out", &run(&model, &c), get(&inp, "out"));

    // A (B, 1, T) mask broadcasts over channels when the mask is channel-independent.
    let mask = get(&inp, "mae_mask_infer");
    let first = mask.narrow(1, 0, 1).unwrap();
    let full = first
        .broadcast_as(mask.dims())
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    if rel_error(&full, &mask.to_dtype(DType::F32).unwrap()) == 0.0 {
        let c = Case {
            mae_mask: Some(first),
            ..case(&inp, true)
        };
        check(
            "forward_inpaint.out ((B,1,T) mask)",
            &run(&model, &c),
            get(&inp, "out"),
        );
    }
}

#[test]
fn dit_debug_intermediates() {
    let model = build("dit/model.safetensors");
    let debug = common::load("dit/debug.safetensors");
    let mut checked = 0;
    for (prefix, file, inpaint) in [
        ("gen.", "dit/forward_gen.safetensors", false),
        ("inpaint.", "dit/forward_inpaint.safetensors", true),
    ] {
        let inputs = common::load(file);
        let c = case(&inputs, inpaint);
        let mut rec = Vec::new();
        run_recorded(&model, &c, Some(&mut Recorder::new(&mut rec)));
        // Compare in the order the port computed them, so the first failure is the earliest.
        let names: Vec<&String> = debug.keys().filter(|k| k.starts_with(prefix)).collect();
        assert!(
            !names.is_empty(),
            "debug.safetensors has no '{prefix}*' tensors"
        );
        for name in &names {
            let key = &name[prefix.len()..];
            assert!(
                rec.iter().any(|(k, _)| k == key),
                "the port records no '{key}' (for {name})"
            );
        }
        let mut failures = Vec::new();
        for (key, port) in &rec {
            let name = format!("{prefix}{key}");
            let Some(reference) = debug.get(&name) else {
                continue;
            };
            let rel = rel_error(port, reference);
            eprintln!("debug {name}: rel {rel:e}");
            if rel.is_nan() || rel > TOL_FORWARD {
                failures.push(format!("{name}: rel {rel:e}"));
            }
            checked += 1;
        }
        assert!(
            failures.is_empty(),
            "debug tensors over {TOL_FORWARD:e}:\n{}",
            failures.join("\n")
        );
    }
    eprintln!("{checked} debug tensors checked");
}

fn real_layout(entry: &str) -> (BTreeMap<String, Vec<usize>>, u64) {
    let json = common::read_json("real-layout.json");
    let e = json
        .get(entry)
        .unwrap_or_else(|| panic!("real-layout.json has no '{entry}'"));
    assert_eq!(
        e["container_key"].as_str(),
        Some("model"),
        "{entry}: container key"
    );
    let tensors = e["tensors"]
        .as_object()
        .unwrap_or_else(|| panic!("{entry}.tensors is not an object"));
    let layout = tensors
        .iter()
        .map(|(k, v)| {
            let dims = v
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            (k.clone(), dims)
        })
        .collect();
    (
        layout,
        e["params"]
            .as_u64()
            .unwrap_or_else(|| panic!("{entry}.params is not a number")),
    )
}

#[test]
fn dit_real_layouts() {
    for (entry, cfg) in [
        ("dit_l", DitConfig::ezaudio_l()),
        ("dit_xl", DitConfig::ezaudio_xl()),
    ] {
        let (layout, params) = real_layout(entry);
        let probe = LayoutProbe::new(layout);
        MaskDit::new(&cfg, probe.var_builder(DType::F32, &Device::Cpu))
            .unwrap_or_else(|e| panic!("{entry}: building at real size: {e}"));
        let mismatches = probe.mismatches();
        assert!(
            mismatches.is_empty(),
            "{entry}: {} mismatches:\n{}",
            mismatches.len(),
            mismatches.join("\n")
        );
        let total: u64 = probe
            .requested()
            .values()
            .map(|s| s.iter().product::<usize>() as u64)
            .sum();
        assert_eq!(total, params, "{entry}: values requested vs the checkpoint");
    }
}

/// Half precision is not a parity target; this checks that every op supports it and that the
/// result stays close to the f32 reference.
#[test]
fn dit_half_precision_runs() {
    let gen = common::load("dit/forward_gen.safetensors");
    let ckpt = Checkpoint::load(&common::fixture("dit/model.safetensors"), None, None).unwrap();
    for (dtype, tol) in [(DType::F16, 2e-2), (DType::BF16, 1e-1)] {
        let model = MaskDit::new(
            &config(),
            ckpt.var_builder(dtype, &crate::common::test_device()),
        )
        .unwrap();
        let out = run(&model, &case(&gen, false));
        assert_eq!(out.dtype(), DType::F32, "output keeps the input's dtype");
        let rel = rel_error(&out, get(&gen, "out"));
        eprintln!("forward_gen.out in {dtype:?}: rel {rel:e}");
        assert!(rel <= tol, "{dtype:?}: rel {rel:e} exceeds {tol:e}");
    }
}
