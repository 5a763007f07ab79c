//! The sound-design tools under the waveform: variations (audition, keep), span editing with
//! undo, WAV export, and the model strip (status, download). Nothing here blocks: jobs go to
//! the generation thread, exports and downloads run on threads of their own.

use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::Sender;
use ezaudio_engine::audio::Clip;
use parking_lot::Mutex;

use ezaudio_engine::engine::Job;

use crate::generation::Command;
use crate::jobs;
use crate::shared::Shared;
use crate::status::Download;

use super::model;

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
        for (i, c) in candidates.iter().enumerate() {
            ui.horizontal(|ui| match c {
                Some(clip) => {
                    let label = format!(
                        "{}. seed {} ({:.1} s)",
                        i + 1,
                        clip.meta.recipe.seed,
                        clip.duration_s()
                    );
                    let picked = ui.selectable_label(previewing == Some(i), label).clicked();
                    if picked || ui.button("Audition").clicked() {
                        let _ = commands.send(Command::Preview { pad, index: i });
                    }
                    if ui.button("Keep").clicked() {
                        let _ = commands.send(Command::Keep { pad, index: i });
                    }
                }
                None => {
                    ui.label(format!("{}. generating...", i + 1));
                }
            });
        }
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

/// Export settings and the result of the last export (written by the export thread).
pub struct Export {
    pub dir: PathBuf,
    pub at_host_rate: bool,
    pub note: Arc<Mutex<String>>,
}

impl Default for Export {
    fn default() -> Self {
        Self {
            dir: crate::export::default_export_dir(),
            at_host_rate: false,
            note: Arc::default(),
        }
    }
}

pub fn export(
    ui: &mut egui::Ui,
    shared: &Shared,
    pad: usize,
    clip: &Arc<Clip>,
    state: &mut Export,
) {
    let host_rate = shared.host_rate.load(std::sync::atomic::Ordering::Relaxed);
    ui.horizontal(|ui| {
        if ui.button("Export WAV").clicked() {
            let rate = if state.at_host_rate && host_rate > 0 {
                host_rate
            } else {
                clip.sample_rate
            };
            let (clip, dir, note) = (clip.clone(), state.dir.clone(), state.note.clone());
            *note.lock() = "Exporting...".into();
            let stem = crate::export::file_stem(pad, &clip.meta);
            let spawned = std::thread::Builder::new()
                .name("ezaudio-export".into())
                .spawn(move || {
                    *note.lock() = match crate::export::export_wav_at(&clip, &dir, &stem, rate) {
                        Ok(path) => format!("Saved {}", path.display()),
                        Err(e) => format!("Export failed: {e}"),
                    };
                });
            if let Err(e) = spawned {
                *state.note.lock() = format!("Export failed: {e}");
            }
        }
        let l = ui.label("at");
        egui::ComboBox::from_id_salt("export_rate")
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
    });
    ui.horizontal(|ui| {
        let l = ui.label("Folder");
        let mut dir = state.dir.display().to_string();
        if ui
            .add(egui::TextEdit::singleline(&mut dir).desired_width(300.0))
            .labelled_by(l.id)
            .changed()
        {
            state.dir = PathBuf::from(dir);
        }
    });
    let note = state.note.lock().clone();
    if !note.is_empty() {
        ui.small(note);
    }
}

/// The model's status (always visible), with Download and the install instructions when
/// the model is missing.
pub fn model_strip(ui: &mut egui::Ui, shared: &Shared, commands: &Sender<Command>) {
    let view = shared.model.lock().clone();
    let (line, download, can_download) = model::model_strip(&view);
    ui.horizontal(|ui| {
        ui.label(line);
        if can_download {
            if let Some(m) = view.downloadable {
                if ui
                    .button(format!("Download {}", m.name()))
                    .on_hover_text(m.download_size())
                    .clicked()
                {
                    let _ = commands.send(Command::Download);
                }
            }
        }
        if matches!(view.download, Download::Running { .. })
            && ui
                .button("Cancel download")
                .on_hover_text("Stops the download; nothing partial is installed")
                .clicked()
        {
            let _ = commands.send(Command::CancelDownload);
        }
        if let Some(d) = &download {
            ui.small(d);
        }
    });
    if let Some(missing) = &view.missing {
        ui.collapsing("The model is not installed: how to install it", |ui| {
            ui.small(missing);
        });
    }
}
