//! The editor: a 4x4 pad grid and the selected pad's panel (prompt, settings, Generate,
//! Variations, progress with time left, Play/Stop and output level, waveform with span
//! selection and span editing, history, export, pad parameters), plus the model panel
//! (status, download, folder) and the messages of the last state load. Resizable, with a
//! minimum, and its size saved with the project. Drawing only; decisions live in [`model`].
//! The UI thread never waits on the engine: jobs go to the generation thread, exports and
//! downloads run on threads of their own.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use nice_plug::context::gui::GuiContext;
use nice_plug::editor::dpi::LogicalSize;
use nice_plug::editor::ResizeHint;
use nice_plug_egui::resizable_window::ResizableWindow;
use nice_plug_egui::{
    baseview, create_egui_editor, EguiEditorState, EguiNiceSettings, Frame, NiceEguiApp,
    RepaintNotifier,
};

use crate::generation::Command;
use crate::layout::PAD_COUNT;
use crate::params::{EzAudioParams, EDITOR_MIN_SIZE, EDITOR_SIZE};
use crate::shared::Shared;

pub mod control;
mod grid;
pub mod model;
mod panel;
mod playback;
mod setup;
mod tools;
mod waveform;

pub fn default_state() -> Arc<EguiEditorState> {
    state_of_size(EDITOR_SIZE.0, EDITOR_SIZE.1)
}

/// An editor state that opens the window at `width` x `height` logical points.
pub fn state_of_size(width: f32, height: f32) -> Arc<EguiEditorState> {
    EguiEditorState::from_size(LogicalSize::new(width, height), 1.0)
}

/// Text sizes for a plugin window seen from a normal distance: nothing under 13 points (egui's
/// small style is 9, too small for help text and legends).
pub fn apply_style(ctx: &egui::Context) {
    use egui::{FontFamily, FontId, TextStyle};
    ctx.global_style_mut(|style| {
        style.text_styles = [
            (
                TextStyle::Small,
                FontId::new(13.0, FontFamily::Proportional),
            ),
            (TextStyle::Body, FontId::new(14.5, FontFamily::Proportional)),
            (
                TextStyle::Button,
                FontId::new(14.5, FontFamily::Proportional),
            ),
            (
                TextStyle::Heading,
                FontId::new(20.0, FontFamily::Proportional),
            ),
            (
                TextStyle::Monospace,
                FontId::new(13.5, FontFamily::Monospace),
            ),
        ]
        .into();
        style.spacing.interact_size.y = 22.0;
    });
}

/// Editor-only state (not saved with the project, not seen by the audio thread).
pub struct EditorApp {
    params: Arc<EzAudioParams>,
    shared: Arc<Shared>,
    commands: Sender<Command>,
    gui: Option<GuiContext>,
    selected: usize,
    export: tools::Export,
    /// Per pad: the span selected on the waveform (seconds).
    spans: [Option<(f32, f32)>; PAD_COUNT],
    drag: waveform::DragStart,
    edit_prompt: String,
    /// The loudness-control panel's cache and drag state.
    control: control::ControlView,
    level: playback::LevelView,
    folder: setup::FolderChooser,
}

impl EditorApp {
    pub fn new(params: Arc<EzAudioParams>, shared: Arc<Shared>, commands: Sender<Command>) -> Self {
        Self {
            params,
            shared,
            commands,
            gui: None,
            selected: 0,
            export: tools::Export::default(),
            spans: [None; PAD_COUNT],
            drag: None,
            edit_prompt: String::new(),
            control: control::ControlView::default(),
            level: playback::LevelView::default(),
            folder: setup::FolderChooser::default(),
        }
    }

    /// Shows pad `pad`'s panel (clamped to the pads there are).
    pub fn select(&mut self, pad: usize) {
        self.selected = pad.min(PAD_COUNT - 1);
    }

    /// The selected pad.
    pub fn selected(&self) -> usize {
        self.selected
    }

    /// The whole editor; host parameter sliders only once the host's GUI context is known.
    pub fn draw(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.heading("EzAudio");
            ui.separator();
            ui.vertical(|ui| {
                setup::model_panel(
                    ui,
                    &self.shared,
                    &self.params,
                    &self.commands,
                    &mut self.folder,
                )
            });
        });
        let messages = self.shared.store.load_messages();
        if !messages.is_empty() {
            ui.colored_label(
                egui::Color32::from_rgb(230, 170, 60),
                "The saved state was damaged; loaded what could be read:",
            );
            for m in messages.iter().take(6) {
                ui.add(egui::Label::new(m.as_str()).wrap());
            }
        }
        ui.separator();
        ui.horizontal_top(|ui| {
            ui.vertical(|ui| {
                // Fixed: the grid never changes width with its captions.
                ui.set_width(grid::GRID_WIDTH);
                grid::pad_grid(ui, &self.shared, &self.params, &mut self.selected);
                ui.add_space(8.0);
                if let Some(gui) = &self.gui {
                    let setter = gui.param_setter();
                    panel::global_params(ui, &self.params, &setter);
                }
            });
            ui.separator();
            ui.vertical(|ui| {
                egui::ScrollArea::vertical()
                    .auto_shrink([false, false])
                    .show(ui, |ui| self.pad_panel(ui));
            });
        });
    }
}

pub fn create(
    params: Arc<EzAudioParams>,
    shared: Arc<Shared>,
    commands: Sender<Command>,
    state: Arc<EguiEditorState>,
) -> Option<nice_plug_egui::EguiEditor<EditorApp>> {
    let app = EditorApp::new(params, shared, commands);
    create_egui_editor(
        state,
        RepaintNotifier::new(),
        EguiNiceSettings::new()
            .with_tile("EzAudio")
            .with_resize_hint(
                ResizeHint::resizable()
                    .with_min_logical_size(LogicalSize::new(EDITOR_MIN_SIZE.0, EDITOR_MIN_SIZE.1)),
            ),
        app,
    )
}

impl NiceEguiApp for EditorApp {
    fn build(
        &mut self,
        egui_ctx: egui::Context,
        nice_gui_ctx: GuiContext,
        _frame: &mut Frame,
    ) -> Result<(), baseview::HandlerError> {
        apply_style(&egui_ctx);
        self.gui = Some(nice_gui_ctx);
        Ok(())
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut Frame) {
        // Progress and new clips arrive from the generation thread: keep polling.
        ui.ctx().request_repaint_after(Duration::from_millis(100));
        // The corner handle resizes inside hosts that do not offer a resizable frame.
        ResizableWindow::new("ezaudio-editor")
            .min_size(egui::vec2(EDITOR_MIN_SIZE.0, EDITOR_MIN_SIZE.1))
            .show(ui, |ui| self.draw(ui));
    }

    fn resized(&mut self, size: baseview::WindowSize) {
        // Saved with the project (see `EzAudioParams::editor_size`).
        let (w, h) = (size.logical.width as f32, size.logical.height as f32);
        *self.params.editor_size.write() = crate::params::editor_size((w, h));
    }

    fn editor_closed(&mut self) {
        self.gui = None;
    }
}

impl EditorApp {
    fn pad_panel(&mut self, ui: &mut egui::Ui) {
        let pad = self.selected.min(PAD_COUNT - 1);
        let note = self.params.pad(pad).note.value();
        ui.horizontal(|ui| {
            ui.heading(format!("Pad {}", pad + 1));
            ui.label(format!("note {}", model::note_name(note)))
                .on_hover_text(
                    "MIDI note number and name (middle C, 60, is C3 here; some DAWs call it C4)",
                );
        });
        panel::prompt_and_settings(ui, &self.shared, pad);
        panel::generate_controls(ui, &self.shared, &self.commands, pad);
        self.level.show(ui, &self.shared, pad);
        let clip = self.shared.store.clip(pad).1;
        waveform::show(ui, clip.as_deref(), &mut self.spans[pad], &mut self.drag);
        tools::variations(ui, &self.shared, &self.commands, pad);
        if let Some(clip) = &clip {
            ui.label(model::clip_summary(clip));
            ui.separator();
            tools::edit(
                ui,
                &self.shared,
                &self.commands,
                pad,
                clip,
                self.spans[pad],
                &mut self.edit_prompt,
            );
            ui.separator();
            tools::export(ui, &self.shared, pad, clip, &mut self.export);
        }
        panel::history(ui, &self.shared, pad);
        panel::history_budget(ui, &self.shared);
        // Loudness control (sidechain / drawn envelope) comes after the clip tools: it is the
        // less frequent workflow, and the clip tools stay next to the waveform they act on.
        ui.separator();
        let setter = self.gui.as_ref().map(|g| g.param_setter());
        self.control.show(
            ui,
            &self.shared,
            &self.params,
            setter.as_ref(),
            &self.commands,
            pad,
        );
        if let Some(gui) = &self.gui {
            let setter = gui.param_setter();
            panel::pad_params(ui, self.params.pad(pad), &setter);
        }
    }
}

#[cfg(test)]
mod ui_tests;
#[cfg(test)]
mod ui_tests2;
