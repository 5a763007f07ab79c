//! Waveform display of a pad's clip (min/max per pixel column), scaled to the clip's peak so a
//! hot clip is not a solid block, with the peak in dBFS and, when the clip goes over full
//! scale, red lines where full scale is. Dragging across it selects the span to regenerate;
//! a click clears the selection. Also the small waveforms of the variations.

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

    let peak = crate::level::peak(&clip.samples);
    draw_envelope(&painter, rect, &clip.samples, peak);
    if peak > 1.0 {
        // Full scale, inside the auto-scaled view: what is beyond these lines clips.
        let half = rect.height() * 0.48 / peak;
        let red = egui::Stroke::new(1.0, egui::Color32::from_rgb(240, 80, 70));
        for y in [rect.center().y - half, rect.center().y + half] {
            painter.hline(rect.x_range(), y, red);
        }
    }
    let readout = model::peak_text(&clip.samples);
    let color = if peak > 1.0 {
        egui::Color32::from_rgb(240, 110, 90)
    } else {
        egui::Color32::from_gray(200)
    };
    painter.text(
        rect.right_top() + egui::vec2(-6.0, 4.0),
        egui::Align2::RIGHT_TOP,
        &readout,
        egui::FontId::proportional(13.0),
        color,
    );
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

/// Min/max per pixel column, scaled so that `peak` fills the height.
fn draw_envelope(painter: &egui::Painter, rect: egui::Rect, samples: &[f32], peak: f32) {
    let columns = rect.width().max(1.0) as usize;
    let mid = rect.center().y;
    let half = rect.height() * 0.48 / model::waveform_scale(peak);
    let stroke = egui::Stroke::new(1.0, egui::Color32::from_rgb(110, 190, 240));
    for (c, (lo, hi)) in model::waveform_envelope(samples, columns)
        .into_iter()
        .enumerate()
    {
        let x = rect.left() + c as f32 + 0.5;
        painter.line_segment(
            [
                egui::pos2(x, mid - hi * half),
                egui::pos2(x, mid - lo * half + 0.5),
            ],
            stroke,
        );
    }
}

/// A small waveform (variations), auto-scaled like the big one.
pub fn mini(ui: &mut egui::Ui, samples: &[f32], size: egui::Vec2) {
    let (rect, _) = ui.allocate_exact_size(size, egui::Sense::hover());
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 2.0, egui::Color32::from_gray(24));
    draw_envelope(&painter, rect, samples, crate::level::peak(samples));
}
