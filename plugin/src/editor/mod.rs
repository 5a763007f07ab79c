//! The editor: a 4x4 pad grid and the selected pad's panel (prompt, settings, Generate,
//! progress, waveform, history, export, pad parameters), plus the model status line and the
//! messages of the last state load. Drawing only; decisions live in [`model`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use nice_plug::editor::dpi::LogicalSize;
use nice_plug::context::gui::GuiContext;
use nice_plug_egui::{baseview, create_egui_editor, EguiEditorState, EguiNiceSettings, Frame, NiceEguiApp, RepaintNotifier};

use crate::generation::Command;
use crate::params::EzAudioParams;
use crate::shared::Shared;

pub mod control;
mod grid;
pub mod model;
mod panel;
mod waveform;

pub fn default_state() -> Arc<EguiEditorState> {
    EguiEditorState::from_size(LogicalSize::new(980.0, 680.0), 1.0)
}

/// Editor-only state (not saved with the project, not seen by the audio thread).
pub struct EditorApp {
    params: Arc<EzAudioParams>,
    shared: Arc<Shared>,
    commands: Sender<Command>,
    gui: Option<GuiContext>,
    selected: usize,
    export_dir: PathBuf,
    /// Result of the last export (path or error).
    export_note: String,
    /// The loudness-control panel's cache and drag state.
    control: control::ControlView,
}

pub fn create(
    params: Arc<EzAudioParams>,
    shared: Arc<Shared>,
    commands: Sender<Command>,
    state: Arc<EguiEditorState>,
) -> Option<nice_plug_egui::EguiEditor<EditorApp>> {
    let app = EditorApp {
        params,
        shared,
        commands,
        gui: None,
        selected: 0,
        export_dir: crate::export::default_export_dir(),
        export_note: String::new(),
        control: control::ControlView::default(),
    };
    create_egui_editor(state, RepaintNotifier::new(), EguiNiceSettings::new().with_tile("EzAudio"), app)
}

impl NiceEguiApp for EditorApp {
    fn build(
        &mut self,
        _egui_ctx: egui::Context,
        nice_gui_ctx: GuiContext,
        _frame: &mut Frame,
    ) -> Result<(), baseview::HandlerError> {
        self.gui = Some(nice_gui_ctx);
        Ok(())
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut Frame) {
        // Progress and new clips arrive from the generation thread: keep polling.
        ui.ctx().request_repaint_after(Duration::from_millis(100));
        ui.horizontal(|ui| {
            ui.heading("EzAudio");
            ui.separator();
            ui.label(self.shared.model_line.lock().clone());
        });
        let messages = self.shared.store.load_messages();
        if !messages.is_empty() {
            ui.colored_label(egui::Color32::from_rgb(230, 170, 60), "The saved state was damaged; loaded what could be read:");
            for m in messages.iter().take(6) {
                ui.small(m);
            }
        }
        ui.separator();
        ui.horizontal_top(|ui| {
            ui.vertical(|ui| {
                ui.set_width(330.0);
                grid::pad_grid(ui, &self.shared, &mut self.selected);
                ui.add_space(8.0);
                if let Some(gui) = &self.gui {
                    let setter = gui.param_setter();
                    panel::global_params(ui, &self.params, &setter);
                }
            });
            ui.separator();
            ui.vertical(|ui| {
                egui::ScrollArea::vertical().show(ui, |ui| self.pad_panel(ui));
            });
        });
    }

    fn editor_closed(&mut self) {
        self.gui = None;
    }
}

impl EditorApp {
    fn pad_panel(&mut self, ui: &mut egui::Ui) {
        let pad = self.selected;
        ui.heading(format!("Pad {}", pad + 1));
        panel::prompt_and_settings(ui, &self.shared, pad);
        panel::generate_controls(ui, &self.shared, &self.commands, pad);
        let clip = self.shared.store.clip(pad).1;
        waveform::show(ui, clip.as_deref());
        let setter = self.gui.as_ref().map(|g| g.param_setter());
        self.control.show(ui, &self.shared, &self.params, setter.as_ref(), &self.commands, pad);
        if let Some(clip) = &clip {
            ui.label(model::clip_summary(clip));
            ui.horizontal(|ui| {
                if ui.button("Export WAV").clicked() {
                    let stem = crate::export::file_stem(pad, &clip.meta);
                    self.export_note = match crate::export::export_wav(clip, &self.export_dir, &stem) {
                        Ok(path) => format!("Saved {}", path.display()),
                        Err(e) => format!("Export failed: {e}"),
                    };
                }
                let mut dir = self.export_dir.display().to_string();
                if ui.add(egui::TextEdit::singleline(&mut dir).desired_width(260.0)).changed() {
                    self.export_dir = PathBuf::from(dir);
                }
            });
            if !self.export_note.is_empty() {
                ui.small(&self.export_note);
            }
        }
        panel::history(ui, &self.shared, pad);
        if let Some(gui) = &self.gui {
            let setter = gui.param_setter();
            panel::pad_params(ui, self.params.pad(pad), &setter);
        }
    }
}
