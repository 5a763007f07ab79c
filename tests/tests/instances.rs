//! Sixteen plugin instances in one process, as a DAW with sixteen tracks of EzAudio runs
//! them: one model in memory for all of them (the engine's per-process registry), and every
//! instance's job completes. Each instance gets a pad that follows the sidechain; playing a
//! sidechain into it makes its generation thread submit a controlled job (the same path as
//! `sidechain_control.rs`), with the fixtures' tiny model and ControlNet, 2 steps.
//!
//! How many pipelines were loaded is read from the bundle itself: the test bundle (feature
//! `test_alloc_probe`) exports `ezaudio_test_pipeline_loads`, and the engine's counter lives
//! in the bundle's copy of the engine, not in this test binary.

use std::time::{Duration, Instant};

use ezaudio_tests::blob::*;
use ezaudio_tests::{clap_bundle, fixtures_with_controlnet, PluginUnderTest};
use serde_json::{json, Value};

const RATE: f64 = 48_000.0;
const INSTANCES: usize = 16;

/// Resident memory of this process in kB (Linux), for the report.
fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn pipeline_loads() -> u64 {
    // SAFETY: the bundle is already loaded by the instances (dlopen returns that copy); the
    // symbol is `extern "C" fn() -> u64`, as declared in plugin/src/lib.rs.
    unsafe {
        let lib = libloading::Library::new(clap_bundle()).expect("open the bundle");
        let f: libloading::Symbol<unsafe extern "C" fn() -> u64> =
            lib.get(b"ezaudio_test_pipeline_loads").expect(
                "the test bundle exports ezaudio_test_pipeline_loads (feature test_alloc_probe)",
            );
        f()
    }
}

#[test]
fn sixteen_instances_share_one_model_and_all_their_jobs_complete() {
    let fx = fixtures_with_controlnet();
    let gen: Value = serde_json::from_str(
        &std::fs::read_to_string(fx.join("controlnet/generate.json")).expect("generate.json"),
    )
    .expect("generate.json is JSON");
    let seconds = gen["seconds"].as_f64().expect("seconds");
    // Read by each instance's engine handle when its first job is submitted.
    std::env::set_var("EZAUDIO_MODEL", fx.join("model-tiny"));
    std::env::set_var("EZAUDIO_CONTROLNET", fx.join("controlnet"));
    std::env::set_var("EZAUDIO_DEVICE", "cpu");
    std::env::set_var("EZAUDIO_DTYPE", "f32");

    let frames = ((seconds + 0.2) * RATE) as usize;
    let x = test_clip(frames, 9);
    let side: Vec<f32> = x.iter().map(|s| s * 0.8).collect();
    let rss0 = rss_kb();
    let mut plugins: Vec<PluginUnderTest> = (0..INSTANCES)
        .map(|_| PluginUnderTest::load(&clap_bundle()).expect("load"))
        .collect();
    assert_eq!(pipeline_loads(), 0, "nothing loads a model before a job");
    for (i, plugin) in plugins.iter_mut().enumerate() {
        let pad = json!({
            "prompt": format!("{} {i}", gen["prompt"].as_str().unwrap_or("rain")), "negative": "",
            "settings": {"seconds": seconds, "steps": 2, "guidance": 3.5, "rescale": 0.0,
                         "eta": 0.0, "seed": 100 + i, "seed_locked": true},
            "control": {"follow_sidechain": true, "scale": 1.0}
        });
        plugin
            .load_state(&state_blob(
                &[(i, pad)],
                &[("capture_sidechain", bool_param(true))],
            ))
            .expect("state");
        plugin
            .render_with_inputs(
                RATE,
                480,
                frames as u32,
                &[],
                &[vec![side.clone(), side.clone()]],
            )
            .expect("render");
    }

    let t0 = Instant::now();
    let mut done = vec![None; INSTANCES];
    while done.iter().any(Option::is_none) {
        for (i, plugin) in plugins.iter_mut().enumerate() {
            if done[i].is_some() {
                continue;
            }
            let pad = pad_of(&parse_state(&plugin.save_state().expect("save")), i);
            if pad["clip"]["meta"]["kind"]["type"] == "controlled" {
                done[i] = Some(pad);
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "after 600 s, instances without a clip: {:?}",
            (0..INSTANCES)
                .filter(|&i| done[i].is_none())
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let rss1 = rss_kb();
    for (i, pad) in done.iter().flatten().enumerate() {
        let clip = &pad["clip"];
        let rate = clip["sample_rate"].as_u64().expect("rate");
        let samples = clip_samples(clip).expect("the clip's audio reads back");
        assert_eq!(samples.len() as u64, clip["len"].as_u64().unwrap());
        let len_s = samples.len() as f64 / rate as f64;
        assert!(
            (len_s - seconds).abs() < 1e-3,
            "instance {i}: clip is {len_s} s, not {seconds}"
        );
        assert!(samples.iter().all(|s| s.is_finite()) && samples.iter().any(|&s| s != 0.0));
        assert_eq!(
            clip["meta"]["seed"],
            100 + i as u64,
            "instance {i} made its own clip"
        );
    }
    // Compact state: a saved state holding one real clip of the tiny model, per sample.
    let saved = plugins[0].save_state().expect("save");
    let n = clip_samples(&done[0].as_ref().unwrap()["clip"])
        .unwrap()
        .len();
    let per_sample = saved.len() as f64 / n as f64;
    eprintln!(
        "saved state with one tiny-model clip: {} bytes, {per_sample:.2} bytes per sample",
        saved.len()
    );
    assert!(per_sample <= 4.0, "{per_sample:.2} bytes per sample");
    let loads = pipeline_loads();
    eprintln!(
        "{INSTANCES} instances, {INSTANCES} clips in {:.1} s; pipelines loaded: {loads}; \
         resident memory {} MB before the instances, {} MB after all jobs",
        t0.elapsed().as_secs_f32(),
        rss0 / 1024,
        rss1 / 1024
    );
    assert_eq!(loads, 1, "one model in memory for all instances");
    // The clips differ (each instance its own seed and prompt), so no instance got another's.
    let first = clip_samples(&done[0].as_ref().unwrap()["clip"]).unwrap();
    let second = clip_samples(&done[1].as_ref().unwrap()["clip"]).unwrap();
    assert_ne!(first, second);
}
