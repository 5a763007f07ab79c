//! The 4x4 pad grid: a click selects a pad (it does not play it: the panel's Play does), the
//! selected pad is outlined, and every pad shows its number, its MIDI note and its name.

use crate::layout::PAD_COUNT;
use crate::params::EzAudioParams;
use crate::shared::Shared;

use super::model::{self, PadCaption};

/// One pad button. Fixed, so a long caption never widens its column.
pub const PAD_SIZE: egui::Vec2 = egui::vec2(84.0, 60.0);
/// Width of the grid (four pads and their spacing).
pub const GRID_WIDTH: f32 = 4.0 * PAD_SIZE.x + 3.0 * 6.0;

pub fn pad_grid(ui: &mut egui::Ui, shared: &Shared, params: &EzAudioParams, selected: &mut usize) {
    let (captions, filled): (Vec<PadCaption>, Vec<bool>) = shared.store.with(|b| {
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
                if pad_button(ui, &captions[i], fill, stroke, is_selected).clicked() {
                    *selected = i;
                }
            }
            ui.end_row();
        }
    });
}

/// Text size of both caption lines: the longest head ("16 · 118 A#7") fits the button at it.
const CAPTION_SIZE: f32 = 12.0;
/// Space between the button's edge and its text.
const CAPTION_MARGIN: f32 = 5.0;

/// A pad button drawn by hand: egui's button truncates a caption to its first line, and the
/// name is the line a sound designer reads. Each line is laid out on its own and elided at the
/// button's width, so the head never loses its note and nothing changes size.
fn pad_button(
    ui: &mut egui::Ui,
    caption: &PadCaption,
    fill: egui::Color32,
    stroke: egui::Stroke,
    selected: bool,
) -> egui::Response {
    let (rect, response) = ui.allocate_exact_size(PAD_SIZE, egui::Sense::click());
    let label = caption.label();
    let enabled = ui.is_enabled();
    response
        .widget_info(|| egui::WidgetInfo::selected(egui::Role::Button, enabled, selected, &label));
    if !ui.is_rect_visible(rect) {
        return response;
    }
    let visuals = ui.style().interact_selectable(&response, selected);
    let fill = if response.hovered() {
        fill.gamma_multiply(1.25)
    } else {
        fill
    };
    let painter = ui.painter();
    painter.rect(
        rect,
        visuals.corner_radius,
        fill,
        stroke,
        egui::StrokeKind::Inside,
    );
    let text_color = visuals.text_color();
    let head = caption_line(ui.ctx(), &caption.head, text_color);
    let name = caption_line(ui.ctx(), &caption.name, text_color.gamma_multiply(0.85));
    let gap = 3.0;
    let top = rect.center().y - (head.size().y + gap + name.size().y) / 2.0;
    let left = rect.left() + CAPTION_MARGIN;
    painter.galley(egui::pos2(left, top), head.clone(), text_color);
    painter.galley(
        egui::pos2(left, top + head.size().y + gap),
        name,
        text_color,
    );
    response
}

/// One line of a caption, elided with "…" where it would pass the button's inner width.
fn caption_line(
    ctx: &egui::Context,
    text: &str,
    color: egui::Color32,
) -> std::sync::Arc<egui::Galley> {
    let mut job = egui::text::LayoutJob::single_section(
        text.to_owned(),
        egui::TextFormat::simple(egui::FontId::proportional(CAPTION_SIZE), color),
    );
    job.wrap = egui::text::TextWrapping::truncate_at_width(PAD_SIZE.x - 2.0 * CAPTION_MARGIN);
    ctx.fonts_mut(|fonts| fonts.layout_job(job))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PadData;

    #[test]
    fn every_note_fits_on_a_pad_and_long_names_are_elided() {
        let ctx = egui::Context::default();
        let mut output = ctx.run_ui(Default::default(), |ui| {
            let white = egui::Color32::WHITE;
            for note in 0..=127 {
                let head = model::pad_caption(PAD_COUNT - 1, &PadData::default(), note).head;
                let line = caption_line(ui.ctx(), &head, white);
                assert!(!line.elided, "\"{head}\" does not fit a pad");
            }
            assert!(!caption_line(ui.ctx(), "door slam", white).elided);
            let long = caption_line(ui.ctx(), "footsteps on wet gravel", white);
            assert!(long.elided);
            assert!(long.size().x <= PAD_SIZE.x - 2.0 * CAPTION_MARGIN);
            assert!(long.text().starts_with("footsteps"), "{}", long.text());
        });
        // The font atlas this frame made is not uploaded anywhere.
        output.textures_delta.clear();
    }
}
