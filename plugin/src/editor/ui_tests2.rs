//! Headless editor tests of the hand-testing fixes (#16): select without playing, notes on the
//! pads, Play/Stop, the seed of a kept variation, span edits keeping the pad's name, the
//! output level (stored and applied at publish), the model panel and export names.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::Receiver;
use egui_kittest::kittest::{By, Queryable};
use egui_kittest::Harness;
use ezaudio_engine::audio::published::SlotReader;
use ezaudio_engine::audio::{Clip, ClipKind, ClipMeta};
use ezaudio_engine::Recipe;

use super::EditorApp;
use crate::generation::Command;
use crate::level::{self, OutputLevel};
use crate::params::EzAudioParams;
use crate::shared::Shared;
use crate::status::Download;
use crate::store::PadStore;

fn app() -> (EditorApp, Arc<Shared>, Receiver<Command>, Vec<SlotReader>) {
    let store = Arc::new(PadStore::default());
    let params = Arc::new(EzAudioParams::new(store.clone()));
    let (shared, readers) = Shared::new(store);
    let (tx, rx) = crossbeam_channel::unbounded();
    (
        EditorApp::new(params, shared.clone(), tx),
        shared,
        rx,
        readers,
    )
}

fn harness(app: EditorApp) -> Harness<'static, EditorApp> {
    let mut h = Harness::builder()
        .with_size(egui::vec2(1100.0, 780.0))
        .build_ui_state(
            |ui, app: &mut EditorApp| {
                super::apply_style(ui.ctx());
                app.draw(ui)
            },
            app,
        );
    h.run();
    h
}

/// A clip peaking at `amp` (a sine).
fn clip(seed: u64, prompt: &str, amp: f32) -> Clip {
    let samples = (0..24_000).map(|i| (i as f32 * 0.05).sin() * amp).collect();
    Clip::new(
        samples,
        24_000,
        ClipMeta {
            recipe: Recipe {
                seed,
                ..Recipe::new(prompt)
            },
            ..Default::default()
        },
    )
}

#[test]
fn pads_show_notes_and_select_without_playing() {
    let (app, shared, _rx, _readers) = app();
    shared.store.set_clip(2, clip(1, "door slam", 0.5));
    let mut h = harness(app);
    // Every pad: number, MIDI note number and name.
    h.get_by_label_contains("1 · 36 C1");
    h.get_by_label_contains("16 · 51 D#2");
    h.get_by_label_contains("3 · 38 D1\ndoor slam").click();
    h.run();
    assert_eq!(h.state().selected(), 2);
    assert_eq!(
        shared.audition.load(Ordering::SeqCst),
        0,
        "a click only selects"
    );
    h.get_by_label("Pad 3");
    h.get_by_label("note 38 D1");
    h.get_by_label("Play").click();
    h.run();
    assert_eq!(shared.audition.load(Ordering::SeqCst), 1 << 2);
    h.get_by_label("Stop playback").click();
    h.run();
    assert!(shared.stop_auditions.load(Ordering::SeqCst));
}

#[test]
fn kept_variation_sets_the_seed_and_span_edits_keep_the_name() {
    let (app, shared, rx, _readers) = app();
    shared.store.with(|b| {
        b.pads[0].recipe.prompt = "glass".into();
        b.pads[0].recipe.seed = 1;
    });
    // A span edit's clip carries the span's prompt in its recipe.
    let mut edited = clip(5, "glass breaking loudly", 0.5);
    edited.meta.kind = ClipKind::Edit {
        start_s: 0.2,
        length_s: 0.5,
        source: None,
    };
    shared.store.set_clip(0, edited);
    shared.candidates.lock()[0] = vec![Some(Arc::new(clip(77, "glass", 0.5)))];
    let mut h = harness(app);
    h.get_by_label_contains("1 · 36 C1\nglass");
    assert!(
        h.query_by_label_contains("glass brea").is_none(),
        "the pad was renamed"
    );
    h.get_by_label("Stop").click();
    h.run();
    assert!(
        shared.stop_auditions.load(Ordering::SeqCst),
        "an audition can be stopped"
    );
    h.get_by_label("Keep").click();
    h.run();
    assert!(matches!(
        rx.try_recv(),
        Ok(Command::Keep { pad: 0, index: 0 })
    ));
    assert_eq!(shared.store.with(|b| b.pads[0].recipe.seed), 77);
}

#[test]
fn output_level_is_stored_and_applied_when_published() {
    let (app, shared, _rx, mut readers) = app();
    shared.store.set_clip(0, clip(1, "hot", 4.0)); // +12 dBFS
    shared.host_rate.store(48_000, Ordering::SeqCst);
    shared.publish_all();
    let raw = level::peak(readers[0].acquire().unwrap().samples());
    assert!((raw - 4.0).abs() < 0.01, "{raw}");

    let mut h = harness(app);
    h.get(By::new().value("Off")).click();
    h.run();
    h.get_by_label("Peak").click();
    h.run();
    assert_eq!(
        shared.store.with(|b| b.pads[0].level),
        OutputLevel::Peak { dbfs: -1.0 }
    );
    h.get_by_label_contains("gain -13.0 dB");
    assert_eq!(shared.publish_all(), 1, "a level change republishes");
    let levelled = level::to_db(level::peak(readers[0].acquire().unwrap().samples()));
    assert!((levelled - -1.0).abs() < 0.05, "{levelled}");
    // The raw clip stays in the state.
    assert!(shared.store.clip(0).1.unwrap().peak() > 3.99);
}

#[test]
fn model_panel_says_not_installed_retries_and_checks_folders() {
    let (app, shared, rx, _readers) = app();
    {
        let mut m = shared.model.lock();
        m.line = "Model: not loaded (loads with the first generation)".into();
        m.missing = Some("ezaudio-l is not installed; searched a very long list of places".into());
        m.downloadable = Some(ezaudio_engine::install::Official::L);
        m.download = Download::Failed("connection reset by peer".into());
    }
    let mut h = harness(app);
    h.get_by_label("Model: not installed");
    assert!(h.query_by_label_contains("loads with the first").is_none());
    h.get_by_label_contains("Download failed: connection reset");
    h.get_by_label("Retry download").click();
    h.run();
    assert!(matches!(rx.try_recv(), Ok(Command::Download)));

    let dir = std::env::temp_dir().join(format!("ezaudio-folder-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    h.get_by_label("Model folder").click();
    h.run();
    h.get_by_label("Model folder")
        .type_text(&dir.display().to_string());
    h.run();
    h.get_by_label("Apply").click();
    h.run();
    h.get_by_label_contains("missing: the model's config.yml");
    assert!(
        rx.try_recv().is_err(),
        "a folder without a model is not used"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn export_writes_rate_named_wav_and_sidecar_and_confirms() {
    let (app, shared, _rx, _readers) = app();
    shared.store.set_clip(0, clip(42, "dog bark", 0.5));
    let dir = std::env::temp_dir().join(format!("ezaudio-ui-export-{}", std::process::id()));
    let mut h = harness(app);
    h.state_mut().export.dir = dir.clone();
    h.get_by_label("24-bit").click();
    h.run();
    h.get_by_label("Export WAV").click();
    h.run();
    let wav = dir.join("pad01_dog-bark_seed42_24000Hz_24bit.wav");
    for _ in 0..200 {
        if h.query_by_label_contains("Exported pad01").is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        h.run();
    }
    h.get_by_label_contains("Exported pad01_dog-bark_seed42_24000Hz_24bit.wav (+ pad01_dog-bark_seed42_24000Hz_24bit.wav.json)");
    assert!(wav.is_file());
    let side: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("pad01_dog-bark_seed42_24000Hz_24bit.wav.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (side["bits"].as_u64(), side["seed"].as_u64()),
        (Some(24), Some(42))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn follow_pad_shows_its_transport_lock_and_where_it_plays() {
    let (app, shared, _rx, _readers) = app();
    let mut h = harness(app);
    assert!(
        h.query_by_label("Lock to transport").is_none(),
        "a pad that does not follow the sidechain has no lock"
    );
    shared
        .store
        .with(|b| b.pads[0].control.follow_sidechain = true);
    h.run();
    h.get_by_label("Lock to transport");
    h.get_by_label("No capture position yet: plays from MIDI until one is recorded");
    shared.store.with(|b| {
        b.pads[0].control.capture_start = Some(66_150);
        b.pads[0].control.capture_rate = 44_100;
    });
    h.run();
    h.get_by_label("Plays at 1.500 s on the timeline");
}
