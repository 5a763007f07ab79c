//! Waveform display of a pad's clip (min/max per pixel column). Dragging across it selects
//! the span to regenerate; a click clears the selection.

use ezaudio_engine::audio::Clip;

use super::model;

/// Where a drag started (x from the waveform's left edge), kept between frames.
pub type DragStart = Option<f32>;

pub fn show(
    ui: &mut egui::Ui,
    clip: Option<&Clip>,
    span: &mut Option<(f32, f32)>,
    drag: &mut DragStart,
) {
    let width = ui.available_width().clamp(200.0, 620.0);
    let (rect, response) =
        ui.allocate_exact_size(egui::vec2(width, 90.0), egui::Sense::click_and_drag());
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, "Waveform"));
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 3.0, egui::Color32::from_gray(24));
    let Some(clip) = clip else {
        painter.text(
            rect.center(),
            egui::Align2::CENTER_CENTER,
            "No clip yet",
            egui::FontId::proportional(13.0),
            egui::Color32::GRAY,
        );
        return;
    };
    let duration = clip.duration_s();
    let x_of = |pos: egui::Pos2| pos.x - rect.left();
    if response.drag_started() {
        // Where the button went down (the drag only counts as one after some movement).
        *drag = ui
            .input(|i| i.pointer.press_origin())
            .or(response.interact_pointer_pos())
            .map(x_of);
    }
    if let (Some(from), Some(pos)) = (*drag, response.interact_pointer_pos()) {
        if response.dragged() {
            *span = model::span_from_drag(from, x_of(pos), rect.width(), duration);
        }
    }
    if response.drag_stopped() {
        *drag = None;
    }
    if response.clicked() {
        *span = None;
    }

    let columns = rect.width().max(1.0) as usize;
    let mid = rect.center().y;
    let half = rect.height() * 0.48;
    let stroke = egui::Stroke::new(1.0, egui::Color32::from_rgb(110, 190, 240));
    for (c, (lo, hi)) in model::waveform_envelope(&clip.samples, columns)
        .into_iter()
        .enumerate()
    {
        let x = rect.left() + c as f32 + 0.5;
        let (lo, hi) = (lo.clamp(-1.0, 1.0), hi.clamp(-1.0, 1.0));
        painter.line_segment(
            [
                egui::pos2(x, mid - hi * half),
                egui::pos2(x, mid - lo * half + 0.5),
            ],
            stroke,
        );
    }
    // The selection goes over the waveform, so it shows even on dense audio.
    if let Some((a, b)) = *span {
        let x = |s: f32| rect.left() + s / duration.max(1e-6) * rect.width();
        let sel = egui::Rect::from_x_y_ranges(x(a)..=x(b), rect.y_range());
        painter.rect_filled(
            sel,
            0.0,
            egui::Color32::from_rgba_unmultiplied(250, 190, 60, 90),
        );
        let edge = egui::Stroke::new(1.5, egui::Color32::from_rgb(250, 190, 60));
        painter.vline(sel.left(), rect.y_range(), edge);
        painter.vline(sel.right(), rect.y_range(), edge);
    }
    response.on_hover_text("Drag across the waveform to select a span to regenerate");
}
