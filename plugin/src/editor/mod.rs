//! The editor: a 4x4 pad grid and the selected pad's panel (prompt, settings, Generate,
//! Variations, progress with time left, waveform with span selection and span editing,
//! history, export, pad parameters), plus the model strip (status, download) and the
//! messages of the last state load. Drawing only; decisions live in [`model`]. The UI thread
//! never waits on the engine: jobs go to the generation thread, exports and downloads run on
//! threads of their own.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use nice_plug::context::gui::GuiContext;
use nice_plug::editor::dpi::LogicalSize;
use nice_plug_egui::{
    baseview, create_egui_editor, EguiEditorState, EguiNiceSettings, Frame, NiceEguiApp,
    RepaintNotifier,
};

use crate::generation::Command;
use crate::layout::PAD_COUNT;
use crate::params::EzAudioParams;
use crate::shared::Shared;

pub mod control;
mod grid;
pub mod model;
mod panel;
mod tools;
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
    export: tools::Export,
    /// Per pad: the span selected on the waveform (seconds).
    spans: [Option<(f32, f32)>; PAD_COUNT],
    drag: waveform::DragStart,
    edit_prompt: String,
    /// The loudness-control panel's cache and drag state.
    control: control::ControlView,
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
        }
    }

    /// Shows pad `pad`'s panel (clamped to the pads there are).
    pub fn select(&mut self, pad: usize) {
        self.selected = pad.min(PAD_COUNT - 1);
    }

    /// The whole editor; host parameter sliders only once the host's GUI context is known.
    pub fn draw(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.heading("EzAudio");
            ui.separator();
            tools::model_strip(ui, &self.shared, &self.commands);
        });
        let messages = self.shared.store.load_messages();
        if !messages.is_empty() {
            ui.colored_label(
                egui::Color32::from_rgb(230, 170, 60),
                "The saved state was damaged; loaded what could be read:",
            );
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
        EguiNiceSettings::new().with_tile("EzAudio"),
        app,
    )
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
        self.draw(ui);
    }

    fn editor_closed(&mut self) {
        self.gui = None;
    }
}

impl EditorApp {
    fn pad_panel(&mut self, ui: &mut egui::Ui) {
        let pad = self.selected.min(PAD_COUNT - 1);
        ui.heading(format!("Pad {}", pad + 1));
        panel::prompt_and_settings(ui, &self.shared, pad);
        panel::generate_controls(ui, &self.shared, &self.commands, pad);
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
