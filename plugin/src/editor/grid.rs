//! The 4x4 pad grid: a click selects a pad (it does not play it: the panel's Play does), the
//! selected pad is outlined, and every pad shows its number, its MIDI note and its name.

use crate::layout::PAD_COUNT;
use crate::params::EzAudioParams;
use crate::shared::Shared;

use super::model;

/// One pad button. Fixed, so a long caption never widens its column.
pub const PAD_SIZE: egui::Vec2 = egui::vec2(84.0, 60.0);
/// Width of the grid (four pads and their spacing).
pub const GRID_WIDTH: f32 = 4.0 * PAD_SIZE.x + 3.0 * 6.0;

pub fn pad_grid(ui: &mut egui::Ui, shared: &Shared, params: &EzAudioParams, selected: &mut usize) {
    let (captions, filled): (Vec<String>, Vec<bool>) = shared.store.with(|b| {
        b.pads
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let note = params.pad(i).note.value();
                (model::pad_caption(i, p, note), p.clip.is_some())
            })
            .unzip()
    });
    let progress = shared.progress.lock().clone();
    egui::Grid::new("pads").spacing([6.0, 6.0]).show(ui, |ui| {
        // Pad 1 bottom-left, like hardware pads.
        for row in (0..4).rev() {
            for col in 0..4 {
                let i = row * 4 + col;
                if i >= PAD_COUNT {
                    continue;
                }
                let mut fill = if filled[i] {
                    egui::Color32::from_rgb(50, 90, 120)
                } else {
                    egui::Color32::from_gray(45)
                };
                if progress[i].is_running() {
                    fill = egui::Color32::from_rgb(120, 90, 40);
                }
                let is_selected = *selected == i;
                // A bright outline: the selection must read at a glance, on any fill.
                let stroke = if is_selected {
                    egui::Stroke::new(3.0, egui::Color32::from_rgb(250, 200, 70))
                } else {
                    egui::Stroke::new(1.0, egui::Color32::from_gray(70))
                };
                let button = egui::Button::new(egui::RichText::new(&captions[i]).size(13.0))
                    .fill(fill)
                    .stroke(stroke)
                    .selected(is_selected)
                    .wrap_mode(egui::TextWrapMode::Truncate);
                if ui.add_sized(PAD_SIZE, button).clicked() {
                    *selected = i;
                }
            }
            ui.end_row();
        }
    });
}
