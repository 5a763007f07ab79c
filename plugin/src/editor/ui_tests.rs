//! Headless editor tests: the real `EditorApp::draw` runs in egui_kittest (no window, no
//! renderer) and is inspected through its AccessKit tree, so a missing or broken control
//! fails here.

use std::sync::Arc;

use crossbeam_channel::Receiver;
use egui_kittest::kittest::{By, Queryable};
use egui_kittest::Harness;
use ezaudio_engine::audio::{Clip, ClipMeta};
use ezaudio_engine::engine::{Job, JobStatus};
use ezaudio_engine::Recipe;

use super::EditorApp;
use crate::generation::Command;
use crate::params::EzAudioParams;
use crate::shared::Shared;
use crate::status::JobView;
use crate::store::PadStore;

fn app() -> (EditorApp, Arc<Shared>, Receiver<Command>) {
    let store = Arc::new(PadStore::default());
    let params = Arc::new(EzAudioParams::new(store.clone()));
    let (shared, _readers) = Shared::new(store);
    let (tx, rx) = crossbeam_channel::unbounded();
    (EditorApp::new(params, shared.clone(), tx), shared, rx)
}

fn harness(app: EditorApp) -> Harness<'static, EditorApp> {
    let mut h = Harness::builder()
        .with_size(egui::vec2(980.0, 680.0))
        .build_ui_state(|ui, app: &mut EditorApp| app.draw(ui), app);
    h.run();
    h
}

fn clip(seed: u64, prompt: &str) -> Clip {
    let samples = (0..24_000).map(|i| (i as f32 * 0.05).sin() * 0.5).collect();
    Clip::new(
        samples,
        24_000,
        ClipMeta {
            recipe: Recipe {
                seed,
                steps: 50,
                guidance: 5.0,
                ..Recipe::new(prompt)
            },
            ..Default::default()
        },
    )
}

#[test]
fn empty_editor_shows_every_generation_control() {
    let (app, shared, rx) = app();
    shared.model.lock().line = "Model: not loaded (loads with the first generation)".into();
    let mut h = harness(app);
    for label in [
        "EzAudio",
        "Pad 1",
        "Prompt",
        "Negative prompt",
        "Seconds",
        "Steps",
        "Guidance",
        "Rescale",
        "Seed",
        "Lock",
        "Randomise",
        "Generate",
        "Variations x4",
        "Cancel",
    ] {
        h.get_by_label(label);
    }
    h.get_by_label_contains("Model: not loaded");
    // No prompt yet: Generate is disabled and sends nothing.
    h.get_by_label("Generate").click();
    h.run();
    assert!(rx.try_recv().is_err());

    shared
        .store
        .with(|b| b.pads[0].recipe.prompt = "rain on a tin roof".into());
    h.run();
    h.get_by_label("Generate").click();
    h.run();
    match rx.try_recv() {
        Ok(Command::Generate {
            pad: 0,
            job: Job::Generate(p),
        }) => assert_eq!(p.prompt, "rain on a tin roof"),
        _ => panic!("Generate sent no job"),
    }
    h.get_by_label("Variations x4").click();
    h.run();
    assert!(matches!(rx.try_recv(), Ok(Command::Variations { pad: 0, jobs }) if jobs.len() == 4));
}

#[test]
fn clip_tools_variations_history_and_progress() {
    let (app, shared, rx) = app();
    shared
        .store
        .with(|b| b.pads[0].recipe.prompt = "glass".into());
    shared.store.set_clip(0, clip(1, "glass"));
    shared.store.set_clip(0, clip(2, "glass"));
    shared.candidates.lock()[0] = vec![Some(Arc::new(clip(7, "glass"))), None];
    shared.progress.lock()[0] = JobStatus::Step { k: 10, n: 50 }.into();
    shared.jobs.lock()[0] = JobView {
        eta_s: Some(12.0),
        variations: Some((1, 2)),
    };
    let mut h = harness(app);
    for label in [
        "Export WAV",
        "Regenerate selection",
        "Undo",
        "Audition",
        "Keep",
        "Discard variations",
        "History (1)",
        "Restore",
    ] {
        h.get_by_label(label);
    }
    h.get_by_label_contains("Variation 2/2: Step 10/50 - 12 s left");
    h.get_by_label_contains("seed 2");
    h.get_by_label_contains("Drag on the waveform");

    // Select a span by dragging across the waveform, then regenerate it.
    shared.progress.lock()[0] = JobStatus::Done.into();
    shared.jobs.lock()[0] = JobView::default();
    h.run();
    let wave = h.get_by_label("Waveform").rect();
    let at = |f: f32| egui::pos2(wave.left() + f * wave.width(), wave.center().y);
    h.hover_at(at(0.25));
    h.run();
    h.drag_at(at(0.25));
    h.run();
    h.hover_at(at(0.5));
    h.run();
    h.drop_at(at(0.75));
    h.run();
    h.get_by_label_contains("Selection 0.25 s - 0.");
    h.get_by_label("Regenerate selection").click();
    h.run();
    match rx.try_recv() {
        Ok(Command::Generate {
            pad: 0,
            job: Job::Edit(e),
        }) => {
            assert!(
                (e.start_s - 0.25).abs() < 0.01 && e.length_s > 0.2,
                "{} {}",
                e.start_s,
                e.length_s
            );
            assert_eq!(e.source.meta.recipe.seed, 2);
        }
        other => panic!(
            "no edit job: {:?}",
            other.map(|c| std::mem::discriminant(&c))
        ),
    }
    h.get_by_label("Audition").click();
    h.run();
    assert!(matches!(
        rx.try_recv(),
        Ok(Command::Preview { pad: 0, index: 0 })
    ));
    h.get_by_label("Keep").click();
    h.run();
    assert!(matches!(
        rx.try_recv(),
        Ok(Command::Keep { pad: 0, index: 0 })
    ));
    h.get_by_label("Undo").click();
    h.run();
    assert_eq!(
        shared.store.clip(0).1.unwrap().meta.recipe.seed,
        1,
        "undo restores the previous clip"
    );
}

#[test]
fn missing_model_offers_download_and_instructions() {
    let (app, shared, rx) = app();
    {
        let mut m = shared.model.lock();
        m.line = "Model: error: ezaudio-l is not installed".into();
        m.missing = Some("ezaudio-l is not installed (about 4 GB).".into());
        m.downloadable = Some(ezaudio_engine::install::Official::L);
    }
    let mut h = harness(app);
    h.get_by_label("The model is not installed: how to install it");
    h.get_by_label("Download ezaudio-l").click();
    h.run();
    assert!(matches!(rx.try_recv(), Ok(Command::Download)));
}

#[test]
fn draft_then_render_final_with_expected_times() {
    use crate::status::StepCost;
    use ezaudio_engine::Sampler;

    let (app, shared, rx) = app();
    shared
        .store
        .with(|b| b.pads[0].recipe.prompt = "thunder".into());
    let mut h = harness(app);
    h.get_by_label("Sampler");
    h.get_by_label("Final steps");
    assert_eq!(
        shared.store.with(|b| b.pads[0].recipe.sampler),
        Sampler::DpmPp2m,
        "a new pad drafts with DPM++ 2M"
    );
    // The sampler combo shows the default sampler (its label is "Sampler", its value the choice).
    h.get(By::new().value("DPM++ 2M"));
    h.get_by_label_contains("time known after the first generation");
    // No draft yet: Render final sends nothing.
    h.get_by_label("Render final").click();
    h.run();
    assert!(rx.try_recv().is_err());

    let mut draft = clip(42, "thunder");
    draft.meta.recipe.sampler = Sampler::DpmPp2m;
    draft.meta.recipe.steps = 25;
    shared.store.set_clip(0, draft);
    shared.store.with(|b| {
        b.pads[0].final_steps = 100;
        // The pad's own settings moved on after the draft.
        b.pads[0].recipe.seed = 5;
    });
    // 0.05 s per guided step per second of audio: 25 steps of 10 s = 25 s, 100 steps = 100 s.
    shared
        .step_cost
        .lock()
        .learn(0.5, StepCost::units(5.0, 5.0));
    h.run();
    h.get_by_label_contains("Generate: about 25 s | Render final: about 1 min 40 s");
    h.get_by_label("Render final").click();
    h.run();
    match rx.try_recv() {
        Ok(Command::Generate {
            pad: 0,
            job: Job::Generate(r),
        }) => assert_eq!(
            (r.prompt.as_str(), r.seed, r.steps, r.sampler),
            ("thunder", 42, 100, Sampler::DpmPp2m)
        ),
        _ => panic!("Render final sent no job"),
    }
}

#[test]
fn a_running_download_can_be_cancelled_and_a_cancelled_one_offers_download_again() {
    let (app, shared, rx) = app();
    {
        let mut m = shared.model.lock();
        m.missing = Some("ezaudio-l is not installed".into());
        m.downloadable = Some(ezaudio_engine::install::Official::L);
        m.download = crate::status::Download::Running {
            file: "ckpts/s3/ezaudio_s3_l.pt".into(),
            index: 4,
            files: 6,
            done: 50_000_000,
            total: 200_000_000,
        };
    }
    let mut h = harness(app);
    h.get_by_label("Cancel download").click();
    h.run();
    assert!(matches!(rx.try_recv(), Ok(Command::CancelDownload)));
    shared.model.lock().download = crate::status::Download::Cancelled;
    h.run();
    h.get_by_label("Download cancelled; nothing was installed");
    h.get_by_label("Download ezaudio-l").click();
    h.run();
    assert!(matches!(rx.try_recv(), Ok(Command::Download)));
}

#[test]
fn the_history_budget_shows_its_use_and_can_be_set() {
    let (app, shared, _rx) = app();
    shared
        .store
        .set_clip(0, Clip::new(vec![0.1; 24_000], 24_000, Default::default()));
    shared
        .store
        .set_clip(0, Clip::new(vec![0.2; 2_400], 24_000, Default::default()));
    let mut h = harness(app);
    h.run();
    h.get_by_label("History audio: 1.0 s of 166.7 s kept (all pads, 0.1 of 16.0 MB)");
    shared.store.with(|b| b.set_history_budget(1000));
    assert_eq!(
        shared.store.with(|b| b.history_samples()),
        0,
        "a smaller budget drops the history audio at once"
    );
}
