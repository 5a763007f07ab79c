//! DDIM scheduler and CFG helpers against `scheduler/` (diffusers DDIMScheduler with the real
//! EzAudio config) and the per-step tensors of the `pipeline/` runs.

use std::collections::{BTreeSet, HashMap};

use candle_core::{DType, Device, Tensor};
use ezaudio_engine::model::ddim::{guide, rescale_noise_cfg, Ddim, DdimConfig};
use rand::{Rng, SeedableRng};

use crate::common::{assert_close, get, load, read_json, rel_error, TOL_STEP};

/// README: scheduler tables within max abs error 1e-6.
const TOL_TABLE: f32 = 1e-6;
/// The betas of the zero-SNR rescale. Its last entries are `1 - ab[i]/ab[i-1]` of tiny values
/// obtained by cancellation (`sqrt(ac[i]) - sqrt(ac[T-1])`), so one ulp of a float32 sqrt
/// moves them by ~1e-6. PyTorch's CPU sqrt (MKL VML) is not correctly rounded (it also decides
/// the NaN list, see below), ours is: the last few betas differ by up to ~3e-6. Only
/// `alphas_cumprod`, which meets 1e-6, enters the sampler.
const TOL_BETAS: f32 = 5e-6;
/// A step at the terminal timestep (a_t = 0) with eta > 0: the direction coefficient is the
/// square root of a float32 rounding residue (mathematically 0); the reference's sqrt can leave
/// up to sqrt(2^-23) ~ 3.5e-4 there, we clamp to 0 where our residue is negative.
const TOL_TERMINAL_ETA: f32 = 4e-4;

fn scheduler_config() -> DdimConfig {
    let json = read_json("scheduler/config.json");
    let diff = json
        .get("diff")
        .expect("scheduler/config.json has no 'diff' section")
        .clone();
    serde_json::from_value(diff).expect("scheduler/config.json 'diff' is not a DDIM config")
}

fn ddim() -> Ddim {
    Ddim::new(&scheduler_config()).expect("DDIM config from the fixtures is rejected")
}

fn scalar_i64(map: &HashMap<String, Tensor>, name: &str) -> i64 {
    get(map, name)
        .flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()[0]
}

fn scalar_f32(map: &HashMap<String, Tensor>, name: &str) -> f32 {
    get(map, name)
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()[0]
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "table length");
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn scheduler_config_resolves_like_diffusers() {
    let json = read_json("scheduler/config.json");
    let resolved: DdimConfig = serde_json::from_value(
        json.get("diffusers_resolved")
            .expect("no 'diffusers_resolved' section")
            .clone(),
    )
    .expect("resolved config");
    assert_eq!(
        scheduler_config(),
        resolved,
        "serde defaults differ from diffusers' resolved config"
    );
    assert_eq!(
        scheduler_config(),
        DdimConfig::ezaudio(),
        "DdimConfig::ezaudio() differs from the yaml"
    );
}

#[test]
fn scheduler_tables() {
    let tables = load("scheduler/tables.safetensors");
    let d = ddim();
    let betas = get(&tables, "betas").to_vec1::<f32>().unwrap();
    let ac = get(&tables, "alphas_cumprod").to_vec1::<f32>().unwrap();
    let err_b = max_abs_diff(d.betas(), &betas);
    let err_ac = max_abs_diff(d.alphas_cumprod(), &ac);
    println!("betas max abs err {err_b:e}, alphas_cumprod max abs err {err_ac:e}");
    assert!(
        err_ac <= TOL_TABLE,
        "alphas_cumprod max abs error {err_ac:e}"
    );
    assert!(err_b <= TOL_BETAS, "betas max abs error {err_b:e}");
    assert_eq!(
        d.final_alpha_cumprod(),
        scalar_f32(&tables, "final_alpha_cumprod")
    );
    assert_eq!(
        d.alphas_cumprod().last(),
        ac.last(),
        "terminal alphas_cumprod"
    );
}

#[test]
fn scheduler_timesteps() {
    let tables = load("scheduler/tables.safetensors");
    let d = ddim();
    let mut seen = 0;
    for (name, t) in &tables {
        let Some(n) = name.strip_prefix("timesteps_") else {
            continue;
        };
        let n: usize = n
            .parse()
            .unwrap_or_else(|_| panic!("bad tensor name {name}"));
        assert_eq!(
            d.timesteps(n).unwrap(),
            t.to_vec1::<i64>().unwrap(),
            "timesteps for n = {n}"
        );
        seen += 1;
    }
    assert!(seen > 0, "no timesteps_* tensors in tables.safetensors");
}

#[test]
fn scheduler_steps() {
    let st = load("scheduler/steps.safetensors");
    let cases = read_json("scheduler/steps.json");
    let cases = cases["cases"]
        .as_array()
        .expect("steps.json has no 'cases' array");
    assert!(!cases.is_empty());
    let d = ddim();
    for case in cases {
        let i = case["case"].as_u64().expect("case index");
        let key = |s: &str| format!("case{i}.{s}");
        let n = scalar_i64(&st, &key("num_inference_steps")) as usize;
        let t = scalar_i64(&st, &key("timestep"));
        assert_eq!(
            case["num_inference_steps"].as_u64(),
            Some(n as u64),
            "case {i}: json vs tensors"
        );
        assert_eq!(
            case["timestep"].as_i64(),
            Some(t),
            "case {i}: json vs tensors"
        );

        let c = d.coefficients(t, n, 1.0).unwrap();
        assert_eq!(
            c.prev_timestep,
            scalar_i64(&st, &key("prev_timestep")),
            "case {i}: prev_timestep"
        );
        for (name, ours) in [
            ("alpha_prod_t", c.alpha_prod_t),
            ("alpha_prod_t_prev", c.alpha_prod_t_prev),
            ("variance", c.variance),
        ] {
            let want = case[name]
                .as_f64()
                .unwrap_or_else(|| panic!("case {i}: no {name}")) as f32;
            assert!(
                (ours - want).abs() <= TOL_TABLE,
                "case {i}: {name} {ours} vs {want}"
            );
        }

        let sample = get(&st, &key("sample"));
        let model_output = get(&st, &key("model_output"));
        let out = d
            .step_output(model_output, t, n, sample, 0.0, None)
            .unwrap();
        let e0 = rel_error(&out.prev_sample, get(&st, &key("prev_sample_eta0")));
        let ex0 = rel_error(
            &out.pred_original_sample,
            get(&st, &key("pred_original_sample")),
        );
        assert_close(
            &format!("case {i} eta 0"),
            &out.prev_sample,
            get(&st, &key("prev_sample_eta0")),
            TOL_STEP,
        );
        assert_close(
            &format!("case {i} x0"),
            &out.pred_original_sample,
            get(&st, &key("pred_original_sample")),
            TOL_STEP,
        );

        if case["eta1_recorded"].as_bool().unwrap_or(false) {
            let noise = get(&st, &key("variance_noise"));
            let prev = d
                .step(model_output, t, n, sample, 1.0, Some(noise))
                .unwrap();
            let tol = if c.alpha_prod_t == 0.0 {
                TOL_TERMINAL_ETA
            } else {
                TOL_STEP
            };
            let e1 = rel_error(&prev, get(&st, &key("prev_sample_eta1")));
            println!("case {i} (n {n}, t {t}): eta0 rel {e0:e}, x0 rel {ex0:e}, eta1 rel {e1:e} (tol {tol:e})");
            assert_close(
                &format!("case {i} eta 1"),
                &prev,
                get(&st, &key("prev_sample_eta1")),
                tol,
            );
        }
    }
}

#[test]
fn scheduler_rescale_noise_cfg() {
    let r = load("scheduler/rescale_noise_cfg.safetensors");
    let phi = scalar_f32(&r, "guidance_rescale") as f64;
    let out = rescale_noise_cfg(get(&r, "noise_cfg"), get(&r, "noise_pred_text"), phi).unwrap();
    println!(
        "rescale_noise_cfg rel {:e}",
        rel_error(&out, get(&r, "out"))
    );
    assert_close("rescale_noise_cfg", &out, get(&r, "out"), TOL_STEP);
}

/// CFG, rescale and the DDIM step of every recorded pipeline step, fed the reference inputs.
#[test]
fn scheduler_pipeline_steps() {
    let cfg = read_json("pipeline/config.json");
    let diff: DdimConfig =
        serde_json::from_value(cfg["params"]["diff"].clone()).expect("pipeline diff config");
    let d = Ddim::new(&diff).unwrap();
    let runs = cfg["runs"]
        .as_object()
        .expect("pipeline/config.json has no 'runs'");
    for (run, args) in runs {
        let f = load(&format!("pipeline/{run}.safetensors"));
        let g = args["guidance_scale"].as_f64().expect("guidance_scale");
        let phi = args["guidance_rescale"].as_f64().expect("guidance_rescale");
        let eta = args["eta"].as_f64().expect("eta");
        let n = args["ddim_steps"].as_u64().expect("ddim_steps") as usize;
        let ts = get(&f, "timesteps").to_vec1::<i64>().unwrap();
        assert_eq!(d.timesteps(n).unwrap(), ts, "{run}: timesteps");
        for (i, &t) in ts.iter().enumerate() {
            let k = |s: &str| format!("step{i}.{s}");
            let guided = guide(get(&f, &k("out_text")), get(&f, &k("out_uncond")), g).unwrap();
            assert_close(
                &format!("{run} step {i} guide"),
                &guided,
                get(&f, &k("out_guided")),
                TOL_STEP,
            );
            let pred =
                rescale_noise_cfg(get(&f, &k("out_guided")), get(&f, &k("out_text")), phi).unwrap();
            assert_close(
                &format!("{run} step {i} rescale"),
                &pred,
                get(&f, &k("out_pred")),
                TOL_STEP,
            );
            let noise = (eta > 0.0).then(|| get(&f, &k("variance_noise")));
            let c = d.coefficients(t, n, eta).unwrap();
            let tol = if c.alpha_prod_t == 0.0 && eta > 0.0 {
                TOL_TERMINAL_ETA
            } else {
                TOL_STEP
            };
            let out = d
                .step(
                    get(&f, &k("out_pred")),
                    t,
                    n,
                    get(&f, &k("latents_in")),
                    eta,
                    noise,
                )
                .unwrap();
            let e = rel_error(&out, get(&f, &k("latents_out")));
            println!("{run} step {i} (t {t}): ddim rel {e:e} (tol {tol:e})");
            assert_close(
                &format!("{run} step {i} ddim"),
                &out,
                get(&f, &k("latents_out")),
                tol,
            );
        }
    }
}

/// Random tensor of a small shape, deterministic.
fn randn(rng: &mut rand::rngs::StdRng, shape: (usize, usize, usize)) -> Tensor {
    let n = shape.0 * shape.1 * shape.2;
    let v: Vec<f32> = (0..n)
        .map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal))
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn all_finite(t: &Tensor) -> bool {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .all(|v| v.is_finite())
}

/// The reference's NaN hazard (eta 1, zero terminal SNR): every step count 1..=200 and every
/// listed one must give finite latents all the way; the clamp may only touch the terminal
/// step's rounding residue, and wherever our radicand is not negative the step equals the
/// unclamped formula.
#[test]
fn scheduler_eta1_never_nan() {
    let tables = load("scheduler/tables.safetensors");
    let listed: BTreeSet<i64> = get(&tables, "eta1_nan_first_step_counts")
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .collect();
    let d = ddim();
    let train = d.alphas_cumprod().len();
    let counts: BTreeSet<usize> = (1..=200usize.min(train))
        .chain(listed.iter().map(|&n| n as usize))
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(20240917);
    let shape = (1, 4, 8);
    let (mut ours_negative, mut agree) = (BTreeSet::new(), 0usize);
    for &n in &counts {
        let mut x = randn(&mut rng, shape);
        for (step, &t) in d.timesteps(n).unwrap().iter().enumerate() {
            let v = randn(&mut rng, shape);
            let z = randn(&mut rng, shape);
            let c = d.coefficients(t, n, 1.0).unwrap();
            if c.direction_radicand < 0.0 {
                // Only a rounding residue of an exactly-zero quantity may be clamped.
                assert_eq!(
                    c.alpha_prod_t, 0.0,
                    "n {n}, t {t}: negative radicand off the terminal step"
                );
                assert!(
                    c.direction_radicand.abs() <= 2.0 * f32::EPSILON,
                    "n {n}: radicand {}",
                    c.direction_radicand
                );
                if step == 0 {
                    ours_negative.insert(n as i64);
                }
            } else if step == 0 {
                // Unclamped formula, spelled out: x0 = sqrt(a) x - sqrt(1-a) v, eps = sqrt(a) v + sqrt(1-a) x.
                let (sa, sb) = (
                    c.alpha_prod_t.sqrt() as f64,
                    (1.0 - c.alpha_prod_t).sqrt() as f64,
                );
                let x0 = ((&x * sa).unwrap() - (&v * sb).unwrap()).unwrap();
                let eps = ((&v * sa).unwrap() + (&x * sb).unwrap()).unwrap();
                let want = ((x0 * c.alpha_prod_t_prev.sqrt() as f64).unwrap()
                    + (eps * c.direction_radicand.sqrt() as f64).unwrap())
                .unwrap();
                let want = (want + (&z * c.std_dev as f64).unwrap()).unwrap();
                let got = d.step(&v, t, n, &x, 1.0, Some(&z)).unwrap();
                assert_eq!(
                    rel_error(&got, &want),
                    0.0,
                    "n {n}: clamp changed a non-negative radicand"
                );
            }
            x = d.step(&v, t, n, &x, 1.0, Some(&z)).unwrap();
            assert!(
                all_finite(&x),
                "n {n}: non-finite latent after step {step} (t {t})"
            );
        }
        if listed.contains(&(n as i64)) == ours_negative.contains(&(n as i64)) {
            agree += 1;
        }
    }
    // Informational: the reference's list comes from its own sqrt rounding (MKL), which we do
    // not reproduce bit for bit, so the sets differ; with the clamp none of them is NaN here.
    println!(
        "eta 1: {} step counts checked; reference NaN list {} entries, our negative residues {}, same verdict for {agree}",
        counts.len(),
        listed.len(),
        ours_negative.len()
    );
}
