//! The model panel: status, Download (Retry after a failure), and a model-folder chooser (a
//! path field and Apply: no native file dialog works inside every host, and a typed path
//! works in all of them). Messages wrap to the panel's width instead of running off the
//! window edge.

use std::path::{Path, PathBuf};

use crossbeam_channel::Sender;
use ezaudio_engine::install::ModelFolder;

use crate::generation::Command;
use crate::params::EzAudioParams;
use crate::shared::Shared;

use super::model;

/// The folder field's text and what the last Apply found.
#[derive(Default)]
pub struct FolderChooser {
    pub text: String,
    pub note: Option<Result<String, String>>,
    /// The field was filled from the project's saved folder (once, so it can be cleared).
    filled: bool,
}

/// Checks a model folder with the engine's own install API (the files a load needs);
/// the error says what is wrong (not a folder, which file is missing).
pub fn check_folder(dir: &Path) -> Result<String, String> {
    if dir.as_os_str().is_empty() {
        return Err("Type the path of a model folder first".into());
    }
    match ModelFolder::open(dir) {
        Ok(folder) => Ok(format!("Using the model in {}", folder.root.display())),
        Err(e) => Err(match e {
            ezaudio_engine::Error::Weights { message, path } => {
                format!("{}: {message}", path.display())
            }
            e => e.to_string(),
        }),
    }
}

/// A wrapped label: long messages break at the panel's width.
fn wrapped(ui: &mut egui::Ui, text: impl Into<egui::WidgetText>) {
    ui.add(egui::Label::new(text).wrap());
}

pub fn model_panel(
    ui: &mut egui::Ui,
    shared: &Shared,
    params: &EzAudioParams,
    commands: &Sender<Command>,
    chooser: &mut FolderChooser,
) {
    if !chooser.filled {
        // Show the folder saved with the project.
        chooser.text = params.model_folder.read().clone();
        chooser.filled = true;
    }
    let view = shared.model.lock().clone();
    let strip = model::model_strip(&view);
    ui.horizontal(|ui| {
        ui.label(egui::RichText::new(&strip.line).strong());
        if let Some(label) = &strip.button {
            let hint = view.downloadable.map(|m| m.download_size()).unwrap_or("");
            if ui.button(label).on_hover_text(hint).clicked() {
                let _ = commands.send(Command::Download);
            }
        }
        if strip.running
            && ui
                .button("Cancel download")
                .on_hover_text("Stops the download; nothing partial is installed")
                .clicked()
        {
            let _ = commands.send(Command::CancelDownload);
        }
    });
    if let Some(d) = &strip.download {
        wrapped(ui, d.as_str());
    }
    let collapsed = view.missing.is_none() && chooser.note.is_none();
    egui::CollapsingHeader::new(if view.missing.is_some() {
        "The model is not installed: how to install it"
    } else {
        "Model folder"
    })
    .default_open(!collapsed)
    .show(ui, |ui| {
        if let Some(missing) = &view.missing {
            wrapped(ui, missing.as_str());
        }
        ui.horizontal(|ui| {
            let l = ui.label("Model folder");
            ui.add(
                egui::TextEdit::singleline(&mut chooser.text)
                    .desired_width(ui.available_width() - 70.0)
                    .hint_text("/path/to/ezaudio-l (holds config.yml, dit.pt, vae/)"),
            )
            .labelled_by(l.id);
            if ui.button("Apply").clicked() {
                let dir = PathBuf::from(chooser.text.trim());
                let checked = check_folder(&dir);
                if checked.is_ok() {
                    *params.model_folder.write() = dir.display().to_string();
                    let _ = commands.send(Command::UseModelFolder(dir));
                }
                chooser.note = Some(checked);
            }
        });
        match &chooser.note {
            Some(Ok(msg)) => wrapped(
                ui,
                egui::RichText::new(msg).color(egui::Color32::from_rgb(120, 220, 120)),
            ),
            Some(Err(msg)) => wrapped(
                ui,
                egui::RichText::new(format!("Not a usable model folder: {msg}"))
                    .color(egui::Color32::from_rgb(240, 140, 90)),
            ),
            None => {}
        }
    });
}
