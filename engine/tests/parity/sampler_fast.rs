//! The multistep solvers (DPM-Solver++ 2M, SDE-DPM-Solver++ 2M, UniPC bh2) against
//! `sampler-fast/`: diffusers' own tables, per-step scalars, teacher-forced and free-running
//! scheduler runs, and end-to-end generations of `model-tiny/`. Step counts, shapes, kinds and
//! tensor names all come from the files.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use ezaudio_engine::install::ModelFolder;
use ezaudio_engine::model::ddim::DdimConfig;
use ezaudio_engine::model::sampler::{
    dpm_coefficients, unipc_corrector_coefficients, unipc_predictor_coefficients,
    unipc_predictor_order, Sampler, Schedule,
};
use ezaudio_engine::pipeline::{Noise, Pipeline, RunOptions};
use ezaudio_engine::Recipe;
use serde_json::Value;

use crate::common::{assert_close, fixtures_dir, get, load, read_json, rel_error, TOL_PIPELINE};

/// README tolerances.
const TOL_AC: f32 = 1e-6;
const TOL_BETAS: f32 = 1e-5;
const TOL_SIGMAS: f32 = 1e-4;
const TOL_SINGLE: f32 = 1e-5;
const TOL_SINGLE_EDGE: f32 = 3e-5;
const TOL_FREE: f32 = 1e-4;
const TOL_SCALAR: f64 = 1e-5;

/// The fixtures' kind names and ours.
pub fn sampler_of(kind: &str) -> Sampler {
    match kind {
        "dpmpp_2m" => Sampler::DpmPp2m,
        "sde_dpmpp_2m" => Sampler::DpmPp2mSde,
        "unipc_bh2" => Sampler::UniPc,
        "ddim" => Sampler::Ddim,
        other => panic!("fixture names an unknown sampler kind '{other}'"),
    }
}

pub fn schedule() -> Schedule {
    let cfg: DdimConfig =
        serde_json::from_value(read_json("sampler-fast/config.json")["diff"].clone())
            .expect("sampler-fast/config.json 'diff' is not a scheduler config");
    Schedule::new(&cfg).expect("the fixtures' scheduler config is rejected")
}

fn vec_f32(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn vec_i64(t: &Tensor) -> Vec<i64> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected a list of ints, got {v}"))
        .iter()
        .map(|x| x.as_i64().expect("int"))
        .collect()
}

/// Largest per-entry relative error (an exact 0 must be matched exactly).
fn max_rel_per_entry(ours: &[f32], reference: &[f32]) -> f32 {
    assert_eq!(ours.len(), reference.len(), "table length");
    ours.iter().zip(reference).fold(0f32, |m, (a, b)| {
        let d = if *b == 0.0 {
            a.abs()
        } else {
            (a - b).abs() / b.abs()
        };
        m.max(if d.is_nan() { f32::INFINITY } else { d })
    })
}

#[test]
fn fast_tables_match_diffusers() {
    let s = schedule();
    let t = load("sampler-fast/tables.safetensors");
    let abs = |ours: &[f32], name: &str| {
        let r = vec_f32(get(&t, name));
        assert_eq!(ours.len(), r.len(), "{name}: length");
        ours.iter()
            .zip(&r)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
    };
    let ac = abs(s.alphas_cumprod(), "alphas_cumprod");
    let betas = abs(s.betas(), "betas");
    let ts = max_rel_per_entry(s.train_sigmas(), &vec_f32(get(&t, "train_sigmas")));
    println!("alphas_cumprod max abs {ac:e}, betas {betas:e}, train_sigmas rel {ts:e}");
    assert!(ac <= TOL_AC, "alphas_cumprod max abs {ac:e}");
    assert!(betas <= TOL_BETAS, "betas max abs {betas:e}");
    assert!(ts <= TOL_SIGMAS, "train_sigmas rel {ts:e}");

    let mut counts: Vec<usize> = t
        .keys()
        .filter_map(|k| k.strip_prefix("timesteps_")?.parse().ok())
        .collect();
    counts.sort_unstable();
    assert!(
        !counts.is_empty(),
        "tables.safetensors has no timesteps_<n>"
    );
    let mut worst = 0f32;
    for n in counts {
        let reference = vec_i64(get(&t, &format!("timesteps_{n}")));
        assert_eq!(s.timesteps(n).unwrap(), reference, "timesteps_{n}");
        let sig = s.sigmas(n).unwrap();
        let rel = max_rel_per_entry(&sig, &vec_f32(get(&t, &format!("sigmas_{n}"))));
        assert!(rel <= TOL_SIGMAS, "sigmas_{n}: rel {rel:e}");
        worst = worst.max(rel);
    }
    println!("sigmas_<n> worst rel {worst:e}");

    // The n + 1 quirk: exactly the listed counts, each ending in -1.
    let train = s.train_sigmas().len();
    let extra: Vec<i64> = (1..=train)
        .filter(|&n| s.timesteps(n).unwrap().len() == n + 1)
        .map(|n| n as i64)
        .collect();
    assert_eq!(extra, vec_i64(get(&t, "extra_timestep_step_counts")));
    for &n in &extra {
        assert_eq!(
            s.timesteps(n as usize).unwrap().last(),
            Some(&-1),
            "n = {n}"
        );
    }
}

/// The scalars of `steps.json:per_step`, compared where the file lists them.
fn check_scalar(what: &str, ours: Option<f64>, reference: &Value) {
    match (ours, reference) {
        (None, Value::Null) => {}
        (Some(_), Value::Null) | (None, _) => {
            panic!("{what}: ours {ours:?}, reference {reference}")
        }
        (Some(o), Value::String(s)) => {
            let r: f64 = s.parse().unwrap_or_else(|_| panic!("{what}: '{s}'"));
            assert!(
                (o.is_nan() && r.is_nan()) || o == r,
                "{what}: ours {o}, reference {s}"
            );
        }
        (Some(o), Value::Number(r)) => {
            let r = r.as_f64().expect("number") as f32 as f64;
            let d = (o - r).abs();
            assert!(d <= TOL_SCALAR * r.abs(), "{what}: ours {o}, reference {r}");
        }
        (Some(_), other) => panic!("{what}: unexpected reference {other}"),
    }
}

/// A list (`rks`, `b`, `rhos_*`) is a small tensor: the README's tensor rel, `max|port - ref| /
/// max|ref|`. Per entry would not do: `rhos_c[0]` comes out of `b0 - b1`-like cancellation
/// in float32, and diffusers' own value is ~1e-5 from the exact one (n = 25, step 5: exact
/// 0.07481075, diffusers 0.07481145).
fn check_list(what: &str, ours: &[f32], reference: &Value) {
    if ours.is_empty() {
        return check_scalar(what, None, reference);
    }
    let r: Vec<f64> = reference
        .as_array()
        .unwrap_or_else(|| panic!("{what}: ours {ours:?}, reference {reference}"))
        .iter()
        .map(|v| {
            v.as_f64()
                .unwrap_or_else(|| panic!("{what}: non-number {v}")) as f32 as f64
        })
        .collect();
    assert_eq!(ours.len(), r.len(), "{what}: length");
    let max_ref = r.iter().fold(0f64, |m, v| m.max(v.abs()));
    let diff = ours
        .iter()
        .zip(&r)
        .fold(0f64, |m, (o, r)| m.max((*o as f64 - r).abs()));
    assert!(
        diff <= TOL_SCALAR * max_ref,
        "{what}: ours {ours:?}, reference {r:?}"
    );
}

fn column<'a>(cols: &'a Value, name: &str, k: usize) -> &'a Value {
    &cols[name][k]
}

#[test]
fn fast_per_step_scalars_match_diffusers() {
    let s = schedule();
    let json = read_json("sampler-fast/steps.json");
    let tables = load("sampler-fast/tables.safetensors");
    let per_step = json["per_step"].as_object().expect("steps.json per_step");
    assert!(!per_step.is_empty());
    let mut checked = 0usize;
    for (kind, by_n) in per_step {
        let sampler = sampler_of(kind);
        for (n, cols) in by_n.as_object().expect("per_step.<kind>") {
            let n: usize = n.parse().expect("step count");
            let ts = s.timesteps(n).unwrap();
            // The scalar math on diffusers' own sigmas (ours are compared in the tables test,
            // at their looser bound: lambda near 0 would amplify their last bits).
            let sigmas = vec_f32(get(&tables, &format!("sigmas_{n}")));
            assert_eq!(
                sigmas.len(),
                s.sigmas(n).unwrap().len(),
                "sigmas_{n}: length"
            );
            assert_eq!(ints(&cols["t"]), ts, "{kind} {n}: t");
            for k in 0..ts.len() {
                let w = |c: &str| format!("{kind} n={n} step {k}: {c}");
                if sampler == Sampler::UniPc {
                    let corr = &cols["corrector"];
                    // A run without any corrector lists `null` per step instead of columns.
                    let present = match corr {
                        Value::Array(steps) => !steps[k].is_null(),
                        cols => cols["present"][k].as_bool().expect("corrector.present"),
                    };
                    assert_eq!(present, k > 0, "{}", w("corrector present"));
                    if k > 0 {
                        let order = unipc_predictor_order(k - 1, ts.len());
                        let c = unipc_corrector_coefficients(&sigmas, k, order);
                        assert_eq!(
                            corr["order"][k].as_u64(),
                            Some(c.order as u64),
                            "{}",
                            w("corrector order")
                        );
                        check_scalar(&w("corrector h"), Some(c.h as f64), &corr["h"][k]);
                        check_scalar(
                            &w("corrector h_phi_1"),
                            Some(c.h_phi_1 as f64),
                            &corr["h_phi_1"][k],
                        );
                        check_scalar(&w("corrector B_h"), Some(c.b_h as f64), &corr["B_h"][k]);
                        check_list(&w("corrector rks"), &c.rks, &corr["rks"][k]);
                        check_list(&w("corrector b"), &c.b, &corr["b"][k]);
                        check_list(&w("corrector rhos_c"), &c.rhos, &corr["rhos_c"][k]);
                    }
                    let pred = &cols["predictor"];
                    let c = unipc_predictor_coefficients(
                        &sigmas,
                        k,
                        unipc_predictor_order(k, ts.len()),
                    );
                    assert_eq!(
                        pred["order"][k].as_u64(),
                        Some(c.order as u64),
                        "{}",
                        w("predictor order")
                    );
                    for (name, v) in [
                        ("sigma_s0", c.sigma_s0),
                        ("sigma_t", c.sigma_t),
                        ("alpha_t", c.alpha_t),
                        ("sigma_vp_t", c.sigma_vp_t),
                        ("lambda_s0", c.lambda_s0),
                        ("lambda_t", c.lambda_t),
                        ("h", c.h),
                        ("h_phi_1", c.h_phi_1),
                        ("B_h", c.b_h),
                    ] {
                        check_scalar(&w(name), Some(v as f64), &pred[name][k]);
                    }
                    check_list(&w("predictor rks"), &c.rks, &pred["rks"][k]);
                    check_list(&w("predictor rhos_p"), &c.rhos, &pred["rhos_p"][k]);
                } else {
                    let c = dpm_coefficients(&sigmas, k, sampler == Sampler::DpmPp2mSde).unwrap();
                    for name in cols.as_object().unwrap().keys() {
                        let v = match name.as_str() {
                            "t" => continue,
                            "order" => Some(c.order as f32),
                            "sigma_s0" => Some(c.sigma_s0),
                            "sigma_t" => Some(c.sigma_t),
                            "alpha_s0" => Some(c.alpha_s0),
                            "sigma_vp_s0" => Some(c.sigma_vp_s0),
                            "alpha_t" => Some(c.alpha_t),
                            "sigma_vp_t" => Some(c.sigma_vp_t),
                            "lambda_s0" => Some(c.lambda_s0),
                            "lambda_t" => Some(c.lambda_t),
                            "h" => Some(c.h),
                            "lambda_s1" => c.lambda_s1,
                            "r0" => c.r0,
                            "sigma_ratio" | "sigma_ratio_exp" => Some(c.sample_factor),
                            "alpha_expm1" | "alpha_one_minus_exp2h" => Some(c.data_factor),
                            "noise_scale" => Some(c.noise_scale),
                            other => panic!("{kind}: unknown per-step column '{other}'"),
                        };
                        check_scalar(&w(name), v.map(|v| v as f64), column(cols, name, k));
                    }
                }
                checked += 1;
            }
        }
    }
    println!("per-step scalars: {checked} steps checked");
}

/// Teacher-forced single steps and a free run of one kind on one group; the worst rel of each.
fn run_group(
    s: &Schedule,
    sampler: Sampler,
    n: usize,
    t: &HashMap<String, Tensor>,
    names: &Value,
    kind: &str,
) -> (f32, f32) {
    let name = |k: &str| {
        names[k]
            .as_str()
            .unwrap_or_else(|| panic!("group lists no tensor '{k}'"))
            .to_string()
    };
    let x_t = get(t, &name("x_T"));
    let outs = get(t, &name("model_outputs"));
    let noise = get(t, &name("variance_noise"));
    let prev = get(t, &name(&format!("{kind}.prev_samples")));
    let len = s.plan(sampler, n).unwrap().len();
    assert_eq!(prev.dim(0).unwrap(), len, "{kind} n={n}: rows");
    let row = |m: &Tensor, k: usize| m.get(k).unwrap();
    let (mut single, mut free) = (0f32, 0f32);
    let mut forced = s.solver(sampler, n, 0.0).unwrap();
    let mut running = s.solver(sampler, n, 0.0).unwrap();
    let mut x = x_t.clone();
    for k in 0..len {
        let input = if k == 0 {
            x_t.clone()
        } else {
            row(prev, k - 1)
        };
        let y = forced
            .step(&row(outs, k), &input, Some(&row(noise, k)))
            .unwrap();
        single = single.max(rel_error(&y, &row(prev, k)));
        x = running
            .step(&row(outs, k), &x, Some(&row(noise, k)))
            .unwrap();
        free = free.max(rel_error(&x, &row(prev, k)));
    }
    (single, free)
}

#[test]
fn fast_scheduler_runs_match_diffusers_step_for_step() {
    let s = schedule();
    let json = read_json("sampler-fast/steps.json");
    let t = load("sampler-fast/steps.safetensors");
    let kinds: Vec<&str> = json["kinds"]
        .as_array()
        .expect("steps.json kinds")
        .iter()
        .map(|k| k.as_str().expect("kind"))
        .collect();
    let groups = json["groups"].as_array().expect("steps.json groups");
    assert!(!groups.is_empty() && !kinds.is_empty());
    // worst (single, free) per kind, regular and edge groups apart.
    let mut worst: HashMap<(String, bool), (f32, f32)> = HashMap::new();
    for g in groups {
        let gname = g["name"].as_str().expect("group name");
        let n = g["num_inference_steps"].as_u64().expect("n") as usize;
        let ts = ints(&g["timesteps"]);
        assert_eq!(s.timesteps(n).unwrap(), ts, "{gname}: timesteps");
        assert_eq!(g["len_timesteps"].as_u64(), Some(ts.len() as u64));
        // The edge group: its schedule reaches t = -1 (train_sigmas[0]).
        let edge = ts.contains(&-1);
        for kind in &kinds {
            let sampler = sampler_of(kind);
            assert_eq!(s.plan(sampler, n).unwrap(), ts, "{gname} {kind}: plan");
            let (single, free) = run_group(&s, sampler, n, &t, &g["tensors"], kind);
            let tol = if edge { TOL_SINGLE_EDGE } else { TOL_SINGLE };
            assert!(
                single <= tol,
                "{gname} {kind}: single step rel {single:e} > {tol:e}"
            );
            assert!(
                free <= TOL_FREE,
                "{gname} {kind}: free run rel {free:e} > {TOL_FREE:e}"
            );
            let e = worst.entry((kind.to_string(), edge)).or_default();
            *e = (e.0.max(single), e.1.max(free));
        }
    }
    let mut rows: Vec<_> = worst.into_iter().collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    for ((kind, edge), (single, free)) in rows {
        let which = if edge { "edge" } else { "regular" };
        println!("{kind} {which}: teacher-forced max rel {single:e}, free run {free:e}");
    }
}

#[test]
fn fast_pipeline_runs_match_diffusers_end_to_end() {
    let json = read_json("sampler-fast/pipeline.json");
    let rec = load("sampler-fast/pipeline.safetensors");
    let model = fixtures_dir().join("sampler-fast").join(
        json["model_tiny"]
            .as_str()
            .expect("pipeline.json model_tiny"),
    );
    let folder = ModelFolder::open(&model).unwrap_or_else(|e| panic!("{e}"));
    let pipe = Pipeline::load(&folder, &crate::common::test_device(), DType::F32)
        .unwrap_or_else(|e| panic!("{e}"));
    let runs = json["runs"].as_object().expect("pipeline.json runs");
    assert!(!runs.is_empty());
    for (name, run) in runs {
        let p = run["prefix"].as_str().expect("prefix");
        let key = |k: &str| format!("{p}{k}");
        let num = |k: &str| {
            run[k]
                .as_f64()
                .unwrap_or_else(|| panic!("{name}: no '{k}'"))
        };
        let recipe = Recipe {
            prompt: run["prompt"].as_str().expect("prompt").into(),
            negative: run["negative_prompt"].as_str().unwrap_or("").into(),
            seconds: num("seconds") as f32,
            steps: num("steps") as u32,
            sampler: sampler_of(run["kind"].as_str().expect("kind")),
            guidance: num("guidance_scale") as f32,
            rescale: num("guidance_rescale") as f32,
            eta: run["eta_passed_to_inference"].as_f64().unwrap_or(0.0) as f32,
            seed: num("seed") as u64,
        };
        let ts = ints(&run["timesteps"]);
        assert_eq!(vec_i64(get(&rec, &key("timesteps"))), ts);
        assert_eq!(
            pipe.schedule()
                .plan(recipe.sampler, recipe.steps as usize)
                .unwrap(),
            ts
        );
        let noise: Vec<Tensor> = (0..ts.len())
            .filter_map(|i| rec.get(&key(&format!("step{i}.variance_noise"))).cloned())
            .collect();
        let init = get(&rec, &key("init_noise"));
        let out = pipe
            .generate(
                &recipe,
                &RunOptions::traced(Noise::Recorded {
                    init,
                    steps: &noise,
                }),
                &mut |_| true,
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (text, _) = pipe.encode_text(&[recipe.prompt.as_str()]).unwrap();
        assert_close(
            &format!("{name}: text_hidden"),
            &text,
            get(&rec, &key("text_hidden")),
            TOL_PIPELINE,
        );
        assert_eq!(out.trace.len(), ts.len(), "{name}: steps");
        let mut worst = 0f32;
        for (i, st) in out.trace.iter().enumerate() {
            let s = |k: &str| key(&format!("step{i}.{k}"));
            let input = if i == 0 {
                key("init_noise")
            } else {
                key(&format!("step{}.latents_out", i - 1))
            };
            let mut pairs = vec![
                ("latents_in", &st.latents_in, input),
                ("out_text", &st.out_text, s("out_text")),
                ("out_pred", &st.out_pred, s("out_pred")),
                ("latents_out", &st.latents_out, s("latents_out")),
            ];
            if let Some(u) = &st.out_uncond {
                pairs.push(("out_uncond", u, s("out_uncond")));
            }
            for (what, ours, r) in pairs {
                let rel = rel_error(ours, get(&rec, &r));
                assert!(rel <= TOL_PIPELINE, "{name}: step{i}.{what} rel {rel:e}");
                worst = worst.max(rel);
            }
        }
        let fin = rel_error(&out.final_latent, get(&rec, &key("final_latent")));
        let wave = get(&rec, &key("waveform"));
        let ours = Tensor::from_slice(&out.samples, wave.dims(), &Device::Cpu)
            .unwrap_or_else(|e| panic!("{name}: waveform length {}: {e}", out.samples.len()));
        let w = rel_error(&ours, wave);
        println!("{name}: per-step max rel {worst:e}, final latent {fin:e}, waveform {w:e}");
        assert!(
            fin <= TOL_PIPELINE && w <= TOL_PIPELINE,
            "{name}: final {fin:e}, waveform {w:e}"
        );
    }
}
