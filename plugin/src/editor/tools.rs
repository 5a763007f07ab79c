//! The sound-design tools under the waveform: variations (audition, keep), span editing with
//! undo and WAV export. Nothing here blocks: jobs go to
//! the generation thread, exports and downloads run on threads of their own.

use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::Sender;
use ezaudio_engine::audio::wav::SampleFormat;
use ezaudio_engine::audio::Clip;
use parking_lot::Mutex;

use ezaudio_engine::engine::Job;

use crate::generation::Command;
use crate::jobs;
use crate::level::OutputLevel;
use crate::shared::Shared;

/// How many candidates "Variations" generates.
pub const VARIATIONS: usize = 4;

pub fn variations(ui: &mut egui::Ui, shared: &Shared, commands: &Sender<Command>, pad: usize) {
    let candidates = shared.candidates.lock()[pad].clone();
    if candidates.is_empty() {
        return;
    }
    let previewing = shared.previewing.lock()[pad];
    ui.group(|ui| {
        ui.label(format!(
            "Variations ({}): audition each, keep one",
            candidates.len()
        ));
        // A grid, so every row's buttons line up whatever its caption's width.
        egui::Grid::new("variations")
            .num_columns(5)
            .spacing([8.0, 4.0])
            .show(ui, |ui| {
                for (i, c) in candidates.iter().enumerate() {
                    match c {
                        Some(clip) => {
                            let label = format!("{}. seed {}", i + 1, clip.meta.recipe.seed);
                            // Fixed width: a longer seed must not push the buttons.
                            ui.add_sized(
                                egui::vec2(180.0, 20.0),
                                egui::Button::selectable(previewing == Some(i), label),
                            );
                            super::waveform::mini(ui, &clip.samples, egui::vec2(110.0, 24.0));
                            if ui.button("Audition").clicked() {
                                let _ = commands.send(Command::Preview { pad, index: i });
                            }
                            if ui.button("Stop").clicked() {
                                shared.stop_auditions();
                            }
                            if ui.button("Keep").clicked() {
                                // The seed field follows the kept clip, so Lock + Generate
                                // makes it again.
                                let seed = clip.meta.recipe.seed;
                                shared.store.with(|b| b.pads[pad].recipe.seed = seed);
                                let _ = commands.send(Command::Keep { pad, index: i });
                            }
                        }
                        None => {
                            ui.label(format!("{}. generating...", i + 1));
                        }
                    }
                    ui.end_row();
                }
            });
        if ui.button("Discard variations").clicked() {
            let _ = commands.send(Command::Discard { pad });
        }
    });
}

/// Regenerate the selected span of the clip, and undo (the previous clip is the newest
/// history entry).
pub fn edit(
    ui: &mut egui::Ui,
    shared: &Shared,
    commands: &Sender<Command>,
    pad: usize,
    clip: &Arc<Clip>,
    span: Option<(f32, f32)>,
    prompt: &mut String,
) {
    let running = shared.progress.lock()[pad].is_running();
    let data = shared.store.with(|b| b.pads[pad].clone());
    ui.horizontal(|ui| {
        match span {
            Some((a, b)) => ui.label(format!("Selection {a:.2} s - {b:.2} s")),
            None => ui.label("Drag on the waveform to select a span"),
        };
    });
    ui.horizontal(|ui| {
        let l = ui.label("Span prompt");
        ui.add(
            egui::TextEdit::singleline(prompt)
                .desired_width(220.0)
                .hint_text("default: the pad's prompt"),
        )
        .labelled_by(l.id);
        let request = span
            .ok_or("Select a span on the waveform first (drag across it)")
            .and_then(|s| jobs::edit_request(&data, clip.clone(), s, prompt, jobs::random_seed()));
        let button = ui.add_enabled(
            request.is_ok() && !running,
            egui::Button::new("Regenerate selection"),
        );
        match request {
            Ok(job) if button.clicked() => {
                let _ = commands.send(Command::Generate {
                    pad,
                    job: Job::Edit(job),
                });
            }
            Err(why) => {
                button.on_disabled_hover_text(why);
            }
            _ => {}
        }
        let can_undo = data.history.first().is_some_and(|h| h.clip.is_some());
        if ui
            .add_enabled(can_undo && !running, egui::Button::new("Undo"))
            .on_hover_text("Back to the previous clip")
            .clicked()
        {
            shared.store.restore(pad, 0);
        }
    });
}

/// What the last export said: a confirmation or an error (written by the export thread).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum ExportNote {
    #[default]
    None,
    Running,
    Saved(String),
    Failed(String),
}

/// Export settings and the result of the last export.
pub struct Export {
    pub dir: PathBuf,
    pub at_host_rate: bool,
    pub int24: bool,
    /// Apply the pad's output level (else the raw clip).
    pub levelled: bool,
    pub note: Arc<Mutex<ExportNote>>,
}

impl Default for Export {
    fn default() -> Self {
        Self {
            dir: crate::export::default_export_dir(),
            at_host_rate: false,
            int24: false,
            levelled: true,
            note: Arc::default(),
        }
    }
}

/// The confirmation of an export, naming both files.
pub fn saved_text(e: &crate::export::Exported) -> String {
    let name = |p: &std::path::Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let folder = e
        .wav
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut text = format!(
        "Exported {} (+ {}) to {folder}",
        name(&e.wav),
        name(&e.sidecar)
    );
    if e.renamed {
        text += " - that name was taken, so a number was added";
    }
    if e.gain_db.abs() > 0.005 {
        text += &format!(", gain {:+.1} dB", e.gain_db);
    }
    text
}

pub fn export(
    ui: &mut egui::Ui,
    shared: &Shared,
    pad: usize,
    clip: &Arc<Clip>,
    state: &mut Export,
) {
    let host_rate = shared.host_rate.load(std::sync::atomic::Ordering::Relaxed);
    let pad_level = shared.store.with(|b| b.pads[pad].level);
    ui.horizontal_wrapped(|ui| {
        if ui.button("Export WAV").clicked() {
            let rate = if state.at_host_rate && host_rate > 0 {
                host_rate
            } else {
                clip.sample_rate
            };
            let spec = crate::export::ExportSpec {
                rate,
                format: if state.int24 {
                    SampleFormat::Int24
                } else {
                    SampleFormat::Float32
                },
                level: if state.levelled {
                    pad_level
                } else {
                    OutputLevel::Off
                },
            };
            let (clip, dir, note) = (clip.clone(), state.dir.clone(), state.note.clone());
            *note.lock() = ExportNote::Running;
            let stem = crate::export::spec_stem(&crate::export::file_stem(pad, &clip.meta), &spec);
            let spawned = std::thread::Builder::new()
                .name("ezaudio-export".into())
                .spawn(move || {
                    *note.lock() = match crate::export::export_clip(&clip, &dir, &stem, &spec) {
                        Ok(e) => ExportNote::Saved(saved_text(&e)),
                        Err(e) => ExportNote::Failed(format!("Export failed: {e}")),
                    };
                });
            if let Err(e) = spawned {
                *state.note.lock() = ExportNote::Failed(format!("Export failed: {e}"));
            }
        }
        let l = ui.label("at");
        egui::ComboBox::from_id_salt("export_rate")
            .width(170.0)
            .selected_text(if state.at_host_rate {
                format!("host rate ({host_rate} Hz)")
            } else {
                format!("{} Hz (model)", clip.sample_rate)
            })
            .show_ui(ui, |ui| {
                ui.selectable_value(
                    &mut state.at_host_rate,
                    false,
                    format!("{} Hz (model)", clip.sample_rate),
                );
                ui.add_enabled_ui(host_rate > 0, |ui| {
                    ui.selectable_value(
                        &mut state.at_host_rate,
                        true,
                        format!("host rate ({host_rate} Hz)"),
                    );
                });
            })
            .response
            .labelled_by(l.id);
        ui.checkbox(&mut state.int24, "24-bit").on_hover_text(
            "24-bit PCM instead of 32-bit float; a clip over full scale is scaled to -1 dBFS",
        );
        ui.checkbox(&mut state.levelled, format!("Level: {}", pad_level.label()))
            .on_hover_text("Apply the pad's output level (off: the raw clip)");
    });
    ui.horizontal(|ui| {
        let l = ui.label("Folder");
        let mut dir = state.dir.display().to_string();
        if ui
            .add(egui::TextEdit::singleline(&mut dir).desired_width(ui.available_width()))
            .labelled_by(l.id)
            .changed()
        {
            state.dir = PathBuf::from(dir);
        }
    });
    let (text, color) = match state.note.lock().clone() {
        ExportNote::None => return,
        ExportNote::Running => ("Exporting...".to_string(), egui::Color32::GRAY),
        ExportNote::Saved(t) => (t, egui::Color32::from_rgb(120, 220, 120)),
        ExportNote::Failed(t) => (t, egui::Color32::from_rgb(240, 120, 90)),
    };
    ui.add(egui::Label::new(egui::RichText::new(text).color(color).strong()).wrap());
}
