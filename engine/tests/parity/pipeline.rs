//! End-to-end parity: the whole `inference()` loop (T5, CFG batch, rescale, DDIM, paste-back,
//! VAE decode) on the `pipeline/` runs and the complete `model-tiny/` folder.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use ezaudio_engine::install::ModelFolder;
use ezaudio_engine::model::config::EzAudioConfig;
use ezaudio_engine::pipeline::{Noise, Output, Pipeline, RunOptions};
use ezaudio_engine::Recipe;

use crate::common::{assert_close, fixture, fixtures_dir, get, load, read_json, TOL_PIPELINE};

/// The run's recipe; `seconds` only where the run names it (the `pipeline/` runs give frames).
fn settings_from(run: &serde_json::Value) -> Recipe {
    let num = |k: &str| {
        run[k]
            .as_f64()
            .unwrap_or_else(|| panic!("run has no numeric '{k}'"))
    };
    let text = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| run[*k].as_str())
            .unwrap_or("")
            .to_string()
    };
    Recipe {
        prompt: text(&["prompt"]),
        negative: text(&["neg", "negative_prompt"]),
        seconds: run["seconds"].as_f64().unwrap_or(10.0) as f32,
        steps: num("ddim_steps") as u32,
        sampler: Default::default(),
        guidance: num("guidance_scale") as f32,
        rescale: num("guidance_rescale") as f32,
        eta: num("eta") as f32,
        seed: num("seed") as u64,
    }
}

fn recorded_step_noise(rec: &HashMap<String, Tensor>, prefix: &str, steps: usize) -> Vec<Tensor> {
    (0..steps)
        .filter_map(|i| rec.get(&format!("{prefix}step{i}.variance_noise")).cloned())
        .collect()
}

/// Compares every recorded intermediate of a run with ours.
fn check_run(
    name: &str,
    rec: &HashMap<String, Tensor>,
    prefix: &str,
    pipe: &Pipeline,
    out: &Output,
    prompt: &str,
) {
    let key = |k: &str| format!("{prefix}{k}");
    let ids = get(rec, &key("text_input_ids"))
        .to_dtype(DType::U32)
        .unwrap();
    let (ours_text, _) = pipe
        .encode_text(&[prompt])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ours_text.dims()[1], ids.dims()[1], "{name}: token count");
    assert_close(
        &format!("{name}: text_hidden"),
        &ours_text,
        get(rec, &key("text_hidden")),
        TOL_PIPELINE,
    );

    if let Some(t) = rec.get(&key("timesteps")) {
        assert_eq!(
            t.dims1().unwrap(),
            out.trace.len(),
            "{name}: number of steps"
        );
    }
    assert!(!out.trace.is_empty(), "{name}: the run kept no trace");
    for (i, step) in out.trace.iter().enumerate() {
        let s = |k: &str| key(&format!("step{i}.{k}"));
        assert_close(
            &format!("{name}: step{i}.latents_in"),
            &step.latents_in,
            get(rec, &s("latents_in")),
            TOL_PIPELINE,
        );
        assert_close(
            &format!("{name}: step{i}.out_text"),
            &step.out_text,
            get(rec, &s("out_text")),
            TOL_PIPELINE,
        );
        if let Some(uncond) = &step.out_uncond {
            assert_close(
                &format!("{name}: step{i}.out_uncond"),
                uncond,
                get(rec, &s("out_uncond")),
                TOL_PIPELINE,
            );
        }
        assert_close(
            &format!("{name}: step{i}.out_pred"),
            &step.out_pred,
            get(rec, &s("out_pred")),
            TOL_PIPELINE,
        );
        assert_close(
            &format!("{name}: step{i}.latents_out"),
            &step.latents_out,
            get(rec, &s("latents_out")),
            TOL_PIPELINE,
        );
    }
    assert_close(
        &format!("{name}: final_latent"),
        &out.final_latent,
        get(rec, &key("final_latent")),
        TOL_PIPELINE,
    );
    let wave = get(rec, &key("waveform"));
    let ours = Tensor::from_slice(&out.samples, wave.dims(), &Device::Cpu).unwrap_or_else(|e| {
        panic!(
            "{name}: waveform length {} vs reference {:?}: {e}",
            out.samples.len(),
            wave.dims()
        )
    });
    assert_close(&format!("{name}: waveform"), &ours, wave, TOL_PIPELINE);
}

/// `pipeline/`: weights in `../t5`, `../dit`, `../vae`, config in `pipeline/config.json`.
fn pipeline_fixture_model() -> Pipeline {
    let cfg_json = read_json("pipeline/config.json");
    let config: EzAudioConfig = serde_json::from_value(cfg_json["params"].clone())
        .unwrap_or_else(|e| panic!("pipeline/config.json params: {e}"));
    let dir = fixtures_dir();
    let vae = ["vae/vae.pt", "vae/vae.safetensors"]
        .iter()
        .map(|p| dir.join(p))
        .find(|p| p.exists())
        .expect("vae checkpoint");
    let folder = ModelFolder {
        root: dir.join("pipeline"),
        config,
        dit: fixture("dit/model.pt"),
        vae,
        vae_config: fixture("vae/config.json"),
        text_encoder: fixture("t5/config.json").parent().unwrap().to_path_buf(),
    };
    Pipeline::load(&folder, &crate::common::test_device(), DType::F32)
        .unwrap_or_else(|e| panic!("loading the pipeline fixture: {e}"))
}

#[test]
fn pipeline_runs_match_the_reference() {
    let pipe = pipeline_fixture_model();
    let cfg = read_json("pipeline/config.json");
    let runs = cfg["runs"]
        .as_object()
        .expect("pipeline/config.json has 'runs'");
    assert!(!runs.is_empty());
    for (name, run) in runs {
        let rec = load(&format!("pipeline/{name}.safetensors"));
        let settings = settings_from(run);
        let steps = recorded_step_noise(&rec, "", settings.steps as usize);
        let init = get(&rec, "init_noise");
        let frames = init.dims()[2];
        let inpaint = run["inpaint"].as_bool().unwrap_or(false);
        let gt = inpaint.then(|| {
            (
                get(&rec, "gt_latent").clone(),
                get(&rec, "gt_mask").to_dtype(DType::U8).unwrap(),
            )
        });
        let out = pipe
            .run(
                &settings,
                frames,
                gt.as_ref().map(|(g, m)| (g, m)),
                &RunOptions::traced(Noise::Recorded {
                    init,
                    steps: &steps,
                }),
                &mut |_| true,
                None,
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        check_run(name, &rec, "", &pipe, &out, &settings.prompt);
    }
}

#[test]
fn model_folder_generation_matches_the_reference() {
    let folder =
        ModelFolder::open(&fixtures_dir().join("model-tiny")).unwrap_or_else(|e| panic!("{e}"));
    let pipe = Pipeline::load(&folder, &crate::common::test_device(), DType::F32)
        .unwrap_or_else(|e| panic!("{e}"));
    let reference = read_json("model-tiny/reference.json");
    let rec = load("model-tiny/reference.safetensors");
    let runs = reference["runs"]
        .as_object()
        .expect("reference.json has 'runs'");
    assert!(!runs.is_empty());
    for (name, run) in runs {
        let prefix = run["prefix"].as_str().unwrap_or("");
        let settings = settings_from(run);
        assert!(run["seconds"].is_number(), "{name}: run has no 'seconds'");
        let steps = recorded_step_noise(&rec, prefix, settings.steps as usize);
        let init = get(&rec, &format!("{prefix}init_noise"));
        let out = pipe
            .generate(
                &settings,
                &RunOptions::traced(Noise::Recorded {
                    init,
                    steps: &steps,
                }),
                &mut |_| true,
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            out.samples.len(),
            run["samples"].as_u64().expect("samples") as usize,
            "{name}: length"
        );
        let timesteps: Vec<i64> = run["timesteps"]
            .as_array()
            .expect("timesteps")
            .iter()
            .map(|t| t.as_i64().expect("int"))
            .collect();
        assert_eq!(
            pipe.scheduler().timesteps(settings.steps as usize).unwrap(),
            timesteps,
            "{name}: timesteps"
        );
        check_run(name, &rec, prefix, &pipe, &out, &settings.prompt);
    }
}
