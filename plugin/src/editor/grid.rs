//! The 4x4 pad grid: click selects a pad and auditions it through the plugin's output.

use crate::layout::PAD_COUNT;
use crate::shared::Shared;

use super::model;

pub fn pad_grid(ui: &mut egui::Ui, shared: &Shared, selected: &mut usize) {
    let (captions, filled): (Vec<String>, Vec<bool>) = shared.store.with(|b| {
        b.pads
            .iter()
            .enumerate()
            .map(|(i, p)| (model::pad_caption(i, p), p.clip.is_some()))
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
                let button = egui::Button::new(&captions[i])
                    .fill(fill)
                    .selected(*selected == i);
                // Fixed size: a long caption must not widen its column.
                if ui.add_sized(egui::vec2(76.0, 56.0), button).clicked() {
                    *selected = i;
                    shared.audition(i);
                }
            }
            ui.end_row();
        }
    });
}
