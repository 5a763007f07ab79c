//! Waveform display of a pad's clip (min/max per pixel column).

use ezaudio_engine::clip::Clip;

use super::model;

pub fn show(ui: &mut egui::Ui, clip: Option<&Clip>) {
    let width = ui.available_width().clamp(200.0, 620.0);
    let (rect, _) = ui.allocate_exact_size(egui::vec2(width, 90.0), egui::Sense::hover());
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 3.0, egui::Color32::from_gray(24));
    let Some(clip) = clip else {
        painter.text(rect.center(), egui::Align2::CENTER_CENTER, "No clip yet", egui::FontId::proportional(13.0), egui::Color32::GRAY);
        return;
    };
    let columns = rect.width().max(1.0) as usize;
    let mid = rect.center().y;
    let half = rect.height() * 0.48;
    let stroke = egui::Stroke::new(1.0, egui::Color32::from_rgb(110, 190, 240));
    for (c, (lo, hi)) in model::waveform_envelope(&clip.samples, columns).into_iter().enumerate() {
        let x = rect.left() + c as f32 + 0.5;
        let (lo, hi) = (lo.clamp(-1.0, 1.0), hi.clamp(-1.0, 1.0));
        painter.line_segment([egui::pos2(x, mid - hi * half), egui::pos2(x, mid - lo * half + 0.5)], stroke);
    }
}
